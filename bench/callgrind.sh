#!/usr/bin/env bash
# Instructions per request, counted by callgrind (repeatable where times are not): a release
# bankgraph serves from PostgreSQL (loopback, sslmode=disable) with the read cache off, under
# valgrind; counters are zeroed after a warm-up, then N requests of each kind run one after
# another. Reports instructions per request and, for the account read, the functions where they
# go (inclusive). Usage: bash bench/callgrind.sh [--bankgraph PATH] [--requests 1000]
# Writes bench/results/callgrind-<label>.md (label: the binary's git commit or "custom").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/bankgraph
N=1000
LABEL=$(git rev-parse --short HEAD)
while [ $# -gt 0 ]; do
  case "$1" in
    --bankgraph) BIN="$2"; LABEL=custom; shift 2 ;;
    --requests) N="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# BENCH_NO_BUILD=1 skips the build (the binaries are there already); BENCH_USERLOAD names
# another build of the load driver.
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --quiet --bin bankgraph --example userload
LOAD=${BENCH_USERLOAD:-target/release/examples/userload}
SECRET=bench-secret-bench-secret-bench-secret-00
KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
ADMIN=postgres://postgres@127.0.0.1:5432/postgres
DB=bankgraph_callgrind_$$
TMP=$(mktemp -d)
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$ADMIN" -qc "drop database if exists $DB" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
PIDS=()
trap cleanup EXIT
psql "$ADMIN" -qc "create database $DB"
URL="postgres://postgres@127.0.0.1:5432/$DB"

wait_for() { # file pattern -> the first word after the pattern
  for _ in $(seq 1 600); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1" | sed "s/.*$2 *//" | awk '{print $1}'; return; fi
    sleep 0.2
  done
  echo "timed out waiting for '$2' in $1" >&2; exit 1
}

"$BIN" plaid-emulator --addr 127.0.0.1:0 --transactions-per-item 50 >"$TMP/emu.out" 2>/dev/null & PIDS+=($!)
EMU=$(wait_for "$TMP/emu.out" "listening on")
serve_args=(serve --bind-addr=127.0.0.1:0 --internal-bind-addr=127.0.0.1:0 "--database-url=$URL"
  "--jwt-secret=$SECRET" "--token-encryption-key=$KEY" --plaid-client-id=emulator_client_id
  --plaid-secret=emulator_sandbox_secret "--plaid-base-url=$EMU" --rate-limit-per-ip=0
  --rate-limit-per-user=0 --rate-limit-sensitive-per-minute=0 --read-cache-seconds=0)

# Seed with a plain server, then serve the same database under callgrind without background work.
"$BIN" "${serve_args[@]}" --job-workers=1 >"$TMP/seed.out" 2>/dev/null & SEEDER=$!
GQL=$(wait_for "$TMP/seed.out" "GraphQL and GraphiQL:")
TOKEN=$("$LOAD" seed "$GQL" "$EMU" bench-reader)
kill "$SEEDER"; wait "$SEEDER" 2>/dev/null || true

RUST_LOG=info LOG_FORMAT=json valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" \
  "$BIN" "${serve_args[@]}" --job-workers=0 >"$TMP/cg.out" 2>"$TMP/cg.log" & PIDS+=($!)
CG=$!
GQL=$(wait_for "$TMP/cg.out" "GraphQL and GraphiQL:")

declare -A QUERIES=(
  [typename]='{ __typename }'
  [accounts]='{ getPlaidBankAccounts { platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status } }'
  [balances]='{ getPlaidBankBalances { bankAccountId amount current currencyCode source trigger startedAt } }'
  [page]='{ getPlaidBankTransactions(input: {paginate: {limit: 50}}) { totalCount transactions { historicalBankTransactionId transactionId amount transactionType transactionDate merchantName category pending } } }'
)
REPORT="bench/results/callgrind-$LABEL.md"
mkdir -p bench/results
{
  echo "callgrind, \`$BIN\` ($LABEL), PostgreSQL on loopback, read cache off, $N requests of each kind one after another after 50 of warm-up, logging every request at info as JSON."
  echo
  echo "| request | instructions per request |"
  echo "|---|---|"
} >"$REPORT"
for kind in typename accounts balances page; do
  "$LOAD" count "$GQL" "$TOKEN" "${QUERIES[$kind]}" 50
  callgrind_control -z "$CG" >/dev/null
  "$LOAD" count "$GQL" "$TOKEN" "${QUERIES[$kind]}" "$N"
  callgrind_control -d "$kind" "$CG" >/dev/null
  sleep 1
  file=$(ls -t "$TMP"/cg.*."$kind"* 2>/dev/null | head -1 || true)
  [ -n "$file" ] || file=$(ls -t "$TMP"/cg.* | head -1)
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
  per=$((total / N))
  echo "$kind: $per instructions per request"
  echo "| $kind | $per |" >>"$REPORT"
  if [ "$kind" = accounts ]; then cp "$file" "$TMP/accounts.cg"; fi
done
{
  echo
  echo "Where the account read's instructions go (inclusive, top functions; per request = count / $N):"
  echo
  echo '```'
  # Only the function lines, first 45 (head closes the pipe early: not a failure).
  (callgrind_annotate --inclusive=yes --threshold=99 "$TMP/accounts.cg" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -45) || true
  echo '```'
} >>"$REPORT"
cat "$REPORT"
