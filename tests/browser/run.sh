#!/usr/bin/env bash
# Browser tests: bankgraph's pages in Debian's headless Chromium through playwright-core, with
# every non-loopback request blocked. Installs what it needs (chromium from Debian, the Node
# packages from the committed lockfile).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
npm ci --silent --no-audit --no-fund
(cd ../.. && cargo build --locked --quiet --bin bankgraph)
node --test
