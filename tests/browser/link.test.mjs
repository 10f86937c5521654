// Plaid Link, emulated, in a real headless Chromium with every non-loopback request blocked:
// a plain page with only the emulator's link-initialize.js and the seed's web sample (its code
// unchanged; only its two placeholders filled in) links a bank and gets Plaid-shaped onSuccess
// metadata and Plaid's documented onEvent sequence; MFA; an error credential ends in onExit.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:http";
import { startServer } from "../clients/server.mjs";
import { handOff, launch, link, linkThrough, offlinePage, shot } from "./common.mjs";

const SAMPLE = readFileSync(new URL("./fixtures/seed-web-sample.js", import.meta.url), "utf8");

let server;
let browser;
// The app: its own origin on 127.0.0.1, which bankgraph allows by CORS_ALLOWED_ORIGINS.
let app;
let appOrigin;
const pages = new Map();

before(async () => {
  app = createServer((req, res) => {
    const html = pages.get(req.url);
    res.writeHead(html ? 200 : 404, { "content-type": "text/html; charset=utf-8" });
    res.end(html ?? "not found");
  });
  await new Promise((resolve) => app.listen(0, "127.0.0.1", resolve));
  appOrigin = `http://127.0.0.1:${app.address().port}`;
  server = await startServer([`--cors-allowed-origins=${appOrigin}`]);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
  app?.close();
});

test("the fixture is the seed's web sample, verbatim", () => {
  const seeds = new URL("../../../shared/seeds/", import.meta.url).pathname;
  if (!existsSync(seeds)) return; // ../shared is beside the project in CI and here
  const seed = readdirSync(seeds).find((f) => f.startsWith("003_"));
  assert.ok(readFileSync(seeds + seed, "utf8").includes(SAMPLE), "tests/browser/fixtures/seed-web-sample.js drifted from the seed");
});

/** The app's page: Plaid's script tag (the emulator's), the seed's code, and what the app
 * itself defines (saveConnectionForRelinkLater). A test shim records onEvent and onSuccess
 * metadata around Plaid.create without changing the sample. */
function samplePage(token) {
  const origin = new URL(server.graphql).origin;
  const code = SAMPLE.replace("<fluz-api-base-url>", origin).replace("<fluz-user-access-token>", token);
  return `<!doctype html><html><head><meta charset="utf-8"><title>Seed web sample</title>
<script src="${server.emulator}/link/v2/stable/link-initialize.js"></script></head>
<body><h1>My app</h1><button id="start">Link account</button>
<script>
window.recorded = { events: [], success: null, exit: null, saved: null };
const realCreate = window.Plaid.create;
window.Plaid.create = (config) => realCreate({
  ...config,
  onEvent: (name, metadata) => window.recorded.events.push({ name, metadata }),
  onSuccess: (token, metadata) => { window.recorded.success = { token, metadata }; return config.onSuccess(token, metadata); },
  onExit: (error, metadata) => { window.recorded.exit = { error, metadata }; return config.onExit && config.onExit(error, metadata); },
});
async function saveConnectionForRelinkLater(saved) { window.recorded.saved = saved; }
</script>
<script>
${code}
document.getElementById("start").addEventListener("click", () => startPlaidLink());
</script></body></html>`;
}

async function openSample(user) {
  const token = server.token(user);
  const env = await offlinePage(browser);
  const path = `/${user}.html`;
  pages.set(path, samplePage(token));
  await env.page.goto(appOrigin + path);
  await env.page.getByRole("button", { name: "Link account" }).click();
  return { ...env, token };
}

const names = (events) => events.map((e) => (e.name === "TRANSITION_VIEW" ? `TRANSITION_VIEW(${e.metadata.view_name})` : e.name));

test("the seed's web sample links a bank through the emulator's Link", async () => {
  const { page, blocked, problems, context, token } = await openSample("sample-user");
  await linkThrough(page, { shots: "link" });
  await handOff(page, "link");
  await page.waitForFunction(() => window.recorded.saved !== null, null, { timeout: 20000 });
  const recorded = await page.evaluate(() => window.recorded);

  // onSuccess: Plaid's metadata shape.
  assert.match(recorded.success.token, /^public-sandbox-/);
  const m = recorded.success.metadata;
  assert.deepEqual(m.institution, { name: "First Platypus Bank", institution_id: "ins_109508" });
  assert.match(m.link_session_id, /^[0-9a-f-]{36}$/);
  assert.ok(m.accounts.length >= 2);
  for (const a of m.accounts) {
    assert.deepEqual(Object.keys(a).sort(), ["class_type", "id", "mask", "name", "subtype", "type", "verification_status"]);
    assert.equal(typeof a.id, "string");
    assert.match(a.mask, /^\d{4}$/);
  }
  // The sample's own onSuccess ran: completePlaidLink through bankgraph, saved for relink.
  assert.equal(recorded.saved.plaidLinkSessionId, m.link_session_id);
  assert.ok(recorded.saved.platformItemId);
  assert.equal(recorded.saved.bankAccounts.length, m.accounts.length);

  // onEvent: Plaid's documented sequence for a non-OAuth institution.
  assert.deepEqual(
    names(recorded.events).filter((n) => n !== "SEARCH_INSTITUTION"),
    [
      "OPEN",
      "TRANSITION_VIEW(SELECT_INSTITUTION)",
      "SELECT_INSTITUTION",
      "TRANSITION_VIEW(CREDENTIAL)",
      "SUBMIT_CREDENTIALS",
      "TRANSITION_VIEW(LOADING)",
      "TRANSITION_VIEW(CONNECTED)",
      "HANDOFF",
    ],
  );
  const open = recorded.events[0].metadata;
  assert.equal(open.view_name, "CONSENT");
  assert.equal(open.is_update_mode, "no");
  const select = recorded.events.find((e) => e.name === "SELECT_INSTITUTION").metadata;
  assert.equal(select.institution_id, "ins_109508");
  assert.equal(select.institution_name, "First Platypus Bank");
  for (const e of recorded.events) {
    assert.equal(e.metadata.link_session_id, m.link_session_id);
    assert.ok(!Number.isNaN(Date.parse(e.metadata.timestamp)));
  }

  // bankgraph holds the connection.
  const r = await fetch(server.graphql, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ query: "{ getPlaidBankAccounts { platformItemId bankInstitutionName } }" }),
  });
  const accounts = (await r.json()).data.getPlaidBankAccounts;
  assert.ok(accounts.every((a) => a.platformItemId === recorded.saved.platformItemId && a.bankInstitutionName === "First Platypus Bank"));
  assert.equal(accounts.length, m.accounts.length);

  // The dialog is gone and the page is usable again.
  assert.equal(await page.locator("[data-plaid-link]").isVisible(), false);
  assert.equal(await page.getByRole("button", { name: "Link account" }).isEnabled(), true);
  assert.deepEqual(blocked, []);
  assert.deepEqual(problems.filter((p) => /Content Security Policy|Refused to/.test(p)), []);
  await context.close();
});

test("MFA: mfa_device asks for a code; a wrong one is refused, 1234 passes", async () => {
  const { page, context } = await openSample("mfa-user");
  const frame = await linkThrough(page, { password: "mfa_device", institution: "Tartan Bank" });
  await frame.getByLabel("Code").fill("9999");
  await frame.getByRole("button", { name: "Submit" }).click();
  await frame.getByRole("alert").getByText(/code was not correct/i).waitFor();
  await frame.getByRole("button", { name: "Try again" }).click();
  await frame.getByLabel("Username").fill("user_good");
  await frame.getByLabel("Password").fill("mfa_device");
  await frame.getByRole("button", { name: "Submit" }).click();
  await frame.getByLabel("Code").fill("1234");
  await shot(page, "link-4-mfa");
  await frame.getByRole("button", { name: "Submit" }).click();
  await handOff(page);
  await page.waitForFunction(() => window.recorded.saved !== null, null, { timeout: 20000 });
  const recorded = await page.evaluate(() => window.recorded);
  const seq = names(recorded.events).filter((n) => n !== "SEARCH_INSTITUTION");
  // The successful round: credentials, MFA, connected.
  assert.deepEqual(seq.slice(-8), [
    "TRANSITION_VIEW(CREDENTIAL)",
    "SUBMIT_CREDENTIALS",
    "TRANSITION_VIEW(LOADING)",
    "TRANSITION_VIEW(MFA)",
    "SUBMIT_MFA",
    "TRANSITION_VIEW(LOADING)",
    "TRANSITION_VIEW(CONNECTED)",
    "HANDOFF",
  ]);
  const mfa = recorded.events.find((e) => e.name === "TRANSITION_VIEW" && e.metadata.view_name === "MFA");
  assert.equal(mfa.metadata.mfa_type, "code");
  const error = recorded.events.find((e) => e.name === "ERROR");
  assert.equal(error.metadata.error_code, "INVALID_MFA");
  assert.equal(recorded.success.metadata.institution.institution_id, "ins_109511");
  await context.close();
});

test("an error credential shows the error, then onExit receives it", async () => {
  const { page, context } = await openSample("error-user");
  const frame = await linkThrough(page, { password: "error_ITEM_LOCKED" });
  await frame.getByRole("alert").waitFor();
  assert.match(await frame.getByRole("alert").textContent(), /account is locked/);
  await shot(page, "link-6-error");
  await frame.getByRole("button", { name: "Exit" }).click();
  await page.waitForFunction(() => window.recorded.exit !== null, null, { timeout: 10000 });
  const recorded = await page.evaluate(() => window.recorded);
  assert.equal(recorded.success, null);
  const { error, metadata } = recorded.exit;
  assert.deepEqual(Object.keys(error).sort(), ["display_message", "error_code", "error_message", "error_type"]);
  assert.equal(error.error_code, "ITEM_LOCKED");
  assert.equal(error.error_type, "ITEM_ERROR");
  assert.equal(metadata.status, "requires_credentials");
  assert.deepEqual(metadata.institution, { name: "First Platypus Bank", institution_id: "ins_109508" });
  assert.match(metadata.link_session_id, /^[0-9a-f-]{36}$/);
  assert.match(metadata.request_id, /^\w{15}$/);
  assert.deepEqual(names(recorded.events).slice(-5), [
    "TRANSITION_VIEW(LOADING)",
    "ERROR",
    "TRANSITION_VIEW(ERROR)",
    "TRANSITION_VIEW(EXIT)",
    "EXIT",
  ]);
  assert.equal(recorded.events.at(-1).metadata.exit_status, "requires_credentials");
  assert.equal(recorded.events.find((e) => e.name === "ERROR").metadata.error_code, "ITEM_LOCKED");
  assert.equal(recorded.saved, null, "nothing was linked");
  await context.close();
});

test("Link is a keyboard-only dialog: focus stays inside it, Escape exits", async () => {
  const { page, context } = await openSample("keyboard-user");
  const frame = link(page);
  await frame.getByRole("heading", { name: /uses Plaid to connect/ }).waitFor({ timeout: 20000 });
  await page.keyboard.press("Enter"); // Continue has focus
  const search = frame.getByRole("searchbox", { name: "Search institutions" });
  await search.waitFor();
  assert.equal(await search.evaluate((el) => el === document.activeElement), true, "the search box has focus");
  // Tab through more controls than the screen has: focus never leaves the dialog.
  for (let i = 0; i < 14; i += 1) {
    await page.keyboard.press("Tab");
    const inLink = await page.evaluate(() => document.activeElement?.tagName === "IFRAME");
    assert.ok(inLink, `focus left Link after ${i + 1} Tab presses`);
  }
  // The page behind is inert while Link is open.
  assert.equal(await page.locator("h1").evaluate((el) => el.closest("[inert]") !== null), true);
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => window.recorded.exit !== null, null, { timeout: 10000 });
  const exit = await page.evaluate(() => window.recorded.exit);
  assert.equal(exit.error, null);
  assert.equal(exit.metadata.status, "institution_not_found");
  assert.equal(await page.locator("h1").evaluate((el) => el.closest("[inert]") === null), true);
  await context.close();
});

test("account selection (a token made with a Link customization) shares only the accounts picked", async () => {
  // A token made at the emulator directly, as a backend with a customization would make it.
  const r = await fetch(`${server.emulator}/link/token/create`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      client_id: "emulator_client_id",
      secret: "emulator_sandbox_secret",
      client_name: "Account picker app",
      language: "en",
      country_codes: ["US"],
      user: { client_user_id: "picker-1" },
      products: ["transactions"],
      link_customization_name: "account_selection_v2_customization",
    }),
  });
  const { link_token } = await r.json();
  pages.set(
    "/picker.html",
    `<!doctype html><html><head><meta charset="utf-8"><title>Picker</title>
<script src="${server.emulator}/link/v2/stable/link-initialize.js"></script></head>
<body><h1>Picker</h1><script>
window.recorded = { loaded: false, success: null };
const handler = Plaid.create({
  token: ${JSON.stringify(link_token)},
  onLoad: () => { window.recorded.loaded = true; },
  onSuccess: (token, metadata) => { window.recorded.success = { token, metadata }; },
});
handler.open();
</script></body></html>`,
  );
  const { page, context } = await offlinePage(browser);
  await page.goto(`${appOrigin}/picker.html`);
  await linkThrough(page, {});
  const frame = link(page);
  await frame.getByRole("heading", { name: "Select the accounts to share" }).waitFor();
  await frame.getByLabel(/Plaid Saving/).uncheck();
  await frame.getByLabel(/Plaid CD/).uncheck();
  await shot(page, "link-9-select-account");
  await frame.getByRole("button", { name: "Continue" }).click();
  await handOff(page);
  await page.waitForFunction(() => window.recorded.success !== null, null, { timeout: 10000 });
  const recorded = await page.evaluate(() => window.recorded);
  assert.equal(recorded.loaded, true, "onLoad ran");
  const names = recorded.success.metadata.accounts.map((a) => a.name);
  assert.equal(names.length, 7);
  assert.ok(!names.includes("Plaid Saving") && !names.includes("Plaid CD") && names.includes("Plaid Checking"));
  await context.close();
});
