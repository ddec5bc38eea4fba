#!/bin/sh
# oci-setup.sh installs what the oci backend needs on Debian/Ubuntu, when
# missing: the OCI runtimes runc and crun, for the allow and whitelist
# network policies iproute2 (ip) and nftables (nft) (iptables is used when
# present: a host firewall whose FORWARD policy is DROP gets ACCEPT rules
# for the sandboxes' veths), and for rootless mode (a daemon that is not
# root) newuidmap/newgidmap (uidmap). Run as root (or through sudo).
set -eu

missing=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] || [ -x "/sbin/$1" ]; }
for rt in runc crun; do
	have "$rt" || missing="$missing $rt"
done
have ip || missing="$missing iproute2"
have nft || missing="$missing nftables"
have newuidmap || missing="$missing uidmap"
if [ -z "$missing" ]; then
	echo "oci-setup: runc, crun, ip, nft and newuidmap are installed"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "oci-setup: installing$missing needs root: sudo $0" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing
echo "oci-setup: installed$missing"
