#!/usr/bin/env bash
# Set-up command 2: run the whole test suite: gofmt and vet (also for macOS),
# the Go tests with the race detector (against a real ipykernel, runc and a real dockerd), the SDK's
# behaviour tests again through a real daemon, the oci suites on gVisor and
# rootless (as an ordinary user), the Python client against the daemon
# (including the seed README's blocks), the MCP server driven by the official
# TypeScript SDK, the E2B JS SDKs, and a short fuzz pass. bin/ds-sandbox is
# built once, statically (scripts/build.sh), and every script uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

test -z "$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
go vet ./...
# Linux-only code sits in _linux.go files with _other.go stubs, so the module
# (the SDK's remote mode, the CLI) builds on a Mac.
GOOS=darwin go build ./...
GOOS=darwin go vet ./...
DS_SANDBOX_BUILT="$(./scripts/build.sh)"
export DS_SANDBOX_BUILT
# Timeouts are generous: a busy machine (other jobs, load 20 and more on two
# cores) can take several times the usual minutes; only a hang should end a run.
go test -race -count=1 -timeout 40m ./...
# The SDK's behaviour tests again, through a real daemon (remote mode).
DS_SANDBOX_TEST_REMOTE=1 go test -race -count=1 -timeout 25m .
# And on the lean engine (the backends' suites run on both engines already).
SANDBOX_ENGINE=lean go test -count=1 -timeout 25m .
# The oci backend's conformance and security suites again under gVisor (runsc,
# built once from the module proxy and cached).
DSS_OCI_RUNTIME="$(./scripts/gvisor-setup.sh)" go test -count=1 -timeout 25m ./internal/backend/oci/
# And as an ordinary user: the oci backend's rootless mode (runc).
./scripts/test-oci-rootless.sh

./scripts/test-python.sh
./scripts/test-mcp-node.sh
./scripts/test-e2b-node.sh

# A short pass of every fuzz target, a fixed number of inputs each.
./scripts/fuzz.sh
