// The web client page: link this browser to a phone by QR code, then chat
// through the gateway, following pairgate's wire contract (protocol.md).
//
// The protocol is spoken by `PairgateClient` (clients/js/pairgate.js, served
// as static/pairgate.js): this file turns its events into screens. Every URL
// is relative to the page, so the pages work under a path prefix.
// `document.body.dataset.state` mirrors the visible screen for tests:
// connecting, pairing, scanned, expired, linked, replaced, reconnecting.
import { PairgateClient, MessageLog, describeError, showOnly, bodyText, webSocketUrl } from "./common.js";
import { t, errorText, translatePage } from "./i18n.js";

(function () {
  const $ = (id) => document.getElementById(id);

  const SCREENS = [
    "screen-connecting",
    "screen-pair",
    "screen-scanned",
    "screen-expired",
    "screen-replaced",
    "screen-linked",
  ];

  /** An error code's text in the page's language. */
  function describe(code, message) {
    return errorText(code, describeError(code, message));
  }

  // ---- Stored session -----------------------------------------------------
  // localStorage keeps a "Keep me signed in" session across browser restarts;
  // sessionStorage keeps the others only for this tab, as WhatsApp Web does.

  const KEYS = ["pairgate.token", "pairgate.session_id", "pairgate.account"];

  function loadSession() {
    for (const store of [localStorage, sessionStorage]) {
      const token = safeGet(store, "pairgate.token");
      if (token) {
        return {
          token,
          session_id: safeGet(store, "pairgate.session_id"),
          account: safeGet(store, "pairgate.account"),
        };
      }
    }
    return null;
  }

  function saveSession(s, remember) {
    clearStoredSession();
    const store = remember ? localStorage : sessionStorage;
    try {
      store.setItem("pairgate.token", s.token);
      store.setItem("pairgate.session_id", s.session_id);
      store.setItem("pairgate.account", s.account);
    } catch (_) {
      // Storage disabled or full: the session still works until the tab closes.
    }
  }

  function clearStoredSession() {
    for (const store of [localStorage, sessionStorage]) {
      for (const key of KEYS) {
        try {
          store.removeItem(key);
        } catch (_) {
          // Nothing stored when storage is unavailable.
        }
      }
    }
  }

  function safeGet(store, key) {
    try {
      return store.getItem(key);
    } catch (_) {
      return null;
    }
  }

  // ---- Page state ---------------------------------------------------------

  translatePage();
  const stored = loadSession(); // {token, session_id, account} once linked
  let loggingOut = false; // this window asked to log out
  let wasLive = false; // the current socket was live (for the logged-out notice)
  let reconnectTicker = null;
  const client = new PairgateClient({ url: webSocketUrl("ws/web"), token: stored && stored.token });
  const log = new MessageLog($("messages"), t("messages.empty"));

  // Where focus goes when the screen that held it is replaced ("Reload QR
  // code", "Use here", "Log out" hide the button just pressed): the new
  // screen's heading or its one action, never <body>.
  const FOCUS_TARGET = {
    "screen-connecting": "retry-now",
    "screen-pair": "pair-title",
    "screen-scanned": "scanned-title",
    "screen-expired": "reload-qr",
    "screen-replaced": "use-here",
    "screen-linked": "account",
  };
  let focusPending = false; // focus was on a screen since hidden

  /** Focus is nowhere a person would look: <body>, or inside a hidden screen. */
  function focusLost() {
    const active = document.activeElement;
    if (!active || active === document.body) return true;
    const screen = active.closest(".screen");
    return screen !== null && screen.hidden;
  }

  /** Switch the visible screen and the test-facing state. */
  function enter(state, screen, announcement) {
    const from = document.activeElement && document.activeElement.closest(".screen");
    if (from && from.id !== screen) focusPending = true;
    document.body.dataset.state = state;
    showOnly(SCREENS, screen);
    if (announcement) $("live").textContent = announcement;
    // The connecting screen is a moment long: focus waits for the next one.
    if (focusPending && state !== "connecting") {
      focusPending = false;
      if (focusLost()) $(FOCUS_TARGET[screen]).focus();
    }
  }

  function notice(text) {
    $("notice").textContent = text;
    $("notice-box").classList.add("shown");
  }

  function clearNotice() {
    $("notice").textContent = "";
    $("notice-box").classList.remove("shown");
  }

  // ---- Connecting ---------------------------------------------------------

  /** Start over from the connecting screen (first load, "Reload QR code", "Use here"). */
  function connectFresh() {
    stopCountdown();
    stopReconnectTicker();
    $("connecting-text").textContent = t("connecting");
    $("retry-now").hidden = true;
    enter("connecting", "screen-connecting", t("connecting"));
    wasLive = false;
    client.remember = $("remember").checked;
    client.connect();
  }

  client.on("qr", (frame) => showQr(frame));
  client.on("scanned", () => {
    stopCountdown();
    enter("scanned", "screen-scanned", t("scanned.title"));
  });
  // A fresh qr follows right away and brings the pairing screen back.
  client.on("pair_rejected", () => notice(t("pair.rejected")));
  client.on("session", (s) => {
    const remember = "remember" in s ? s.remember : safeGet(localStorage, "pairgate.token") !== null;
    saveSession(s, remember);
  });
  client.on("linked", () => {
    log.clear();
    clearNotice();
    goLive();
    // On touch screens focusing would pop up the keyboard over the new screen.
    if (matchMedia("(pointer: fine)").matches) $("composer-input").focus();
  });
  client.on("ready", () => goLive());
  client.on("phone_status", (frame) => setPhoneOnline(frame.online === true));
  client.on("message", (frame) => {
    if (frame.from === "phone") log.addIncoming(bodyText(frame.body));
  });
  // Errors with an id belong to a request, which reports them itself.
  client.on("error", (frame) => notice(describe(frame.code, frame.message)));
  client.on("close", () => setPhoneOnline(null));
  client.on("logged_out", ({ reason }) => onLoggedOut(reason));
  client.on("invalid_token", () => {
    endSession();
    notice(t("ended.invalid"));
    connectFresh();
  });
  client.on("replaced", () => {
    stopCountdown();
    enter("replaced", "screen-replaced", t("replaced.title"));
    $("use-here").focus();
  });
  client.on("expired", () => {
    stopCountdown();
    enter("expired", "screen-expired", t("expired.title"));
    $("reload-qr").focus();
  });
  client.on("reconnecting", ({ dueAt }) => onReconnecting(dueAt));

  /** The socket is a live web session (after `linked` or `ready`). */
  function goLive() {
    wasLive = true;
    stopCountdown();
    stopReconnectTicker();
    $("account").textContent = client.account;
    const banner = $("connection-banner");
    const retryHadFocus = banner.contains(document.activeElement);
    banner.hidden = true;
    enter("linked", "screen-linked", t("linked.announce", { account: client.account }));
    // "Retry now" went with its banner.
    if (retryHadFocus) $("account").focus();
  }

  function onLoggedOut(reason) {
    let text;
    if (loggingOut || reason === "self_logout") text = t("ended.you");
    else if (reason === "admin") text = t("ended.admin");
    else if (wasLive) text = t("ended.phone");
    // A stored token the gateway had already ended: logged out from the phone
    // or expired (remember:false grace, idle expiry). 4001 does not say which,
    // so the notice names both.
    else text = t("ended.stored");
    endSession();
    notice(text);
    connectFresh();
  }

  function endSession() {
    client.forgetSession();
    loggingOut = false;
    clearStoredSession();
    log.clear();
    $("logout").disabled = false;
  }

  /** 1012, 1006, a silent socket...: the client comes back after `dueAt`. */
  function onReconnecting(dueAt) {
    stopCountdown();
    if (client.token && !$("screen-linked").hidden) {
      // Keep the conversation on screen while the link comes back.
      $("connection-banner").hidden = false;
      enter("reconnecting", "screen-linked", t("connection_lost"));
    } else {
      $("retry-now").hidden = false;
      enter("reconnecting", "screen-connecting", t("connection_lost"));
    }
    stopReconnectTicker();
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((dueAt - Date.now()) / 1000));
      const text = seconds > 0 ? t("reconnecting_in", { n: seconds }) : t("reconnecting");
      $("connection-text").textContent = text;
      $("connecting-text").textContent = text;
    };
    tick();
    reconnectTicker = setInterval(tick, 250);
  }

  function stopReconnectTicker() {
    clearInterval(reconnectTicker);
    reconnectTicker = null;
  }

  function reconnectNow() {
    stopReconnectTicker();
    client.connect();
  }

  // ---- Pairing screen -----------------------------------------------------

  let countdown = null; // {deadline, total, remaining, timer}
  let shownCode = null; // the code on screen

  function showQr(frame) {
    renderSvg(frame.svg);
    const code = String(frame.code || "").toUpperCase();
    const typing = document.querySelector(".pair-qr").classList.contains("code-mode");
    const replaced = shownCode !== null && shownCode !== code && document.body.dataset.state === "pairing";
    $("code").textContent = code;
    shownCode = code;
    startCountdown(Number(frame.expires_in_ms) || 0, Number(frame.remaining) || 0);
    if (typing && replaced) {
      // Someone may be typing the old code: say, politely, that it changed.
      $("code-news").textContent = t("pair.new_code", { code });
      $("code").classList.add("code-new");
      $("live").textContent = "";
      enter("pairing", "screen-pair");
    } else {
      $("code-news").textContent = "";
      $("code").classList.remove("code-new");
      enter("pairing", "screen-pair", typing ? null : t("pair.new_qr"));
    }
  }

  /**
   * Insert the server's QR SVG. It is parsed as XML and stripped of anything
   * that could run script, so the page never executes markup it received.
   */
  function renderSvg(markup) {
    const qr = $("qr");
    const doc = new DOMParser().parseFromString(String(markup || ""), "image/svg+xml");
    const svg = doc.documentElement;
    if (svg.localName !== "svg" || doc.getElementsByTagName("parsererror").length) {
      qr.replaceChildren(document.createTextNode(t("pair.qr_unavailable")));
      return;
    }
    for (const bad of svg.querySelectorAll("script, foreignObject, iframe")) bad.remove();
    for (const node of [svg, ...svg.querySelectorAll("*")]) {
      for (const attr of [...node.attributes]) {
        if (/^on/i.test(attr.name) || /href$/i.test(attr.name)) node.removeAttribute(attr.name);
      }
    }
    // CSS sizes the code; the viewBox keeps its proportions.
    if (!svg.hasAttribute("viewBox") && svg.getAttribute("width")) {
      svg.setAttribute("viewBox", "0 0 " + svg.getAttribute("width") + " " + (svg.getAttribute("height") || svg.getAttribute("width")));
    }
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    qr.replaceChildren(document.importNode(svg, true));
  }

  function startCountdown(ms, remaining) {
    stopCountdown();
    countdown = { deadline: Date.now() + ms, total: Math.max(ms, 1), remaining, timer: null };
    tickCountdown();
    countdown.timer = setInterval(tickCountdown, 250);
  }

  function tickCountdown() {
    const left = Math.max(0, countdown.deadline - Date.now());
    const n = Math.ceil(left / 1000);
    const typing = document.querySelector(".pair-qr").classList.contains("code-mode");
    let text;
    if (left === 0) text = countdown.remaining > 0 ? t("pair.refreshing") : t("pair.expiring");
    else if (countdown.remaining === 0) text = t("pair.last_code", { n });
    else if (typing) text = t("pair.code_expires_in", { n });
    else text = t("pair.refreshes_in", { n });
    $("countdown").textContent = text;
    $("countdown-bar").style.width = (100 * left) / countdown.total + "%";
  }

  function stopCountdown() {
    if (countdown) clearInterval(countdown.timer);
    countdown = null;
  }

  function toggleCodeMode() {
    const box = document.querySelector(".pair-qr");
    const on = box.classList.toggle("code-mode");
    const button = $("toggle-code");
    button.setAttribute("aria-pressed", String(on));
    button.textContent = on ? t("pair.with_qr") : t("pair.with_code");
    $("code-label").textContent = on ? t("pair.code_label_typing") : t("pair.code_label");
    $("code-news").textContent = "";
    $("code").classList.remove("code-new");
    if (countdown) tickCountdown();
  }

  /** "Keep me signed in" changed while pairing: tell the server at once. */
  function onRememberChange() {
    const state = document.body.dataset.state;
    if (!client.isOpen || (state !== "pairing" && state !== "scanned")) return;
    client.pair({ remember: $("remember").checked }).then((reply) => {
      if (reply.type === "error" && !reply.local) notice(describe(reply.code, reply.message));
    });
  }

  // ---- Linked screen ------------------------------------------------------

  let phoneOnline = null;

  /**
   * `online` is true, false, or null while unknown (no live socket). While
   * the phone is offline the composer says so and keeps the draft: a send
   * could only fail.
   */
  function setPhoneOnline(online) {
    phoneOnline = online;
    const pill = $("phone-status");
    pill.textContent = online ? t("phone.online") : t("phone.offline");
    pill.classList.toggle("online", online === true);
    pill.classList.toggle("offline", online === false);
    $("phone-offline-banner").hidden = online !== false;
    const offline = online === false;
    $("composer-offline").hidden = !offline;
    $("send").disabled = offline;
    $("composer").classList.toggle("composer-waiting", offline);
    const input = $("composer-input");
    input.placeholder = offline ? t("composer.placeholder_offline") : t("composer.placeholder");
    if (offline) input.setAttribute("aria-describedby", "composer-offline");
    else input.removeAttribute("aria-describedby");
  }

  function sendMessage(text) {
    const message = log.addOutgoing(text);
    const attempt = () => {
      message.pending();
      if (!client.isOpen) {
        message.failed(t("msg.not_connected"), attempt);
        return;
      }
      client.send({ text }).then((reply) => {
        if (reply.type === "ack") message.sent();
        else message.failed(describe(reply.code, reply.message), attempt);
      });
    };
    attempt();
  }

  function onComposerSubmit(event) {
    event.preventDefault();
    // The draft stays in the composer until the phone is back.
    if (phoneOnline === false) return;
    const input = $("composer-input");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    fitComposer();
    sendMessage(text);
    input.focus();
  }

  function onComposerKey(event) {
    // Enter sends, Shift+Enter adds a line; never while an IME is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  }

  /** Grow the composer with its text, up to the CSS max-height. */
  function fitComposer() {
    const input = $("composer-input");
    input.style.height = "auto";
    input.style.height = input.scrollHeight + "px";
  }

  function logout() {
    if (!client.isOpen) {
      // The gateway cannot be told now; forget the session here at least.
      client.close();
      endSession();
      notice(t("logout.offline"));
      return connectFresh();
    }
    loggingOut = true;
    // Disabling blurs the button: the next screen takes focus (see enter).
    const hadFocus = document.activeElement === $("logout");
    if (hadFocus) focusPending = true;
    $("logout").disabled = true;
    client.logout().then((reply) => {
      // Success is `logged_out` + close 4001, handled by the client.
      if (reply.type !== "error") return;
      loggingOut = false;
      $("logout").disabled = false;
      if (hadFocus) {
        focusPending = false;
        if (focusLost()) $("logout").focus();
      }
      if (!reply.local) notice(t("logout.failed", { reason: describe(reply.code, reply.message) }));
    });
  }

  // ---- Wiring -------------------------------------------------------------

  function init() {
    $("reload-qr").addEventListener("click", () => {
      clearNotice();
      connectFresh();
    });
    $("use-here").addEventListener("click", () => {
      // Another tab may have logged out or re-linked in the meantime.
      const latest = loadSession();
      if (latest) client.token = latest.token;
      else client.forgetSession();
      connectFresh();
    });
    $("retry-now").addEventListener("click", reconnectNow);
    $("reconnect-now").addEventListener("click", reconnectNow);
    // Going back online skips the wait.
    window.addEventListener("online", () => {
      if (client.reconnecting) reconnectNow();
    });
    $("notice-close").addEventListener("click", clearNotice);
    $("toggle-code").addEventListener("click", toggleCodeMode);
    $("remember").addEventListener("change", onRememberChange);
    $("composer").addEventListener("submit", onComposerSubmit);
    $("composer-input").addEventListener("keydown", onComposerKey);
    $("composer-input").addEventListener("input", fitComposer);
    $("logout").addEventListener("click", logout);
    setPhoneOnline(null);
    connectFresh();
  }

  init();
})();
