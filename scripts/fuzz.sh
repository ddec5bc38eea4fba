#!/usr/bin/env bash
# fuzz.sh runs a short pass of every fuzz target in the module (the seed
# corpora also run as ordinary tests in `go test ./...`). The targets are
# found, not listed: each package with a `func Fuzz` in a test file is asked
# for its targets with `go test -list '^Fuzz'`.
#
# Each target runs for a number of inputs, not a duration: with a
# -fuzztime duration, Go's fuzzing coordinator can end a run that found
# nothing with "context deadline exceeded" (golang/go#75804), and a count
# has no deadline. DSS_FUZZ_EXECS sets the count (default 1000, a few
# seconds per target). A failing input is written to the package's
# testdata/fuzz/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
execs=${DSS_FUZZ_EXECS:-1000}
case "$execs" in
'' | *[!0-9]*) echo "fuzz: DSS_FUZZ_EXECS must be a number of inputs, not \"$execs\"" >&2; exit 2 ;;
esac

pkgs=$(grep -rl --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.git '^func Fuzz' . | xargs -r -n1 dirname | sort -u)
if [ -z "$pkgs" ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
n=0
for pkg in $pkgs; do
  targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
  if [ -z "$targets" ]; then
    echo "fuzz: $pkg has a func Fuzz… but go test -list finds no target" >&2
    exit 1
  fi
  for target in $targets; do
    echo "== fuzz $pkg $target ($execs inputs)"
    go test -run '^$' -fuzz "^$target\$" -fuzztime "${execs}x" -fuzzminimizetime 100x "$pkg"
    n=$((n + 1))
  done
done
echo "fuzz: $n targets passed"
