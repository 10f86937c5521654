#!/usr/bin/env bash
# Runs every fuzz target for a bounded time from its committed corpus (CI), or one target for
# as long as asked (a long run). libFuzzer through cargo-fuzz, on the pinned stable toolchain:
# RUSTC_BOOTSTRAP lets it take the instrumentation flags cargo-fuzz passes, and the targets run
# without a sanitizer (the crate forbids unsafe code; what is searched for here is panics,
# aborts, stack overflows, hangs and disagreements).
#
#   bash fuzz/run.sh                      every target, FUZZ_SECONDS (default 30) each
#   bash fuzz/run.sh graphql_prepare 3600 one target for an hour
#
# New inputs go to a scratch corpus, never into the committed one; a crash is written to
# fuzz/artifacts/<target>/ and fails the run. Minimise it with `cargo fuzz tmin`, then make it
# a test and add it to fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

targets=(graphql_prepare graphql_nesting ws_message webhook_verify rpc_convert client_ip)
if [ $# -ge 1 ]; then targets=("$1"); fi
seconds="${2:-${FUZZ_SECONDS:-30}}"

cargo fuzz build --fuzz-dir fuzz -s none -O
bin=fuzz/target/x86_64-unknown-linux-gnu/release
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
  max_len=8192
  # The request path runs on a tokio worker's stack (2 MiB), as in the server.
  ( ulimit -s 2048
    "$bin/$t" "$scratch/$t" "fuzz/corpus/$t" -dict=fuzz/graphql.dict -max_len="$max_len" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" 2>&1 | tail -n 12 )
done
