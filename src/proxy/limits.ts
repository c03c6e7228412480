/**
 * The proxy's resource limits with safe defaults. Every limit is enforced by a driver and, when it
 * trips, answered with reason `limit_exceeded` (or, for framing, `bad_request`) and audited. Never
 * "unlimited" by default: a guest must not be able to exhaust the host.
 */
export interface ProxyLimits {
  /** Largest request head (request line + headers), HTTP/1 and HTTP/2 header lists. */
  readonly maxHeaderBytes: number;
  readonly maxRequestBodyBytes: number;
  readonly maxResponseBodyBytes: number;
  /**
   * When a secret was injected, a response of announced length up to this, or a compressed one, is
   * buffered for the secret-echo scan (and decompressed within it); other answers stream through it.
   */
  readonly maxScannedResponseBytes: number;
  readonly maxConnections: number;
  readonly maxTunnels: number;
  /**
   * A connection with no bytes either way for this long is closed; waiting for an answer counts as
   * idle, so this is also the longest silence allowed before an upstream's first byte.
   */
  readonly idleTimeoutMs: number;
  /** The request head must arrive within this (slowloris). */
  readonly headersTimeoutMs: number;
  /**
   * A CONNECT to a non-TLS port whose guest sends nothing for this long may be a server-first
   * protocol (SSH, SMTP, FTP, MySQL): it is then decided as raw TCP and dialled so the server can greet.
   */
  readonly serverFirstWaitMs: number;
  /** An origin must accept the connection, and finish its TLS handshake, within this. */
  readonly connectTimeoutMs: number;
  /** A whole request must arrive within this. */
  readonly requestTimeoutMs: number;
  /** A tunnel or connection is closed after this long regardless of activity. */
  readonly totalTimeoutMs: number;
  /** Bytes both ways across all flows of the workspace before new flows are refused. */
  readonly maxWorkspaceBytes: number;
}

export const DEFAULT_LIMITS: ProxyLimits = {
  maxHeaderBytes: 32 * 1024,
  maxRequestBodyBytes: 1024 * 1024 * 1024,
  maxResponseBodyBytes: 4 * 1024 * 1024 * 1024,
  maxScannedResponseBytes: 8 * 1024 * 1024,
  maxConnections: 4096,
  maxTunnels: 2048,
  // LLM APIs can think for minutes before a non-streamed answer's first byte; their SDKs wait 10
  // minutes (OpenAI, Anthropic), so a shorter cut here would fail calls the agent still waits for.
  idleTimeoutMs: 10 * 60_000,
  headersTimeoutMs: 20_000,
  // Every millisecond here delays a server-first client's greeting, and a client-first one (TLS, HTTP)
  // sends right after the 200, within a few ms even from an emulated guest. A later speaker still
  // works (see tunnel.ts), it only costs an extra tcp record and dial, so the value stays small.
  serverFirstWaitMs: 300,
  // Long enough for a distant origin on a lossy link (SYN retries at 1, 3 and 7 s), short of the
  // kernel's two minutes, which clients give up before.
  connectTimeoutMs: 30_000,
  requestTimeoutMs: 300_000,
  totalTimeoutMs: 6 * 60 * 60 * 1000,
  maxWorkspaceBytes: 64 * 1024 * 1024 * 1024,
};

export function resolveLimits(overrides: Partial<ProxyLimits> | undefined): ProxyLimits {
  return { ...DEFAULT_LIMITS, ...overrides };
}
