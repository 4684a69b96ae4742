// Every string the pages show (the web client; the demo phone's under
// `demo.`; `/phone` without `--demo` under `nodemo.`), in one table per
// language. The language comes from the browser (`navigator.languages`, first match wins,
// English otherwise). A value that is an object is a plural: its keys are
// `Intl.PluralRules` categories, chosen by the `n` variable.
// To add a language, add a table with every key of `en` (a test checks it).

export const STRINGS = {
  en: {
    "nodemo.page_title": "pairgate phone",
    "nodemo.title": "Link with your phone",
    "nodemo.lead": "This gateway does not serve a demo phone.",
    "nodemo.how": "To link a browser, use the pairgate app on your phone (or {cli} on a computer): it signs in to {endpoint} with a phone token issued for your account, and scans the QR code (or types the code) the browser shows.",
    "nodemo.warning": "Never paste a token into a web page because a message or a QR code asked you to.",
    "nodemo.back": "Back",
    "page.title": "pairgate",
    "notice.dismiss": "Dismiss notice",
    "connecting": "Connecting…",
    "retry_now": "Retry now",
    "pair.title": "Use pairgate on this computer",
    "pair.step1": "Open pairgate on your phone",
    "pair.step2": "Tap Link a device",
    "pair.step3": "Point your phone at this screen to capture the QR code",
    "pair.remember": "Keep me signed in",
    "pair.remember_hint": "Leave this unchecked on a shared computer: you will be signed out soon after you close this window.",
    "pair.qr_label": "QR code to link this browser",
    "pair.qr_unavailable": "QR code unavailable: use the code below.",
    "pair.code_label": "Or enter this code on your phone",
    "pair.code_label_typing": "On your phone, tap Link a device and type this code:",
    "pair.with_code": "Link with code instead",
    "pair.with_qr": "Scan QR code instead",
    "pair.refreshes_in": { one: "Refreshes in {n} second", other: "Refreshes in {n} seconds" },
    "pair.refreshing": "Refreshing…",
    "pair.last_code": { one: "Last code: expires in {n} second", other: "Last code: expires in {n} seconds" },
    "pair.code_expires_in": { one: "This code expires in {n} second", other: "This code expires in {n} seconds" },
    "pair.expiring": "Expiring…",
    "pair.new_code": "That code expired. New code: {code}",
    "pair.new_qr": "New QR code shown. Scan it with your phone.",
    "pair.rejected": "Link request was rejected",
    "scanned.title": "Confirm on your phone",
    "scanned.lead": "Your phone scanned the code. Tap Confirm on it to link this browser.",
    "expired.title": "QR code expired",
    "expired.lead": "The codes were not used in time.",
    "expired.reload": "Reload QR code",
    "replaced.title": "pairgate is open in another window",
    "replaced.lead": "This session is now used in another window or tab. Click Use here to use it in this window instead.",
    "replaced.use_here": "Use here",
    "linked.logout": "Log out",
    "linked.announce": "Linked to {account}",
    "phone.online": "Phone connected",
    "phone.offline": "Phone not connected",
    "phone.offline_banner": "Phone not connected. Make sure your phone is online and pairgate is open on it.",
    "reconnecting": "Reconnecting…",
    "reconnecting_in": { one: "Reconnecting in {n} second…", other: "Reconnecting in {n} seconds…" },
    "connection_lost": "Connection lost. Reconnecting.",
    "messages.label": "Messages",
    "messages.empty": "No messages yet. Say hello to your phone.",
    "composer.label": "Message",
    "composer.placeholder": "Type a message",
    "composer.placeholder_offline": "Phone not connected: your draft is kept until it is back",
    "composer.send": "Send",
    "msg.sending": "Sending…",
    "msg.sent": "Sent ✓",
    "msg.not_sent": "Not sent",
    "msg.retry": "Retry",
    "msg.not_connected": "Not connected to the gateway.",
    "ended.you": "You logged out.",
    "ended.admin": "Logged out by an administrator",
    "ended.phone": "Logged out from your phone",
    "ended.stored": "This session has ended (logged out from your phone or expired). Link this browser again.",
    "ended.invalid": "This browser's saved session is no longer valid. Link it again.",
    "logout.offline": "Logged out of this browser. Also remove it from the list of linked devices on your phone.",
    "logout.failed": "Could not log out: {reason}",    "msg.to": "To {name}",
    "time.unknown": "unknown",
    "time.just_now": "just now",
    "time.min_ago": "{n} min ago",
    "time.h_ago": "{n} h ago",
    "time.yesterday": "yesterday",
    "time.days_ago": { one: "{n} day ago", other: "{n} days ago" },
    // The demo phone page (/phone with --demo).
    "demo.page_title": "pairgate phone (demo)",
    "demo.tag": "demo",
    "demo.signin.title": "Sign in to your phone",
    "demo.signin.ref_hint": "Sign in to link the browser that showed the QR code.",
    "demo.signin.lead": "This page plays the part of the pairgate app on your phone. It needs a phone token for an account.",
    "demo.signin.token_label": "Phone token",
    "demo.signin.token_placeholder": "Paste the token printed by pairgate token --account NAME",
    "demo.signin.use_token": "Use token",
    "demo.signin.or": "or",
    "demo.signin.create": "Create demo account",
    "demo.signin.paste_first": "Paste a phone token first.",
    "demo.signin.create_refused": "The gateway refused to create a demo account (HTTP {status}).",
    "demo.signin.create_failed": "Could not create a demo account: {reason}",
    "demo.signin.demo_off": "Demo mode is off: start the gateway with {serve}, or paste a token from {token}",
    "demo.signin.invalid": "This phone token is invalid or has expired. Paste another one or create a demo account.",
    "demo.state.connected": "connected",
    "demo.state.connecting": "connecting",
    "demo.state.disconnected": "disconnected",
    "demo.sign_out": "Sign out",
    "demo.disconnected": "Disconnected.",
    "demo.reconnecting_in": { one: "Disconnected. Reconnecting in {n} s…", other: "Disconnected. Reconnecting in {n} s…" },
    "demo.replaced": "This account's phone was opened in another window or tab (replaced by a newer phone socket).",
    "demo.not_connected": "Not connected to the gateway. Try again once it reconnects.",
    "demo.link.title": "Link a device",
    "demo.link.hint": "Scan the QR code shown on the computer with your camera, or type its 8-character code.",
    "demo.link.code_label": "Pairing code",
    "demo.link.submit": "Link",
    "demo.link.type_code": "Type the 8-character code shown under the QR code.",
    "demo.link.unknown_ref": "That code is unknown or has expired. Use the code or QR code the computer shows now.",
    "demo.link.rate_limited": "Too many failed link attempts. Wait a minute and try again.",
    "demo.ref.title": "Link a device with this QR code?",
    "demo.ref.lead": "You opened the link of a QR code. Linking lets the browser that shows that QR code read and send this account's messages until you log it out.",
    "demo.ref.caution": "Continue only if you scanned the code yourself from a screen in front of you, never one somebody sent you. Nothing is linked yet: the next step shows the device's name and address, then asks you to confirm.",
    "demo.ref.link": "Link this device",
    "demo.ref.dismiss": "Dismiss",
    "demo.request.title": "Link this device?",
    "demo.request.confirm": "Confirm",
    "demo.request.reject": "Reject",
    "demo.request.linked": "Linked {name}.",
    "demo.request.rejected": "Link request rejected.",
    "demo.unknown_device": "Unknown device",
    "demo.unknown_address": "unknown address",
    "demo.the_device": "the device",
    "demo.sessions.title": "Linked devices",
    "demo.sessions.empty": "No linked devices yet.",
    "demo.sessions.online_now": "online now",
    "demo.sessions.last_active": "last active {when}",
    "demo.sessions.temporary": "temporary",
    "demo.sessions.online": "Online",
    "demo.sessions.offline": "Offline",
    "demo.sessions.logout_label": "Log out {name}",
    "demo.sessions.logged_out": "Logged out {name}.",
    "demo.sessions.logout_failed": "Could not log out {name}: {reason}",
    "demo.sessions.list_failed": "Could not list linked devices: {reason}",
    "demo.sessions.logout_all": "Close all sessions",
    "demo.sessions.logout_all_ask": "Log out every linked device? They will need a new QR code to link again.",
    "demo.sessions.logout_all_yes": "Yes, log out all",
    "demo.sessions.cancel": "Cancel",
    "demo.sessions.closed": { one: "Closed {n} session", other: "Closed {n} sessions" },
    "demo.sessions.logout_all_failed": "Could not close the sessions: {reason}",
    "demo.removed.someone": "A linked device",
    "demo.removed.self_logout": "{name} logged itself out.",
    "demo.removed.admin": "{name} was logged out by an administrator.",
    "demo.removed.expired": "{name} expired.",
    "demo.messages.empty": "No messages yet.",
    "demo.composer.to_label": "Send to",
    "demo.composer.to_all": "All devices",
    "demo.composer.all_devices": "all devices",
    "demo.composer.one_device": "one device",
    "demo.delivered": { one: "Delivered to {n} device", other: "Delivered to {n} devices" },
    "demo.open_web": "Open the web client",
  },
  de: {
    "nodemo.page_title": "pairgate-Telefon",
    "nodemo.title": "Mit deinem Telefon verknüpfen",
    "nodemo.lead": "Dieses Gateway bietet kein Demo-Telefon an.",
    "nodemo.how": "Um einen Browser zu verknüpfen, nutze die pairgate-App auf deinem Telefon (oder {cli} auf einem Computer): Sie meldet sich mit einem für dein Konto ausgestellten Telefon-Token bei {endpoint} an und scannt den QR-Code (oder tippt den Code ein), den der Browser zeigt.",
    "nodemo.warning": "Füge niemals ein Token in eine Webseite ein, nur weil eine Nachricht oder ein QR-Code dich dazu auffordert.",
    "nodemo.back": "Zurück",
    "page.title": "pairgate",
    "notice.dismiss": "Hinweis schließen",
    "connecting": "Verbinde…",
    "retry_now": "Jetzt erneut versuchen",
    "pair.title": "pairgate auf diesem Computer verwenden",
    "pair.step1": "Öffne pairgate auf deinem Telefon",
    "pair.step2": "Tippe auf Gerät verknüpfen",
    "pair.step3": "Richte dein Telefon auf diesen Bildschirm, um den QR-Code zu erfassen",
    "pair.remember": "Angemeldet bleiben",
    "pair.remember_hint": "Lass dies auf einem geteilten Computer leer: Du wirst kurz nach dem Schließen dieses Fensters abgemeldet.",
    "pair.qr_label": "QR-Code zum Verknüpfen dieses Browsers",
    "pair.qr_unavailable": "QR-Code nicht verfügbar: Verwende den Code unten.",
    "pair.code_label": "Oder gib diesen Code auf deinem Telefon ein",
    "pair.code_label_typing": "Tippe auf deinem Telefon auf Gerät verknüpfen und gib diesen Code ein:",
    "pair.with_code": "Stattdessen mit Code verknüpfen",
    "pair.with_qr": "Stattdessen QR-Code scannen",
    "pair.refreshes_in": { one: "Wird in {n} Sekunde erneuert", other: "Wird in {n} Sekunden erneuert" },
    "pair.refreshing": "Wird erneuert…",
    "pair.last_code": { one: "Letzter Code: läuft in {n} Sekunde ab", other: "Letzter Code: läuft in {n} Sekunden ab" },
    "pair.code_expires_in": { one: "Dieser Code läuft in {n} Sekunde ab", other: "Dieser Code läuft in {n} Sekunden ab" },
    "pair.expiring": "Läuft ab…",
    "pair.new_code": "Der Code ist abgelaufen. Neuer Code: {code}",
    "pair.new_qr": "Neuer QR-Code angezeigt. Scanne ihn mit deinem Telefon.",
    "pair.rejected": "Die Verknüpfung wurde abgelehnt",
    "scanned.title": "Auf dem Telefon bestätigen",
    "scanned.lead": "Dein Telefon hat den Code gescannt. Tippe dort auf Bestätigen, um diesen Browser zu verknüpfen.",
    "expired.title": "QR-Code abgelaufen",
    "expired.lead": "Die Codes wurden nicht rechtzeitig verwendet.",
    "expired.reload": "QR-Code neu laden",
    "replaced.title": "pairgate ist in einem anderen Fenster geöffnet",
    "replaced.lead": "Diese Sitzung wird jetzt in einem anderen Fenster oder Tab verwendet. Klicke auf Hier verwenden, um sie in diesem Fenster zu nutzen.",
    "replaced.use_here": "Hier verwenden",
    "linked.logout": "Abmelden",
    "linked.announce": "Verknüpft mit {account}",
    "phone.online": "Telefon verbunden",
    "phone.offline": "Telefon nicht verbunden",
    "phone.offline_banner": "Telefon nicht verbunden. Stelle sicher, dass dein Telefon online und pairgate darauf geöffnet ist.",
    "reconnecting": "Verbinde erneut…",
    "reconnecting_in": { one: "Neuer Versuch in {n} Sekunde…", other: "Neuer Versuch in {n} Sekunden…" },
    "connection_lost": "Verbindung verloren. Verbinde erneut.",
    "messages.label": "Nachrichten",
    "messages.empty": "Noch keine Nachrichten. Sag deinem Telefon Hallo.",
    "composer.label": "Nachricht",
    "composer.placeholder": "Nachricht eingeben",
    "composer.placeholder_offline": "Telefon nicht verbunden: Dein Entwurf bleibt erhalten",
    "composer.send": "Senden",
    "msg.sending": "Wird gesendet…",
    "msg.sent": "Gesendet ✓",
    "msg.not_sent": "Nicht gesendet",
    "msg.retry": "Erneut senden",
    "msg.not_connected": "Nicht mit dem Gateway verbunden.",
    "ended.you": "Du hast dich abgemeldet.",
    "ended.admin": "Von einem Administrator abgemeldet",
    "ended.phone": "Vom Telefon abgemeldet",
    "ended.stored": "Diese Sitzung ist beendet (vom Telefon abgemeldet oder abgelaufen). Verknüpfe diesen Browser erneut.",
    "ended.invalid": "Die gespeicherte Sitzung dieses Browsers ist nicht mehr gültig. Verknüpfe ihn erneut.",
    "logout.offline": "Von diesem Browser abgemeldet. Entferne ihn auch aus der Liste der verknüpften Geräte auf deinem Telefon.",
    "logout.failed": "Abmelden fehlgeschlagen: {reason}",    "msg.to": "An {name}",
    "time.unknown": "unbekannt",
    "time.just_now": "gerade eben",
    "time.min_ago": "vor {n} Min.",
    "time.h_ago": "vor {n} Std.",
    "time.yesterday": "gestern",
    "time.days_ago": { one: "vor {n} Tag", other: "vor {n} Tagen" },
    "demo.page_title": "pairgate-Telefon (Demo)",
    "demo.tag": "Demo",
    "demo.signin.title": "Auf deinem Telefon anmelden",
    "demo.signin.ref_hint": "Melde dich an, um den Browser zu verknüpfen, der den QR-Code gezeigt hat.",
    "demo.signin.lead": "Diese Seite spielt die pairgate-App auf deinem Telefon. Sie braucht ein Telefon-Token für ein Konto.",
    "demo.signin.token_label": "Telefon-Token",
    "demo.signin.token_placeholder": "Füge das Token ein, das pairgate token --account NAME ausgibt",
    "demo.signin.use_token": "Token verwenden",
    "demo.signin.or": "oder",
    "demo.signin.create": "Demo-Konto anlegen",
    "demo.signin.paste_first": "Füge zuerst ein Telefon-Token ein.",
    "demo.signin.create_refused": "Das Gateway hat das Anlegen eines Demo-Kontos abgelehnt (HTTP {status}).",
    "demo.signin.create_failed": "Demo-Konto konnte nicht angelegt werden: {reason}",
    "demo.signin.demo_off": "Der Demo-Modus ist aus: Starte das Gateway mit {serve} oder füge ein Token von {token} ein",
    "demo.signin.invalid": "Dieses Telefon-Token ist ungültig oder abgelaufen. Füge ein anderes ein oder lege ein Demo-Konto an.",
    "demo.state.connected": "verbunden",
    "demo.state.connecting": "verbinde",
    "demo.state.disconnected": "getrennt",
    "demo.sign_out": "Abmelden",
    "demo.disconnected": "Getrennt.",
    "demo.reconnecting_in": { one: "Getrennt. Neuer Versuch in {n} Sekunde…", other: "Getrennt. Neuer Versuch in {n} Sekunden…" },
    "demo.replaced": "Das Telefon dieses Kontos wurde in einem anderen Fenster oder Tab geöffnet (durch eine neuere Telefon-Verbindung ersetzt).",
    "demo.not_connected": "Nicht mit dem Gateway verbunden. Versuche es erneut, sobald die Verbindung wieder steht.",
    "demo.link.title": "Gerät verknüpfen",
    "demo.link.hint": "Scanne den QR-Code auf dem Computer mit deiner Kamera oder gib seinen 8-stelligen Code ein.",
    "demo.link.code_label": "Kopplungscode",
    "demo.link.submit": "Verknüpfen",
    "demo.link.type_code": "Gib den 8-stelligen Code ein, der unter dem QR-Code steht.",
    "demo.link.unknown_ref": "Dieser Code ist unbekannt oder abgelaufen. Verwende den Code oder QR-Code, den der Computer jetzt zeigt.",
    "demo.link.rate_limited": "Zu viele fehlgeschlagene Verknüpfungsversuche. Warte eine Minute und versuche es erneut.",
    "demo.ref.title": "Ein Gerät mit diesem QR-Code verknüpfen?",
    "demo.ref.lead": "Du hast den Link eines QR-Codes geöffnet. Eine Verknüpfung erlaubt dem Browser, der diesen QR-Code zeigt, die Nachrichten dieses Kontos zu lesen und zu senden, bis du ihn abmeldest.",
    "demo.ref.caution": "Fahre nur fort, wenn du den Code selbst von einem Bildschirm vor dir gescannt hast, nie einen, den dir jemand geschickt hat. Noch ist nichts verknüpft: Der nächste Schritt zeigt Name und Adresse des Geräts und fragt dann nach deiner Bestätigung.",
    "demo.ref.link": "Dieses Gerät verknüpfen",
    "demo.ref.dismiss": "Verwerfen",
    "demo.request.title": "Dieses Gerät verknüpfen?",
    "demo.request.confirm": "Bestätigen",
    "demo.request.reject": "Ablehnen",
    "demo.request.linked": "{name} verknüpft.",
    "demo.request.rejected": "Verknüpfung abgelehnt.",
    "demo.unknown_device": "Unbekanntes Gerät",
    "demo.unknown_address": "unbekannte Adresse",
    "demo.the_device": "Das Gerät",
    "demo.sessions.title": "Verknüpfte Geräte",
    "demo.sessions.empty": "Noch keine verknüpften Geräte.",
    "demo.sessions.online_now": "jetzt online",
    "demo.sessions.last_active": "zuletzt aktiv {when}",
    "demo.sessions.temporary": "vorübergehend",
    "demo.sessions.online": "Online",
    "demo.sessions.offline": "Offline",
    "demo.sessions.logout_label": "{name} abmelden",
    "demo.sessions.logged_out": "{name} abgemeldet.",
    "demo.sessions.logout_failed": "{name} konnte nicht abgemeldet werden: {reason}",
    "demo.sessions.list_failed": "Verknüpfte Geräte konnten nicht geladen werden: {reason}",
    "demo.sessions.logout_all": "Alle Sitzungen beenden",
    "demo.sessions.logout_all_ask": "Alle verknüpften Geräte abmelden? Sie brauchen einen neuen QR-Code, um sich wieder zu verknüpfen.",
    "demo.sessions.logout_all_yes": "Ja, alle abmelden",
    "demo.sessions.cancel": "Abbrechen",
    "demo.sessions.closed": { one: "{n} Sitzung beendet", other: "{n} Sitzungen beendet" },
    "demo.sessions.logout_all_failed": "Die Sitzungen konnten nicht beendet werden: {reason}",
    "demo.removed.someone": "Ein verknüpftes Gerät",
    "demo.removed.self_logout": "{name} hat sich selbst abgemeldet.",
    "demo.removed.admin": "{name} wurde von einem Administrator abgemeldet.",
    "demo.removed.expired": "{name} ist abgelaufen.",
    "demo.messages.empty": "Noch keine Nachrichten.",
    "demo.composer.to_label": "Senden an",
    "demo.composer.to_all": "Alle Geräte",
    "demo.composer.all_devices": "alle Geräte",
    "demo.composer.one_device": "ein Gerät",
    "demo.delivered": { one: "An {n} Gerät zugestellt", other: "An {n} Geräte zugestellt" },
    "demo.open_web": "Web-Client öffnen",
  },
};

/** Error codes of the contract in the languages besides English (the client library has English). */
const ERRORS = {
  de: {
    disconnected: "Die Verbindung brach ab, bevor das Gateway antwortete.",
    timeout: "Das Gateway hat nicht rechtzeitig geantwortet.",
    phone_offline: "Telefon nicht verbunden, die Nachricht wurde nicht gesendet.",
    too_large: "Die Nachricht ist zu groß.",
    rate_limited: "Zu viele Anfragen. Warte kurz und versuche es erneut.",
    internal: "Interner Fehler im Gateway.",
  },
};

/** The first of the browser's languages we ship, else English. */
export function pickLanguage(languages) {
  for (const tag of languages || []) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (STRINGS[base]) return base;
  }
  return "en";
}

export const lang = pickLanguage(
  typeof navigator !== "undefined" ? navigator.languages || [navigator.language] : [],
);
const plurals = new Intl.PluralRules(lang);

/** The string `key` in the page's language, `{name}` replaced from `vars`. */
export function t(key, vars = {}) {
  let value = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  if (typeof value === "object") value = value[plurals.select(Number(vars.n))] ?? value.other;
  return value.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : "{" + name + "}"));
}

/** An error code's text in the page's language; `english` (the library's text) otherwise. */
export function errorText(code, english) {
  return (ERRORS[lang] && ERRORS[lang][code]) || english;
}

/**
 * The string `key` as DOM nodes, each `{name}` replaced by the node
 * `nodes[name]` (for text with markup in it, such as a `<code>` command).
 */
export function tNodes(key, nodes) {
  // `t` leaves a `{name}` it has no value for as it is.
  return t(key)
    .split(/(\{\w+\})/)
    .filter(Boolean)
    .map((part) => {
      const name = /^\{(\w+)\}$/.exec(part);
      return name && nodes[name[1]] ? nodes[name[1]] : document.createTextNode(part);
    });
}

/**
 * Fills the page's static text: `data-i18n` (text), `data-i18n-aria-label`,
 * `data-i18n-placeholder`, and the title from `<html data-i18n-title>`;
 * sets `<html lang>`.
 */
export function translatePage(root = document) {
  document.documentElement.lang = lang;
  const title = document.documentElement.dataset.i18nTitle;
  if (title) document.title = t(title);
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.setAttribute("placeholder", t(node.dataset.i18nPlaceholder));
  }
}
