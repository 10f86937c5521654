// GraphiQL in a real headless Chromium, offline: bankgraph runs on its embedded defaults (SQLite,
// the built-in Plaid emulator), every request to anything but 127.0.0.1 is blocked, and the
// page must still render, run a query with a token, and list the operations in its docs pane,
// with no Content-Security-Policy violation.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const bin = process.env.BANKGRAPH_BIN ?? new URL("../../target/debug/bankgraph", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "bankgraph-browser-"));
const db = `sqlite://${dir}/bankgraph.db`;
let server;
let graphql;
let browser;

before(async () => {
  server = spawn(
    bin,
    [
      "serve",
      "--bind-addr=127.0.0.1:0",
      "--internal-bind-addr=127.0.0.1:0",
      `--database-url=${db}`,
      "--plaid-emulator-addr=127.0.0.1:0",
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  graphql = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: server.stdout });
    lines.on("line", (line) => {
      const m = line.match(/GraphQL and GraphiQL: (\S+)/);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error(`bankgraph exited with ${code}`)));
  });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

test("GraphiQL renders offline, runs a query with a token and documents the operations", async () => {
  const token = execFileSync(bin, ["token", "--sub", "browser-user", `--database-url=${db}`]).toString().trim();
  const page = await browser.newPage();
  const blocked = [];
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === "127.0.0.1") return route.continue();
    blocked.push(route.request().url());
    return route.abort();
  });
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));

  const response = await page.goto(graphql);
  const csp = response.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self'/);
  assert.ok(!/https?:/.test(csp), `the policy names no other origin: ${csp}`);
  await page.waitForSelector(".graphiql-container", { timeout: 20000 });

  // The headers editor starts with the Authorization template; put the token in it.
  const headers = page.locator(".graphiql-editor-tool .graphiql-editor").last();
  await headers.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.insertText(JSON.stringify({ Authorization: `Bearer ${token}` }));

  const query = page.locator(".graphiql-query-editor .CodeMirror").first();
  await query.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.insertText("{ getPlaidBankAccounts { bankAccountId } __typename }");
  await page.locator(".graphiql-execute-button").click();
  const result = page.locator(".graphiql-response");
  await result.getByText('"getPlaidBankAccounts": []').waitFor({ timeout: 20000 });
  assert.ok(!(await result.textContent()).includes("UNAUTHENTICATED"));

  await page.getByRole("button", { name: /documentation explorer/i }).click();
  const docs = page.locator(".graphiql-doc-explorer");
  await docs.getByText("Query", { exact: true }).first().click();
  await docs.getByText("getPlaidBankAccounts").first().waitFor({ timeout: 10000 });

  assert.deepEqual(blocked, [], "nothing was fetched from outside this server");
  assert.deepEqual(
    problems.filter((p) => /Content Security Policy|Refused to/.test(p)),
    [],
    `no CSP violation: ${problems.join("\n")}`,
  );
});
