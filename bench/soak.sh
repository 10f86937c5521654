#!/usr/bin/env bash
# The soak: the cache-off account read of random callers at 32 connections for 30 minutes on
# PostgreSQL, the server's RSS sampled every 10 s (examples/userload.rs). Fails if RSS grows
# more than 10 MiB after the first minute. Writes bench/results/soak.md, soak.csv and the plot
# soak-rss.png (matplotlib, installed into bench/.venv on first use).
# Usage: bash bench/soak.sh [--minutes 30] [--users 200] [--conns 32]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin bankgraph --example userload
status=0
target/release/examples/userload soak "$@" || status=$?
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet matplotlib==3.9.2
fi
bench/.venv/bin/python bench/plot_rss.py bench/results/soak.csv bench/results/soak-rss.png
echo "plot: bench/results/soak-rss.png"
exit "$status"
