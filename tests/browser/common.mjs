// What the browser tests share: Chromium with every non-loopback request blocked, console
// errors collected, screenshots saved under tests/browser/screenshots/ (not committed), and
// the emulator's Link dialog driven as a person would, by label and role.
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

export const SHOTS = new URL("./screenshots/", import.meta.url).pathname;
mkdirSync(SHOTS, { recursive: true });

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
}

/** A page (in its own context) that may reach only 127.0.0.1; `blocked` lists what it tried. */
export async function offlinePage(browser) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 860 } });
  const blocked = [];
  await context.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === "127.0.0.1") return route.continue();
    blocked.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("dialog", (d) => d.accept());
  return { context, page, blocked, problems };
}

/** Link's dialog in the page. */
export function link(page) {
  return page.frameLocator('iframe[title="Plaid Link"]');
}

export async function shot(page, name, fullPage = false) {
  await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage });
}

/** Goes through Link: consent, institution (unless update mode), credentials, MFA code. */
export async function linkThrough(page, { institution = "First Platypus Bank", username = "user_good", password = "pass_good", mfaCode = null, update = false, shots = null }) {
  const frame = link(page);
  await frame.getByRole("heading", { name: /uses Plaid to connect/ }).waitFor({ timeout: 20000 });
  if (shots) await shot(page, `${shots}-1-consent`);
  await frame.getByRole("button", { name: "Continue" }).click();
  if (!update) {
    const search = frame.getByRole("searchbox", { name: "Search institutions" });
    await search.waitFor();
    await search.fill(institution.split(" ")[1] ?? institution);
    if (shots) await shot(page, `${shots}-2-select-institution`);
    await frame.getByRole("button", { name: institution, exact: true }).click();
  }
  if (password === null) return frame;
  await frame.getByLabel("Username").fill(username);
  await frame.getByLabel("Password").fill(password);
  if (shots) await shot(page, `${shots}-3-credentials`);
  await frame.getByRole("button", { name: "Submit" }).click();
  if (mfaCode !== null) {
    await frame.getByLabel("Code").fill(mfaCode);
    if (shots) await shot(page, `${shots}-4-mfa`);
    await frame.getByRole("button", { name: "Submit" }).click();
  }
  return frame;
}

/** The Connected screen, then Continue (HANDOFF, onSuccess). */
export async function handOff(page, shots = null) {
  const frame = link(page);
  await frame.getByRole("heading", { name: "Success" }).waitFor({ timeout: 20000 });
  if (shots) await shot(page, `${shots}-5-connected`);
  await frame.getByRole("button", { name: "Continue" }).click();
}
