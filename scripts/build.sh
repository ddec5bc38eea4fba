#!/usr/bin/env bash
# build.sh builds bin/ds-sandbox, statically (CGO_ENABLED=0: the docker and
# oci backends run this binary inside sandboxes as their agent, where the
# host's libc may be missing; the docker backend refuses a dynamic one),
# checks that it is static and prints its path.
#
# The scripts that need the binary call it; scripts/test.sh builds once and
# exports DS_SANDBOX_BUILT, the path, so the scripts it runs reuse that
# binary instead of building again.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
bin="$PWD/bin/ds-sandbox"
if [ -n "${DS_SANDBOX_BUILT:-}" ]; then
  if [ ! -x "$DS_SANDBOX_BUILT" ]; then
    echo "build: DS_SANDBOX_BUILT=$DS_SANDBOX_BUILT is not an executable" >&2
    exit 1
  fi
  bin=$DS_SANDBOX_BUILT
else
  mkdir -p bin
  echo "build: CGO_ENABLED=0 go build -trimpath -o bin/ds-sandbox ./cmd/ds-sandbox" >&2
  CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/ds-sandbox
fi
# The Go toolchain records how it built a binary; a cgo build would link
# the C library dynamically.
if ! go version -m "$bin" | grep -q '^[[:space:]]*build[[:space:]]*CGO_ENABLED=0$'; then
  echo "build: $bin was not built with CGO_ENABLED=0 (it would be dynamically linked)" >&2
  exit 1
fi
echo "$bin"
