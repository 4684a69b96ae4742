// Shared plumbing for the real-browser tests: the real gateway as a child
// process, headless Chromium through playwright-core, a phone client that
// speaks the wire contract over `ws`, and a QR decoder (jsQR) that reads the
// code off a screenshot, and axe-core's accessibility checks. Every wait here
// has a timeout; nothing sleeps.

import { spawn, execFile } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";
import WebSocket from "ws";
import jsQR from "jsqr";
import { PNG } from "pngjs";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = process.env.PAIRGATE_BIN
  ? path.resolve(process.env.PAIRGATE_BIN)
  : path.join(REPO_ROOT, "target", "release", "pairgate");
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const SCREENSHOTS = path.join(REPO_ROOT, "test-artifacts", "screenshots");

/** Default timeout of one wait, in ms. */
export const T = 10_000;
export const WIDE = { width: 1280, height: 800 };
export const NARROW = { width: 390, height: 844 };

const execFileP = promisify(execFile);

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- The gateway ------------------------------------------------------------

/**
 * Starts `pairgate serve` with `extraArgs`, on 127.0.0.1:0 and a fresh data
 * dir unless `listen` / `dataDir` say otherwise (a restart reuses both);
 * resolves once its "listening on" line names the port.
 */
export async function startGateway(extraArgs = [], { listen = "127.0.0.1:0", dataDir } = {}) {
  const ownsDataDir = !dataDir;
  dataDir ??= mkdtempSync(path.join(tmpdir(), "pairgate-browser-"));
  const child = spawn(BIN, ["serve", "--listen", listen, "--data-dir", dataDir, ...extraArgs], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" },
  });
  let log = "";
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    child.once("error", reject);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const m = /listening on http:\/\/(127\.0\.0\.1:\d+)/.exec(log);
      if (m) resolve(m[1]);
    });
    exited.then(({ code, signal }) =>
      reject(new Error(`pairgate exited before listening (code ${code}, signal ${signal}):\n${log}`)),
    );
  });
  let hostPort;
  try {
    hostPort = await withTimeout(listening, 20_000, `"listening on" from ${BIN}`);
  } catch (err) {
    child.kill("SIGKILL");
    if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    hostPort,
    url: `http://${hostPort}`,
    wsUrl: `ws://${hostPort}`,
    dataDir,
    get log() {
      return log;
    },
    /** A phone token for `account`, from `pairgate token` on the same data dir. */
    async mintToken(account) {
      const { stdout } = await withTimeout(
        execFileP(BIN, ["token", "--account", account, "--data-dir", dataDir]),
        T,
        "pairgate token",
      );
      return stdout.trim();
    },
    /** kill -9: no goodbye to anyone; the data dir stays for a restart. */
    async kill() {
      if (running()) child.kill("SIGKILL");
      await withTimeout(exited, T, "pairgate to die after SIGKILL");
    },
    /**
     * SIGTERM (the contract says exit 0 within 5 s; SIGKILL as a fallback),
     * then removes the data dir if this call made it.
     */
    async stop() {
      try {
        if (running()) {
          child.kill("SIGTERM");
          try {
            await withTimeout(exited, 7_000, "pairgate to exit after SIGTERM");
          } catch (err) {
            child.kill("SIGKILL");
            await exited;
            throw err;
          }
        }
      } finally {
        if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true });
      }
    },
    /** Resolves to {code, signal} once the process has exited. */
    exited,
  };
}

// ---- A reverse proxy under a path prefix ------------------------------------

/**
 * A reverse proxy on 127.0.0.1:0 serving the gateway under `prefix` and
 * stripping it (like nginx's `location /pairgate/ { proxy_pass http://gw/; }`),
 * WebSocket upgrades included; `prefix` alone redirects to `prefix/`. Call
 * `setUpstream(hostPort)` once the gateway runs. `outside` lists the paths
 * asked for outside the prefix (a page with an absolute URL would do that).
 */
export async function startPrefixProxy(prefix) {
  let upstream = null;
  const outside = [];
  const strip = (url) => {
    if (url === prefix) return { redirect: prefix + "/" };
    if (!url.startsWith(prefix + "/")) return null;
    return { path: url.slice(prefix.length) };
  };
  const server = http.createServer((req, res) => {
    const target = strip(req.url);
    if (!target) {
      outside.push(req.url);
      res.writeHead(404).end("outside the prefix");
      return;
    }
    if (target.redirect) {
      res.writeHead(301, { location: target.redirect }).end();
      return;
    }
    const [host, port] = upstream.split(":");
    const forward = http.request(
      { host, port: Number(port), method: req.method, path: target.path, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  server.on("upgrade", (req, socket, head) => {
    const target = strip(req.url);
    if (!target || target.redirect) {
      outside.push(req.url);
      socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    const [host, port] = upstream.split(":");
    const back = net.connect(Number(port), host, () => {
      const lines = [`${req.method} ${target.path} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      back.write(lines.join("\r\n") + "\r\n\r\n");
      if (head.length) back.write(head);
      back.pipe(socket);
      socket.pipe(back);
    });
    const end = () => {
      back.destroy();
      socket.destroy();
    };
    back.on("error", end);
    socket.on("error", end);
    back.on("close", end);
    socket.on("close", end);
  });
  await withTimeout(new Promise((resolve) => server.listen(0, "127.0.0.1", resolve)), T, "the proxy to listen");
  const hostPort = `127.0.0.1:${server.address().port}`;
  return {
    hostPort,
    url: `http://${hostPort}`,
    outside,
    setUpstream(hp) {
      upstream = hp;
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

// ---- Chromium -----------------------------------------------------------------

/** Headless Debian Chromium; Playwright gives it a fresh temporary profile. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
}

/** `options` go to Playwright's `newContext` (e.g. `bypassCSP`). */
export async function newContext(browser, viewport = WIDE, options = {}) {
  const context = await browser.newContext({ viewport, colorScheme: "light", ...options });
  context.setDefaultTimeout(T);
  return context;
}

/**
 * Opens a page that records what it does: the JSON frames its WebSockets
 * receive and send (as Chromium saw them) and any uncaught script error.
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  const frames = watchFrames(page);
  page.errors = [];
  page.on("pageerror", (err) => page.errors.push(err));
  // Whatever the pages' Content-Security-Policy blocks counts as an error:
  // the policy must fit the pages.
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy/i.test(msg.text())) {
      page.errors.push(new Error("CSP: " + msg.text()));
    }
  });
  if (url) await page.goto(url, { timeout: T });
  return { page, frames };
}

/** Frames of every WebSocket of `page`, in order, with waiters. */
export function watchFrames(page) {
  const received = [];
  const sent = [];
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) {
      const hit = received.slice(w.from).find(w.pred);
      if (hit) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(hit);
      }
    }
  };
  page.on("websocket", (ws) => {
    ws.on("framereceived", ({ payload }) => {
      try {
        received.push(JSON.parse(String(payload)));
      } catch (_) {
        received.push({ type: "<not json>", raw: String(payload) });
      }
      check();
    });
    ws.on("framesent", ({ payload }) => {
      try {
        sent.push(JSON.parse(String(payload)));
      } catch (_) {
        sent.push({ type: "<not json>", raw: String(payload) });
      }
    });
  });
  return {
    received,
    sent,
    /** Index to pass as `from` to only look at frames after this point. */
    mark() {
      return received.length;
    },
    /** The last received frame of `type`, or undefined. */
    last(type) {
      return [...received].reverse().find((f) => f.type === type);
    },
    /** First received frame at or after index `from` matching `pred`. */
    waitFor(pred, { from = 0, timeout = T, what = "a frame" } = {}) {
      const hit = received.slice(from).find(pred);
      if (hit) return Promise.resolve(hit);
      const p = new Promise((resolve) => waiters.push({ pred, from, resolve }));
      return withTimeout(p, timeout, `${what} on the page's socket`);
    },
  };
}

export function waitForState(page, state, timeout = T) {
  return page.waitForSelector(`body[data-state="${state}"]`, { state: "attached", timeout });
}

/** Waits until the trimmed text of `selector` equals `expected` (string) or matches it (RegExp). */
export async function waitForText(page, selector, expected, timeout = T) {
  const spec = expected instanceof RegExp ? { re: expected.source, flags: expected.flags } : { eq: expected };
  try {
    await page.waitForFunction(
      ([sel, s]) => {
        const node = document.querySelector(sel);
        if (!node) return false;
        const text = node.textContent.trim();
        return s.re !== undefined ? new RegExp(s.re, s.flags).test(text) : text === s.eq;
      },
      [selector, spec],
      { timeout },
    );
  } catch (err) {
    const actual = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => "<none>");
    throw new Error(`${selector}: expected ${expected}, have ${JSON.stringify(actual)}: ${err.message}`);
  }
}

export async function text(page, selector) {
  return ((await page.locator(selector).first().textContent({ timeout: T })) || "").trim();
}

export async function isVisible(page, selector) {
  return page.locator(selector).first().isVisible();
}

export async function screenshot(page, name, options = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, timeout: T, ...options });
  return file;
}

/** Screenshot of `page` at the narrow phone-sized viewport, then back. */
export async function narrowScreenshot(page, name) {
  const before = page.viewportSize();
  await page.setViewportSize(NARROW);
  try {
    return await screenshot(page, name);
  } finally {
    await page.setViewportSize(before);
  }
}

// ---- The QR code ---------------------------------------------------------------

/** Decodes the QR code shown in `#qr` from a PNG screenshot of that element. */
export async function decodeQr(page) {
  const png = PNG.sync.read(await page.locator("#qr").screenshot({ timeout: T }));
  const pixels = new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length);
  const found = jsQR(pixels, png.width, png.height);
  if (!found) throw new Error(`no QR code found in a ${png.width}x${png.height} screenshot of #qr`);
  return found.data;
}

/**
 * Decodes `#qr` and returns it with the `qr` frame that was shown while the
 * screenshot was taken (tried again if the code rotated meanwhile).
 */
export async function decodeShownQr(page, frames) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const before = frames.last("qr");
    const decoded = await decodeQr(page);
    if (frames.last("qr") === before) return { decoded, qr: before };
  }
  throw new Error("the QR code kept rotating while it was being read");
}

/** The ref of a payload `<public-url>/phone#ref=<REF>`. */
export function refOf(payload) {
  return new URLSearchParams(new URL(payload).hash.slice(1)).get("ref");
}

// ---- A phone over ws -------------------------------------------------------------

let phoneIds = 0;

/** A phone socket speaking the contract; frames are queued until taken. */
export class Phone {
  static async connect(gw, token) {
    const phone = new Phone(new WebSocket(`${gw.wsUrl}/ws/phone`));
    await withTimeout(
      new Promise((resolve, reject) => {
        phone.ws.once("open", resolve);
        phone.ws.once("error", reject);
      }),
      T,
      "the phone socket to open",
    );
    const hello = await phone.next((f) => f.type === "hello", "hello");
    phone.hello = hello;
    const ready = await phone.request({ type: "auth", token });
    if (ready.type !== "ready") throw new Error(`phone auth failed: ${JSON.stringify(ready)}`);
    phone.account = ready.account;
    return phone;
  }

  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: String(reason) };
        resolve(this.closeInfo);
      });
    });
    ws.on("error", () => {}); // `close` follows and is what we wait on.
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      this.queue.push(JSON.parse(String(data)));
      this.deliver();
    });
  }

  deliver() {
    for (const w of [...this.waiters]) {
      const i = this.queue.findIndex(w.pred);
      if (i >= 0) {
        const [frame] = this.queue.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(frame);
      }
    }
  }

  /** Takes the first queued or coming frame matching `pred`. */
  next(pred, what = "a frame", timeout = T) {
    const i = this.queue.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = { pred, resolve };
      this.waiters.push(waiter);
    });
    return withTimeout(p, timeout, `${what} on the phone socket`).catch((err) => {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      throw new Error(`${err.message}; queued: ${JSON.stringify(this.queue)}`);
    });
  }

  /** Sends `frame` with a fresh id; resolves to its one reply. */
  request(frame, timeout = T) {
    const id = `t${++phoneIds}`;
    this.ws.send(JSON.stringify({ ...frame, id }));
    return this.next((f) => f.id === id, `the reply to ${frame.type}`, timeout);
  }

  /** Frames of `type` still queued (taken from the queue). */
  drain(type) {
    const out = this.queue.filter((f) => f.type === type);
    this.queue = this.queue.filter((f) => f.type !== type);
    return out;
  }

  async close() {
    if (this.closeInfo) return this.closeInfo;
    this.ws.close(1000);
    return withTimeout(this.closed, T, "the phone socket to close");
  }
}

/**
 * Links the pairing page through `phone`: takes the ref the page's last `qr`
 * frame carried, sends link and link_confirm, waits for the page to be linked.
 * Returns {session_id, token, linked, request}.
 */
export async function linkPage(page, frames, phone) {
  await waitForState(page, "pairing");
  const qr = frames.last("qr");
  const request = await phone.request({ type: "link", ref: qr.ref });
  if (request.type !== "link_request") throw new Error(`link failed: ${JSON.stringify(request)}`);
  const from = frames.mark();
  const confirmed = await phone.request({ type: "link_confirm", request_id: request.request_id });
  if (confirmed.type !== "device_linked") throw new Error(`link_confirm failed: ${JSON.stringify(confirmed)}`);
  const linked = await frames.waitFor((f) => f.type === "linked", { from, what: "linked" });
  await waitForState(page, "linked");
  return { session_id: linked.session_id, token: linked.token, linked, request, session: confirmed.session };
}

/** Throws when the page had uncaught script errors or CSP violations. */
export function assertNoPageErrors(page) {
  if (page.errors && page.errors.length) {
    throw new Error(`uncaught errors on ${page.url()}: ${page.errors.map((e) => e.stack || e.message).join("\n")}`);
  }
}

// ---- Accessibility ------------------------------------------------------------

/** The WCAG 2.0, 2.1 and 2.2 level A and AA rules of axe-core. */
export const WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

let axeSource = null;

/**
 * Runs axe-core's WCAG A/AA rules (WCAG_TAGS) on `page` as it is now and
 * throws listing every violation: rule, impact, the nodes' selectors and, for
 * color-contrast, the measured ratio and colours. No rule is disabled.
 *
 * The pages' Content-Security-Policy allows no inline script, so
 * `page.addScriptTag({ content })` would be refused; `page.evaluate` runs
 * axe's source through the DevTools protocol, which the policy does not
 * govern, so the pages are checked under their real CSP.
 */
export async function assertAccessible(page, label) {
  axeSource ??= readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
  if (!(await page.evaluate(() => typeof window.axe === "object"))) await page.evaluate(axeSource);
  const violations = await page.evaluate(async (tags) => {
    const results = await window.axe.run(document, {
      runOnly: { type: "tag", values: tags },
      resultTypes: ["violations"],
    });
    return results.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => {
        const contrast = [...n.any, ...n.all, ...n.none].map((c) => c.data).find((d) => d && d.contrastRatio);
        return {
          target: n.target.join(" "),
          contrast: contrast
            ? `${contrast.contrastRatio}:1 (${contrast.fgColor} on ${contrast.bgColor}, needs ${contrast.expectedContrastRatio})`
            : null,
        };
      }),
    }));
  }, WCAG_TAGS);
  if (violations.length) {
    const lines = violations.flatMap((v) => [
      `${v.id} (${v.impact}): ${v.help}`,
      ...v.nodes.map((n) => `    ${n.target}${n.contrast ? ": " + n.contrast : ""}`),
    ]);
    throw new Error(`${label}: ${violations.length} accessibility violation(s) on ${page.url()}:\n  ${lines.join("\n  ")}`);
  }
}
