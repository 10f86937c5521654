#!/usr/bin/env bash
# Client tests: the seed's flow through Apollo Client 4 (default link, and APQ), Apollo Client 3
# and urql 6 as their docs configure them, and graphql-codegen from live introspection, against
# bankgraph on its embedded defaults. Node packages from the committed lockfile; every request
# goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --silent --no-audit --no-fund --loglevel=error
(cd ../.. && cargo build --locked --quiet --bin bankgraph)
node --test
