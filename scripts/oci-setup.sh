#!/bin/sh
# oci-setup.sh installs what the oci backend needs on Debian/Ubuntu: the OCI
# runtimes runc and crun from the distribution, when missing. Nothing else.
# Run as root (or through sudo).
set -eu

missing=""
for rt in runc crun; do
	if ! command -v "$rt" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$rt" ] && [ ! -x "/usr/bin/$rt" ]; then
		missing="$missing $rt"
	fi
done
if [ -z "$missing" ]; then
	echo "oci-setup: runc and crun are installed"
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
