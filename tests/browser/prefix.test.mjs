// The pages under a path prefix: `--public-url http://host/pairgate` behind a
// proxy that strips `/pairgate` (startPrefixProxy in harness.mjs). Every URL
// of the pages is relative, so the page, its scripts, its socket, the demo
// phone and its token route all go through the prefix, and pairing works.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import {
  Phone,
  assertNoPageErrors,
  decodeShownQr,
  launchBrowser,
  linkPage,
  newContext,
  openPage,
  startGateway,
  startPrefixProxy,
  text,
  waitForState,
  waitForText,
} from "./harness.mjs";

const PREFIX = "/pairgate";
let proxy;
let gw;
let browser;

before(async () => {
  proxy = await startPrefixProxy(PREFIX);
  gw = await startGateway(["--demo", "--public-url", proxy.url + PREFIX]);
  proxy.setUpstream(gw.hostPort);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await proxy?.close();
});

test("the web page under a path prefix pairs through the proxy", { timeout: 60_000 }, async () => {
  const context = await newContext(browser);
  // Without the trailing slash the proxy redirects, as nginx does.
  const { page, frames } = await openPage(context, proxy.url + PREFIX);
  assert.equal(page.url(), proxy.url + PREFIX + "/");
  await waitForState(page, "pairing");
  const { decoded, qr } = await decodeShownQr(page, frames);
  assert.equal(decoded, qr.payload);
  assert.ok(qr.payload.startsWith(`${proxy.url}${PREFIX}/phone#ref=`), qr.payload);

  // The phone, too, reaches the gateway through the prefix.
  const phone = await Phone.connect({ wsUrl: `ws://${proxy.hostPort}${PREFIX}` }, await gw.mintToken("pia"));
  await linkPage(page, frames, phone);
  await waitForText(page, "#phone-status", "Phone connected");
  await page.locator("#composer-input").fill("through the prefix");
  await page.locator("#composer-input").press("Enter");
  const got = await phone.next((f) => f.type === "message", "the page's message");
  assert.deepEqual(got.body, { text: "through the prefix" });

  assert.deepEqual(proxy.outside, [], "nothing was asked for outside the prefix");
  await phone.close();
  assertNoPageErrors(page);
  await context.close();
});

test("the demo phone under a path prefix creates an account and connects", { timeout: 60_000 }, async () => {
  const context = await newContext(browser);
  const { page } = await openPage(context, proxy.url + PREFIX + "/phone");
  await waitForState(page, "signed-out");
  await page.locator("#create-demo").click();
  await waitForState(page, "ready");
  await waitForText(page, "#phone-state", "connected");
  assert.match(await text(page, "#phone-account"), /^demo-/);
  assert.equal(await page.locator("footer a").getAttribute("href"), "./");
  assert.deepEqual(proxy.outside, [], "nothing was asked for outside the prefix");
  assertNoPageErrors(page);
  await context.close();
});
