// The web client page: link this browser to a phone by QR code, then chat
// through the gateway, following pairgate's wire contract (protocol.md).
//
// The page is driven by the frames the server sends (qr, scanned, linked,
// ready, ...) and by how the socket closes; request promises only handle
// their errors. `document.body.dataset.state` mirrors the visible screen for
// tests: connecting, pairing, scanned, expired, linked, replaced, reconnecting.
"use strict";

(function () {
  const { Channel, Reconnector, MessageLog, describeError, showOnly, bodyText } = window.pairgate;
  const $ = (id) => document.getElementById(id);

  const SCREENS = [
    "screen-connecting",
    "screen-pair",
    "screen-scanned",
    "screen-expired",
    "screen-replaced",
    "screen-linked",
  ];

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

  let session = loadSession(); // {token, session_id, account} once linked
  let channel = null; // the current Channel, or null
  let loggingOut = false; // this window asked to log out
  const reconnector = new Reconnector(connect, showReconnectCountdown);
  const log = new MessageLog($("messages"), "No messages yet. Say hello to your phone.");

  /** Switch the visible screen and the test-facing state. */
  function enter(state, screen, announcement) {
    document.body.dataset.state = state;
    showOnly(SCREENS, screen);
    if (announcement) $("live").textContent = announcement;
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

  /** Open a fresh socket; `hello` decides between resuming and pairing. */
  function connect() {
    reconnector.cancel();
    if (channel) channel.dispose();
    // Facts about this one socket that its close code alone does not tell.
    const ctx = { pairTimedOut: false, loggedOutReason: null, wasLive: false };
    channel = new Channel("/ws/web", {
      idPrefix: "w",
      onFrame: (frame) => onFrame(frame, ctx),
      onClose: (code) => onClose(code, ctx),
    });
  }

  /** Start over from the connecting screen (first load, "Reload QR code", "Use here"). */
  function connectFresh() {
    stopCountdown();
    $("connecting-text").textContent = "Connecting…";
    $("retry-now").hidden = true;
    enter("connecting", "screen-connecting", "Connecting");
    connect();
  }

  function startPairing(ch) {
    ch.request({ type: "pair", remember: $("remember").checked }).then((reply) => {
      if (reply.type === "error" && !reply.local) notice(describeError(reply.code, reply.message));
    });
  }

  function resumeSession(ch) {
    ch.request({ type: "auth", token: session.token }).then((reply) => {
      // `ready` is handled in onFrame; logged_out / invalid_token are
      // followed by a close (4001 / 4003), handled in onClose.
      if (reply.type === "error" && !reply.local && !["logged_out", "invalid_token"].includes(reply.code)) {
        notice(describeError(reply.code, reply.message));
      }
    });
  }

  function onFrame(frame, ctx) {
    switch (frame.type) {
      case "hello":
        if (session) resumeSession(channel);
        else startPairing(channel);
        break;
      case "qr":
        reconnector.succeeded();
        showQr(frame);
        break;
      case "scanned":
        stopCountdown();
        enter("scanned", "screen-scanned", "Confirm on your phone");
        break;
      case "pair_rejected":
        // A fresh qr follows right away and brings the pairing screen back.
        notice("Link request was rejected");
        break;
      case "pair_timeout":
        ctx.pairTimedOut = true;
        break;
      case "linked":
        onLinked(frame, ctx);
        break;
      case "ready":
        onReady(frame, ctx);
        break;
      case "phone_status":
        setPhoneOnline(frame.online === true);
        break;
      case "message":
        if (frame.from === "phone") log.addIncoming(bodyText(frame.body));
        break;
      case "logged_out":
        ctx.loggedOutReason = frame.reason || null;
        break;
      case "error":
        // Errors with an id belong to a request, which reports them itself.
        if (typeof frame.id !== "string") notice(describeError(frame.code, frame.message));
        break;
      default:
        // Replies (ok, ack) are handled by their requests; newer frame types
        // the gateway may add are ignored.
        break;
    }
  }

  function onLinked(frame, ctx) {
    session = { token: frame.token, session_id: frame.session_id, account: frame.account };
    saveSession(session, frame.remember !== false);
    log.clear();
    clearNotice();
    goLive(ctx);
    // On touch screens focusing would pop up the keyboard over the new screen.
    if (matchMedia("(pointer: fine)").matches) $("composer-input").focus();
  }

  function onReady(frame, ctx) {
    session.account = frame.account;
    session.session_id = frame.session_id;
    // The gateway swaps a token signed with a secret it is phasing out for a
    // fresh one: keep it where the old one was kept.
    if (typeof frame.token === "string" && frame.token) {
      session.token = frame.token;
      saveSession(session, safeGet(localStorage, "pairgate.token") !== null);
    }
    goLive(ctx);
  }

  /** The socket is a live web session (after `linked` or `ready`). */
  function goLive(ctx) {
    ctx.wasLive = true;
    reconnector.succeeded();
    stopCountdown();
    $("account").textContent = session.account;
    $("connection-banner").hidden = true;
    enter("linked", "screen-linked", "Linked to " + session.account);
  }

  function onClose(code, ctx) {
    channel = null;
    setPhoneOnline(null);
    if (code === 4001 && session) return onLoggedOut(ctx);
    if (code === 4003 && session) {
      endSession();
      notice("This browser's saved session is no longer valid. Link it again.");
      return connectFresh();
    }
    if (code === 4009) {
      stopCountdown();
      enter("replaced", "screen-replaced", "pairgate is open in another window");
      $("use-here").focus();
      return;
    }
    if (code === 4008 && ctx.pairTimedOut) {
      stopCountdown();
      enter("expired", "screen-expired", "QR code expired");
      $("reload-qr").focus();
      return;
    }
    // 1012 (gateway restarting), 1006 (network), 4008 (silent socket), ...:
    // come back with backoff, resuming the session or pairing again.
    scheduleReconnect();
  }

  function onLoggedOut(ctx) {
    let text;
    if (loggingOut || ctx.loggedOutReason === "self_logout") text = "You logged out.";
    else if (ctx.loggedOutReason === "admin") text = "Logged out by an administrator";
    else if (ctx.wasLive) text = "Logged out from your phone";
    // A stored token the gateway had already ended: logged out from the phone
    // or expired (remember:false grace, idle expiry). 4001 does not say which,
    // so the notice names both.
    else text = "This session has ended (logged out from your phone or expired). Link this browser again.";
    endSession();
    notice(text);
    connectFresh();
  }

  function endSession() {
    session = null;
    loggingOut = false;
    clearStoredSession();
    log.clear();
    $("logout").disabled = false;
  }

  function scheduleReconnect() {
    stopCountdown();
    if (session && !$("screen-linked").hidden) {
      // Keep the conversation on screen while the link comes back.
      $("connection-banner").hidden = false;
      enter("reconnecting", "screen-linked", "Connection lost. Reconnecting.");
    } else {
      $("retry-now").hidden = false;
      enter("reconnecting", "screen-connecting", "Connection lost. Reconnecting.");
    }
    reconnector.schedule();
  }

  function showReconnectCountdown(seconds) {
    const text = seconds > 0 ? "Reconnecting in " + seconds + " s…" : "Reconnecting…";
    $("connection-text").textContent = text;
    $("connecting-text").textContent = text;
  }

  // ---- Pairing screen -----------------------------------------------------

  let countdown = null; // {deadline, total, remaining, timer}

  function showQr(frame) {
    renderSvg(frame.svg);
    $("code").textContent = String(frame.code || "").toUpperCase();
    startCountdown(Number(frame.expires_in_ms) || 0, Number(frame.remaining) || 0);
    enter("pairing", "screen-pair", "New QR code shown. Scan it with your phone.");
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
      qr.replaceChildren(document.createTextNode("QR code unavailable: use the code below."));
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
    const seconds = Math.ceil(left / 1000);
    let text;
    if (left === 0) text = countdown.remaining > 0 ? "Refreshing…" : "Expiring…";
    else if (countdown.remaining > 0) text = "Refreshes in " + seconds + " s";
    else text = "Last code: expires in " + seconds + " s";
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
    button.textContent = on ? "Scan QR code instead" : "Link with code instead";
    $("code-label").textContent = on
      ? "On your phone, tap Link a device and type this code:"
      : "Or enter this code on your phone";
  }

  /** "Keep me signed in" changed while pairing: tell the server at once. */
  function onRememberChange() {
    const state = document.body.dataset.state;
    if (!channel || !channel.isOpen || (state !== "pairing" && state !== "scanned")) return;
    channel.request({ type: "pair", remember: $("remember").checked }).then((reply) => {
      if (reply.type === "error" && !reply.local) notice(describeError(reply.code, reply.message));
    });
  }

  // ---- Linked screen ------------------------------------------------------

  /** `online` is true, false, or null while unknown (no live socket). */
  function setPhoneOnline(online) {
    const pill = $("phone-status");
    pill.textContent = online ? "Phone connected" : "Phone not connected";
    pill.classList.toggle("online", online === true);
    pill.classList.toggle("offline", online === false);
    $("phone-offline-banner").hidden = online !== false;
  }

  function sendMessage(text) {
    const message = log.addOutgoing(text);
    const attempt = () => {
      message.pending();
      if (!channel || !channel.isOpen) {
        message.failed("Not connected to the gateway.", attempt);
        return;
      }
      channel.request({ type: "send", body: { text } }).then((reply) => {
        if (reply.type === "ack") message.sent();
        else message.failed(describeError(reply.code, reply.message), attempt);
      });
    };
    attempt();
  }

  function onComposerSubmit(event) {
    event.preventDefault();
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
    if (!channel || !channel.isOpen) {
      // The gateway cannot be told now; forget the session here at least.
      endSession();
      notice("Logged out of this browser. Also remove it from the list of linked devices on your phone.");
      return connectFresh();
    }
    loggingOut = true;
    $("logout").disabled = true;
    channel.request({ type: "logout" }).then((reply) => {
      // Success is `logged_out` + close 4001, handled in onClose.
      if (reply.type !== "error") return;
      loggingOut = false;
      $("logout").disabled = false;
      if (!reply.local) notice("Could not log out: " + describeError(reply.code, reply.message));
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
      session = loadSession();
      connectFresh();
    });
    $("retry-now").addEventListener("click", () => reconnector.now());
    $("reconnect-now").addEventListener("click", () => reconnector.now());
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
