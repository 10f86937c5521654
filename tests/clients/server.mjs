// Shared by the client and browser tests: bankgraph on its embedded defaults (SQLite, the
// built-in Plaid emulator) on ports it picks, a caller token from `bankgraph token`, and Plaid
// Link finished at the emulator as a user would finish it. Every request a test makes with
// fetch goes to 127.0.0.1; anything else is refused.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

// Nothing in these tests may reach past this machine: any other host is refused.
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
  if (url.hostname !== "127.0.0.1" && url.hostname !== "localhost") {
    return Promise.reject(new Error(`blocked: a request to ${url.origin}`));
  }
  return realFetch(input, init);
};

const bin = process.env.BANKGRAPH_BIN ?? new URL("../../target/debug/bankgraph", import.meta.url).pathname;

/** A free loopback port (for a server whose own address must be known before it starts). */
export async function freePort() {
  const { createServer } = await import("node:net");
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function startServer(extra = [], { port = 0 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "bankgraph-clients-"));
  const db = `sqlite://${dir}/bankgraph.db`;
  const child = spawn(
    bin,
    [
      "serve",
      `--bind-addr=127.0.0.1:${port}`,
      "--internal-bind-addr=127.0.0.1:0",
      `--database-url=${db}`,
      "--plaid-emulator-addr=127.0.0.1:0",
      ...extra,
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  const found = { graphql: null, emulator: null, internal: null };
  await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const g = line.match(/GraphQL and GraphiQL: (\S+)/);
      const d = line.match(/demo in a browser: +(\S+)/);
      if (d) found.demo = d[1];
      if (g) found.graphql = g[1];
      const e = line.match(/Plaid emulator at (http:\/\/\S+)/);
      if (e) found.emulator = e[1];
      const i = line.match(/internal listener: +(http:\/\/\S+)/);
      if (i) found.internal = i[1];
      if (found.graphql && found.emulator && found.internal) resolve();
    });
    child.on("exit", (code) => reject(new Error(`bankgraph exited with ${code}`)));
  });
  for (const url of Object.values(found)) {
    if (new URL(url).hostname !== "127.0.0.1") throw new Error(`not loopback: ${url}`);
  }
  return {
    ...found,
    token: (sub, scope = "MANAGE_PAYMENT") =>
      execFileSync(bin, ["token", "--sub", sub, "--scope", scope, `--database-url=${db}`]).toString().trim(),
    /** Finishes Link at the emulator for a link token (`extra`: e.g. the institution_id picked);
     * returns the public token. */
    async finishLink(linkToken, extra = {}) {
      const r = await fetch(`${found.emulator}/emulator/link/complete`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ link_token: linkToken, ...extra }),
      });
      const body = await r.json();
      if (!body.public_token) throw new Error(`link did not finish: ${JSON.stringify(body)}`);
      return body.public_token;
    },
    stop() {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
