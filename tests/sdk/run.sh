#!/usr/bin/env bash
# SDK conformance: Plaid's official Python and Node SDKs, and Plaid's OpenAPI spec, against the
# emulator. Creates its own virtualenv (target/sdk-venv) and node_modules, and builds the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${SDK_VENV:-target/sdk-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
cargo build --locked --quiet
"$venv/bin/python" -m pytest -q tests/sdk --ignore=tests/sdk/node "$@"
(cd tests/sdk/node && npm ci --no-audit --no-fund --silent && node --test)
