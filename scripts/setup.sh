#!/usr/bin/env bash
# Set-up command 1: install what is missing, build ds-sandbox, run the quick start.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

bin=$(./scripts/build.sh)
echo "built $bin"
export PATH="$(pwd)/bin:$PATH"

echo "== ds-sandbox run -c ... =="
ds-sandbox run -c 'import sys, pandas as pd
print("hello from", sys.version.split()[0])
pd.DataFrame({"x": [1, 2, 3], "y": [1, 4, 9]}).describe().loc["mean"]'

echo "== Go SDK example (examples/quickstart) =="
# Static like bin/ds-sandbox: the program is its own agent (ServeAgentIfChild).
CGO_ENABLED=0 go run ./examples/quickstart
