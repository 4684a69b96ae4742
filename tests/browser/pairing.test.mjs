// Pairing and relay through the web page in headless Chromium, with a phone
// speaking the contract over `ws`: the QR code really decodes to the payload,
// the phone links with it, messages go both ways, the phone's presence shows,
// while the phone is offline the composer keeps the draft, and a rejected
// link request brings a fresh QR code.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import path from "node:path";

import {
  REPO_ROOT,
  T,
  Phone,
  assertNoPageErrors,
  decodeQr,
  isVisible,
  launchBrowser,
  narrowScreenshot,
  newContext,
  openPage,
  refOf,
  screenshot,
  startGateway,
  text,
  waitForState,
  waitForText,
} from "./harness.mjs";

let gw;
let browser;

before(async () => {
  gw = await startGateway();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

/**
 * With PAIRGATE_DOC_SCREENSHOTS=1, copies a screenshot to docs/screenshots/
 * (the ones the docs show). Opt-in, so that a test run leaves tracked files
 * alone: every run has a new QR code and new times.
 */
function publish(file, name) {
  assert.ok(statSync(file).size > 0);
  if (process.env.PAIRGATE_DOC_SCREENSHOTS !== "1") return;
  const dir = path.join(REPO_ROOT, "docs", "screenshots");
  mkdirSync(dir, { recursive: true });
  copyFileSync(file, path.join(dir, name));
}

test("QR decodes to the payload; phone links with it; relay both ways; phone presence; phone_offline", { timeout: 90_000 }, async () => {
  const token = await gw.mintToken("alice");
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");

  // The pairing screen: the QR code on screen encodes exactly the payload the page got.
  await waitForState(page, "pairing");
  await page.locator("#qr svg").waitFor({ state: "visible", timeout: T });
  const qr = frames.last("qr");
  assert.ok(qr, "the page received a qr frame");
  assert.equal(qr.payload, `${gw.url}/phone#ref=${qr.ref}`, "payload is <public-url>/phone#ref=<REF>");
  assert.match(qr.code, /^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/);
  const decoded = await decodeQr(page);
  assert.equal(decoded, qr.payload, "the QR code on screen decodes to the payload");
  assert.equal(await text(page, "#code"), qr.code, "the code under the QR is the frame's code");
  assert.match(await text(page, "#countdown"), /^Refreshes in (1 second|\d+ seconds)$/);
  assert.ok(await isVisible(page, "#screen-pair"));
  for (const hidden of ["#screen-scanned", "#screen-expired", "#screen-linked", "#screen-replaced", "#screen-connecting"]) {
    assert.equal(await isVisible(page, hidden), false, `${hidden} is hidden while pairing`);
  }
  publish(await screenshot(page, "pairing"), "pairing.png");
  await narrowScreenshot(page, "pairing-narrow");
  // At the narrow size the QR code still fits and still decodes.
  await page.setViewportSize({ width: 390, height: 844 });
  assert.equal(await decodeQr(page), qr.payload, "the QR code decodes at 390x844 too");
  await page.setViewportSize({ width: 1280, height: 800 });

  // The phone scans: link with the decoded ref.
  const phone = await Phone.connect(gw, token);
  const request = await phone.request({ type: "link", ref: refOf(decoded) });
  assert.equal(request.type, "link_request", JSON.stringify(request));
  assert.equal(request.device.name, "Chrome on Linux", "HeadlessChrome counts as Chrome");
  assert.equal(request.device.ip, "127.0.0.1");
  assert.match(request.device.user_agent, /Chrome/);
  await waitForState(page, "scanned");
  assert.ok(await page.getByRole("heading", { name: "Confirm on your phone" }).isVisible());
  assert.equal(await isVisible(page, "#screen-pair"), false);
  await screenshot(page, "scanned");

  const linkedFrom = frames.mark();
  const confirmed = await phone.request({ type: "link_confirm", request_id: request.request_id });
  assert.equal(confirmed.type, "device_linked", JSON.stringify(confirmed));
  assert.equal(confirmed.session.device_name, "Chrome on Linux");
  assert.equal(confirmed.session.online, true);
  const linked = await frames.waitFor((f) => f.type === "linked", { from: linkedFrom, what: "linked" });
  assert.equal(linked.account, "alice");
  assert.equal(linked.session_id, confirmed.session.session_id);
  await waitForState(page, "linked");
  await waitForText(page, "#account", "alice");
  await waitForText(page, "#phone-status", "Phone connected");
  assert.equal(await isVisible(page, "#phone-offline-banner"), false);
  // Remember is on by default: the token went to localStorage.
  const stored = await page.evaluate(() => localStorage.getItem("pairgate.token"));
  assert.equal(stored, linked.token);

  // Web -> phone: Enter in the composer, then the Send button.
  await page.locator("#composer-input").fill("hello from the browser");
  await page.locator("#composer-input").press("Enter");
  const first = await phone.next((f) => f.type === "message", "the first message");
  assert.deepEqual(first, { type: "message", from: linked.session_id, body: { text: "hello from the browser" } });
  await page.locator("#composer-input").fill("second, by the button");
  await page.locator("#send").click();
  const second = await phone.next((f) => f.type === "message", "the second message");
  assert.deepEqual(second.body, { text: "second, by the button" });
  await page.locator('#messages li.msg-out[data-state="sent"]').nth(1).waitFor({ timeout: T });
  assert.equal(await page.locator("#composer-input").inputValue(), "", "the composer is cleared");

  // Phone -> web.
  const ack = await phone.request({ type: "send", body: { text: "hi from the phone" } });
  assert.deepEqual(ack, { type: "ack", id: ack.id, delivered: 1 });
  await page.locator("#messages li.msg-in", { hasText: "hi from the phone" }).waitFor({ timeout: T });
  const texts = await page.locator("#messages li.msg .msg-text").allTextContents();
  assert.deepEqual(texts, ["hello from the browser", "second, by the button", "hi from the phone"]);
  publish(await screenshot(page, "linked"), "linked.png");
  await narrowScreenshot(page, "linked-narrow");

  // The phone goes away: the page says so.
  await phone.close();
  await waitForText(page, "#phone-status", "Phone not connected");
  await page.locator("#phone-offline-banner").waitFor({ state: "visible", timeout: T });
  assert.equal(await page.evaluate(() => document.body.dataset.state), "linked", "still linked, only the phone is away");

  // The composer says so and keeps the draft: Enter sends nothing.
  await page.locator("#composer-offline").waitFor({ state: "visible", timeout: T });
  assert.equal(await page.locator("#send").isDisabled(), true, "Send is off while the phone is away");
  const sentBefore = frames.sent.length;
  await page.locator("#composer-input").fill("are you there?");
  await page.locator("#composer-input").press("Enter");
  assert.equal(await page.locator("#composer-input").inputValue(), "are you there?", "the draft is kept");
  assert.equal(await page.locator("#messages li.msg-out").count(), 2, "no message was added");
  assert.equal(frames.sent.slice(sentBefore).filter((f) => f.type === "send").length, 0, "nothing was sent");
  await screenshot(page, "phone-offline");

  // The phone comes back: "Phone connected", and the draft goes out.
  const phone2 = await Phone.connect(gw, token);
  await waitForText(page, "#phone-status", "Phone connected");
  await page.locator("#phone-offline-banner").waitFor({ state: "hidden", timeout: T });
  await page.locator("#composer-offline").waitFor({ state: "hidden", timeout: T });
  await page.locator("#composer-input").press("Enter");
  const retried = await phone2.next((f) => f.type === "message", "the kept draft");
  assert.deepEqual(retried.body, { text: "are you there?" });
  await page.locator('#messages li.msg-out[data-state="sent"]').nth(2).waitFor({ timeout: T });
  assert.equal(await page.locator("#composer-input").inputValue(), "");

  await phone2.close();
  assertNoPageErrors(page);
  await context.close();
});

test("the phone rejects: the page says so and shows a fresh QR code", { timeout: 60_000 }, async () => {
  const token = await gw.mintToken("bob");
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  await waitForState(page, "pairing");
  const firstQr = frames.last("qr");
  const phone = await Phone.connect(gw, token);

  // Link by the typed code this time, in lower case without the hyphen.
  const typed = firstQr.code.replace("-", "").toLowerCase();
  const request = await phone.request({ type: "link", code: typed });
  assert.equal(request.type, "link_request", JSON.stringify(request));
  await waitForState(page, "scanned");

  const from = frames.mark();
  const ok = await phone.request({ type: "link_reject", request_id: request.request_id });
  assert.equal(ok.type, "ok");
  await frames.waitFor((f) => f.type === "pair_rejected", { from, what: "pair_rejected" });
  const fresh = await frames.waitFor((f) => f.type === "qr", { from, what: "the fresh qr" });
  await waitForState(page, "pairing");
  await waitForText(page, "#notice", "Link request was rejected");
  assert.ok(await isVisible(page, "#notice"));
  assert.notEqual(fresh.ref, firstQr.ref, "a new ref");
  assert.equal(fresh.remaining, firstQr.remaining, "a new attempt: remaining is qr_rotations - 1 again");
  await waitForText(page, "#code", fresh.code);
  assert.equal(await decodeQr(page), fresh.payload, "the fresh QR code decodes to the fresh payload");
  await screenshot(page, "rejected");

  // The rejected ref is spent; the fresh one links.
  const stale = await phone.request({ type: "link", ref: firstQr.ref });
  assert.equal(stale.code, "unknown_ref");
  const again = await phone.request({ type: "link", ref: fresh.ref });
  assert.equal(again.type, "link_request");
  await waitForState(page, "scanned");
  const done = await phone.request({ type: "link_confirm", request_id: again.request_id });
  assert.equal(done.type, "device_linked");
  await waitForState(page, "linked");
  await waitForText(page, "#account", "bob");

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("in a dark colour scheme the QR code still decodes", { timeout: 60_000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "dark" });
  const { page, frames } = await openPage(context, gw.url + "/");
  await waitForState(page, "pairing");
  await page.locator("#qr svg").waitFor({ state: "visible", timeout: T });
  assert.equal(await page.evaluate(() => matchMedia("(prefers-color-scheme: dark)").matches), true);
  assert.equal(await decodeQr(page), frames.last("qr").payload);
  await screenshot(page, "pairing-dark");
  assertNoPageErrors(page);
  await context.close();
});
