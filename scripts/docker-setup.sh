#!/bin/sh
# docker-setup.sh: make this machine ready for the docker backend's tests.
#
#  1. installs Debian's docker.io and debootstrap when missing;
#  2. starts dockerd (logging to $DOCKERD_LOG) when no daemon answers, and
#     waits for its socket;
#  3. builds the ds-sandbox base image from Debian packages (debootstrap a
#     minimal bookworm rootfs with python3, ipykernel, numpy, pandas,
#     matplotlib; import it) unless an image tagged $DS_SANDBOX_DOCKER_IMAGE
#     with the label ds-sandbox.base=1 already exists: the first run takes a few
#     minutes, later runs a second.
#
# No Docker registry is needed: the packages come from the apt mirror in
# /etc/apt/sources.list* (override with DEBIAN_MIRROR).
set -eu

IMAGE=${DS_SANDBOX_DOCKER_IMAGE:-ds-sandbox/base:bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/ds-sandbox-dockerd.log}
SOCK=/var/run/docker.sock

log() { echo "docker-setup: $*" >&2; }

need_root() {
	if [ "$(id -u)" != 0 ]; then
		log "must run as root to $1"
		exit 1
	fi
}

# 1. Packages.
missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
if [ -n "$missing" ]; then
	need_root "install$missing"
	log "installing$missing"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# 2. The daemon.
if ! docker version >/dev/null 2>&1; then
	need_root "start dockerd"
	log "starting dockerd (log: $DOCKERD_LOG)"
	nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
	i=0
	until docker version >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 120 ]; then
			log "dockerd did not answer on $SOCK within 60s; its log:"
			tail -n 40 "$DOCKERD_LOG" >&2
			exit 1
		fi
		sleep 0.5
	done
fi

# 3. The base image (cached).
if [ "$(docker image inspect -f '{{index .Config.Labels "ds-sandbox.base"}}' "$IMAGE" 2>/dev/null)" = 1 ]; then
	log "image $IMAGE exists; nothing to build"
	exit 0
fi
need_root "debootstrap"
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(grep -hsE '^(URIs:|deb) ' /etc/apt/sources.list /etc/apt/sources.list.d/* |
		grep -E 'debian/?$|debian ' | grep -v security | head -n 1 |
		sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//')
fi
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/ds-sandbox-rootfs.XXXXXX)
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$root" "$root.log"' EXIT
start=$(date +%s)
log "debootstrap bookworm from $mirror into $root (a few minutes; log: $root.log)"
# Two stages: debootstrap only the minimal base, then apt (which orders the
# configuration of the Python packages correctly) without recommends.
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
	log "debootstrap failed; its log:"
	tail -n 40 "$root.log" >&2
	exit 1
}
mount -t proc proc "$root/proc"
log "installing python3, ipykernel, numpy, pandas, matplotlib"
chroot "$root" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	python3 python3-ipykernel python3-numpy python3-pandas python3-matplotlib procps ca-certificates && apt-get clean' >>"$root.log" 2>&1 || {
	log "apt-get in the rootfs failed; its log:"
	tail -n 40 "$root.log" >&2
	exit 1
}
umount "$root/proc"
chroot "$root" python3 -c 'import ipykernel, numpy, pandas, matplotlib' || {
	log "the rootfs lacks a Python package"
	exit 1
}
# A sandbox user for images run without a uid mapping, and a small image.
chroot "$root" useradd -m -u 1000 -s /bin/bash user 2>/dev/null || true
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
log "importing $IMAGE"
tar -C "$root" --numeric-owner -c . | docker import \
	--change 'LABEL ds-sandbox.base=1' \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
	--change 'CMD ["python3"]' \
	- "$IMAGE" >/dev/null
log "built $IMAGE in $(($(date +%s) - start))s"
