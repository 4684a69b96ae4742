// Type-checked, never run (`npm run typecheck`: tsc --noEmit, strict): the
// whole public API of pairgate.js used as README.md describes it, against
// pairgate.d.ts. A declaration that is missing, or wider or narrower than
// the README says, fails here; the lines marked @ts-expect-error must stay
// errors (a declaration loosened to `any` would let them through).
// README.md's own examples are checked beside this (.readme-examples/).

import {
  Backoff,
  Channel,
  CloseCode,
  PairgateClient,
  byteLength,
  describeError,
  localError,
  webSocketUrl,
} from "./pairgate.js";
import type {
  AckFrame,
  ClientState,
  ErrorFrame,
  Frame,
  LinkedFrame,
  MessageFrame,
  PhoneStatusFrame,
  QrFrame,
  ReadyFrame,
  SessionInfo,
  WebSocketConstructor,
} from "./pairgate.js";
import WebSocket from "ws";

// What README.md's examples leave to the reader.
declare global {
  function show(svg: string, code: string, expiresInMs: number, remaining: number): void;
  function setOnline(online: boolean): void;
  function print(body: unknown): void;
  var token: string | null;
}

export async function everything(): Promise<void> {
  // Helpers.
  const n: number = byteLength("héllo");
  const url: string = webSocketUrl("ws/web");
  const absolute: string = webSocketUrl("ws/phone", "https://gw.example/pairgate/");
  const local: ErrorFrame = localError("w1", "timeout");
  const text: string = describeError("phone_offline");
  const withFallback: string = describeError("new_code", "the gateway's words");
  const restarting: 1012 = CloseCode.RESTARTING;
  // @ts-expect-error CloseCode is read-only
  CloseCode.NORMAL = 1001;
  void [n, url, absolute, local, text, withFallback, restarting];

  // Backoff: jittered delays, reset on success.
  const backoff = new Backoff({ baseMs: 500, maxMs: 30_000, jitter: 0.3 });
  const delay: number = backoff.next();
  const attempts: number = backoff.attempt;
  backoff.reset();
  void [delay, attempts, new Backoff()];

  // Node's `ws` and the browser's WebSocket both fit where one is taken.
  const fromWs: WebSocketConstructor = WebSocket;
  const fromBrowser: WebSocketConstructor = globalThis.WebSocket;
  void fromBrowser;

  // The web side: pair, keep the session, resume, send, events.
  const client = new PairgateClient({
    url: "ws://127.0.0.1:8080/ws/web",
    WebSocket: fromWs,
    token: null,
    remember: true,
    deviceName: "Kitchen laptop",
    requestTimeoutMs: 10_000,
    reconnect: true,
    backoff: { baseMs: 500, maxMs: 30_000, jitter: 0.3 },
    idPrefix: "w",
  });
  // @ts-expect-error url is required
  new PairgateClient({ token: "t" });

  const off: () => void = client.on("qr", (qr: QrFrame) => {
    show(qr.svg, qr.code, qr.expires_in_ms, qr.remaining);
    const ref: string = qr.ref;
    const payload: string = qr.payload;
    void [ref, payload];
  });
  off();
  client.on("scanned", (f: Frame) => void f.type);
  client.on("pair_rejected", (f) => void f);
  client.on("pair_timeout", (f) => void f);
  client.on("linked", (l: LinkedFrame) => void [l.account, l.session_id, l.token, l.remember]);
  client.on("ready", (r: ReadyFrame) => void [r.role, r.account, r.session_id, r.token]);
  client.on("session", (s: SessionInfo) => void [s.account, s.session_id, s.token, s.remember]);
  client.on("phone_status", ({ online }: PhoneStatusFrame) => setOnline(online));
  client.on("message", ({ from, body }: MessageFrame) => print([from, body]));
  client.on("logged_out", ({ reason }) => {
    const why: string | null = reason;
    void why;
  });
  client.on("invalid_token", () => {});
  client.on("replaced", () => {});
  client.on("expired", () => {});
  client.on("reconnecting", ({ delayMs, attempt, code, dueAt }) => void [delayMs + attempt + code + dueAt]);
  client.on("close", ({ code, reason }) => void [code, reason.length]);
  client.on("error", (e: ErrorFrame) => void [e.code, e.message, e.local]);
  client.on("frame", (f: Frame) => void f.type);
  client.on("state", (s: ClientState) => void s);
  // @ts-expect-error a qr event is no phone_status frame
  client.on("qr", (qr: PhoneStatusFrame) => qr.online);
  // @ts-expect-error `state` is one of six names
  const wrongState: ClientState = "open";
  void wrongState;

  client.connect().pair({ remember: false, deviceName: "Phone-sized" });
  const ready: ReadyFrame = await client.once("ready", 10_000);
  const session: SessionInfo = await client.once("session");
  // @ts-expect-error `once` resolves to its event's type
  const notSession: SessionInfo = await client.once("ready");
  void [ready, session, notSession];

  const state: ClientState = client.state;
  const held: string | null = client.token;
  client.token = "a session token";
  const account: string | null = client.account;
  const sessionId: string | null = client.sessionId;
  const phoneOnline: boolean | null = client.phoneOnline;
  const open: boolean = client.isOpen;
  const retrying: boolean = client.reconnecting;
  const own: Backoff = client.backoff;
  client.remember = false;
  void [state, held, account, sessionId, phoneOnline, open, retrying, own];

  // send never rejects: an ack or an error frame.
  const reply = await client.send({ text: "hello" }, { timeoutMs: 5_000 });
  if (reply.type === "ack") {
    const delivered: number | undefined = (reply as AckFrame).delivered;
    void delivered;
  } else {
    console.warn(reply.code, reply.message, reply.local);
  }
  const raw: Frame = await client.request({ type: "list_sessions" }, { timeoutMs: 0 });
  const bye: Frame = await client.logout();
  client.forgetSession();
  client.close();
  void [raw, bye];

  // The lower level: one socket of either role.
  const phone = new Channel("ws://127.0.0.1:8080/ws/phone", {
    idPrefix: "p",
    onFrame: (frame: Frame) => void frame.type,
    onClose: (code: number, reason: string) => void [code, reason],
    WebSocket: fromWs,
    requestTimeoutMs: 5_000,
  });
  const sent: boolean = phone.send({ type: "ping" });
  const answer: Frame = await phone.request({ type: "auth", token: "a phone token" });
  const hello: Frame | null = phone.hello;
  const flags: boolean[] = [phone.closed, phone.isOpen];
  const limit: number = phone.maxFrameBytes;
  // @ts-expect-error a frame needs a type
  phone.send({ id: "x" });
  phone.dispose();
  void [sent, answer, hello, flags, limit, phone.ws.readyState];
}
