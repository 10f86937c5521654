#!/usr/bin/env bash
# The live events benchmark: memory per idle GraphQL WebSocket and the fan-out latency of a
# connection event to 1,000 subscribers (see examples/eventbench.rs). Writes
# bench/results/events.md.
# Usage: bash bench/events.sh [--subscribers 1000] [--events 30] [--postgres postgres://…/postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin bankgraph --example eventbench
exec target/release/examples/eventbench "$@"
