#!/usr/bin/env bash
# The HTTP load benchmark: builds release binaries, then runs examples/loadtest.rs (see its
# header). Usage: bash bench/load.sh [--seconds 5] [--postgres postgres://…/postgres]
# [--bankgraph path/to/another/build/bankgraph]
#        bash bench/load.sh compare path/to/another/build/bankgraph [--rounds 5] [--seconds 3]
#        (that build and this one side by side on the account read; bench/results/compare.md)
#        bash bench/load.sh split [--rounds 5] [--seconds 3]
#        (one process and the split deployment side by side on PostgreSQL; bench/results/split.md;
#        BENCH_GATEWAY_WORKERS / BENCH_IDENTITY_WORKERS set each one's TOKIO_WORKER_THREADS)
#        bash bench/load.sh users [--users 2000] [--seconds 5]
#        (traffic shaped like users, cache on and off, a mixed run, the raw ceiling;
#        bench/results/users.md; see examples/userload.rs)
#        bash bench/load.sh users-compare path/to/another/build/bankgraph [--users 2000]
#        [--rounds 3] [--seconds 3] (that build and this one on the same callers, cache off:
#        random-caller accounts and mixed traffic; bench/results/users-compare.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = users ] || [ "${1:-}" = users-compare ]; then
  cargo build --release --locked --quiet --bin bankgraph --example userload
  exec target/release/examples/userload "$@"
fi
cargo build --release --locked --quiet --bin bankgraph --example loadtest
exec target/release/examples/loadtest "$@"
