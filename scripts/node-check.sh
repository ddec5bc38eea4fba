#!/usr/bin/env bash
# node-check.sh exits 0 when node and npm are installed and node is at least
# the version given (default 20.18.1, what the E2B SDKs in tests/e2b-node
# need: their undici needs it; the MCP SDK needs 20), and otherwise says
# what is wrong and how to fix it, and exits 1. scripts/install-deps.sh
# installs Debian's nodejs and npm when node is missing.
set -euo pipefail
want=${1:-20.18.1}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node-check: node and npm are needed (scripts/install-deps.sh installs Debian's nodejs and npm)" >&2
  exit 1
fi
have=$(node --version)
have=${have#v}
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" != "$want" ]; then
  echo "node-check: node $have is older than $want, which the Node test suites (tests/*-node) need;" \
    "install Node $want or newer (Debian 13's nodejs, or NodeSource's nodejs 20 or 22 on older releases)" >&2
  exit 1
fi
