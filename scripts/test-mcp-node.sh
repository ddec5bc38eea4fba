#!/usr/bin/env bash
# Tests `ds-sandbox mcp` with the official MCP TypeScript SDK: builds
# bin/ds-sandbox (scripts/build.sh), installs tests/mcp-node's pinned
# dependencies with npm ci (once: again only when package-lock.json changes)
# and runs its tests with Node's built-in test runner against a temporary
# state directory. Exits non-zero when anything fails. Needs Node >= 20, npm
# and the npm registry (or a warm npm cache).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/node-check.sh 20.0.0

bin=$(./scripts/build.sh)
state="$(mktemp -d "${TMPDIR:-/tmp}/dss-mcp-node-XXXXXX")"
trap 'rm -rf "$state"' EXIT

cd tests/mcp-node
# node_modules/.package-lock.json is npm's record of what it installed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
DS_SANDBOX_BIN="$bin" SANDBOX_STATE_DIR="$state" node --test mcp.test.mjs
