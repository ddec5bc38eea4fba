#!/usr/bin/env bash
# Installs what ds-sandbox and its tests need on a Debian/Ubuntu machine and
# is missing: Debian's Python data stack with ipykernel, pip/setuptools/pytest
# for the Python client, Node.js and npm for the MCP and E2B suites
# (tests/*-node), runc/crun for the oci backend, Docker (started) with the
# base image for the docker backend, and the Go modules. Idempotent: what is
# there is checked and skipped; the first run takes a few minutes (the Docker
# base image), later runs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pkgs=(python3 python3-ipykernel python3-jupyter-client python3-numpy python3-pandas python3-matplotlib
      python3-pip python3-setuptools python3-wheel python3-pytest
      python3-seccomp # libseccomp: compiles the containers' seccomp profile for engines forked into them
      e2fsprogs) # mkfs.ext4: workspace disk quotas (a loop-mounted image)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node from anywhere (Debian, NodeSource, nvm) will do; Debian's when none is.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The isolating backends: OCI runtimes (runc, crun), and Docker (docker.io,
# a running dockerd, the base image built from Debian packages; cached).
$SUDO ./scripts/oci-setup.sh
$SUDO ./scripts/docker-setup.sh

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; else
    echo "Go 1.26 or newer is needed: install it from the Go downloads page into /usr/local/go" >&2; exit 1
  fi
fi
go mod download

# Debian 12's nodejs is 18: the E2B SDKs need 20.18.1. Not fatal here (the
# set-up does not need Node); scripts/test-e2b-node.sh fails saying the same.
./scripts/node-check.sh 20.18.1 || echo "install-deps: WARNING: the Node test suites will fail until Node is upgraded" >&2
