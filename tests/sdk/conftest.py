"""Starts `bankgraph plaid-emulator` on a free port for the SDK conformance tests."""

import os
import re
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT_ID = "emulator_client_id"
SECRET = "emulator_sandbox_secret"


def _binary():
    path = os.environ.get("BANKGRAPH_BIN") or os.path.join(ROOT, "target", "debug", "bankgraph")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} not found: run `cargo build` first or set BANKGRAPH_BIN")
    return path


@pytest.fixture(scope="session")
def emulator_url():
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(
        [_binary(), "plaid-emulator", "--addr", "127.0.0.1:0", "--transactions-per-item", "1200",
         "--webhook-retry-seconds", "0.2",
         # As an app registers its OAuth redirect URI in Plaid's dashboard.
         "--redirect-uris", "https://app.example.com/oauth"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        deadline = time.time() + 30
        url = None
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    raise RuntimeError("the emulator exited before it was ready")
                continue
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                url = m.group(1)
        if url is None:
            raise RuntimeError("the emulator did not print its address in time")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
