#!/usr/bin/env bash
# gvisor-setup.sh builds runsc (gVisor) statically from the Go module proxy at
# a pinned version, once: the binary is cached in $RUNSC_CACHE (default
# /var/cache/ds-sandbox/gvisor), and later runs only print its path. A cgo
# build would not work (runsc re-executes itself inside a chroot without the
# ELF interpreter), hence CGO_ENABLED=0. Prints the runsc path on stdout.
set -euo pipefail
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
VERSION=v0.0.0-20260905035102-160fafc42237
CACHE=${RUNSC_CACHE:-/var/cache/ds-sandbox/gvisor}
bin="$CACHE/$VERSION/runsc"
if [ ! -x "$bin" ]; then
  mkdir -p "$CACHE/$VERSION"
  echo "gvisor-setup: building runsc $VERSION (about 2 minutes, once)" >&2
  CGO_ENABLED=0 GOBIN="$CACHE/$VERSION" go install "gvisor.dev/gvisor/runsc@$VERSION" >&2
fi
if ! file "$bin" 2>/dev/null | grep -q "statically linked" && ldd "$bin" >/dev/null 2>&1; then
  echo "gvisor-setup: $bin is not static" >&2
  exit 1
fi
echo "$bin"
