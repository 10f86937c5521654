#!/usr/bin/env python3
"""Benchmark: sync one Plaid item with N transactions (default 100,000) from the emulator into
SQLite and PostgreSQL, through a real `bankgraph serve` process, and report transactions per
second and bankgraph's peak memory (VmHWM). The emulator runs as its own process so its memory
is not counted.

    python3 bench/sync_bench.py [--transactions 100000] [--postgres postgres://postgres@127.0.0.1:5432/postgres]

Only the standard library is used. Prints a Markdown table (and writes bench/results/sync.md).
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "bankgraph")
SECRET = "bench-secret-bench-secret-bench-secret-00"
KEY = base64.b64encode(bytes(range(32))).decode()


def post(url, body, token=None, timeout=600):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start(args, pattern, env=None):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, RUST_LOG="warn", **(env or {})))
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(pattern, line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{args[1]} exited early")
    raise RuntimeError(f"{args[1]} did not start")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(backend, database_url, emulator_url, count):
    server, graphql = start([
        BIN, "serve", "--bind-addr=127.0.0.1:0", "--internal-bind-addr=127.0.0.1:0",
        f"--database-url={database_url}", f"--jwt-secret={SECRET}", f"--token-encryption-key={KEY}",
        "--plaid-client-id=emulator_client_id", "--plaid-secret=emulator_sandbox_secret",
        f"--plaid-base-url={emulator_url}", "--job-workers=1",
    ], r"GraphQL and GraphiQL: (\S+)")
    try:
        token = subprocess.check_output([BIN, "token", "--sub", f"bench-{backend}", "--jwt-secret", SECRET,
                                         "--database-url", database_url, f"--token-encryption-key={KEY}"], text=True).strip()
        lt = post(graphql, {"query": "mutation { createPlaidLinkToken(input: {}) { linkToken } }"}, token)
        link_token = lt["data"]["createPlaidLinkToken"]["linkToken"]
        done = post(f"{emulator_url}/emulator/link/complete", {
            "link_token": link_token, "username": "user_custom",
            "password": json.dumps({"transaction_count": count, "seed": "bench"})})
        q = "mutation($i: CompletePlaidLinkInput!) { completePlaidLink(input: $i) { platformItemId } }"
        r = post(graphql, {"query": q, "variables": {"i": {"publicToken": done["public_token"]}}}, token)
        assert "errors" not in r, r
        started = time.monotonic()
        total = 0
        count_q = {"query": "{ getPlaidBankTransactions(input: {paginate: {limit: 1}}) { totalCount } }"}
        while total < count:
            time.sleep(0.1)
            total = post(graphql, count_q, token)["data"]["getPlaidBankTransactions"]["totalCount"]
            if time.monotonic() - started > 1800:
                raise RuntimeError(f"{backend}: only {total} of {count} after 30 minutes")
        elapsed = time.monotonic() - started
        return {"backend": backend, "transactions": count, "seconds": elapsed, "tx_per_s": count / elapsed,
                "peak_rss_mb": peak_rss_mb(server.pid)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    if not args.skip_build:
        subprocess.check_call(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT)
    emulator, emulator_url = start([BIN, "plaid-emulator", "--addr", "127.0.0.1:0"], r"listening on (http://\S+)")
    results = []
    try:
        tmp = tempfile.mkdtemp(prefix="bankgraph-bench-")
        results.append(run("SQLite", f"sqlite://{tmp}/bench.db", emulator_url, args.transactions))
        name = f"bankgraph_bench_{uuid.uuid4().hex[:12]}"
        try:
            subprocess.check_call(["psql", args.postgres, "-qc", f"create database {name}"])
            pg = re.sub(r"/[^/]*$", f"/{name}", args.postgres)
            try:
                results.append(run("PostgreSQL", pg, emulator_url, args.transactions))
            finally:
                subprocess.call(["psql", args.postgres, "-qc", f"drop database if exists {name}"])
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"PostgreSQL skipped: {e}", file=sys.stderr)
    finally:
        emulator.terminate()
    lines = ["| backend | transactions | seconds | transactions/s | bankgraph peak RSS (MB) |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['backend']} | {r['transactions']:,} | {r['seconds']:.1f} | {r['tx_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "sync.md"), "w") as f:
        f.write(f"Sync benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n\n{table}\n")


if __name__ == "__main__":
    main()
