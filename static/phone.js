// The demo phone page: plays the account's phone so a person can try the
// whole flow. It signs in with a phone token, approves link requests (from a
// scanned QR code's #ref= or a typed code), lists and logs out linked
// sessions, and chats with them.
//
// `document.body.dataset.state`: signed-out, connecting, ready, or replaced
// (another phone socket of the account took over; waits for "Use here").
import { Channel, Reconnector, MessageLog, describeError, el, bodyText, relativeTime, webSocketUrl } from "./common.js";
import { t, tNodes, errorText as translatedError, translatePage } from "./i18n.js";

(function () {
  const $ = (id) => document.getElementById(id);

  const TOKEN_KEY = "pairgate.phone_token";

  let token = readToken();
  let channel = null;
  // A scanned QR's ref: offered (never sent on its own) once connected. A
  // page that opens or frames /phone#ref=X must not link with one click.
  let pendingRef = refFromHash();
  let linkRequest = null; // {request_id, device} awaiting Confirm / Reject
  let sessions = []; // last `sessions` reply, oldest first
  const reconnector = new Reconnector(connect, showReconnectCountdown);
  translatePage();
  const log = new MessageLog($("phone-messages"), t("demo.messages.empty"));

  // ---- Small helpers ------------------------------------------------------

  function readToken() {
    try {
      return localStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeToken(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Without storage the token lasts until the page is reloaded.
    }
  }

  function refFromHash() {
    return new URLSearchParams(location.hash.slice(1)).get("ref");
  }

  function clearHash() {
    history.replaceState(null, "", location.pathname + location.search);
  }

  function notice(text) {
    $("phone-notice").textContent = text;
    $("phone-notice-box").classList.add("shown");
  }

  function clearNotice() {
    $("phone-notice").textContent = "";
    $("phone-notice-box").classList.remove("shown");
  }

  /**
   * Hides `box`; if focus was in it (the button just pressed: `had`, when
   * that button was disabled meanwhile, which blurs it), it goes to the
   * element with id `to` (a heading with tabindex=-1), never <body>.
   */
  function hideKeepingFocus(box, to, had = box.contains(document.activeElement)) {
    box.hidden = true;
    if (had) $(to).focus();
  }

  function errorText(reply) {
    return translatedError(reply.code, describeError(reply.code, reply.message));
  }

  /** `state` is connected, connecting or disconnected. */
  function setConnection(state) {
    const pill = $("phone-state");
    pill.textContent = t("demo.state." + state);
    pill.classList.toggle("online", state === "connected");
  }

  function deviceName(sessionId) {
    const found = sessions.find((s) => s.session_id === sessionId);
    return found ? found.device_name : null;
  }

  // ---- Signing in ---------------------------------------------------------

  function showSignin(error) {
    document.body.dataset.state = "signed-out";
    $("screen-signin").hidden = false;
    $("screen-phone").hidden = true;
    $("signin-ref-hint").hidden = !pendingRef;
    showSigninError(error || null);
  }

  /** `error` is a string or a DOM node (for messages with code snippets). */
  function showSigninError(error) {
    const box = $("signin-error");
    box.hidden = !error;
    box.replaceChildren(...(error ? [error] : []));
  }

  function useToken(value) {
    token = value.trim();
    if (!token) {
      showSigninError(t("demo.signin.paste_first"));
      return;
    }
    storeToken(token);
    $("token-input").value = "";
    connect();
  }

  async function createDemoAccount() {
    const button = $("create-demo");
    button.disabled = true;
    showSigninError(null);
    try {
      const response = await fetch("demo/phone", { method: "POST" });
      if (response.status === 404) {
        showSigninError(demoOffMessage());
        return;
      }
      if (!response.ok) {
        showSigninError(t("demo.signin.create_refused", { status: response.status }));
        return;
      }
      const data = await response.json();
      if (typeof data.token !== "string") throw new Error("no token in the answer");
      useToken(data.token);
    } catch (err) {
      showSigninError(t("demo.signin.create_failed", { reason: err.message }));
    } finally {
      button.disabled = false;
    }
  }

  function demoOffMessage() {
    return el(
      "span",
      {},
      ...tNodes("demo.signin.demo_off", {
        serve: el("code", {}, "pairgate serve --demo"),
        token: el("code", {}, "pairgate token --account NAME"),
      }),
    );
  }

  function signOut() {
    reconnector.cancel();
    if (channel) channel.dispose();
    channel = null;
    token = null;
    storeToken(null);
    resetAccountView();
    clearNotice();
    showSignin();
  }

  function resetAccountView() {
    $("phone-account").textContent = "";
    hideLinkRequest();
    renderSessions([]);
    log.clear();
    $("logout-all-result").textContent = "";
    $("logout-all-box").hidden = true;
  }

  // ---- Connection ---------------------------------------------------------

  function connect() {
    reconnector.cancel();
    if (channel) channel.dispose();
    document.body.dataset.state = "connecting";
    $("screen-signin").hidden = true;
    $("screen-phone").hidden = false;
    hideKeepingFocus($("phone-replaced"), "phone-account");
    setConnection("connecting");
    channel = new Channel(webSocketUrl("ws/phone"), {
      idPrefix: "p",
      onFrame,
      onClose,
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "hello":
        authenticate(channel);
        break;
      case "ready":
        onReady(frame);
        break;
      case "session_online":
      case "session_offline":
        refreshSessions();
        break;
      case "session_removed":
        onSessionRemoved(frame);
        break;
      case "message":
        onMessage(frame);
        break;
      case "error":
        // Errors with an id belong to a request, which reports them itself.
        if (typeof frame.id !== "string") notice(errorText(frame));
        break;
      default:
        // Replies are handled by their requests; unknown newer frames are ignored.
        break;
    }
  }

  function authenticate(ch) {
    ch.request({ type: "auth", token }).then((reply) => {
      // `ready` is handled in onFrame; invalid_token is followed by close 4003.
      if (reply.type === "error" && !reply.local && reply.code !== "invalid_token") notice(errorText(reply));
    });
  }

  function onReady(frame) {
    reconnector.succeeded();
    document.body.dataset.state = "ready";
    setConnection("connected");
    $("phone-connection").hidden = true;
    $("phone-account").textContent = frame.account;
    refreshSessions();
    if (pendingRef) showRefPrompt();
  }

  function onClose(code) {
    channel = null;
    setConnection("disconnected");
    if (code === 4003) {
      token = null;
      storeToken(null);
      resetAccountView();
      showSignin(t("demo.signin.invalid"));
      return;
    }
    if (code === 4009) {
      document.body.dataset.state = "replaced";
      $("phone-connection").hidden = true;
      $("phone-replaced").hidden = false;
      $("use-here").focus();
      return;
    }
    // Network loss, 1012 (gateway restarting), timeouts: come back with backoff.
    document.body.dataset.state = "connecting";
    $("phone-connection").hidden = false;
    reconnector.schedule();
  }

  function showReconnectCountdown(seconds) {
    $("phone-connection-text").textContent =
      seconds > 0 ? t("demo.reconnecting_in", { n: seconds }) : t("reconnecting");
  }

  // ---- Linking ------------------------------------------------------------

  /** Shows what opening a QR code's link is about to do; links only on "Link this device". */
  function showRefPrompt() {
    $("ref-prompt").hidden = false;
  }

  function dismissRef() {
    pendingRef = null;
    clearHash();
    hideKeepingFocus($("ref-prompt"), "link-title");
  }

  function linkByRef() {
    const ref = pendingRef;
    if (!ref) return;
    pendingRef = null;
    clearHash();
    hideKeepingFocus($("ref-prompt"), "link-title");
    requestLink({ ref }, () => {
      pendingRef = ref; // not sent: try again once connected
    });
  }

  function onCodeSubmit(event) {
    event.preventDefault();
    const code = $("code-input").value.trim().toUpperCase();
    if (!code) {
      notice(t("demo.link.type_code"));
      return;
    }
    requestLink({ code }, () => notice(t("demo.not_connected")));
  }

  /** Send `link`; `onNotSent` runs when the socket was down. */
  function requestLink(fields, onNotSent) {
    if (!channel || !channel.isOpen) {
      onNotSent();
      return;
    }
    $("link-code").disabled = true;
    channel.request(Object.assign({ type: "link" }, fields)).then((reply) => {
      $("link-code").disabled = false;
      if (reply.type === "link_request") {
        $("code-input").value = "";
        showLinkRequest(reply);
      } else if (reply.local) {
        onNotSent();
      } else {
        notice(linkErrorText(reply));
      }
    });
  }

  function linkErrorText(reply) {
    if (reply.code === "unknown_ref") {
      return t("demo.link.unknown_ref");
    }
    if (reply.code === "rate_limited") {
      return t("demo.link.rate_limited");
    }
    return errorText(reply);
  }

  function showLinkRequest(reply) {
    const device = reply.device || {};
    linkRequest = { request_id: reply.request_id, device };
    $("link-device-name").textContent = device.name || t("demo.unknown_device");
    $("link-device-ip").textContent = device.ip || t("demo.unknown_address");
    $("link-device-ua").textContent = device.user_agent || "";
    setLinkButtonsDisabled(false);
    $("link-request").hidden = false;
    // The heading, not Confirm: a stray Enter or click must not link.
    $("link-request-title").focus();
  }

  function hideLinkRequest(hadFocus) {
    linkRequest = null;
    hideKeepingFocus($("link-request"), "link-title", hadFocus);
  }

  function setLinkButtonsDisabled(disabled) {
    $("confirm-link").disabled = disabled;
    $("reject-link").disabled = disabled;
  }

  /** Confirm (`confirm` true) or reject the shown link request. */
  function answerLinkRequest(confirm) {
    if (!linkRequest) return;
    if (!channel || !channel.isOpen) {
      notice(t("demo.not_connected"));
      return;
    }
    const request = linkRequest;
    const hadFocus = $("link-request").contains(document.activeElement);
    setLinkButtonsDisabled(true);
    const type = confirm ? "link_confirm" : "link_reject";
    channel.request({ type, request_id: request.request_id }).then((reply) => {
      setLinkButtonsDisabled(false);
      if (reply.type === "device_linked") {
        hideLinkRequest(hadFocus);
        const name = (reply.session && reply.session.device_name) || request.device.name || t("demo.the_device");
        notice(t("demo.request.linked", { name }));
        refreshSessions();
      } else if (reply.type === "ok") {
        hideLinkRequest(hadFocus);
        notice(t("demo.request.rejected"));
      } else if (reply.code === "unknown_request") {
        hideLinkRequest(hadFocus);
        notice(errorText(reply));
      } else {
        // too_many_devices leaves the request pending: keep the card.
        notice(errorText(reply));
        if (hadFocus && document.activeElement === document.body) $("link-request-title").focus();
      }
    });
  }

  // ---- Linked sessions ----------------------------------------------------

  let refreshing = false;
  let refreshAgain = false;

  /** Ask for the session list; calls made meanwhile fold into one more. */
  function refreshSessions() {
    if (!channel || !channel.isOpen) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    channel.request({ type: "list_sessions" }).then((reply) => {
      refreshing = false;
      if (reply.type === "sessions" && Array.isArray(reply.sessions)) renderSessions(reply.sessions);
      else if (!reply.local) notice(t("demo.sessions.list_failed", { reason: errorText(reply) }));
      if (refreshAgain) {
        refreshAgain = false;
        refreshSessions();
      }
    });
  }

  function renderSessions(list) {
    // Rebuilding the rows must not throw a keyboard user's focus away.
    const focused = document.activeElement && document.activeElement.closest(".session");
    const focusedId = focused ? focused.dataset.sessionId : null;
    sessions = list;
    const rows = list.map(sessionRow);
    if (!rows.length) rows.push(el("li", { class: "session-empty" }, t("demo.sessions.empty")));
    $("sessions").replaceChildren(...rows);
    const again = focusedId && rows.find((row) => row.dataset.sessionId === focusedId);
    if (again) again.querySelector(".session-logout").focus();
    renderRecipients();
  }

  function sessionDetail(s) {
    const seen = s.online ? t("demo.sessions.online_now") : t("demo.sessions.last_active", { when: relativeTime(s.last_active_at) });
    const parts = [s.ip || t("demo.unknown_address"), seen];
    if (s.remember === false) parts.push(t("demo.sessions.temporary"));
    return parts.join(" · ");
  }

  /** Keep "last active 2 min ago" current without asking the gateway. */
  function updateRelativeTimes() {
    for (const row of $("sessions").querySelectorAll(".session")) {
      const s = sessions.find((x) => x.session_id === row.dataset.sessionId);
      if (s) row.querySelector(".session-detail").textContent = sessionDetail(s);
    }
  }

  function sessionRow(s) {
    const name = s.device_name || t("demo.unknown_device");
    const online = t(s.online ? "demo.sessions.online" : "demo.sessions.offline");
    return el(
      "li",
      { class: "session", dataset: { sessionId: s.session_id } },
      el("span", {
        class: "session-online" + (s.online ? " online" : ""),
        dataset: { online: String(Boolean(s.online)) },
        role: "img",
        "aria-label": online,
        title: online,
      }),
      el(
        "span",
        { class: "session-info" },
        el("strong", { class: "session-name" }, name),
        el("span", { class: "session-detail" }, sessionDetail(s)),
      ),
      el(
        "button",
        {
          type: "button",
          class: "button secondary session-logout",
          "aria-label": t("demo.sessions.logout_label", { name }),
          onclick: (event) => logoutSession(s, event.currentTarget),
        },
        t("linked.logout"),
      ),
    );
  }

  /** Keep the "Send to" choices in step with the linked sessions. */
  function renderRecipients() {
    const select = $("phone-send-to");
    const chosen = select.value;
    const options = [el("option", { value: "" }, t("demo.composer.to_all"))];
    for (const s of sessions) {
      options.push(el("option", { value: s.session_id }, s.device_name || s.session_id));
    }
    select.replaceChildren(...options);
    select.value = sessions.some((s) => s.session_id === chosen) ? chosen : "";
  }

  function logoutSession(s, button) {
    if (!channel || !channel.isOpen) {
      notice(t("demo.not_connected"));
      return;
    }
    const hadFocus = document.activeElement === button;
    button.disabled = true;
    channel.request({ type: "logout", session_id: s.session_id }).then((reply) => {
      // The disabled button lost focus, and its row may go: the list's heading.
      if (hadFocus && document.activeElement === document.body) $("sessions-title").focus();
      const name = s.device_name || t("demo.the_device");
      if (reply.type === "ok") notice(t("demo.sessions.logged_out", { name }));
      else notice(t("demo.sessions.logout_failed", { name, reason: errorText(reply) }));
      button.disabled = false;
      refreshSessions();
    });
  }

  function onSessionRemoved(frame) {
    const name = deviceName(frame.session_id) || t("demo.removed.someone");
    const why = frame.reason === "self_logout" || frame.reason === "admin" ? frame.reason : "expired";
    notice(t("demo.removed." + why, { name }));
    refreshSessions();
  }

  function askLogoutAll() {
    $("logout-all-result").textContent = "";
    $("logout-all-box").hidden = false;
    $("logout-all-cancel").focus();
  }

  function cancelLogoutAll() {
    $("logout-all-box").hidden = true;
    $("logout-all").focus();
  }

  function logoutAll() {
    hideKeepingFocus($("logout-all-box"), "sessions-title");
    if (!channel || !channel.isOpen) {
      $("logout-all-result").textContent = t("demo.not_connected");
      return;
    }
    $("logout-all").disabled = true;
    channel.request({ type: "logout_all" }).then((reply) => {
      $("logout-all").disabled = false;
      $("logout-all-result").textContent =
        reply.type === "ok"
          ? t("demo.sessions.closed", { n: Number(reply.closed) || 0 })
          : t("demo.sessions.logout_all_failed", { reason: errorText(reply) });
      refreshSessions();
    });
  }

  // ---- Messages -----------------------------------------------------------

  function onMessage(frame) {
    const name = deviceName(frame.from);
    // A sender we do not know yet was probably linked a moment ago.
    if (!name) refreshSessions();
    log.addIncoming(bodyText(frame.body), name || t("demo.unknown_device"));
  }

  function onComposerSubmit(event) {
    event.preventDefault();
    const input = $("phone-composer-input");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    sendMessage(text, $("phone-send-to").value);
  }

  function sendMessage(text, to) {
    const message = log.addOutgoing(
      text,
      to ? deviceName(to) || t("demo.composer.one_device") : t("demo.composer.all_devices"),
    );
    const frame = { type: "send", body: { text } };
    if (to) frame.to = to;
    const attempt = () => {
      message.pending();
      if (!channel || !channel.isOpen) {
        message.failed(t("msg.not_connected"), attempt);
        return;
      }
      channel.request(frame).then((reply) => {
        if (reply.type === "ack") message.sent(t("demo.delivered", { n: Number(reply.delivered) || 0 }));
        else message.failed(errorText(reply), attempt);
      });
    };
    attempt();
  }

  // ---- Wiring -------------------------------------------------------------

  function init() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      useToken($("token-input").value);
    });
    $("create-demo").addEventListener("click", createDemoAccount);
    $("sign-out").addEventListener("click", signOut);
    $("use-here").addEventListener("click", connect);
    $("reconnect-now").addEventListener("click", () => reconnector.now());
    $("phone-notice-close").addEventListener("click", clearNotice);
    $("code-form").addEventListener("submit", onCodeSubmit);
    $("link-ref").addEventListener("click", linkByRef);
    $("dismiss-ref").addEventListener("click", dismissRef);
    $("confirm-link").addEventListener("click", () => answerLinkRequest(true));
    $("reject-link").addEventListener("click", () => answerLinkRequest(false));
    $("logout-all").addEventListener("click", askLogoutAll);
    $("logout-all-cancel").addEventListener("click", cancelLogoutAll);
    $("logout-all-confirm").addEventListener("click", logoutAll);
    $("phone-composer").addEventListener("submit", onComposerSubmit);
    window.addEventListener("hashchange", () => {
      const ref = refFromHash();
      if (!ref) return;
      pendingRef = ref;
      if (channel && channel.isOpen && document.body.dataset.state === "ready") showRefPrompt();
      else $("signin-ref-hint").hidden = false;
    });
    setInterval(updateRelativeTimes, 30000);
    renderSessions([]);
    if (token) connect();
    else showSignin();
  }

  init();
})();
