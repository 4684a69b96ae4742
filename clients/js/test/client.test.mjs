// The client library in Node against the real gateway binary
// (target/release/pairgate, or $PAIRGATE_BIN) on 127.0.0.1:0, with `ws` as
// the WebSocket implementation. The phone is the library's own `Channel` on
// /ws/phone. Every wait has a timeout; nothing sleeps.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import WebSocket, { WebSocketServer } from "ws";

import { Backoff, Channel, PairgateClient, webSocketUrl } from "../pairgate.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..", "..");
const BIN = process.env.PAIRGATE_BIN ? path.resolve(process.env.PAIRGATE_BIN) : path.join(ROOT, "target", "release", "pairgate");
const T = 10_000;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** `pairgate serve` on `listen` (127.0.0.1:0 by default); resolves once it listens. */
async function startGateway({ listen = "127.0.0.1:0", dataDir, args = [] } = {}) {
  dataDir ??= mkdtempSync(path.join(tmpdir(), "pairgate-js-"));
  const child = spawn(BIN, ["serve", "--listen", listen, "--data-dir", dataDir, ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, RUST_LOG: "info" },
  });
  let log = "";
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const hostPort = await withTimeout(
    new Promise((resolve, reject) => {
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk) => {
        log += chunk;
        const m = /listening on http:\/\/(127\.0\.0\.1:\d+)/.exec(log);
        if (m) resolve(m[1]);
      });
      exited.then((code) => reject(new Error(`pairgate exited (${code}):\n${log}`)));
    }),
    20_000,
    "pairgate to listen",
  );
  return {
    hostPort,
    dataDir,
    webUrl: `ws://${hostPort}/ws/web`,
    phoneUrl: `ws://${hostPort}/ws/phone`,
    async token(account) {
      const { stdout } = await promisify(execFile)(BIN, ["token", "--account", account, "--data-dir", dataDir]);
      return stdout.trim();
    },
    /** SIGTERM: the gateway closes every socket 1012 and exits. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await withTimeout(exited, T, "pairgate to exit");
    },
  };
}

/** A phone: the library's Channel on /ws/phone, frames queued until taken. */
async function phone(gw, account) {
  const queue = [];
  const waiters = [];
  const ch = new Channel(gw.phoneUrl, {
    idPrefix: "p",
    WebSocket,
    onFrame: (frame) => {
      queue.push(frame);
      for (const w of [...waiters]) {
        const i = queue.findIndex(w.pred);
        if (i >= 0) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(queue.splice(i, 1)[0]);
        }
      }
    },
  });
  const next = (pred, what) => {
    const i = queue.findIndex(pred);
    if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0]);
    return withTimeout(new Promise((resolve) => waiters.push({ pred, resolve })), T, what);
  };
  await next((f) => f.type === "hello", "the phone's hello");
  const ready = await ch.request({ type: "auth", token: await gw.token(account) });
  assert.equal(ready.type, "ready", JSON.stringify(ready));
  return { ch, next, close: () => ch.dispose() };
}

/** Pairs `client` (connecting it) through `ph`; resolves to the `linked` frame. */
async function pair(client, ph) {
  const qr = client.once("qr", T);
  client.connect();
  const frame = await qr;
  assert.ok(frame.ref && frame.code && frame.svg, "a qr frame has ref, code and svg");
  const request = await ph.ch.request({ type: "link", ref: frame.ref });
  assert.equal(request.type, "link_request", JSON.stringify(request));
  const linked = client.once("linked", T);
  const confirmed = await ph.ch.request({ type: "link_confirm", request_id: request.request_id });
  assert.equal(confirmed.type, "device_linked", JSON.stringify(confirmed));
  return linked;
}

let gw;
before(async () => {
  gw = await startGateway();
});
after(async () => {
  await gw?.stop();
  if (gw) rmSync(gw.dataDir, { recursive: true, force: true });
});

test("connect and pair: qr, linked with a token, phone online; send and ack both ways", async () => {
  const ph = await phone(gw, "ada");
  const client = new PairgateClient({ url: gw.webUrl, WebSocket, remember: true });
  const sessions = [];
  client.on("session", (s) => sessions.push(s));
  const online = client.once("phone_status", T);
  const linked = await pair(client, ph);
  assert.equal(client.state, "live");
  assert.equal(client.account, "ada");
  assert.equal(client.sessionId, linked.session_id);
  assert.equal(client.token, linked.token);
  assert.deepEqual(sessions, [{ account: "ada", session_id: linked.session_id, token: linked.token, remember: true }]);
  assert.equal((await online).online, true);
  assert.equal(client.phoneOnline, true);

  // web -> phone: ack; the phone gets it from the session.
  const ack = await client.send({ text: "hello phone" });
  assert.equal(ack.type, "ack", JSON.stringify(ack));
  const got = await ph.next((f) => f.type === "message", "the web's message");
  assert.deepEqual(got, { type: "message", from: linked.session_id, body: { text: "hello phone" } });

  // phone -> web: the `message` event.
  const message = client.once("message", T);
  const phoneAck = await ph.ch.request({ type: "send", body: "hello web" });
  assert.equal(phoneAck.delivered, 1);
  assert.deepEqual(await message, { type: "message", from: "phone", body: "hello web" });

  // The phone goes away: phone_status false, and a send is refused, not lost.
  const offline = client.once("phone_status", T);
  ph.close();
  assert.equal((await offline).online, false);
  const refused = await client.send("anyone?");
  assert.equal(refused.type, "error");
  assert.equal(refused.code, "phone_offline");
  client.close();
  assert.equal(client.state, "closed");
});

test("resume with a session token; logged_out ends it and forgets the token", async () => {
  const ph = await phone(gw, "bea");
  const first = new PairgateClient({ url: gw.webUrl, WebSocket });
  const linked = await pair(first, ph);
  first.close();

  const client = new PairgateClient({ url: gw.webUrl, WebSocket, token: linked.token });
  const ready = client.once("ready", T);
  client.connect();
  assert.equal((await ready).session_id, linked.session_id);
  assert.equal(client.state, "live");

  // The phone logs the session out: logged_out, 4001, no reconnection.
  const ended = client.once("logged_out", T);
  const closed = client.once("close", T);
  const ok = await ph.ch.request({ type: "logout", session_id: linked.session_id });
  assert.equal(ok.type, "ok", JSON.stringify(ok));
  assert.equal((await closed).code, 4001);
  await ended;
  assert.equal(client.token, null, "the token is forgotten");
  assert.equal(client.state, "closed");
  assert.equal(client.reconnecting, false);

  // The stored token now gets logged_out at once (a fresh client).
  const stale = new PairgateClient({ url: gw.webUrl, WebSocket, token: linked.token });
  const staleEnded = stale.once("logged_out", T);
  stale.connect();
  await staleEnded;
  assert.equal(stale.state, "closed");
  ph.close();
});

test("the gateway restarts (1012): the client reconnects with backoff and resumes", async () => {
  const own = await startGateway();
  try {
    const ph = await phone(own, "cy");
    const client = new PairgateClient({ url: own.webUrl, WebSocket, backoff: { baseMs: 200, maxMs: 1000 } });
    const linked = await pair(client, ph);
    const reconnecting = client.once("reconnecting", T);
    await own.stop();
    const r = await reconnecting;
    assert.equal(r.code, 1012);
    assert.equal(client.state, "reconnecting");
    assert.ok(r.delayMs >= 140 && r.delayMs <= 260, `first delay ${r.delayMs} ms is 200 ms ± 30%`);

    // The same port and data dir come back; the client retries until it is
    // there and resumes the same session.
    const again = await startGateway({ listen: own.hostPort, dataDir: own.dataDir });
    try {
      const ready = await client.once("ready", 30_000);
      assert.equal(ready.session_id, linked.session_id);
      assert.equal(client.state, "live");
      assert.equal(client.backoff.attempt, 0, "a live socket resets the backoff");
      client.close();
    } finally {
      await again.stop();
    }
  } finally {
    rmSync(own.dataDir, { recursive: true, force: true });
  }
});

test("a refused pair (rate_limited) is told as an error event", async () => {
  const own = await startGateway({ args: ["--max-pairs-per-ip-per-min", "1"] });
  try {
    const first = new PairgateClient({ url: own.webUrl, WebSocket, reconnect: false });
    const qr = first.once("qr", T);
    first.connect();
    await qr;
    const second = new PairgateClient({ url: own.webUrl, WebSocket, reconnect: false });
    const refused = second.once("error", T);
    second.connect();
    const err = await refused;
    assert.equal(err.code, "rate_limited", JSON.stringify(err));
    first.close();
    second.close();
  } finally {
    await own.stop();
    rmSync(own.dataDir, { recursive: true, force: true });
  }
});

test("requests time out locally when nothing answers", async () => {
  // A WebSocket server that never answers: the request resolves to a local
  // `timeout` error instead of hanging.
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await withTimeout(new Promise((resolve) => wss.once("listening", resolve)), T, "the silent server");
  try {
    const opened = new Promise((resolve) => wss.once("connection", resolve));
    const ch = new Channel(`ws://127.0.0.1:${wss.address().port}/`, { WebSocket, requestTimeoutMs: 300 });
    await withTimeout(opened, T, "the connection");
    await withTimeout(new Promise((resolve) => (ch.ws.readyState === 1 ? resolve() : ch.ws.addEventListener("open", resolve))), T, "open");
    const reply = await ch.request({ type: "send", body: 1 });
    assert.equal(reply.type, "error");
    assert.equal(reply.code, "timeout");
    assert.equal(reply.local, true);
    ch.dispose();
  } finally {
    for (const c of wss.clients) c.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
});

test("backoff doubles up to its cap with jitter; URLs are relative to the page", () => {
  const b = new Backoff({ baseMs: 100, maxMs: 800, jitter: 0.3 });
  const bounds = [100, 200, 400, 800, 800];
  for (const base of bounds) {
    const d = b.next();
    assert.ok(d >= base * 0.7 && d <= base * 1.3, `${d} within ${base} ± 30%`);
  }
  b.reset();
  assert.equal(b.attempt, 0);
  assert.equal(webSocketUrl("ws/web", "https://example.com/pairgate/"), "wss://example.com/pairgate/ws/web");
  assert.equal(webSocketUrl("ws/web", "http://127.0.0.1:8080/#x"), "ws://127.0.0.1:8080/ws/web");
});

test("the page serves this very file as static/pairgate.js", async () => {
  const served = await (await fetch(`http://${gw.hostPort}/static/pairgate.js`)).text();
  assert.equal(served, readFileSync(path.join(HERE, "..", "pairgate.js"), "utf8"));
});
