// The demo app (/demo) in a real headless Chromium, offline: sign in as a demo user, link a bank
// through the emulator's Link, see accounts, balances and transactions (date filter, paging),
// relink after the emulator forces a login, give an address, remove; and an OAuth bank that
// sends the browser away and back to the demo, which finishes Link.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { freePort, startServer } from "../clients/server.mjs";
import { handOff, launch, link, linkThrough, offlinePage, shot } from "./common.mjs";

let server;
let browser;

before(async () => {
  // A known port: offline, the OAuth redirect URI defaults to this server's /demo.
  server = await startServer([], { port: await freePort() });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

async function signIn(page, name) {
  const response = await page.goto(server.demo);
  const csp = response.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self' http:\/\/127\.0\.0\.1:\d+;/, csp);
  assert.match(csp, /frame-src http:\/\/127\.0\.0\.1:\d+;/, csp);
  assert.match(csp, /connect-src 'self';/, csp);
  await page.getByLabel("User name").fill(name);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Signed in as ${name}`).first().waitFor();
}

/** Polls a locator's text (the demo's CSP forbids the eval behind page.waitForFunction). */
async function textMatching(locator, predicate, timeout = 30000) {
  const until = Date.now() + timeout;
  for (;;) {
    const text = await locator.textContent();
    if (predicate(text)) return text;
    if (Date.now() > until) throw new Error(`timed out; the text is ${JSON.stringify(text)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function connection(page, name) {
  return page.getByRole("article", { name });
}

test("the demo's whole journey: sign in, link, read, relink, address, remove", async () => {
  const { page, blocked, problems, context } = await offlinePage(browser);
  await signIn(page, "alice");
  await shot(page, "demo-1-signed-in");

  await page.getByRole("button", { name: "Link a bank account" }).click();
  await linkThrough(page, {});
  await handOff(page);
  const bank = connection(page, "First Platypus Bank");
  await bank.waitFor({ timeout: 20000 });
  await page.getByRole("status").getByText(/Linked First Platypus Bank: \d+ accounts/).waitFor();
  assert.match(await bank.textContent(), /ACTIVE/);
  // Accounts with their latest balances.
  const rows = bank.locator("tbody tr");
  assert.ok((await rows.count()) >= 2);
  assert.match(await bank.textContent(), /Plaid Checking/);
  assert.match(await rows.first().locator("td").nth(3).textContent(), /^\d+(\.\d+)? USD$/);

  // Address entry when bankgraph asks for one.
  const address = page.locator("#address");
  if (await address.isVisible()) {
    await address.getByLabel("Street address").fill("1 Main St");
    await address.getByLabel("City").fill("Springfield");
    await address.getByLabel("State").fill("IL");
    await address.getByLabel("Postal code").fill("62701");
    await address.getByRole("button", { name: "Save address" }).click();
    await page.getByRole("status").getByText("Address saved for First Platypus Bank.").waitFor();
    assert.equal(await address.isVisible(), false);
  }

  // Transactions: the history arrives, pages of 25, a date filter.
  await textMatching(page.locator("#page-info"), (t) => /of [1-9]\d*$/.test(t));
  await page.mouse.wheel(0, -10000);
  await shot(page, "demo-0-overview");
  const info = page.locator("#page-info");
  await textMatching(info, (t) => /of [1-9]\d*$/.test(t));
  assert.equal(await page.locator("#transactions tbody tr").count(), 25);
  const total = Number((await info.textContent()).match(/of (\d+)$/)[1]);
  assert.ok(total > 25);
  await shot(page, "demo-2-linked", true);
  await page.getByRole("button", { name: "Next page" }).click();
  await page.getByText(`Showing 26–50 of ${total}`).waitFor();
  await page.getByRole("button", { name: "Previous page" }).click();
  await page.getByText(`Showing 1–25 of ${total}`).waitFor();
  const newest = await page.locator("#transactions tbody tr").first().locator("td").first().textContent();
  await page.getByLabel("From", { exact: true }).fill(newest);
  await page.getByLabel("To", { exact: true }).fill(newest);
  await page.getByRole("button", { name: "Apply" }).click();
  await textMatching(info, (t) => !t.endsWith(`of ${total}`));
  const dates = await page.locator("#transactions tbody tr td:first-child").allTextContents();
  assert.ok(dates.length > 0 && dates.every((d) => d === newest), `only ${newest}: ${dates}`);

  // Refresh.
  await page.getByRole("button", { name: "Refresh" }).click();
  await page.getByRole("status").getByText(/^Refresh: /).waitFor();

  // The emulator forces a login; the demo offers a relink, which runs Link's update mode.
  await bank.getByRole("button", { name: "Simulate login required" }).click();
  await bank.getByRole("button", { name: "Relink First Platypus Bank" }).waitFor({ timeout: 20000 });
  assert.match(await bank.textContent(), /LOGIN_REQUIRED/);
  await shot(page, "demo-3-login-required");
  await bank.getByRole("button", { name: "Relink First Platypus Bank" }).click();
  const frame = await linkThrough(page, { update: true, password: null });
  await frame.getByRole("heading", { name: "Log in again at First Platypus Bank" }).waitFor();
  await frame.getByLabel("Username").fill("user_good");
  await frame.getByLabel("Password").fill("pass_good");
  await frame.getByRole("button", { name: "Submit" }).click();
  await handOff(page);
  await page.getByRole("status").getByText(/Relinked First Platypus Bank/).waitFor({ timeout: 20000 });
  await textMatching(bank, (t) => /ACTIVE/.test(t));
  assert.equal(await page.locator("[data-connection]").count(), 1, "a relink repairs the connection, it adds none");

  // Removal.
  await bank.getByRole("button", { name: "Remove First Platypus Bank" }).click();
  await page.getByRole("status").getByText("Removed First Platypus Bank.").waitFor();
  await page.getByText("No bank linked yet.").waitFor();
  await shot(page, "demo-4-removed");

  assert.deepEqual(blocked, [], "nothing was fetched from outside this machine");
  assert.deepEqual(problems.filter((p) => /Content Security Policy|Refused to/.test(p)), []);
  await context.close();
});

test("an OAuth bank sends the browser away and back to the demo, which finishes Link", async () => {
  const { page, blocked, context } = await offlinePage(browser);
  await signIn(page, "oauth-user");
  await page.getByRole("button", { name: "Link a bank account" }).click();
  const frame = await linkThrough(page, { institution: "Platypus OAuth Bank", password: null });
  await frame.getByRole("heading", { name: "Log in at Platypus OAuth Bank" }).waitFor();
  await shot(page, "link-7-oauth");
  await frame.getByRole("button", { name: "Continue" }).click();

  // The bank's own page, in this window.
  await page.waitForURL(/\/link\/oauth\/bank\?oauth_state_id=/);
  await page.getByRole("heading", { name: "Share your accounts?" }).waitFor();
  await shot(page, "link-8-oauth-bank");
  await page.getByRole("button", { name: "Authorize" }).click();

  // Back at the redirect URI (the demo) with the state id; Link is re-initialised and finishes.
  await page.waitForURL(/\/demo(\?|$)/);
  await handOff(page);
  await connection(page, "Platypus OAuth Bank").waitFor({ timeout: 20000 });
  assert.equal(new URL(page.url()).search, "", "the state id is taken out of the address bar");

  assert.deepEqual(blocked, []);
  await context.close();
});

test("without the development secret there is no demo sign-in endpoint", async () => {
  const other = await startServer(["--jwt-secret=0123456789abcdef0123456789abcdef-demo"]);
  try {
    const r = await fetch(`${new URL(other.graphql).origin}/demo/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: "mallory" }),
    });
    assert.equal(r.status, 404);
    const { page, context } = await offlinePage(browser);
    await page.goto(other.demo);
    await page.getByLabel("Access token").waitFor();
    assert.equal(await page.getByLabel("User name").isVisible(), false);
    await context.close();
  } finally {
    other.stop();
  }
});
