// WCAG 2.2 AA in real Chromium, in the light and the dark colour scheme:
// axe-core (assertAccessible) on every screen state of the web page, the demo
// phone page and /phone without --demo; beside it the checks axe does not
// make: form controls' borders and the focus indicator against what is
// around them (1.4.11, at least 3:1), and where focus lands when the control
// holding it goes away ("Reload QR code", "Use here", "Log out", Retry, a
// link request answered...): on the new screen's heading, never <body>.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  Phone,
  T,
  assertAccessible,
  assertNoPageErrors,
  launchBrowser,
  newContext,
  openPage,
  screenshot,
  startGateway,
  text,
  waitForState,
  waitForText,
  withTimeout,
} from "./harness.mjs";

const SCHEMES = ["light", "dark"];
// A body over 1024 bytes is refused (`too_large`), so a send can fail and
// show its error and Retry.
const MAX_FRAME_BYTES = 2048;
const TOO_LONG = "This message is too long for this gateway. ".repeat(24);
let gw; // --demo: the web page and the demo phone
let short; // no --demo, one short-lived code: the expired screen and /phone
let browser;

before(async () => {
  gw = await startGateway(["--demo", "--max-frame-bytes", String(MAX_FRAME_BYTES)]);
  short = await startGateway(["--qr-ttl-ms", "1000", "--qr-rotations", "1"]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await short?.stop();
});

function schemeContext(scheme, options = {}) {
  return newContext(browser, undefined, { colorScheme: scheme, ...options });
}

/**
 * The contrast axe does not measure. WCAG 1.4.11: every visible text
 * field's border against the field's own background and against what is
 * behind the field, and the focus colour (`--focus`, drawn 2 px outside every
 * focusable element) against what is behind each focusable element; at least
 * 3:1. WCAG 1.4.3 for the text axe leaves "to review" because the body's
 * background is a gradient: the top bar's text on the band, the footer's
 * link on the page background; at least 4.5:1. Returns the shortfalls, one
 * line each.
 */
function contrastAxeLeaves(page) {
  return page.evaluate(() => {
    const probe = document.createElement("span");
    document.body.append(probe);
    const rgba = (css) => {
      probe.style.color = "";
      probe.style.color = css;
      const m = /rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/.exec(getComputedStyle(probe).color);
      return m ? [Number(m[1]), Number(m[2]), Number(m[3]), m[4] === undefined ? 1 : Number(m[4])] : null;
    };
    const luminance = ([r, g, b]) => {
      const lin = (c) => ((c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const ratio = (a, b) => {
      const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
      return (x + 0.05) / (y + 0.05);
    };
    const root = getComputedStyle(document.documentElement);
    // The page background: body paints it (a band on top, then --bg).
    const pageBg = rgba(root.getPropertyValue("--bg").trim());
    /** The first opaque background at or above `node` (the band is above every control). */
    const behind = (node) => {
      for (let n = node; n && n !== document.body; n = n.parentElement) {
        const c = rgba(getComputedStyle(n).backgroundColor);
        if (c && c[3] === 1) return c;
      }
      return pageBg;
    };
    const hex = (c) => "#" + c.slice(0, 3).map((v) => v.toString(16).padStart(2, "0")).join("");
    const name = (n) => n.localName + (n.id ? "#" + n.id : "") + (n.className && typeof n.className === "string" ? "." + n.className.trim().split(/\s+/).join(".") : "");
    const visible = (n) => n.getClientRects().length > 0 && getComputedStyle(n).visibility !== "hidden";
    const shortfalls = [];
    const need = (what, node, fg, bg, least = 3) => {
      const r = ratio(fg, bg);
      if (r < least) shortfalls.push(`${name(node)}: ${what} ${hex(fg)} on ${hex(bg)} is ${r.toFixed(2)}:1, needs ${least}:1`);
    };
    for (const field of document.querySelectorAll("input:not([type=checkbox]):not([type=hidden]), textarea, select")) {
      if (!visible(field) || field.disabled) continue;
      const style = getComputedStyle(field);
      const border = rgba(style.borderTopColor);
      need("border against its background", field, border, behind(field));
      need("border against the background around it", field, border, behind(field.parentElement));
    }
    const focus = rgba(root.getPropertyValue("--focus").trim());
    const focusable = "a[href], button, input, textarea, select, [tabindex]";
    for (const node of document.querySelectorAll(focusable)) {
      if (!visible(node) || node.disabled) continue;
      need("focus outline against the background around it", node, focus, behind(node.parentElement));
    }
    const band = rgba(root.getPropertyValue("--band").trim());
    for (const node of document.querySelectorAll(".topbar, .topbar *")) {
      if (visible(node)) need("text on the band", node, rgba(getComputedStyle(node).color), band, 4.5);
    }
    for (const node of document.querySelectorAll(".footnote, .footnote *")) {
      if (visible(node)) need("text on the page background", node, rgba(getComputedStyle(node).color), pageBg, 4.5);
    }
    probe.remove();
    return shortfalls;
  });
}

/**
 * One screen state: axe's WCAG A/AA rules and the contrast above;
 * the dark scheme's states are also kept as screenshots. Findings are
 * collected so one run lists every state's.
 */
async function checkState(findings, page, scheme, state) {
  const label = `${state} (${scheme})`;
  try {
    await assertAccessible(page, label);
  } catch (err) {
    findings.push(err.message);
  }
  const shortfalls = await contrastAxeLeaves(page);
  if (shortfalls.length) findings.push(`${label}: contrast axe does not measure:\n  ${shortfalls.join("\n  ")}`);
  if (scheme === "dark") await screenshot(page, `a11y-${state}-dark`, { fullPage: true });
}

function assertNoFindings(findings) {
  assert.equal(findings.length, 0, "\n" + findings.join("\n"));
}

/** The id (or tag) of the focused element. */
function focused(page) {
  return page.evaluate(() => {
    const node = document.activeElement;
    return !node || node === document.body ? "body" : node.id || node.localName;
  });
}

for (const scheme of SCHEMES) {
  test(`web page (${scheme}): connecting, reconnecting, pairing by QR and by code, scanned, linked, a failed send, phone offline, replaced, logged out`, { timeout: 120_000 }, async () => {
    const findings = [];
    const context = await schemeContext(scheme);

    // Connecting: a socket that opens but never says hello; then it closes
    // (1012) and the page counts down to its next try, with Retry now.
    {
      const page = await context.newPage();
      let route;
      let onOpen;
      const opened = new Promise((resolve) => (onOpen = resolve));
      await page.routeWebSocket(/\/ws\/web$/, (ws) => {
        route = ws;
        onOpen();
      });
      await page.goto(gw.url + "/", { timeout: T });
      assert.equal(await page.evaluate((s) => matchMedia(`(prefers-color-scheme: ${s})`).matches, scheme), true);
      await withTimeout(opened, T, "the page's socket");
      await waitForState(page, "connecting");
      await waitForText(page, "#connecting-text", "Connecting…");
      await checkState(findings, page, scheme, "web-connecting");
      await route.close({ code: 1012, reason: "restart" });
      await waitForState(page, "reconnecting");
      await page.locator("#retry-now").waitFor({ state: "visible", timeout: T });
      await checkState(findings, page, scheme, "web-reconnecting");
      await page.close();
    }

    const phone = await Phone.connect(gw, await gw.mintToken(`ada-${scheme}`));
    const { page, frames } = await openPage(context, gw.url + "/");
    await waitForState(page, "pairing");
    await page.locator("#qr svg").waitFor({ state: "visible", timeout: T });
    await checkState(findings, page, scheme, "web-pairing-qr");
    await page.locator("#toggle-code").click();
    await page.locator("#qr").waitFor({ state: "hidden", timeout: T });
    await checkState(findings, page, scheme, "web-pairing-code");
    await page.locator("#toggle-code").click();

    // Scanned, then linked: messages both ways, one refused with Retry.
    const request = await phone.request({ type: "link", ref: frames.last("qr").ref });
    assert.equal(request.type, "link_request", JSON.stringify(request));
    await waitForState(page, "scanned");
    await checkState(findings, page, scheme, "web-scanned");
    const confirmed = await phone.request({ type: "link_confirm", request_id: request.request_id });
    assert.equal(confirmed.type, "device_linked");
    await waitForState(page, "linked");
    await waitForText(page, "#phone-status", "Phone connected");
    await page.locator("#composer-input").fill(TOO_LONG);
    await page.locator("#composer-input").press("Enter");
    await page.locator('#messages li.msg-out[data-state="failed"] .msg-retry').waitFor({ timeout: T });
    await page.locator("#composer-input").fill("hello from the browser");
    await page.locator("#composer-input").press("Enter");
    await page.locator('#messages li.msg-out[data-state="sent"]').waitFor({ timeout: T });
    await phone.request({ type: "send", body: { text: "hi from the phone" } });
    await page.locator("#messages li.msg-in").waitFor({ timeout: T });
    await checkState(findings, page, scheme, "web-linked-messages");
    // Retry goes away with the error it belonged to: focus stays on its message.
    const failedBefore = await page.locator('#messages li.msg-out[data-state="failed"]').count();
    await page.locator(".msg-retry").click();
    await page.locator('#messages li.msg-out[data-state="failed"] .msg-retry').waitFor({ timeout: T });
    assert.equal(await page.locator('#messages li.msg-out[data-state="failed"]').count(), failedBefore);
    assert.equal(await page.evaluate(() => document.activeElement.matches("li.msg-out[data-state=failed]")), true);

    // The phone goes away: the banner, and the composer that keeps the draft.
    await phone.close();
    await page.locator("#composer-offline").waitFor({ state: "visible", timeout: T });
    await page.locator("#composer-input").fill("a draft");
    await checkState(findings, page, scheme, "web-phone-offline");

    // The same session in a second tab: this one is replaced; Use here.
    const phone2 = await Phone.connect(gw, await gw.mintToken(`ada-${scheme}`));
    const second = await openPage(context, gw.url + "/");
    await waitForState(second.page, "linked");
    await waitForState(page, "replaced");
    assert.equal(await focused(page), "use-here");
    await checkState(findings, page, scheme, "web-replaced");
    await page.locator("#use-here").click();
    await waitForState(page, "linked");
    await waitForState(second.page, "replaced");
    // Focus goes to the screen's heading, not to <body> with the button gone.
    await page.waitForFunction(() => document.activeElement !== document.body, null, { timeout: T });
    assert.equal(await focused(page), "account", "after Use here the linked screen's heading has focus");
    await second.page.close();

    // Logged out from the phone: back to the QR code, with the notice.
    const ok = await phone2.request({ type: "logout_all" });
    assert.equal(ok.type, "ok");
    await waitForState(page, "pairing");
    await waitForText(page, "#notice", "Logged out from your phone");
    await page.locator("#qr svg").waitFor({ state: "visible", timeout: T });
    await checkState(findings, page, scheme, "web-logged-out");

    // Linked again with the connection lost: the conversation stays, with
    // its banner. The socket runs through Playwright, which drops it.
    let route;
    await page.routeWebSocket(/\/ws\/web$/, (ws) => {
      route = ws;
      ws.connectToServer();
    });
    await page.reload({ timeout: T });
    await waitForState(page, "pairing");
    const code = await text(page, "#code");
    const again = await phone2.request({ type: "link", code });
    assert.equal(again.type, "link_request", JSON.stringify(again));
    await phone2.request({ type: "link_confirm", request_id: again.request_id });
    await waitForState(page, "linked");
    await route.close({ code: 1012, reason: "restart" });
    await waitForState(page, "reconnecting");
    await page.locator("#connection-banner").waitFor({ state: "visible", timeout: T });
    await checkState(findings, page, scheme, "web-linked-reconnecting");

    // Retry now (the socket goes to the gateway again): the banner and its
    // button go, focus goes to the heading; then Log out: to the QR code's.
    await page.locator("#reconnect-now").click();
    await waitForState(page, "linked");
    assert.equal(await focused(page), "account", "after Retry now the linked screen's heading has focus");
    await page.locator("#logout").click();
    await waitForState(page, "pairing");
    await waitForText(page, "#notice", "You logged out.");
    assert.equal(await focused(page), "pair-title", "after Log out the pairing heading has focus");

    await phone2.close();
    assertNoPageErrors(page);
    await context.close();
    assertNoFindings(findings);
  });

  test(`expired screen, Reload QR code, and /phone without --demo (${scheme})`, { timeout: 60_000 }, async () => {
    const findings = [];
    const context = await schemeContext(scheme);
    const { page } = await openPage(context, short.url + "/");
    await waitForState(page, "expired", T + 5_000);
    assert.equal(await focused(page), "reload-qr");
    await checkState(findings, page, scheme, "web-expired");
    await page.locator("#reload-qr").click();
    await waitForState(page, "pairing");
    // The button is gone with its screen: focus goes to the new screen's heading.
    await page.waitForFunction(() => document.activeElement !== document.body, null, { timeout: T });
    assert.equal(await focused(page), "pair-title", "after Reload QR code the pairing heading has focus");

    const { page: nodemo } = await openPage(context, short.url + "/phone");
    await nodemo.locator("#nodemo-how code").first().waitFor({ timeout: T });
    await checkState(findings, nodemo, scheme, "phone-no-demo");
    assertNoPageErrors(page);
    assertNoPageErrors(nodemo);
    await context.close();
    assertNoFindings(findings);
  });

  test(`demo phone page (${scheme}): signed out, ready, link request, sessions, messages, Close all sessions, QR link, replaced`, { timeout: 120_000 }, async () => {
    const findings = [];
    const phoneContext = await schemeContext(scheme);
    const webContext = await schemeContext(scheme);
    const { page: phone } = await openPage(phoneContext, gw.url + "/phone");
    await waitForState(phone, "signed-out");
    await checkState(findings, phone, scheme, "demo-signed-out");
    await phone.locator("#use-token").click();
    await phone.locator("#signin-error").waitFor({ state: "visible", timeout: T });
    await checkState(findings, phone, scheme, "demo-signin-error");

    await phone.locator("#create-demo").click();
    await waitForState(phone, "ready");
    await waitForText(phone, "#phone-state", "connected");
    await waitForText(phone, "#sessions", "No linked devices yet.");
    await checkState(findings, phone, scheme, "demo-ready");

    // The link request, from a typed code.
    const { page: web, frames } = await openPage(webContext, gw.url + "/");
    await waitForState(web, "pairing");
    await phone.locator("#code-input").fill(frames.last("qr").code);
    await phone.locator("#link-code").click();
    await phone.locator("#link-request").waitFor({ state: "visible", timeout: T });
    await waitForText(phone, "#link-device-name", "Chrome on Linux");
    assert.equal(await focused(phone), "link-request-title", "the dialog's heading, not Confirm, has focus");
    await checkState(findings, phone, scheme, "demo-link-request");
    await phone.locator("#confirm-link").click();
    await waitForState(web, "linked");
    await phone.locator("#link-request").waitFor({ state: "hidden", timeout: T });
    assert.equal(await focused(phone), "link-title", "the dialog gone, focus is on its section's heading");
    await phone.locator('#sessions .session .session-online[data-online="true"]').waitFor({ timeout: T });

    // Messages both ways, one refused with Retry; a sessions list; a notice.
    await phone.locator("#phone-composer-input").fill(TOO_LONG);
    await phone.locator("#phone-send").click();
    await phone.locator('#phone-messages li.msg-out[data-state="failed"] .msg-retry').waitFor({ timeout: T });
    await phone.locator("#phone-composer-input").fill("hello from the demo phone");
    await phone.locator("#phone-send").click();
    await phone.locator('#phone-messages li.msg-out[data-state="sent"]').waitFor({ timeout: T });
    await web.locator("#composer-input").fill("hello back");
    await web.locator("#composer-input").press("Enter");
    await phone.locator("#phone-messages li.msg-in").waitFor({ timeout: T });
    await waitForText(phone, "#phone-notice", /Chrome on Linux/);
    await checkState(findings, phone, scheme, "demo-sessions-messages");

    // Close all sessions: its confirmation, then the result.
    await phone.locator("#logout-all").click();
    await phone.locator("#logout-all-box").waitFor({ state: "visible", timeout: T });
    await checkState(findings, phone, scheme, "demo-logout-all-confirm");
    await phone.locator("#logout-all-confirm").click();
    await waitForText(phone, "#logout-all-result", "Closed 1 session");
    assert.equal(await focused(phone), "sessions-title");
    await waitForState(web, "pairing");

    // Opening a QR code's link: the prompt before anything is sent.
    await web.locator("#qr svg").waitFor({ state: "visible", timeout: T });
    await phone.goto(frames.last("qr").payload, { timeout: T });
    await phone.locator("#ref-prompt").waitFor({ state: "visible", timeout: T });
    await waitForState(phone, "ready");
    await checkState(findings, phone, scheme, "demo-ref-prompt");
    await phone.locator("#dismiss-ref").click();
    await phone.locator("#ref-prompt").waitFor({ state: "hidden", timeout: T });
    assert.equal(await focused(phone), "link-title");

    // The account's phone opened in a second tab: this one is replaced.
    const { page: other } = await openPage(phoneContext, gw.url + "/phone");
    await waitForState(other, "ready");
    await waitForState(phone, "replaced");
    await checkState(findings, phone, scheme, "demo-replaced");
    await phone.locator("#use-here").click();
    await waitForState(phone, "ready");
    assert.equal(await focused(phone), "phone-account", "after Use here the account heading has focus");
    await waitForState(other, "replaced");

    assertNoPageErrors(phone);
    assertNoPageErrors(web);
    await phoneContext.close();
    await webContext.close();
    assertNoFindings(findings);
  });
}
