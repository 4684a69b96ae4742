// The page as a person uses it: typing a code while it rotates, a phone-sized
// screen with the keyboard up, message bodies that are plain strings, the
// composer while the phone is away (pairing.test.mjs), and a German browser.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import path from "node:path";

import {
  NARROW,
  Phone,
  REPO_ROOT,
  T,
  assertNoPageErrors,
  launchBrowser,
  linkPage,
  newContext,
  openPage,
  screenshot,
  startGateway,
  text,
  waitForState,
  waitForText,
} from "./harness.mjs";

const TTL_MS = 2000;
let gw;
let browser;

before(async () => {
  // --demo: the German test also opens the demo phone page.
  gw = await startGateway(["--qr-ttl-ms", String(TTL_MS), "--qr-rotations", "4", "--demo"]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

/** Copies a screenshot to docs/screenshots/ with PAIRGATE_DOC_SCREENSHOTS=1. */
function publish(file, name) {
  assert.ok(statSync(file).size > 0);
  if (process.env.PAIRGATE_DOC_SCREENSHOTS !== "1") return;
  const dir = path.join(REPO_ROOT, "docs", "screenshots");
  mkdirSync(dir, { recursive: true });
  copyFileSync(file, path.join(dir, name));
}

test("Link with code instead: one code until it expires, the new one announced politely", { timeout: 60_000 }, async () => {
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  await waitForState(page, "pairing");
  await page.locator("#toggle-code").click();
  assert.equal(await page.locator("#toggle-code").getAttribute("aria-pressed"), "true");
  assert.match(await text(page, "#countdown"), /^(This code expires in (1 second|\d+ seconds)|Refreshing…)$/);

  // Typing starts: the code on screen is the one of the last qr frame, and
  // stays until the next one replaces it (its predecessor has expired then).
  const from = frames.mark();
  const before = frames.last("qr");
  assert.equal(await text(page, "#code"), before.code.toUpperCase());
  assert.equal(await text(page, "#code-news"), "", "nothing to announce yet");
  const next = await frames.waitFor((f) => f.type === "qr", { from, timeout: TTL_MS + T, what: "the next qr" });
  assert.notEqual(next.code, before.code);

  // The replacement is said, politely, with the new code, and the QR
  // announcement (meant for scanners) is not made on top of it.
  await waitForText(page, "#code-news", `That code expired. New code: ${next.code.toUpperCase()}`);
  await waitForText(page, "#code", next.code.toUpperCase());
  const news = page.locator("#code-news");
  assert.equal(await news.getAttribute("aria-live"), "polite");
  assert.equal(await news.getAttribute("role"), "status");
  assert.notEqual(await text(page, "#live"), "New QR code shown. Scan it with your phone.");
  await screenshot(page, "code-mode-rotated");

  // Back to the QR code: the news is cleared.
  await page.locator("#toggle-code").click();
  assert.equal(await text(page, "#code-news"), "");
  assertNoPageErrors(page);
  await context.close();
});

test("phone-sized screen: the composer stays in view with the keyboard up (dvh)", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("mia"));
  const context = await newContext(browser, NARROW, { isMobile: true, hasTouch: true });
  const { page, frames } = await openPage(context, gw.url + "/");
  await linkPage(page, frames, phone);

  // The stylesheet sizes the chat by the dynamic viewport, with a fallback.
  const rules = await page.evaluate(() =>
    [...document.styleSheets].flatMap((sheet) => [...sheet.cssRules].map((r) => r.cssText)).join("\n"),
  );
  assert.match(rules, /100dvh/, "dynamic viewport units are used");

  const composerInView = async () => {
    const box = await page.locator("#composer").boundingBox();
    const height = await page.evaluate(() => window.innerHeight);
    return { bottom: box.y + box.height, height };
  };
  let { bottom, height } = await composerInView();
  assert.ok(bottom <= height, `composer bottom ${bottom} within the ${height}px viewport`);
  publish(await screenshot(page, "linked-phone"), "linked-phone.png");

  // The on-screen keyboard takes about half the screen: the visible
  // viewport shrinks, and the composer must still be above the keyboard.
  await page.setViewportSize({ width: NARROW.width, height: 450 });
  await page.locator("#composer-input").focus();
  ({ bottom, height } = await composerInView());
  assert.ok(bottom <= height, `with the keyboard up: composer bottom ${bottom} within ${height}px`);
  publish(await screenshot(page, "linked-phone-keyboard"), "linked-phone-keyboard.png");

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("a message body that is a JSON string shows as its text; objects as JSON", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("noah"));
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  await linkPage(page, frames, phone);
  await waitForText(page, "#phone-status", "Phone connected");

  for (const body of ["hello", { a: 1 }, 42, { text: "with text" }]) {
    const ack = await phone.request({ type: "send", body });
    assert.equal(ack.type, "ack");
  }
  await page.locator("#messages li.msg-in").nth(3).waitFor({ timeout: T });
  const texts = await page.locator("#messages li.msg-in .msg-text").allTextContents();
  assert.deepEqual(texts, ["hello", '{"a":1}', "42", "with text"]);

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("a German browser gets the German pages (web client and demo phone), plurals by Intl.PluralRules", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("lena"));
  const context = await newContext(browser, undefined, { locale: "de-DE" });
  const { page, frames } = await openPage(context, gw.url + "/");
  await waitForState(page, "pairing");
  assert.equal(await page.evaluate(() => document.documentElement.lang), "de");
  assert.equal(await text(page, "#pair-title"), "pairgate auf diesem Computer verwenden");
  assert.equal(await text(page, "#toggle-code"), "Stattdessen mit Code verknüpfen");
  assert.match(await text(page, "#countdown"), /^(Wird in (1 Sekunde|\d+ Sekunden) erneuert|Wird erneuert…)$/);

  // Every English string has a German one, and plurals pick their form.
  const check = await page.evaluate(async () => {
    const m = await import(new URL("static/i18n.js", location.href).href);
    const missing = Object.keys(m.STRINGS.en).filter((k) => !(k in m.STRINGS.de));
    return { missing, one: m.t("pair.refreshes_in", { n: 1 }), many: m.t("pair.refreshes_in", { n: 5 }) };
  });
  assert.deepEqual(check.missing, []);
  assert.equal(check.one, "Wird in 1 Sekunde erneuert");
  assert.equal(check.many, "Wird in 5 Sekunden erneuert");

  await linkPage(page, frames, phone);
  await waitForText(page, "#phone-status", "Telefon verbunden");
  assert.equal(await text(page, "#logout"), "Abmelden");
  await phone.close();
  await waitForText(page, "#phone-status", "Telefon nicht verbunden");
  await screenshot(page, "linked-de-phone-offline");

  // The demo phone page speaks German too, from the same table: sign-in,
  // the session list, a message's delivery (plural), Close all sessions.
  const { page: demo } = await openPage(context, gw.url + "/phone");
  await waitForText(demo, "#signin-title", "Auf deinem Telefon anmelden");
  assert.equal(await demo.evaluate(() => document.documentElement.lang), "de");
  assert.equal(await demo.title(), "pairgate-Telefon (Demo)");
  assert.equal(await text(demo, "#create-demo"), "Demo-Konto anlegen");
  assert.equal(
    await demo.locator("#token-input").getAttribute("placeholder"),
    "Füge das Token ein, das pairgate token --account NAME ausgibt",
  );
  await demo.locator("#token-input").fill(await gw.mintToken("lena"));
  await demo.locator("#use-token").click();
  await waitForText(demo, "#phone-state", "verbunden");
  await waitForText(page, "#phone-status", "Telefon verbunden");
  await waitForText(demo, "#sessions .session-detail", "127.0.0.1 · jetzt online");
  assert.equal(await text(demo, "#sessions .session-logout"), "Abmelden");
  assert.equal(await text(demo, "#sessions-title"), "Verknüpfte Geräte");
  await demo.locator("#phone-composer-input").fill("hallo");
  await demo.locator("#phone-send").click();
  await waitForText(demo, ".msg-out .msg-status", "An 1 Gerät zugestellt");
  assert.equal(await text(demo, ".msg-out .msg-sender"), "An alle Geräte");
  await demo.locator("#logout-all").click();
  await waitForText(demo, "#logout-all-confirm", "Ja, alle abmelden");
  await demo.locator("#logout-all-confirm").click();
  await waitForText(demo, "#logout-all-result", "1 Sitzung beendet");
  await waitForText(demo, "#sessions", "Noch keine verknüpften Geräte.");
  const english = /\b(Sign in|Sign out|Linked devices|Link a device|Close all sessions|Messages|All devices|Phone token|No linked devices|Delivered)\b/;
  const shown = await demo.evaluate(() => document.body.innerText);
  assert.doesNotMatch(shown, english, "English left on the German demo phone page");
  await screenshot(demo, "demo-phone-de");
  assertNoPageErrors(demo);
  assertNoPageErrors(page);
  await context.close();
});
