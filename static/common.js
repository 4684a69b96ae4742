// Shared plumbing for the pairgate pages: a WebSocket wrapper that matches
// replies to requests by `id`, reconnect backoff, and small DOM helpers.
// Loaded as a classic script before app.js / phone.js; everything it defines
// lives on the `pairgate` global so the pages stay free of build steps.
"use strict";

(function () {
  /** ws:// or wss:// URL for a path on this origin. */
  function wsUrl(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + path;
  }

  /** UTF-8 size of a string: the server's frame limit counts bytes. */
  function byteLength(text) {
    return new TextEncoder().encode(text).length;
  }

  // Request ids keep counting across sockets so a late reply can never be
  // mistaken for the answer to a newer request.
  const idCounters = {};
  function nextId(prefix) {
    idCounters[prefix] = (idCounters[prefix] || 0) + 1;
    return prefix + idCounters[prefix];
  }

  /**
   * One WebSocket. Every incoming frame goes to `onFrame`; a frame whose `id`
   * answers a request made with `request()` also resolves that request.
   * `request()` never rejects: failures resolve to an `error` frame, using the
   * local codes `disconnected` and `too_large` when the server never saw it.
   */
  class Channel {
    constructor(path, { idPrefix, onFrame, onClose }) {
      this.idPrefix = idPrefix;
      this.onFrame = onFrame;
      this.onClose = onClose;
      this.pending = new Map();
      this.hello = null;
      this.closed = false;
      this.ws = new WebSocket(wsUrl(path));
      this.ws.onmessage = (ev) => this.receive(ev.data);
      this.ws.onclose = (ev) => this.finish(ev.code, ev.reason);
      // `error` is always followed by `close`, which does the work.
      this.ws.onerror = () => {};
    }

    get isOpen() {
      return !this.closed && this.ws.readyState === WebSocket.OPEN;
    }

    /** Largest frame the server accepts (from `hello`), with the contract default. */
    get maxFrameBytes() {
      return (this.hello && this.hello.max_frame_bytes) || 65536;
    }

    receive(data) {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch (_) {
        return; // The server only sends JSON objects; ignore anything else.
      }
      if (!frame || typeof frame.type !== "string") return;
      if (frame.type === "hello") this.hello = frame;
      if (typeof frame.id === "string" && this.pending.has(frame.id)) {
        const resolve = this.pending.get(frame.id);
        this.pending.delete(frame.id);
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

    /** Send `frame` with a fresh id; resolves to the reply frame. */
    request(frame) {
      const id = nextId(this.idPrefix);
      const text = JSON.stringify(Object.assign({}, frame, { id }));
      if (!this.isOpen) return Promise.resolve(localError(id, "disconnected"));
      // An oversized frame would make the server close the socket (1009),
      // taking every other pending request with it: refuse it here instead.
      if (byteLength(text) > this.maxFrameBytes) {
        return Promise.resolve(localError(id, "too_large"));
      }
      return new Promise((resolve) => {
        this.pending.set(id, resolve);
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
      for (const [id, resolve] of this.pending) resolve(localError(id, "disconnected"));
      this.pending.clear();
      this.onClose(code, reason);
    }
  }

  function localError(id, code) {
    return { type: "error", id, code, message: describeError(code), local: true };
  }

  /** Plain-words text for an error code of the contract (or a local one). */
  function describeError(code, fallback) {
    const text = {
      disconnected: "Connection lost before the gateway answered.",
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

  /**
   * Exponential backoff with jitter: 0.5 s doubling to 30 s, each delay moved
   * by up to ±30% so that many clients dropped together do not return together.
   */
  class Backoff {
    constructor(baseMs = 500, maxMs = 30000, jitter = 0.3) {
      this.baseMs = baseMs;
      this.maxMs = maxMs;
      this.jitter = jitter;
      this.attempt = 0;
    }
    next() {
      const delay = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
      this.attempt += 1;
      return Math.round(delay * (1 + (Math.random() * 2 - 1) * this.jitter));
    }
    reset() {
      this.attempt = 0;
    }
  }

  /**
   * Runs `connect` again after a backoff delay, reporting the seconds left
   * through `onTick` so the page can say "Reconnecting in 4 s". Going back
   * online skips the wait.
   */
  class Reconnector {
    constructor(connect, onTick) {
      this.connect = connect;
      this.onTick = onTick;
      this.backoff = new Backoff();
      this.timer = null;
      this.ticker = null;
      window.addEventListener("online", () => {
        if (this.waiting) this.now();
      });
    }
    get waiting() {
      return this.timer !== null;
    }
    schedule() {
      this.cancel();
      const due = Date.now() + this.backoff.next();
      const tick = () => this.onTick(Math.max(0, Math.ceil((due - Date.now()) / 1000)));
      tick();
      this.ticker = setInterval(tick, 250);
      this.timer = setTimeout(() => this.now(), due - Date.now());
    }
    now() {
      this.cancel();
      this.connect();
    }
    cancel() {
      clearTimeout(this.timer);
      clearInterval(this.ticker);
      this.timer = null;
      this.ticker = null;
    }
    /** A connection worked: the next failure starts from the short delay. */
    succeeded() {
      this.backoff.reset();
    }
  }

  /** Create an element: el("li", {class: "msg", dataset: {state: "sent"}}, "text", child). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  /** Show the element with id `id` among `ids`, hiding the others. */
  function showOnly(ids, id) {
    for (const other of ids) document.getElementById(other).hidden = other !== id;
  }

  /** Display text for a message body: its `text` when it has one, else its JSON. */
  function bodyText(body) {
    if (body && typeof body === "object" && !Array.isArray(body) && typeof body.text === "string") {
      return body.text;
    }
    return JSON.stringify(body);
  }

  /** "just now", "2 min ago", "3 h ago", "5 days ago" for an RFC 3339 time. */
  function relativeTime(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "unknown";
    const seconds = Math.max(0, (Date.now() - then) / 1000);
    if (seconds < 45) return "just now";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + " min ago";
    const hours = Math.round(minutes / 60);
    if (hours < 24) return hours + " h ago";
    const days = Math.round(hours / 24);
    return days === 1 ? "yesterday" : days + " days ago";
  }

  function clockTime(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /**
   * A chat-style list. Outgoing messages carry `data-state` pending, sent or
   * failed; a failed one shows why in `.msg-error` and offers a retry, so no
   * message is ever lost without the user seeing it.
   */
  class MessageLog {
    constructor(list, emptyText) {
      this.list = list;
      this.empty = el("li", { class: "msg-empty" }, emptyText);
      this.list.append(this.empty);
    }

    clear() {
      this.list.replaceChildren(this.empty);
    }

    addIncoming(text, sender) {
      const item = el(
        "li",
        { class: "msg msg-in" },
        sender ? el("span", { class: "msg-sender" }, sender) : null,
        el("span", { class: "msg-text" }, text),
        el("span", { class: "msg-meta" }, clockTime(new Date())),
      );
      this.append(item);
    }

    /** Adds a pending outgoing message; returns controls to update it. */
    addOutgoing(text, recipient) {
      const status = el("span", { class: "msg-status" });
      const meta = el("span", { class: "msg-meta" }, clockTime(new Date()), " · ", status);
      const item = el(
        "li",
        { class: "msg msg-out" },
        recipient ? el("span", { class: "msg-sender" }, "To " + recipient) : null,
        el("span", { class: "msg-text" }, text),
        meta,
      );
      const setState = (state, label) => {
        item.dataset.state = state;
        status.textContent = label;
        const old = item.querySelector(".msg-error");
        if (old) old.remove();
      };
      this.append(item);
      const controls = {
        pending() {
          setState("pending", "Sending…");
        },
        sent(label) {
          setState("sent", label || "Sent ✓");
        },
        failed(reason, retry) {
          setState("failed", "Not sent");
          item.append(
            el(
              "span",
              { class: "msg-error", role: "alert" },
              el("span", {}, reason + " "),
              el("button", { type: "button", class: "msg-retry link-button", onclick: retry }, "Retry"),
            ),
          );
        },
      };
      controls.pending();
      return controls;
    }

    append(item) {
      this.empty.remove();
      // Follow new messages only when the reader is already at the bottom.
      const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
      this.list.append(item);
      if (atBottom) this.list.scrollTop = this.list.scrollHeight;
    }
  }

  window.pairgate = {
    Channel,
    MessageLog,
    Reconnector,
    describeError,
    el,
    showOnly,
    bodyText,
    relativeTime,
    clockTime,
  };
})();
