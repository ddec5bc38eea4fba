#!/usr/bin/env bash
# Runs E2B's unmodified JS SDKs (e2b@2.51.0, @e2b/code-interpreter@2.8.0,
# pinned in tests/e2b-node/package-lock.json) against a real ds-sandbox
# daemon on loopback (bin/ds-sandbox, built by scripts/build.sh). Needs Node
# >= 20.18.1 and npm reaching its registry (npm ci runs once, and again only
# when package-lock.json changes).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/node-check.sh 20.18.1

bin=$(./scripts/build.sh)
(
	cd tests/e2b-node
	# node_modules/.package-lock.json is npm's record of what it installed.
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
		npm ci --no-audit --no-fund --loglevel=error
	fi
)

state=$(mktemp -d)
out="$state/daemon.out"
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$state"
}
trap cleanup EXIT

SANDBOX_STATE_DIR="$state/state" \
	"$bin" serve --ephemeral --listen 127.0.0.1:0 >"$out" 2>"$state/daemon.err" &
pid=$!

url=
for _ in $(seq 1 100); do
	line=$(head -n 1 "$out" 2>/dev/null || true)
	case "$line" in
	"ds-sandbox: listening on "*) url=${line#ds-sandbox: listening on }; break ;;
	esac
	if ! kill -0 "$pid" 2>/dev/null; then break; fi
	sleep 0.1
done
if [ -z "$url" ]; then
	echo "test-e2b-node: the daemon did not start:" >&2
	cat "$state/daemon.err" >&2
	exit 1
fi
echo "test-e2b-node: daemon at $url"

# The tests of what depends on the backend (network changes) need to know
# which one the daemon's default is (auto: oci as root).
backend=$(python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1] + "/readyz"))["default_backend"]["name"])' "$url")
echo "test-e2b-node: default backend $backend"
key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
status=0
(cd tests/e2b-node && E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" DSS_BACKEND="$backend" \
	node --test --test-concurrency=1 --test-reporter=spec e2b.test.mjs) || status=$?
if [ "$status" -ne 0 ]; then
	echo "test-e2b-node: FAILED; daemon log:" >&2
	tail -n 50 "$state/daemon.err" >&2
fi
exit "$status"
