// Keeping and ending web sessions in the browser: "Keep me signed in" across
// reloads, the remember:false grace, logout_all from the phone, the page's own
// "Log out", and the same session opened in a second tab (4009, "Use here").

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  Phone,
  T,
  assertNoPageErrors,
  isVisible,
  launchBrowser,
  linkPage,
  newContext,
  openPage,
  screenshot,
  startGateway,
  text,
  waitForState,
  waitForText,
  watchFrames,
} from "./harness.mjs";

const GRACE_MS = 1500;
let gw;
let browser;

before(async () => {
  gw = await startGateway(["--ephemeral-grace-ms", String(GRACE_MS)]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
});

function storage(page) {
  return page.evaluate(() => ({
    local: localStorage.getItem("pairgate.token"),
    session: sessionStorage.getItem("pairgate.token"),
  }));
}

/** Reloads and waits for the page to resume `sessionId` without pairing. */
async function reloadResumes(page, frames, sessionId, account) {
  const from = frames.mark();
  const sentFrom = frames.sent.length;
  await page.reload({ timeout: T });
  const ready = await frames.waitFor((f) => f.type === "ready", { from, what: "ready after the reload" });
  assert.equal(ready.session_id, sessionId, "the same session resumed");
  assert.equal(ready.account, account);
  await waitForState(page, "linked");
  await waitForText(page, "#account", account);
  await waitForText(page, "#phone-status", "Phone connected");
  const after = frames.received.slice(from);
  assert.ok(!after.some((f) => f.type === "qr"), "no QR code was shown after the reload");
  const sentTypes = frames.sent.slice(sentFrom).map((f) => f.type);
  assert.equal(sentTypes[0], "auth", `the page resumed with auth (sent ${sentTypes})`);
  assert.ok(!sentTypes.includes("pair"));
}

test("Keep me signed in: a reload resumes the session without a QR code", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("carol"));
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  await waitForState(page, "pairing");
  assert.equal(await page.locator("#remember").isChecked(), true, "checked by default");
  const { session_id, linked } = await linkPage(page, frames, phone);
  assert.equal(linked.remember, true);
  assert.deepEqual(await storage(page), { local: linked.token, session: null });

  await reloadResumes(page, frames, session_id, "carol");
  await reloadResumes(page, frames, session_id, "carol");

  // Still relays after the reloads.
  await page.locator("#composer-input").fill("still here");
  await page.locator("#composer-input").press("Enter");
  const msg = await phone.next((f) => f.type === "message", "the message after reloads");
  assert.equal(msg.from, session_id);

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("Keep me signed in unchecked: a reload resumes, but not after the grace", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("frank"));
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  await waitForState(page, "pairing");

  // Unchecking while pairing tells the gateway at once (a repeated `pair`).
  const from = frames.mark();
  await page.locator("#remember").uncheck();
  const ok = await frames.waitFor((f) => f.type === "ok", { from, what: "ok to the repeated pair" });
  const pairAgain = frames.sent.find((f) => f.id === ok.id);
  assert.deepEqual(pairAgain, { type: "pair", remember: false, id: ok.id });

  const { session_id, linked, session } = await linkPage(page, frames, phone);
  assert.equal(linked.remember, false);
  assert.equal(session.remember, false);
  assert.deepEqual(await storage(page), { local: null, session: linked.token });

  // Within the grace a reload resumes: sessionStorage survives it in the same tab.
  await reloadResumes(page, frames, session_id, "frank");

  // Closing the tab starts the grace; the session ends when it runs out.
  await page.close();
  const removed = await phone.next(
    (f) => f.type === "session_removed" && f.session_id === session_id,
    "session_removed after the grace",
    GRACE_MS + T,
  );
  assert.equal(removed.reason, "expired");

  // A new tab has no session: the QR code.
  const fresh = await openPage(context, gw.url + "/");
  await waitForState(fresh.page, "pairing");
  assert.equal(fresh.frames.sent[0].type, "pair");
  assert.deepEqual(await storage(fresh.page), { local: null, session: null });
  await fresh.page.close();

  // Even a tab that still held the token (a restored tab) gets no session back:
  // the gateway answers logged_out / 4001, and the page pairs again.
  const restoredPage = await context.newPage();
  await restoredPage.addInitScript(
    ([token, sid]) => {
      if (!sessionStorage.getItem("restored")) {
        sessionStorage.setItem("restored", "1");
        sessionStorage.setItem("pairgate.token", token);
        sessionStorage.setItem("pairgate.session_id", sid);
        sessionStorage.setItem("pairgate.account", "frank");
      }
    },
    [linked.token, session_id],
  );
  const restored = { page: restoredPage, frames: watchFrames(restoredPage) };
  await restoredPage.goto(gw.url + "/", { timeout: T });
  const refused = await restored.frames.waitFor((f) => f.type === "error", { what: "the auth error" });
  assert.equal(refused.code, "logged_out", "an ended session's token gets logged_out, never invalid_token");
  await waitForState(restoredPage, "pairing");
  await waitForText(restoredPage, "#notice", "This session has ended (logged out from your phone or expired). Link this browser again.");
  assert.deepEqual(await storage(restoredPage), { local: null, session: null });

  await phone.close();
  await context.close();
});

test("logout_all from the phone sends the page back to the QR code at once", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("dave"));
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  await linkPage(page, frames, phone);
  await waitForText(page, "#phone-status", "Phone connected");

  const from = frames.mark();
  const ok = await phone.request({ type: "logout_all" });
  assert.deepEqual(ok, { type: "ok", id: ok.id, closed: 1 });
  const loggedOut = await frames.waitFor((f) => f.type === "logged_out", { from, what: "logged_out" });
  assert.equal(loggedOut.reason, "phone_logout_all");
  await waitForState(page, "pairing", 5_000);
  await waitForText(page, "#notice", "Logged out from your phone");
  assert.ok(await isVisible(page, "#notice"));
  assert.ok(await isVisible(page, "#qr svg"));
  assert.deepEqual(await storage(page), { local: null, session: null });
  await screenshot(page, "logged-out");

  // The phone is told nothing about its own logout_all.
  const listed = await phone.request({ type: "list_sessions" });
  assert.deepEqual(listed.sessions, []);
  assert.deepEqual(phone.drain("session_removed"), []);

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("the page's own Log out ends the session; the phone hears self_logout", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("gina"));
  const context = await newContext(browser);
  const { page, frames } = await openPage(context, gw.url + "/");
  const { session_id } = await linkPage(page, frames, phone);

  await page.locator("#logout").click();
  await waitForState(page, "pairing");
  await waitForText(page, "#notice", "You logged out.");
  const removed = await phone.next((f) => f.type === "session_removed", "session_removed");
  assert.deepEqual(removed, { type: "session_removed", session_id, reason: "self_logout" });
  assert.deepEqual(await storage(page), { local: null, session: null });

  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("the same session in a second tab: the first shows 'open in another window' and can take it back", { timeout: 60_000 }, async () => {
  const phone = await Phone.connect(gw, await gw.mintToken("erin"));
  const context = await newContext(browser);
  const first = await openPage(context, gw.url + "/");
  const { session_id } = await linkPage(first.page, first.frames, phone);

  // Same context, so the second tab finds the token in localStorage and resumes.
  const second = await openPage(context, gw.url + "/");
  const ready = await second.frames.waitFor((f) => f.type === "ready", { what: "ready in the second tab" });
  assert.equal(ready.session_id, session_id);
  await waitForState(second.page, "linked");
  await waitForState(first.page, "replaced");
  assert.ok(await first.page.getByRole("heading", { name: "pairgate is open in another window" }).isVisible());
  assert.ok(await isVisible(first.page, "#use-here"));
  assert.equal(await isVisible(first.page, "#screen-linked"), false);
  await screenshot(first.page, "replaced");

  // Messages go to the live tab only.
  const ack = await phone.request({ type: "send", body: { text: "to the live tab" } });
  assert.equal(ack.delivered, 1);
  await second.page.locator("#messages li.msg-in", { hasText: "to the live tab" }).waitFor({ timeout: T });

  // "Use here" takes the session back; now the second tab is the replaced one.
  await first.page.locator("#use-here").click();
  await waitForState(first.page, "linked");
  await waitForText(first.page, "#account", "erin");
  await waitForState(second.page, "replaced");
  const ack2 = await phone.request({ type: "send", body: { text: "back in the first tab" } });
  assert.equal(ack2.delivered, 1);
  await first.page.locator("#messages li.msg-in", { hasText: "back in the first tab" }).waitFor({ timeout: T });

  // A 4009 replacement is no change for the phone: no session_offline / session_online.
  await phone.request({ type: "list_sessions" });
  const presence = phone.queue.filter((f) => f.type === "session_offline" || f.type === "session_online");
  assert.deepEqual(presence, []);

  await phone.close();
  assertNoPageErrors(first.page);
  assertNoPageErrors(second.page);
  await context.close();
});
