// Every string the web client page shows, in one table per language. The
// language comes from the browser (`navigator.languages`, first match wins,
// English otherwise). A value that is an object is a plural: its keys are
// `Intl.PluralRules` categories, chosen by the `n` variable.
// To add a language, add a table with every key of `en` (a test checks it).

export const STRINGS = {
  en: {
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
    "logout.failed": "Could not log out: {reason}",
  },
  de: {
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
    "logout.failed": "Abmelden fehlgeschlagen: {reason}",
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
 * Fills the page's static text: `data-i18n` (text), `data-i18n-aria-label`,
 * `data-i18n-placeholder`; sets `<html lang>`.
 */
export function translatePage(root = document) {
  document.documentElement.lang = lang;
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.setAttribute("placeholder", t(node.dataset.i18nPlaceholder));
  }
}
