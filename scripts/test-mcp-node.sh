#!/usr/bin/env bash
# Tests `ds-sandbox mcp` with the official MCP TypeScript SDK: builds
# bin/ds-sandbox, installs tests/mcp-node's pinned dependencies with npm ci and
# runs its tests with Node's built-in test runner against a temporary state
# directory. Exits non-zero when anything fails. Needs Node >= 20, npm and the
# npm registry (or a warm npm cache).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

CGO_ENABLED=0 go build -o bin/ds-sandbox ./cmd/ds-sandbox
bin="$PWD/bin/ds-sandbox"
state="$(mktemp -d "${TMPDIR:-/tmp}/dss-mcp-node-XXXXXX")"
trap 'rm -rf "$state"' EXIT

cd tests/mcp-node
npm ci --no-audit --no-fund --loglevel=error
DS_SANDBOX_BIN="$bin" SANDBOX_STATE_DIR="$state" node --test mcp.test.mjs
