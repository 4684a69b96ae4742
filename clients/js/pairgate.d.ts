// Type declarations of pairgate.js, the pairgate client library.

/** A frame of the wire contract: a JSON object with a string `type`. */
export interface Frame {
  type: string;
  id?: string;
  [field: string]: unknown;
}

/** An `error` frame; `local` when it was made here (the server never answered). */
export interface ErrorFrame extends Frame {
  type: "error";
  code: string;
  message: string;
  local?: true;
}

export interface AckFrame extends Frame {
  type: "ack";
  id: string;
  delivered?: number;
}

export interface QrFrame extends Frame {
  type: "qr";
  ref: string;
  code: string;
  svg: string;
  payload: string;
  expires_in_ms: number;
  remaining: number;
}

export interface LinkedFrame extends Frame {
  type: "linked";
  account: string;
  session_id: string;
  token: string;
  remember: boolean;
}

export interface ReadyFrame extends Frame {
  type: "ready";
  role: "web" | "phone";
  account: string;
  session_id?: string;
  token?: string;
}

export interface PhoneStatusFrame extends Frame {
  type: "phone_status";
  online: boolean;
}

export interface MessageFrame extends Frame {
  type: "message";
  from: string;
  body: unknown;
}

/** The constructor of a WebSocket: the browser's, Node's, or the `ws` package's. */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
  readonly OPEN?: number;
}

/**
 * What the client uses of a socket. It sets the `on*` handlers itself and
 * reads only `data` of a message event and `code` and `reason` of a close
 * event, so the event types are the implementation's (the browser's
 * `MessageEvent`, `ws`'s own): any one-argument handler type fits.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface RequestOptions {
  /** Resolve to a local `timeout` error after this long (0: never). Default: the client's `requestTimeoutMs`. */
  timeoutMs?: number;
}

export function byteLength(text: string): number;
/** The ws:// or wss:// URL of `path` relative to `base` (the page's location by default). */
export function webSocketUrl(path: string, base?: string): string;
export function localError(id: string, code: string): ErrorFrame;
/** Plain-words English text for an error code. */
export function describeError(code: string, fallback?: string): string;

export interface ChannelOptions {
  idPrefix?: string;
  onFrame?: (frame: Frame) => void;
  onClose?: (code: number, reason: string) => void;
  WebSocket?: WebSocketConstructor;
  requestTimeoutMs?: number;
}

/** One socket: requests matched to replies by id, every frame to `onFrame`. */
export class Channel {
  constructor(url: string, options?: ChannelOptions);
  readonly ws: WebSocketLike;
  readonly hello: Frame | null;
  readonly closed: boolean;
  readonly isOpen: boolean;
  readonly maxFrameBytes: number;
  /** Fire-and-forget; false when the socket is not open. */
  send(frame: Frame): boolean;
  /** Never rejects: resolves to the reply or an error frame (`disconnected`, `timeout`, `too_large` are local). */
  request(frame: Frame, options?: RequestOptions): Promise<Frame>;
  /** Close on purpose: no onClose callback; pending requests resolve `disconnected`. */
  dispose(): void;
}

export interface BackoffOptions {
  baseMs?: number;
  maxMs?: number;
  jitter?: number;
}

export class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  next(): number;
  reset(): void;
}

export const CloseCode: Readonly<{
  NORMAL: 1000;
  RESTARTING: 1012;
  LOGGED_OUT: 4001;
  INVALID_TOKEN: 4003;
  TIMED_OUT: 4008;
  REPLACED: 4009;
  RATE_LIMITED: 4029;
  TOO_SLOW: 4030;
}>;

export interface PairgateClientOptions {
  /** The gateway's /ws/web URL, e.g. `webSocketUrl("ws/web")` in a page. */
  url: string;
  /** A WebSocket constructor; the global one when omitted (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor;
  /** A session token to resume; without one, `connect()` pairs. */
  token?: string | null;
  remember?: boolean;
  deviceName?: string;
  requestTimeoutMs?: number;
  /** Reconnect after 1012, 1006, 4008 (silent), 4029, 4030... Default true. */
  reconnect?: boolean;
  backoff?: BackoffOptions;
  idPrefix?: string;
}

export type ClientState = "idle" | "connecting" | "pairing" | "live" | "reconnecting" | "closed";

export interface SessionInfo {
  account: string;
  session_id: string;
  token: string;
  remember?: boolean;
}

export interface ClientEvents {
  qr: QrFrame;
  scanned: Frame;
  pair_rejected: Frame;
  pair_timeout: Frame;
  linked: LinkedFrame;
  ready: ReadyFrame;
  session: SessionInfo;
  phone_status: PhoneStatusFrame;
  message: MessageFrame;
  logged_out: { reason: string | null };
  invalid_token: Record<string, never>;
  replaced: Record<string, never>;
  expired: Record<string, never>;
  reconnecting: { delayMs: number; attempt: number; code: number; dueAt: number };
  close: { code: number; reason: string };
  error: ErrorFrame;
  frame: Frame;
  state: ClientState;
}

export class PairgateClient {
  constructor(options: PairgateClientOptions);
  readonly state: ClientState;
  token: string | null;
  readonly account: string | null;
  readonly sessionId: string | null;
  readonly phoneOnline: boolean | null;
  readonly isOpen: boolean;
  readonly reconnecting: boolean;
  readonly backoff: Backoff;
  remember: boolean;
  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void;
  on(type: string, listener: (value: Frame) => void): () => void;
  once<K extends keyof ClientEvents>(type: K, timeoutMs?: number): Promise<ClientEvents[K]>;
  connect(): this;
  close(): void;
  send(body: unknown, options?: RequestOptions): Promise<AckFrame | ErrorFrame>;
  pair(options?: { remember?: boolean; deviceName?: string }): Promise<Frame>;
  logout(): Promise<Frame>;
  request(frame: Frame, options?: RequestOptions): Promise<Frame>;
  forgetSession(): void;
}
