// Shared plumbing for the pairgate pages (an ES module): the protocol client
// comes from pairgate.js (clients/js/pairgate.js, served as
// /static/pairgate.js); this adds the reconnect countdown and DOM helpers.
import { Backoff } from "./pairgate.js";
import { t } from "./i18n.js";

export { Channel, PairgateClient, describeError, webSocketUrl } from "./pairgate.js";

/**
 * Runs `connect` again after a backoff delay, reporting the seconds left
 * through `onTick` so the page can say "Reconnecting in 4 s". Going back
 * online skips the wait.
 */
export class Reconnector {
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
export function el(tag, attrs, ...children) {
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
export function showOnly(ids, id) {
  for (const other of ids) document.getElementById(other).hidden = other !== id;
}

/**
 * Display text for a message body: a string as itself (not `"hello"` with
 * its quotes), an object's `text` when it has one, anything else as JSON.
 */
export function bodyText(body) {
  if (typeof body === "string") return body;
  if (body && typeof body === "object" && !Array.isArray(body) && typeof body.text === "string") {
    return body.text;
  }
  return JSON.stringify(body);
}

/** "just now", "2 min ago", "3 h ago", "5 days ago" for an RFC 3339 time. */
export function relativeTime(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return t("time.unknown");
  const seconds = Math.max(0, (Date.now() - then) / 1000);
  if (seconds < 45) return t("time.just_now");
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return t("time.min_ago", { n: minutes });
  const hours = Math.round(minutes / 60);
  if (hours < 24) return t("time.h_ago", { n: hours });
  const days = Math.round(hours / 24);
  return days === 1 ? t("time.yesterday") : t("time.days_ago", { n: days });
}

export function clockTime(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/**
 * A chat-style list. Outgoing messages carry `data-state` pending, sent or
 * failed; a failed one shows why in `.msg-error` and offers a retry, so no
 * message is ever lost without the user seeing it.
 */
export class MessageLog {
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
      recipient ? el("span", { class: "msg-sender" }, t("msg.to", { name: recipient })) : null,
      el("span", { class: "msg-text" }, text),
      meta,
    );
    const setState = (state, label) => {
      item.dataset.state = state;
      status.textContent = label;
      const old = item.querySelector(".msg-error");
      if (old && old.contains(document.activeElement)) {
        // Retry was pressed and goes away: focus stays on its message.
        item.tabIndex = -1;
        item.focus();
      }
      if (old) old.remove();
    };
    this.append(item);
    const controls = {
      pending() {
        setState("pending", t("msg.sending"));
      },
      sent(label) {
        setState("sent", label || t("msg.sent"));
      },
      failed(reason, retry) {
        setState("failed", t("msg.not_sent"));
        item.append(
          el(
            "span",
            { class: "msg-error", role: "alert" },
            el("span", {}, reason + " "),
            el("button", { type: "button", class: "msg-retry link-button", onclick: retry }, t("msg.retry")),
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

