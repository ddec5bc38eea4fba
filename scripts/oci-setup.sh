#!/bin/sh
# oci-setup.sh installs what the oci backend needs on Debian/Ubuntu, when
# missing: the OCI runtimes runc and crun, for the allow and whitelist
# network policies iproute2 (ip) and nftables (nft) (iptables is used when
# present: a host firewall whose FORWARD policy is DROP gets ACCEPT rules
# for the sandboxes' veths), and for rootless mode (a daemon that is not
# root) newuidmap/newgidmap (uidmap) and, for its allow and whitelist
# policies, slirp4netns, with /dev/net/tun usable by every user (mode 0666,
# what udev gives it; minimal hosts without udev leave it 0600). Run as
# root (or through sudo).
set -eu

missing=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] || [ -x "/sbin/$1" ]; }
for rt in runc crun; do
	have "$rt" || missing="$missing $rt"
done
have ip || missing="$missing iproute2"
have nft || missing="$missing nftables"
have newuidmap || missing="$missing uidmap"
have slirp4netns || missing="$missing slirp4netns"
tun_ok() { [ ! -e /dev/net/tun ] || [ "$(stat -c %a /dev/net/tun)" = 666 ]; }
if [ -z "$missing" ] && tun_ok; then
	echo "oci-setup: runc, crun, ip, nft, newuidmap and slirp4netns are installed"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "oci-setup: installing$missing needs root: sudo $0" >&2
	exit 1
fi
if ! tun_ok; then
	# Opening the device creates nothing: a tap device still needs
	# CAP_NET_ADMIN over the network namespace it is made in.
	chmod 0666 /dev/net/tun
	echo "oci-setup: /dev/net/tun is now mode 0666 (as udev makes it)"
fi
[ -n "$missing" ] || exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing
echo "oci-setup: installed$missing"
