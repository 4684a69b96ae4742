// QR rotation and expiry in the browser, with short TTLs: the code and the QR
// image change every qr_ttl_ms, the last one expires into the "QR code
// expired" screen, and "Reload QR code" starts over with a fresh one.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  Phone,
  T,
  assertNoPageErrors,
  decodeShownQr,
  isVisible,
  launchBrowser,
  newContext,
  openPage,
  screenshot,
  startGateway,
  text,
  waitForState,
  waitForText,
} from "./harness.mjs";

const TTL_MS = 1500;
const ROTATIONS = 2;
let gw;
let browser;

before(async () => {
  gw = await startGateway(["--qr-ttl-ms", String(TTL_MS), "--qr-rotations", String(ROTATIONS)]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

test("the QR code rotates, expires, and Reload QR code starts over", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("hank"));
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");

  const q1 = await frames.waitFor((f) => f.type === "qr", { what: "the first qr" });
  assert.equal(q1.remaining, ROTATIONS - 1);
  assert.ok(q1.expires_in_ms > 0 && q1.expires_in_ms <= TTL_MS, `expires_in_ms ${q1.expires_in_ms}`);
  await waitForState(page, "pairing");
  const first = await decodeShownQr(page, frames);
  assert.equal(first.decoded, first.qr.payload, "the QR code decodes to its payload");

  // The rotation: a new ref, code and QR image, and the last one says so.
  const i1 = frames.received.indexOf(q1);
  const q2 = await frames.waitFor((f) => f.type === "qr", { from: i1 + 1, timeout: TTL_MS + T, what: "the rotated qr" });
  assert.equal(q2.remaining, 0);
  assert.notEqual(q2.ref, q1.ref);
  assert.notEqual(q2.code, q1.code);
  await waitForText(page, "#code", q2.code);
  const second = await decodeShownQr(page, frames);
  assert.equal(second.qr, q2);
  assert.equal(second.decoded, q2.payload, "the QR image changed with the ref");
  assert.match(await text(page, "#countdown"), /^(Last code: expires in (1 second|\d+ seconds)|Expiring…)$/);
  const stale = await phone.request({ type: "link", ref: q1.ref });
  assert.equal(stale.code, "unknown_ref", "a rotated-out ref is dead");

  // The last ref runs out: pair_timeout, and the expired screen.
  await frames.waitFor((f) => f.type === "pair_timeout", { timeout: TTL_MS + T, what: "pair_timeout" });
  await waitForState(page, "expired");
  assert.ok(await page.getByRole("heading", { name: "QR code expired" }).isVisible());
  assert.ok(await isVisible(page, "#reload-qr"));
  assert.equal(await isVisible(page, "#screen-pair"), false);
  await screenshot(page, "expired");
  const dead = await phone.request({ type: "link", ref: q2.ref });
  assert.equal(dead.code, "unknown_ref", "the expired ref is dead");

  // Reload QR code: a new attempt with the full number of rotations.
  const from = frames.mark();
  await page.locator("#reload-qr").click();
  const q3 = await frames.waitFor((f) => f.type === "qr", { from, what: "the fresh qr" });
  await waitForState(page, "pairing");
  assert.equal(q3.remaining, ROTATIONS - 1);
  assert.ok(![q1.ref, q2.ref].includes(q3.ref));
  await waitForText(page, "#code", /^[0-9A-Z]{4}-[0-9A-Z]{4}$/);
  const third = await decodeShownQr(page, frames);
  assert.equal(third.decoded, third.qr.payload);

  // And it works: link with the ref shown now. With a short TTL the code may
  // rotate between reading it and the link; then the page has been sent a
  // newer qr: wait for that event (not a guessed while) and link with it.
  let shown = frames.last("qr");
  let request = await phone.request({ type: "link", ref: shown.ref });
  if (request.code === "unknown_ref") {
    shown = await frames.waitFor((f) => f.type === "qr", {
      from: frames.received.indexOf(shown) + 1,
      what: "the qr that replaced the one the phone was too late for",
    });
    request = await phone.request({ type: "link", ref: shown.ref });
  }
  assert.equal(request.type, "link_request", JSON.stringify(request));
  await waitForState(page, "scanned");
  const linked = await phone.request({ type: "link_confirm", request_id: request.request_id });
  assert.equal(linked.type, "device_linked");
  await waitForState(page, "linked");
  await waitForText(page, "#account", "hank");

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});
