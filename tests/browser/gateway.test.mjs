// The page against the gateway process itself: a kill -9 and restart on the
// same data dir (the page shows it is reconnecting, then resumes the same
// session), and the Origin rule as a browser meets it (a page of another
// origin cannot open a socket).

import { test, after } from "node:test";
import assert from "node:assert/strict";

import {
  Phone,
  T,
  assertNoPageErrors,
  launchBrowser,
  linkPage,
  newContext,
  openPage,
  screenshot,
  startGateway,
  waitForState,
  waitForText,
  withTimeout,
} from "./harness.mjs";

const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

test("kill -9 and restart: the page shows it is reconnecting, then resumes the same session", { timeout: 90_000 }, async () => {
  const browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const gw1 = await startGateway();
  cleanups.push(() => gw1.stop()); // after gw2's: it removes the shared data dir
  const token = await gw1.mintToken("ivan");
  let phone = await Phone.connect(gw1, token);
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw1.url + "/");
  const { session_id } = await linkPage(page, frames, phone);
  await page.locator("#composer-input").fill("before the crash");
  await page.locator("#composer-input").press("Enter");
  await phone.next((f) => f.type === "message", "the message before the crash");

  await gw1.kill();
  const closed = await withTimeout(phone.closed, T, "the phone socket to drop");
  assert.notEqual(closed.code, 1000, "no clean close from a killed gateway");
  await waitForState(page, "reconnecting");
  await page.locator("#connection-banner").waitFor({ state: "visible", timeout: T });
  await waitForText(page, "#connection-text", /^Reconnecting/);
  // The conversation stays on screen while the link comes back.
  await page.locator("#messages li.msg-out", { hasText: "before the crash" }).waitFor({ timeout: T });
  await screenshot(page, "reconnecting");

  // Same address, same data dir: the linked session is durable.
  const from = frames.mark();
  const gw2 = await startGateway([], { listen: gw1.hostPort, dataDir: gw1.dataDir });
  cleanups.push(() => gw2.stop());
  phone = await Phone.connect(gw2, token);
  const ready = await frames.waitFor((f) => f.type === "ready", { from, timeout: 40_000, what: "ready after the restart" });
  assert.equal(ready.session_id, session_id);
  await waitForState(page, "linked");
  await page.locator("#connection-banner").waitFor({ state: "hidden", timeout: T });
  await waitForText(page, "#phone-status", "Phone connected");
  await page.locator("#composer-input").fill("after the restart");
  await page.locator("#composer-input").press("Enter");
  const msg = await phone.next((f) => f.type === "message", "the message after the restart");
  assert.deepEqual(msg, { type: "message", from: session_id, body: { text: "after the restart" } });

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("a page of another origin cannot open the gateway's sockets", { timeout: 60_000 }, async () => {
  const browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const target = await startGateway();
  cleanups.push(() => target.stop());
  const other = await startGateway();
  cleanups.push(() => other.stop());
  // The pages' own Content-Security-Policy (connect-src 'self') already
  // stops them from trying; bypass it to see what the gateway itself does
  // with a cross-origin upgrade, as a page without that policy would.
  const context = await newContext(browser, undefined, { bypassCSP: true });
  const { page } = await openPage(context, other.url + "/");
  await waitForState(page, "pairing");

  const attempt = (url) =>
    page.evaluate(
      (u) =>
        new Promise((resolve) => {
          const ws = new WebSocket(u);
          ws.onopen = () => {
            ws.close();
            resolve("open");
          };
          ws.onclose = (ev) => resolve("closed " + ev.code);
        }),
      url,
    );
  // Control: the page's own gateway lets it in.
  assert.equal(await withTimeout(attempt(other.wsUrl + "/ws/web"), T, "the same-origin socket"), "open");
  // Another origin (other port): refused at the upgrade, so never opened.
  assert.equal(await withTimeout(attempt(target.wsUrl + "/ws/web"), T, "the cross-origin web socket"), "closed 1006");
  assert.equal(await withTimeout(attempt(target.wsUrl + "/ws/phone"), T, "the cross-origin phone socket"), "closed 1006");

  await context.close();
});
