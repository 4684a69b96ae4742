// pairgate's JavaScript client: the wire contract (protocol.md) over one
// WebSocket, for browsers and Node. One file, no dependencies, no build step:
// the gateway serves this very file to its own pages as /static/pairgate.js.
//
// Two layers:
// - `Channel`: one socket; requests matched to their replies by `id`, with a
//   timeout; every frame handed to `onFrame`. Either role (/ws/web, /ws/phone).
// - `PairgateClient`: a web session: pair (QR refs and codes, rotation) or
//   resume with a session token, send with acks, events, and reconnection
//   with jittered exponential backoff following the contract's close codes.

/** The contract's default frame limit, until `hello` says otherwise. */
const DEFAULT_MAX_FRAME_BYTES = 65536;

/** UTF-8 size of a string: the server's frame limit counts bytes. */
export function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

/**
 * The ws:// or wss:// URL of `path` relative to `base` (a page's
 * `location.href` by default), so a page served under a path prefix
 * (`https://host/pairgate/`) reaches `https://host/pairgate/ws/web`.
 */
export function webSocketUrl(path, base) {
  const url = new URL(path, base ?? globalThis.location?.href);
  if (url.protocol === "https:") url.protocol = "wss:";
  else if (url.protocol === "http:") url.protocol = "ws:";
  url.hash = "";
  return url.href;
}

// Request ids keep counting across sockets so a late reply can never be
// mistaken for the answer to a newer request.
const idCounters = {};
function nextId(prefix) {
  idCounters[prefix] = (idCounters[prefix] || 0) + 1;
  return prefix + idCounters[prefix];
}

/** An `error` frame made here for a request the server never answered. */
export function localError(id, code) {
  return { type: "error", id, code, message: describeError(code), local: true };
}

/** Plain-words English text for an error code of the contract (or a local one). */
export function describeError(code, fallback) {
  const text = {
    disconnected: "Connection lost before the gateway answered.",
    timeout: "The gateway did not answer in time.",
    bad_frame: "The gateway could not read that request.",
    unknown_type: "The gateway does not know that request.",
    not_authenticated: "Not signed in yet.",
    invalid_token: "This token is invalid or has expired.",
    logged_out: "This session was logged out.",
    unknown_ref: "That QR code or pairing code is unknown or has expired. Ask for a fresh one.",
    unknown_request: "That link request is no longer waiting (it expired or the browser went away).",
    unknown_session: "That device is no longer linked.",
    too_many_devices: "Too many linked devices. Log out one of them first.",
    phone_offline: "Phone not connected, so the message was not sent.",
    too_large: "The message is too large.",
    rate_limited: "Too many requests. Wait a moment and try again.",
    internal: "The gateway hit an internal error.",
  }[code];
  return text || fallback || "Something went wrong (" + code + ").";
}

function pickWebSocket(impl) {
  const WS = impl || globalThis.WebSocket;
  if (!WS) {
    throw new Error("pairgate: no WebSocket implementation; pass one as the `WebSocket` option (e.g. the `ws` package)");
  }
  return WS;
}

/**
 * One WebSocket. Every incoming frame goes to `onFrame`; a frame whose `id`
 * answers a request made with `request()` also resolves that request.
 * `request()` never rejects: failures resolve to an `error` frame with
 * `local: true` and the code `disconnected`, `timeout` or `too_large`.
 */
export class Channel {
  constructor(url, { idPrefix = "c", onFrame = () => {}, onClose = () => {}, WebSocket, requestTimeoutMs = 10000 } = {}) {
    this.idPrefix = idPrefix;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.requestTimeoutMs = requestTimeoutMs;
    this.pending = new Map(); // id -> {resolve, timer}
    this.hello = null;
    this.closed = false;
    const WS = pickWebSocket(WebSocket);
    this.OPEN = WS.OPEN ?? 1;
    this.ws = new WS(url);
    this.ws.onmessage = (ev) => this.receive(ev.data);
    this.ws.onclose = (ev) => this.finish(ev.code, ev.reason);
    // `error` is always followed by `close`, which does the work.
    this.ws.onerror = () => {};
  }

  get isOpen() {
    return !this.closed && this.ws.readyState === this.OPEN;
  }

  /** Largest frame the server accepts (from `hello`), with the contract default. */
  get maxFrameBytes() {
    return (this.hello && this.hello.max_frame_bytes) || DEFAULT_MAX_FRAME_BYTES;
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch (_) {
      return; // The server only sends JSON objects; ignore anything else.
    }
    if (!frame || typeof frame.type !== "string") return;
    if (frame.type === "hello") this.hello = frame;
    if (typeof frame.id === "string" && this.pending.has(frame.id)) {
      const { resolve, timer } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(timer);
      resolve(frame);
    }
    this.onFrame(frame);
  }

  /** Fire-and-forget send; returns false when the socket is not open. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Send `frame` with a fresh id; resolves to the reply frame, or to a local
   * `timeout` error after `timeoutMs` (the reply, if it comes later, is
   * still handed to `onFrame`).
   */
  request(frame, { timeoutMs = this.requestTimeoutMs } = {}) {
    const id = nextId(this.idPrefix);
    const text = JSON.stringify(Object.assign({}, frame, { id }));
    if (!this.isOpen) return Promise.resolve(localError(id, "disconnected"));
    // An oversized frame would make the server close the socket (1009),
    // taking every other pending request with it: refuse it here instead.
    if (byteLength(text) > this.maxFrameBytes) {
      return Promise.resolve(localError(id, "too_large"));
    }
    return new Promise((resolve) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.pending.delete(id);
              resolve(localError(id, "timeout"));
            }, timeoutMs)
          : null;
      this.pending.set(id, { resolve, timer });
      this.ws.send(text);
    });
  }

  /** Close on purpose: no onClose callback, pending requests fail. */
  dispose() {
    if (this.closed) return;
    this.onClose = () => {};
    this.onFrame = () => {};
    try {
      this.ws.close(1000, "client closed");
    } catch (_) {
      // Closing a socket that is still connecting may throw in old browsers.
    }
    this.finish(1000, "client closed");
  }

  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    for (const [id, { resolve, timer }] of this.pending) {
      clearTimeout(timer);
      resolve(localError(id, "disconnected"));
    }
    this.pending.clear();
    this.onClose(code, String(reason || ""));
  }
}

/**
 * Exponential backoff with jitter: `baseMs` doubling to `maxMs`, each delay
 * moved by up to ±`jitter` so that many clients dropped together do not
 * return together.
 */
export class Backoff {
  constructor({ baseMs = 500, maxMs = 30000, jitter = 0.3 } = {}) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.attempt = 0;
  }
  next() {
    const delay = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.max(0, Math.round(delay * (1 + (Math.random() * 2 - 1) * this.jitter)));
  }
  reset() {
    this.attempt = 0;
  }
}

/** Close codes of the contract (protocol.md, "Close codes"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  RESTARTING: 1012,
  LOGGED_OUT: 4001,
  INVALID_TOKEN: 4003,
  TIMED_OUT: 4008,
  REPLACED: 4009,
  RATE_LIMITED: 4029,
  TOO_SLOW: 4030,
});

/**
 * A web session of pairgate. Call `connect()`; with a `token` it resumes that
 * session, without one it pairs (listen for `qr`). Events (`on(type, fn)`):
 *
 * - `qr` (the frame: ref, code, svg, payload, expires_in_ms, remaining), `scanned`,
 *   `pair_rejected`, `linked` ({account, session_id, token, remember}),
 *   `ready` ({account, session_id}), `phone_status` ({online}), `message` ({from, body}),
 *   `session` (account, session_id and token changed: store them)
 * - endings that stop reconnecting: `logged_out` ({reason}: 4001, the token
 *   is forgotten), `invalid_token` (4003, forgotten too), `replaced` (4009:
 *   the session is open elsewhere), `expired` (every QR code ran out)
 * - `reconnecting` ({delayMs, attempt, code}), `close` ({code, reason}) for
 *   every socket that ends, `error` (an `error` frame without `id`, or the
 *   refusal of the `auth` / `pair` sent on `hello`),
 *   `frame` (every frame), `state` (the new `state`).
 *
 * `state` is `idle`, `connecting`, `pairing`, `live`, `reconnecting` or `closed`.
 */
export class PairgateClient {
  constructor({
    url,
    WebSocket,
    token = null,
    remember = true,
    deviceName,
    requestTimeoutMs = 10000,
    reconnect = true,
    backoff,
    idPrefix = "w",
  } = {}) {
    if (!url) throw new Error("pairgate: `url` (the gateway's /ws/web URL) is required");
    this.url = url;
    this.WebSocket = pickWebSocket(WebSocket);
    this.token = token;
    this.remember = remember;
    this.deviceName = deviceName;
    this.requestTimeoutMs = requestTimeoutMs;
    this.reconnectEnabled = reconnect;
    this.backoff = new Backoff(backoff);
    this.idPrefix = idPrefix;
    this.account = null;
    this.sessionId = null;
    this.phoneOnline = null;
    this.state = "idle";
    this.channel = null;
    this.timer = null;
    this.listeners = new Map();
  }

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  /** Resolves with the next event of `type` (rejects after `timeoutMs`, if given). */
  once(type, timeoutMs) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const off = this.on(type, (value) => {
        off();
        clearTimeout(timer);
        resolve(value);
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          off();
          reject(new Error(`pairgate: no ${type} event within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  emit(type, value) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try {
        fn(value);
      } catch (err) {
        // A listener's bug must not break the socket's bookkeeping.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  /** Whether the socket is open (live or pairing). */
  get isOpen() {
    return !!this.channel && this.channel.isOpen;
  }

  /** Whether a reconnection is scheduled. */
  get reconnecting() {
    return this.timer !== null;
  }

  /** Opens a socket now (cancelling a scheduled reconnection and any open socket). */
  connect() {
    this.cancelReconnect();
    if (this.channel) this.channel.dispose();
    this.setState("connecting");
    // Facts about this one socket that its close code alone does not tell.
    const ctx = { pairTimedOut: false, loggedOutReason: null };
    const channel = new Channel(this.url, {
      idPrefix: this.idPrefix,
      WebSocket: this.WebSocket,
      requestTimeoutMs: this.requestTimeoutMs,
      onFrame: (frame) => this.onFrame(frame, ctx, channel),
      onClose: (code, reason) => this.onClose(code, reason, ctx, channel),
    });
    this.channel = channel;
    return this;
  }

  /** Closes on purpose: no reconnection, no ending event; `close` is emitted. */
  close() {
    this.cancelReconnect();
    const channel = this.channel;
    this.channel = null;
    this.phoneOnline = null;
    this.setState("closed");
    if (channel) {
      channel.dispose();
      this.emit("close", { code: CloseCode.NORMAL, reason: "client closed" });
    }
  }

  /** Sends `body` (any JSON) to the phone; resolves to `ack` or an `error` frame. */
  send(body, options) {
    return this.request({ type: "send", body }, options);
  }

  /** Changes the pairing's `remember` (and `device_name`) while pairing. */
  pair({ remember = this.remember, deviceName = this.deviceName } = {}) {
    this.remember = remember;
    this.deviceName = deviceName;
    const frame = { type: "pair", remember };
    if (deviceName) frame.device_name = deviceName;
    return this.request(frame);
  }

  /** Ends this session (`logged_out` follows, with reason `self_logout`). */
  logout() {
    return this.request({ type: "logout" });
  }

  /** Any request frame; resolves to its reply (never rejects). */
  request(frame, options) {
    if (!this.channel) return Promise.resolve(localError(nextId(this.idPrefix), "disconnected"));
    return this.channel.request(frame, options);
  }

  /** Forget the session (after 4001 / 4003): the next `connect()` pairs. */
  forgetSession() {
    this.token = null;
    this.sessionId = null;
    this.account = null;
  }

  onFrame(frame, ctx, channel) {
    if (channel !== this.channel) return;
    this.emit("frame", frame);
    switch (frame.type) {
      case "hello": {
        const reply = this.token ? channel.request({ type: "auth", token: this.token }) : this.pair();
        // logged_out and invalid_token are followed by their close (4001,
        // 4003), which ends the session; other refusals (rate_limited,
        // internal) are told as `error`.
        reply.then((r) => {
          if (r.type === "error" && !r.local && r.code !== "logged_out" && r.code !== "invalid_token") {
            this.emit("error", r);
          }
        });
        break;
      }
      case "qr":
        this.backoff.reset();
        this.setState("pairing");
        this.emit("qr", frame);
        break;
      case "linked":
        this.token = frame.token;
        this.account = frame.account;
        this.sessionId = frame.session_id;
        this.goLive();
        this.emit("session", { account: this.account, session_id: this.sessionId, token: this.token, remember: frame.remember !== false });
        this.emit("linked", frame);
        break;
      case "ready":
        this.account = frame.account;
        this.sessionId = frame.session_id;
        // The gateway swaps a token signed with a secret it is phasing out.
        if (typeof frame.token === "string" && frame.token) {
          this.token = frame.token;
          this.emit("session", { account: this.account, session_id: this.sessionId, token: this.token });
        }
        this.goLive();
        this.emit("ready", frame);
        break;
      case "phone_status":
        this.phoneOnline = frame.online === true;
        this.emit("phone_status", frame);
        break;
      case "pair_timeout":
        ctx.pairTimedOut = true;
        this.emit("pair_timeout", frame);
        break;
      case "logged_out":
        ctx.loggedOutReason = frame.reason || null;
        break;
      case "error":
        // Errors with an id belong to a request, which reports them itself.
        if (typeof frame.id !== "string") this.emit("error", frame);
        break;
      default:
        // scanned, pair_rejected, message, and types added later.
        if (typeof frame.id !== "string") this.emit(frame.type, frame);
        break;
    }
  }

  goLive() {
    this.backoff.reset();
    this.setState("live");
  }

  onClose(code, reason, ctx, channel) {
    if (channel !== this.channel) return;
    this.channel = null;
    this.phoneOnline = null;
    this.emit("close", { code, reason });
    if (code === CloseCode.LOGGED_OUT && (this.token || ctx.loggedOutReason)) {
      this.forgetSession();
      this.setState("closed");
      this.emit("logged_out", { reason: ctx.loggedOutReason });
      return;
    }
    if (code === CloseCode.INVALID_TOKEN && this.token) {
      this.forgetSession();
      this.setState("closed");
      this.emit("invalid_token", {});
      return;
    }
    if (code === CloseCode.REPLACED) {
      this.setState("closed");
      this.emit("replaced", {});
      return;
    }
    if (code === CloseCode.TIMED_OUT && ctx.pairTimedOut) {
      this.setState("closed");
      this.emit("expired", {});
      return;
    }
    // 1012 (gateway restarting), 1006 (network), 4008 (silent socket), 4029,
    // 4030, ...: come back with backoff, resuming the session or pairing again.
    if (!this.reconnectEnabled) {
      this.setState("closed");
      return;
    }
    this.scheduleReconnect(code);
  }

  /** Schedules `connect()` after the next backoff delay. */
  scheduleReconnect(code) {
    this.cancelReconnect();
    const attempt = this.backoff.attempt + 1;
    const delayMs = this.backoff.next();
    this.setState("reconnecting");
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delayMs);
    this.emit("reconnecting", { delayMs, attempt, code, dueAt: Date.now() + delayMs });
  }

  cancelReconnect() {
    clearTimeout(this.timer);
    this.timer = null;
  }
}
