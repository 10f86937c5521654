// GraphiQL in a real headless Chromium, offline: bankgraph runs on its embedded defaults (SQLite,
// the built-in Plaid emulator), every request to anything but 127.0.0.1 is blocked, and the
// page must still render, run a query with a token, and list the operations in its docs pane,
// with no Content-Security-Policy violation.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startServer } from "../clients/server.mjs";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  server?.stop();
});

test("GraphiQL renders offline, runs a query with a token and documents the operations", async () => {
  const token = server.token("browser-user");
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

  const response = await page.goto(server.graphql);
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
