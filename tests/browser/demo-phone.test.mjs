// The demo phone page (`serve --demo`) driving the web page, both in
// Chromium: create a demo account, link the web page by its typed code,
// list the session, chat both ways, close all sessions; then link again the
// way a phone camera would, by opening the QR code's payload URL.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  T,
  assertNoPageErrors,
  decodeQr,
  isVisible,
  launchBrowser,
  narrowScreenshot,
  newContext,
  openPage,
  screenshot,
  startGateway,
  text,
  waitForState,
  waitForText,
} from "./harness.mjs";

let gw;
let browser;

before(async () => {
  gw = await startGateway(["--demo"]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

test("the demo phone page links, lists, chats with and logs out the web page", { timeout: 90_000 }, async () => {
  // The phone and the computer are different devices: separate contexts.
  const phoneContext = await newContext(browser);
  const webContext = await newContext(browser);

  const { page: phone } = await openPage(phoneContext, gw.url + "/phone");
  await waitForState(phone, "signed-out");
  await phone.locator("#create-demo").click();
  await waitForState(phone, "ready");
  await waitForText(phone, "#phone-state", "connected");
  const account = await text(phone, "#phone-account");
  assert.match(account, /^demo-[0-9a-v]+$/);
  await waitForText(phone, "#sessions", "No linked devices yet.");

  const { page: web, frames } = await openPage(webContext, gw.url + "/");
  await waitForState(web, "pairing");
  // "Link with code instead": the code, large, in place of the QR code.
  await web.locator("#toggle-code").click();
  assert.equal(await web.locator("#toggle-code").getAttribute("aria-pressed"), "true");
  await web.locator("#qr").waitFor({ state: "hidden", timeout: T });
  await waitForText(web, "#toggle-code", "Scan QR code instead");
  const code = await text(web, "#code");
  assert.equal(code, frames.last("qr").code);
  await screenshot(web, "pairing-code-mode");

  // Type the code on the phone page.
  await phone.locator("#code-input").fill(code);
  await phone.locator("#link-code").click();
  await phone.locator("#link-request").waitFor({ state: "visible", timeout: T });
  await waitForText(phone, "#link-device-name", "Chrome on Linux");
  await waitForText(phone, "#link-device-ip", "127.0.0.1");
  await waitForState(web, "scanned");
  await screenshot(phone, "demo-link-request");
  await narrowScreenshot(phone, "demo-link-request-narrow");

  await phone.locator("#confirm-link").click();
  await waitForState(web, "linked");
  await waitForText(web, "#account", account);
  await waitForText(web, "#phone-status", "Phone connected");
  await phone.locator("#link-request").waitFor({ state: "hidden", timeout: T });
  const row = phone.locator("#sessions .session");
  await row.first().waitFor({ timeout: T });
  assert.equal(await row.count(), 1);
  assert.equal(await row.getAttribute("data-session-id"), frames.last("linked").session_id);
  assert.equal(await row.locator(".session-name").textContent(), "Chrome on Linux");
  await phone.locator('#sessions .session .session-online[data-online="true"]').waitFor({ timeout: T });

  // Phone page -> web page.
  await phone.locator("#phone-composer-input").fill("hello from the demo phone");
  await phone.locator("#phone-send").click();
  await web.locator("#messages li.msg-in", { hasText: "hello from the demo phone" }).waitFor({ timeout: T });
  const sent = phone.locator('#phone-messages li.msg-out[data-state="sent"]');
  await sent.waitFor({ timeout: T });
  assert.match(await sent.textContent(), /Delivered to 1 device/);

  // Web page -> phone page.
  await web.locator("#composer-input").fill("hello back from the browser");
  await web.locator("#composer-input").press("Enter");
  const incoming = phone.locator("#phone-messages li.msg-in", { hasText: "hello back from the browser" });
  await incoming.waitFor({ timeout: T });
  assert.equal(await incoming.locator(".msg-sender").textContent(), "Chrome on Linux");
  await screenshot(phone, "demo-sessions", { fullPage: true });

  // Close all sessions, through its confirmation.
  await phone.locator("#logout-all").click();
  await phone.locator("#logout-all-box").waitFor({ state: "visible", timeout: T });
  await phone.locator("#logout-all-confirm").click();
  await waitForText(phone, "#logout-all-result", "Closed 1 session");
  await waitForState(web, "pairing");
  await waitForText(web, "#notice", "Logged out from your phone");
  await waitForText(phone, "#sessions", "No linked devices yet.");

  // Link again as a phone camera would: open the QR code's payload URL.
  await web.locator("#toggle-code").click();
  await web.locator("#qr svg").waitFor({ state: "visible", timeout: T });
  const payload = await decodeQr(web);
  assert.equal(payload, frames.last("qr").payload);
  await phone.close();
  const { page: scanner, frames: scannerFrames } = await openPage(phoneContext, payload);
  // Opening the link sends nothing on its own: it says what would happen
  // and waits for a deliberate "Link this device".
  await scanner.locator("#ref-prompt").waitFor({ state: "visible", timeout: T });
  await waitForState(scanner, "ready");
  await scannerFrames.waitFor((f) => f.type === "sessions", { what: "the session list" });
  assert.equal(scannerFrames.sent.filter((f) => f.type === "link").length, 0, "no link before the click");
  assert.equal(await isVisible(scanner, "#link-request"), false);
  assert.equal(await web.evaluate(() => document.body.dataset.state), "pairing", "the web page was not scanned");
  await screenshot(scanner, "demo-ref-prompt");
  await scanner.locator("#link-ref").click();
  await scanner.locator("#link-request").waitFor({ state: "visible", timeout: T });
  await waitForText(scanner, "#link-device-name", "Chrome on Linux");
  assert.match(await text(scanner, "#link-device-ip"), /^127\.0\.0\.1$/, "the asking device's address is shown");
  assert.equal(await isVisible(scanner, "#ref-prompt"), false);
  await waitForState(web, "scanned");
  assert.equal(new URL(scanner.url()).hash, "", "the ref is dropped from the address once used");
  // Confirm is not focused: a stray Enter does not link.
  assert.notEqual(await scanner.evaluate(() => document.activeElement && document.activeElement.id), "confirm-link");
  await scanner.keyboard.press("Enter");
  assert.equal(await isVisible(scanner, "#link-request"), true, "Enter alone did not answer the request");
  await scanner.locator("#confirm-link").click();
  await waitForState(web, "linked");
  await waitForText(web, "#account", account);
  await scanner.locator("#sessions .session").first().waitFor({ timeout: T });
  assert.equal(await isVisible(scanner, "#phone-replaced"), false);

  assertNoPageErrors(web);
  assertNoPageErrors(scanner);
  await phoneContext.close();
  await webContext.close();
});

test("a page of another origin cannot frame the demo phone, and Dismiss drops an opened ref", { timeout: 60_000 }, async () => {
  const other = await startGateway();
  try {
    const context = await newContext(browser);
    // Another origin's page frames /phone#ref=...: the browser refuses to
    // render it (frame-ancestors 'none', X-Frame-Options: DENY).
    const { page } = await openPage(context, other.url + "/");
    const framed = gw.url + "/phone#ref=AAAAAAAAAAAAAAAAAAAAAAAA";
    await page.evaluate((src) => {
      const f = document.createElement("iframe");
      f.id = "framed";
      f.src = src;
      document.body.appendChild(f);
    }, framed);
    const handle = await page.locator("#framed").elementHandle({ timeout: T });
    let frame = null;
    const deadline = Date.now() + T;
    while (Date.now() < deadline) {
      frame = await handle.contentFrame();
      if (frame && frame.url() !== "about:blank") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(frame, "the iframe has a frame");
    // Give the blocked navigation time to settle, then look: no demo phone in it.
    await frame.waitForLoadState("load", { timeout: T }).catch(() => {});
    assert.equal(await frame.locator("#link-ref").count(), 0, "the demo phone rendered inside another origin's frame");
    assert.equal(await frame.locator("#create-demo").count(), 0);

    // Opened directly with a ref and signed in: Dismiss drops it, nothing is sent.
    const { page: phone, frames } = await openPage(context, gw.url + "/phone");
    await phone.locator("#create-demo").click();
    await waitForState(phone, "ready");
    await phone.goto(gw.url + "/phone#ref=BBBBBBBBBBBBBBBBBBBBBBBB", { timeout: T });
    await phone.locator("#ref-prompt").waitFor({ state: "visible", timeout: T });
    await phone.locator("#dismiss-ref").click();
    await phone.locator("#ref-prompt").waitFor({ state: "hidden", timeout: T });
    assert.equal(new URL(phone.url()).hash, "");
    assert.equal(frames.sent.filter((f) => f.type === "link").length, 0);
    assertNoPageErrors(phone);
    await context.close();
  } finally {
    await other.stop();
  }
});

test("without --demo, /phone explains what to use instead and asks for no token", { timeout: 60_000 }, async () => {
  const plain = await startGateway();
  try {
    const context = await newContext(browser);
    const { page } = await openPage(context, plain.url + "/phone#ref=AAAAAAAAAAAAAAAAAAAAAAAA");
    await page.locator("h1").waitFor({ timeout: T });
    assert.match(await text(page, "main"), /\/ws\/phone/);
    assert.equal(await page.locator("textarea, input, form, button").count(), 0);
    await screenshot(page, "no-demo-phone");
    const { page: web } = await openPage(context, plain.url + "/");
    await waitForState(web, "pairing");
    assert.equal(await web.locator('a[href="/phone"]').count(), 0, "/ links to no demo phone");
    assertNoPageErrors(web);
    assertNoPageErrors(page);
    await context.close();

    // In the browser's language, from the same strings table as the other pages.
    const german = await newContext(browser, undefined, { locale: "de-DE" });
    const { page: de } = await openPage(german, plain.url + "/phone");
    await waitForText(de, "h1", "Mit deinem Telefon verknüpfen");
    assert.equal(await de.evaluate(() => document.documentElement.lang), "de");
    assert.equal(await de.title(), "pairgate-Telefon");
    assert.deepEqual(await de.locator("main code").allTextContents(), ["pairgate phone", "/ws/phone"]);
    assert.match(await text(de, "main"), /Telefon-Token/);
    assert.doesNotMatch(await text(de, "main"), /\b(Link with|does not serve|Never paste|Back)\b/, "English left");
    await screenshot(de, "no-demo-phone-de");
    assertNoPageErrors(de);
    await german.close();
  } finally {
    await plain.stop();
  }
});
