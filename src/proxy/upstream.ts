/**
 * Dialing upstream, only ever to a CheckedTarget: raw TCP for tunnels, TLS verified against the system
 * roots plus configured extra CAs (servername = the checked host name), keep-alive HTTP/1.1 agents and
 * HTTP/2 sessions pooled per checked target. A TLS connection is handed to a request only after
 * verification succeeded, so no request byte (and no injected secret) ever reaches an unverified peer.
 */
import { Agent, type AgentOptions } from 'node:http';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import type { Signal } from '../policy/reasons.js';
import { trustedContext } from '../tls-trust.js';
import { assertCheckedTarget, type CheckedTarget } from './checked-target.js';
import { LeanPool } from './h1-exchange.js';

export type UpstreamFailure = 'upstream_cert_invalid' | 'upstream_unreachable' | 'upstream_bad_response';

const CERT_ERROR_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** llhttp's codes for a response whose body framing is ambiguous; the lean client (h1-exchange.ts) uses them too. */
const FRAMING_CONFLICT_CODES = new Set(['HPE_UNEXPECTED_CONTENT_LENGTH', 'HPE_INVALID_TRANSFER_ENCODING']);

export interface UpstreamFailureFacts {
  readonly reason: UpstreamFailure;
  /** `smuggling` for a response with conflicting framing: the upstream (or a box before it) desynchronises. */
  readonly signals: readonly Signal[];
}

/**
 * Why an upstream exchange failed, for the guest's answer and the records. An `HPE_` code (node's
 * llhttp, or the lean client using the same codes) means the upstream answered, but not with HTTP we
 * pass on: telling the agent it was unreachable would send it looking in the wrong place.
 */
export function classifyUpstreamError(err: unknown): UpstreamFailureFacts {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return UNREACHABLE;
  if (CERT_ERROR_CODES.has(code)) return { reason: 'upstream_cert_invalid', signals: [] };
  if (code.startsWith('HPE_')) return { reason: 'upstream_bad_response', signals: FRAMING_CONFLICT_CODES.has(code) ? SMUGGLING : [] };
  return UNREACHABLE;
}

const UNREACHABLE: UpstreamFailureFacts = { reason: 'upstream_unreachable', signals: [] };
const SMUGGLING: readonly Signal[] = ['smuggling'];

/** The upstream trust store, built at the first TLS dial and then kept. */
export type UpstreamTrust = () => SecureContext;

/**
 * One trust store, built once: the host's roots (src/tls-trust.ts) plus the operator's extra CAs.
 * With no CA beyond Node's own roots, the context uses Node's shared root store instead of parsing the
 * ~140 roots into a second one. Either store costs 25-35 ms of CPU to build: at the proxy's start, that
 * ran while a workspace's guest was booting and slowed its boot (two cores shared by QEMU and the
 * supervisor), so it waits for the first upstream that needs it.
 */
export function createUpstreamTrust(extraCaPems: readonly string[]): UpstreamTrust {
  let context: SecureContext | undefined;
  return () => (context ??= trustedContext(extraCaPems) ?? createSecureContext());
}

/** Consumers attach their own error handling; this keeps an error in a gap between owners from crashing the proxy. */
const ignoreLateError = (): void => undefined;

export function dialTcp(target: CheckedTarget, connectTimeoutMs: number): Socket {
  assertCheckedTarget(target);
  const socket = netConnect({ host: target.ip, port: target.port, noDelay: true }).on('error', ignoreLateError);
  return giveUpUnless(socket, 'connect', connectTimeoutMs, 'TCP connect');
}

/** Resolves with a TLS socket whose certificate has been verified for the target's name. */
export function dialTls(target: CheckedTarget, alpn: readonly string[], trust: SecureContext, connectTimeoutMs: number): Promise<TLSSocket> {
  assertCheckedTarget(target);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: target.ip,
      port: target.port,
      ...(target.servername === null ? {} : { servername: target.servername }),
      secureContext: trust,
      rejectUnauthorized: true,
      ALPNProtocols: [...alpn],
    });
    socket.setNoDelay(true);
    giveUpUnless(socket, 'secureConnect', connectTimeoutMs, 'TLS handshake');
    const onError = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      socket.on('error', ignoreLateError);
      resolve(socket);
    });
  });
}

/**
 * Destroys `socket` with an ETIMEDOUT error unless `event` comes within `ms`: an origin that drops
 * SYNs, or accepts and never speaks TLS, would otherwise hold its request until the kernel gives up
 * (about two minutes) or forever.
 */
function giveUpUnless<S extends Socket>(socket: S, event: 'connect' | 'secureConnect', ms: number, what: string): S {
  const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`${what} to the origin timed out after ${ms} ms`), { code: 'ETIMEDOUT' })), ms);
  timer.unref();
  socket.once(event, () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
  return socket;
}

/** http.Agent calls createConnection(options, callback) and waits for the callback when it returns nothing. */
export type UpstreamSession =
  | { readonly kind: 'h2'; readonly session: ClientHttp2Session }
  | { readonly kind: 'h1'; take(): TLSSocket | null };

type AgentWithCallback = Omit<Agent, 'createConnection'> & {
  createConnection: (options: unknown, callback: (err: Error | null, socket?: Socket) => void) => Socket | undefined;
};

const MAX_POOLS = 1024;
const MAX_KNOWN_ORIGINS = 16_384;
const IDLE_TIMEOUT_MS = 120_000;

/** Keep-alive pools per checked target. Owns every upstream socket it made; close() ends them all. */
export class UpstreamPool {
  private readonly agents = new Map<string, Agent>();
  private readonly sessions = new Map<string, Promise<UpstreamSession>>();
  /** What each origin's handshake answered, h2 or not; the oldest forgotten past MAX_KNOWN_ORIGINS. */
  private readonly speaksH2 = new Map<string, boolean>();
  /** Per target, the verified socket whose handshake found out the origin speaks no h2, until a request takes it. */
  private readonly spares = new Map<string, { readonly socket: TLSSocket; readonly expiry: NodeJS.Timeout }>();
  /** Keep-alive connections for the lean HTTP/1.1 exchange (bodiless requests), dialled by dial() below. */
  readonly lean = new LeanPool((target, tls) => this.dial(target, tls), IDLE_TIMEOUT_MS);

  constructor(
    private readonly trust: UpstreamTrust,
    private readonly connectTimeoutMs: number,
  ) {}

  /** An HTTP/1.1 agent whose sockets go only to `target` (TLS-verified first when `tls`). */
  agentFor(target: CheckedTarget, tls: boolean): Agent {
    assertCheckedTarget(target);
    const key = `${tls ? 's' : 'p'}|${target.key}`;
    const existing = this.agents.get(key);
    if (existing !== undefined) {
      // Refresh LRU position.
      this.agents.delete(key);
      this.agents.set(key, existing);
      return existing;
    }
    const options: AgentOptions = { keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo', timeout: IDLE_TIMEOUT_MS };
    const agent = new Agent(options) as unknown as AgentWithCallback;
    const { trust, connectTimeoutMs } = this;
    agent.createConnection = (_options: unknown, callback: (err: Error | null, socket?: Socket) => void) => {
      if (!tls) return dialTcp(target, connectTimeoutMs);
      dialTls(target, ['http/1.1'], trust(), connectTimeoutMs).then(
        (socket) => callback(null, socket),
        (err: Error) => callback(err),
      );
      return undefined;
    };
    this.agents.set(key, agent as unknown as Agent);
    if (this.agents.size > MAX_POOLS) {
      const [oldestKey, oldest] = this.agents.entries().next().value as [string, Agent];
      this.agents.delete(oldestKey);
      oldest.destroy();
    }
    return agent as unknown as Agent;
  }

  /** A fresh connection to `target` (TLS verified first when `tls`), for upgrades that leave the pool. */
  async dial(target: CheckedTarget, tls: boolean): Promise<Socket> {
    if (tls) return dialTls(target, ['http/1.1'], this.trust(), this.connectTimeoutMs);
    const socket = dialTcp(target, this.connectTimeoutMs);
    return new Promise((resolve, reject) => {
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
  }

  /**
   * Dials `target` for an intercepted tunnel whose first request has not arrived yet, so the upstream
   * handshake runs before that request does: an HTTP/2 attempt when the guest offered h2, else a lean
   * HTTP/1.1 connection. For an h2 guest it answers whether the origin speaks h2 (null when the dial
   * failed; that request's own dial reports it). A guest that offered HTTP/1.1 too is then offered
   * what the origin speaks (tunnel.ts), so the connection that found HTTP/1.1 goes to the lean pool.
   */
  prewarm(target: CheckedTarget, guestAlpn: readonly string[]): Promise<boolean | null> {
    if (!guestAlpn.includes('h2')) {
      this.lean.prewarm(target, true);
      return Promise.resolve(null);
    }
    return this.sessionFor(target).then((session) => {
      if (session.kind === 'h2') return true;
      if (guestAlpn.includes('http/1.1')) {
        // Known HTTP/1.1-only before this tunnel: there is no fresh socket to adopt, so dial one.
        const socket = session.take();
        if (socket === null) this.lean.prewarm(target, true);
        else this.lean.adopt(target, true, socket);
      }
      return false;
    }, () => null);
  }

  /**
   * A verified HTTP/2 session to `target`, or, when the origin does not speak h2, the verified
   * HTTP/1.1 socket that found out (so the first request costs one handshake, not two; kept until
   * then, as a tunnel's prewarm may have dialled it); later callers get `socket: null` and use the
   * keep-alive agent.
   */
  async sessionFor(target: CheckedTarget): Promise<UpstreamSession> {
    assertCheckedTarget(target);
    if (this.speaksH2.get(target.key) === false) return this.spareSession(target.key);
    let pending = this.sessions.get(target.key);
    if (pending === undefined) {
      pending = this.openSession(target);
      this.sessions.set(target.key, pending);
      pending.catch(() => this.sessions.delete(target.key));
    }
    return pending;
  }

  private async openSession(target: CheckedTarget): Promise<UpstreamSession> {
    const socket = await dialTls(target, ['h2', 'http/1.1'], this.trust(), this.connectTimeoutMs);
    this.remember(target.key, socket.alpnProtocol === 'h2');
    if (socket.alpnProtocol !== 'h2') {
      this.sessions.delete(target.key);
      this.keepSpare(target.key, socket);
      return this.spareSession(target.key);
    }
    const authority = `https://${target.servername ?? (target.ip.includes(':') ? `[${target.ip}]` : target.ip)}:${target.port}`;
    const session = http2Connect(authority, { createConnection: () => socket });
    const current: Promise<UpstreamSession> = Promise.resolve({ kind: 'h2', session });
    const forget = () => {
      if (this.sessions.get(target.key) === current) this.sessions.delete(target.key);
    };
    this.sessions.set(target.key, current);
    session.on('close', forget);
    session.on('goaway', forget);
    session.on('error', forget);
    return { kind: 'h2', session };
  }

  /** Whether the origin speaks h2, if a handshake has found out; null when none has yet. */
  knownSpeaksH2(target: CheckedTarget): boolean | null {
    return this.speaksH2.get(target.key) ?? null;
  }

  private remember(key: string, h2: boolean): void {
    this.speaksH2.delete(key);
    this.speaksH2.set(key, h2);
    if (this.speaksH2.size > MAX_KNOWN_ORIGINS) this.speaksH2.delete(this.speaksH2.keys().next().value as string);
  }

  private keepSpare(key: string, socket: TLSSocket): void {
    this.spares.get(key)?.socket.destroy();
    // Unused, it closes after the keep-alive agents' idle time (a timer, not the socket's own timeout,
    // so nothing of ours stays on the socket once a request takes it).
    const expiry = setTimeout(() => socket.destroy(), IDLE_TIMEOUT_MS).unref();
    this.spares.set(key, { socket, expiry });
    socket.once('close', () => {
      if (this.spares.get(key)?.socket === socket) this.spares.delete(key);
    });
  }

  private spareSession(key: string): UpstreamSession {
    return {
      kind: 'h1',
      take: () => {
        const spare = this.spares.get(key);
        this.spares.delete(key);
        if (spare === undefined) return null;
        clearTimeout(spare.expiry);
        if (spare.socket.destroyed) return null;
        // Bytes before any request answer nothing we asked: such a connection is not trustworthy.
        if (spare.socket.readableLength > 0) {
          spare.socket.destroy();
          return null;
        }
        return spare.socket;
      },
    };
  }

  close(): void {
    for (const spare of this.spares.values()) {
      clearTimeout(spare.expiry);
      spare.socket.destroy();
    }
    this.spares.clear();
    this.lean.close();
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    for (const pending of this.sessions.values()) {
      pending.then((found) => (found.kind === 'h2' ? found.session.destroy() : found.take()?.destroy()), () => undefined);
    }
    this.sessions.clear();
  }
}
