#!/usr/bin/env bash
# test-oci-rootless.sh runs the oci backend's tests (the conformance suite,
# the security suite and the rootless tests) as an ordinary user: the
# backend's rootless mode. Run as root: it makes (once) the user
# $DSS_ROOTLESS_USER (default dssrootless) with a subordinate id range,
# builds the test binary and a static agent as root, and runs them as that
# user with a HOME and a state of its own; a backend that is not available
# there fails the tests (DSS_OCI_REQUIRE) rather than skipping them. The
# network tests' stand-in internet (internal/sandboxnet/nettest: a namespace
# of documentation addresses, nothing leaves the machine) needs root to
# build: the test binary serves it as root meanwhile (TestServeInternet)
# and the user's tests reach it (DSS_NETTEST_EXTERNAL).
# Idempotent; nothing is cleaned up
# (the next run reuses the user). Extra arguments go to the test binary
# (e.g. -test.run Rootless -test.v).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "test-oci-rootless: run as root (it creates a test user and runs the tests as it)" >&2
  exit 1
fi
./scripts/oci-setup.sh >/dev/null

user=${DSS_ROOTLESS_USER:-dssrootless}
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
fi
home=$(getent passwd "$user" | cut -d: -f6)
# A subordinate id range of its own (useradd gives one when /etc/login.defs
# says so; add one, past every range given, when it did not).
touch /etc/subuid /etc/subgid
first=$(awk -F: 'BEGIN{m=100000} {if ($2+$3 > m) m=$2+$3} END{print m}' /etc/subuid /etc/subgid)
grep -q "^$user:" /etc/subuid || usermod --add-subuids "$first-$((first + 65535))" "$user"
grep -q "^$user:" /etc/subgid || usermod --add-subgids "$first-$((first + 65535))" "$user"

# Built as root (the user needs no Go toolchain or module cache): the test
# binary, and the static agent the tests would otherwise build (DSS_OCI_AGENT).
bin=$(mktemp -d /tmp/dss-rootless-XXXXXX)
serving=""
cleanup() {
  rm -f "$bin/internet.ready"
  [ -z "$serving" ] || wait "$serving" || true
  rm -rf "$bin"
}
trap cleanup EXIT
chmod 755 "$bin"
agent=$(./scripts/build.sh)
cp "$agent" "$bin/ds-sandbox"
go test -c -o "$bin/oci.test" ./internal/backend/oci/
chmod 755 "$bin"/*

# The user's own environment: no variable of root's, a runtime directory
# of its own, and the tests' temporary directories in /tmp.
uid=$(id -u "$user")
rundir=/tmp/dss-rootless-run-$uid
mkdir -p "$rundir" && chown "$user:" "$rundir" && chmod 700 "$rundir"
# The stand-in internet, served as root until internet.ready is removed.
# It holds nettest's host-wide lock meanwhile, as a root test run would.
DSS_NETTEST_SERVE="$bin/internet.ready" DSS_OCI_AGENT="$bin/ds-sandbox" "$bin/oci.test" -test.run '^TestServeInternet$' -test.timeout=30m >"$bin/internet.log" 2>&1 &
serving=$!
for _ in $(seq 3000); do # nettest waits for its lock
  [ -s "$bin/internet.ready" ] && break
  kill -0 "$serving" 2>/dev/null || { cat "$bin/internet.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$bin/internet.ready" ] || { echo "test-oci-rootless: the stand-in internet did not start" >&2; exit 1; }
inet=$(cat "$bin/internet.ready")

cd "$home"
echo "test-oci-rootless: running the oci tests as $user (uid $uid)"
runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" \
  PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$rundir" TMPDIR=/tmp \
  DSS_OCI_AGENT="$bin/ds-sandbox" DSS_OCI_REQUIRE=1 DSS_NETTEST_EXTERNAL="$inet" ${DSS_OCI_RUNTIME:+DSS_OCI_RUNTIME="$DSS_OCI_RUNTIME"} \
  "$bin/oci.test" -test.count=1 -test.timeout=15m "$@"
