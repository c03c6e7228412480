/**
 * What happens on a CONNECT after it was allowed and answered 200: peek the first bytes (pure
 * ClientHello parser), bind SNI to the CONNECT authority, then one of: splice (passthrough rule,
 * mode off), re-decide as raw TCP (not TLS, on a non-TLS port), or intercept: wrap the socket in a TLS
 * server socket whose only certificate is the bound name's, and hand it to the one shared HTTP/2+HTTP/1
 * server; anything else is refused. On a non-TLS port a guest silent for `serverFirstWaitMs` may be
 * waiting for a server's greeting: the flow is re-decided as raw TCP and dialled, and whichever side
 * speaks first chooses the path. It must never splice a TLS port's bytes uninspected (not TLS there is
 * refused), nor an SSLv2-format hello on any port, nor let a late ClientHello into a raw splice the
 * server did not open, nor intercept or splice TLS in a tunnel opened as tcp unless https is allowed.
 */
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Decision } from '../policy/index.js';
import { decisionRecord, proxyVerdict } from './answers.js';
import { checkAddresses, type CheckedTarget } from './checked-target.js';
import { MAX_CLIENT_HELLO_BYTES, type ClientHelloPeek } from './client-hello.js';
import { destinationHost, type Destination } from './destination.js';
import { GUEST_LEFT_HANDSHAKE, guestTlsFailure } from './guest-tls-failure.js';
import { checkSni } from './identity.js';
import { peek } from './peek.js';
import { closeRecord, type ProxyRuntime } from './runtime.js';
import { connected, splice } from './splice.js';
import { dialTcp } from './upstream.js';

export interface Tunnel {
  readonly conn: string;
  readonly socket: Socket;
  readonly head: Buffer;
  readonly destination: Destination;
  readonly target: CheckedTarget;
  readonly decision: Decision;
  /**
   * What the CONNECT was allowed as: https, or tcp on a non-TLS port where https is denied or merely
   * unlisted (connection-step.ts); a ClientHello in a tcp tunnel is decided as https before anything
   * is intercepted or spliced.
   */
  readonly openedAs: 'https' | 'tcp';
  /** True once the CONNECT's allow is durable (intercepted tunnels answer 200 before that). */
  readonly recorded: Promise<boolean>;
  readonly startedAt: number;
  /** Set when the upstream was dialled before answering 200 (splice-only tunnels). */
  readonly upstream: Socket | null;
}

/** The flow an intercepted TLS connection belongs to; the request handlers look it up. */
export interface InterceptedFlow {
  readonly conn: string;
  readonly destination: Destination;
  readonly target: CheckedTarget;
  readonly sni: string | null;
  readonly startedAt: number;
}

/** Hands a handshaken TLS socket, and the flow it belongs to, to the shared server. */
export type InterceptHandoff = (tlsSocket: TLSSocket, flow: InterceptedFlow) => void;

export const ALPN = ['h2', 'http/1.1'];
const ALPN_H1 = ['http/1.1'];
const NO_ALPN: readonly string[] = [];

export async function runTunnel(rt: ProxyRuntime, tunnel: Tunnel, handoff: InterceptHandoff): Promise<void> {
  const { socket, destination } = tunnel;
  const policy = rt.policy();
  // The upstream open now: the splice-only one dialled before the 200, or a silent guest's raw TCP one.
  let upstream = tunnel.upstream;
  const closeWith = (extra: { reason?: Decision['reason']; signals?: Decision['signals']; error?: string; decrypted?: boolean; bytesUp?: number; bytesDown?: number }) =>
    rt.appendInBackground(
      closeRecord({
        conn: tunnel.conn,
        destination,
        ip: tunnel.target.ip,
        decrypted: extra.decrypted ?? false,
        bytesUp: extra.bytesUp ?? 0,
        bytesDown: extra.bytesDown ?? 0,
        startedAt: tunnel.startedAt,
        ...(extra.reason === undefined ? {} : { reason: extra.reason }),
        ...(extra.signals === undefined ? {} : { signals: extra.signals }),
        ...(extra.error === undefined ? {} : { error: extra.error }),
      }),
    );
  const spliceTo = (to: Socket, head: Buffer, reason?: Decision['reason'], signals?: Decision['signals']) =>
    splice(rt, socket, to, head, (result) => {
      rt.counters.activeTunnels--;
      closeWith({
        ...result,
        ...(reason === undefined ? {} : { reason }),
        ...(signals === undefined ? {} : { signals }),
        ...(result.cut === undefined ? {} : { reason: 'limit_exceeded', signals: result.cut === 'budget' ? [] : ['slow_client'] }),
      });
    });

  if (tunnel.decision.mode === 'off' && upstream !== null) {
    socket.pause();
    spliceTo(upstream, tunnel.head, 'mediation_off', ['mediation_off']);
    return;
  }

  const { headersTimeoutMs, serverFirstWaitMs } = rt.limits;
  const deadline = Date.now() + headersTimeoutMs;
  // Only a non-TLS port may carry a server-first protocol; a TLS port waits for its ClientHello.
  const window = tunnel.decision.tls ? headersTimeoutMs : Math.min(serverFirstWaitMs, headersTimeoutMs);
  let { result, bytes } = await peek(socket, tunnel.head, window);
  const refuse = (reason: 'bad_request' | 'identity_mismatch' | 'limit_exceeded', signals: Decision['signals'], facts: { sni?: string | null; error?: string } = {}) => {
    rt.counters.activeTunnels--;
    rt.counters.denied++;
    rt.appendInBackground(
      decisionRecord({ conn: tunnel.conn, protocol: tunnel.openedAs, destination, ip: tunnel.target.ip, decrypted: false, ...(facts.sni === undefined ? {} : { sni: facts.sni }) }, proxyVerdict(policy, reason, signals)),
    );
    upstream?.destroy();
    socket.destroy();
    closeWith({ reason, signals, bytesUp: bytes.length, ...(facts.error === undefined ? {} : { error: facts.error }) });
  };

  const abandon = (error: string) => {
    rt.counters.activeTunnels--;
    upstream?.destroy();
    socket.destroy();
    closeWith({ bytesUp: bytes.length, error });
  };

  // The raw TCP flow of a silent guest, already decided, recorded and dialled; null otherwise.
  let serverFirst: Socket | null = null;
  if (result === 'timeout' && window < headersTimeoutMs) {
    if (bytes.length > 0 || checkAddresses(policy, 'tcp', destination, [tunnel.target.ip]).kind === 'denied') {
      // A ClientHello under way, or raw TCP denied here anyway: no server-first protocol can be meant, so
      // wait for the guest as on a TLS port. (A slow TLS client must not be cut by a tcp deny.)
      ({ result, bytes } = await peek(socket, bytes, deadline - Date.now()));
    } else {
      serverFirst = await openRawTcp(rt, tunnel, refuse);
      if (serverFirst === null) return;
      upstream = serverFirst;
      const raced = await peek(socket, bytes, deadline - Date.now(), serverFirst);
      if (raced.result === 'upstream_spoke') {
        spliceTo(serverFirst, raced.bytes);
        return;
      }
      if (raced.result === 'upstream_closed') {
        abandon('the upstream closed before either side sent anything');
        return;
      }
      result = raced.result;
      bytes = raced.bytes;
    }
  }

  if (result === 'closed') {
    abandon('the guest closed the tunnel before sending anything decidable');
    return;
  }
  if (result === 'timeout') {
    refuse('limit_exceeded', ['slow_client']);
    return;
  }
  // Only a non-TLS port may carry raw TCP: on a TLS port, a splice would skip every request rule.
  if (result.kind === 'error' && result.error === 'not_tls' && !tunnel.decision.tls) {
    if (serverFirst === null) await runRawTcp(rt, tunnel, bytes, spliceTo, refuse);
    else if (serverFirst.destroyed) abandon('the upstream closed before the guest finished its first bytes');
    else spliceTo(serverFirst, bytes);
    return;
  }
  if (result.kind !== 'client_hello') {
    refuse('bad_request', [], { error: unusableFirstBytes(result) });
    return;
  }
  if (checkSni(destination, result.sni).kind === 'mismatch') {
    refuse('identity_mismatch', ['identity_mismatch'], { sni: result.sni });
    return;
  }
  // TLS in a tunnel opened as tcp is https, and must be allowed as such.
  const tls = tunnel.openedAs === 'https' ? { decision: tunnel.decision, recorded: tunnel.recorded } : decideTls(rt, tunnel, result.sni);
  if (tls === null) {
    upstream?.destroy();
    socket.destroy();
    rt.counters.activeTunnels--;
    closeWith({ bytesUp: bytes.length, error: 'TLS in a tunnel opened for raw TCP, and https is denied there' });
    return;
  }
  // A ClientHello sent after the window but before any greeting lands here too: a slow TLS client is
  // handled as one and its unused raw TCP upstream closed, so staying silent never skips interception.
  if (tls.decision.action === 'passthrough') {
    spliceTo(upstream ?? dialTcp(tunnel.target, rt.limits.connectTimeoutMs), bytes);
    return;
  }
  upstream?.destroy();
  // The CONNECT is decided and its address checked: once its allow is durable, the upstream handshake
  // can run while we mint (a few ms a new host would otherwise wait for at its first request). No
  // request byte goes up before that request's own decision is durable.
  const originH2 = tls.recorded.then((durable) => (durable ? rt.pool.prewarm(tunnel.target, result.alpn) : null));
  // A guest that can speak either gets the protocol the origin speaks, as it would without us: an h2
  // guest of an HTTP/1.1-only origin would meet faults of its own h2 stack that origin never triggers
  // (curl before 8.1, git's transport on Debian 12, stalls an upload whose answer began early). A
  // guest offering h2 alone (gRPC) keeps it, translated to HTTP/1.1 upstream. Once one handshake has
  // found out, the pool knows, and later tunnels to that origin do not wait.
  const offersBoth = result.alpn.includes('h2') && result.alpn.includes('http/1.1');
  const known = rt.pool.knownSpeaksH2(tunnel.target);
  // A guest offering only protocols we do not speak by name (curl --http1.0 offers http/1.0) gets no
  // ALPN at all, as from a server without it, rather than a fatal no_application_protocol alert.
  const offer = !result.alpn.some((p) => ALPN.includes(p)) ? Promise.resolve(NO_ALPN)
    : !offersBoth || known === true ? Promise.resolve(ALPN) : known === false ? Promise.resolve(ALPN_H1) : originProtocols(originH2);
  await intercept(rt, tunnel, bytes, result.sni, offer, handoff, closeWith, refuse);
}

/**
 * An origin that does not answer its handshake soon (a dropped SYN waits for the kernel's timeout)
 * must not hold the guest's handshake as long: past this, the guest is offered both, as before we knew.
 */
const ORIGIN_PROTOCOL_WAIT_MS = 3_000;

function originProtocols(originH2: Promise<boolean | null>): Promise<readonly string[]> {
  let timer: NodeJS.Timeout | undefined;
  const waited = new Promise<null>((resolve) => (timer = setTimeout(resolve, ORIGIN_PROTOCOL_WAIT_MS, null)));
  return Promise.race([originH2, waited]).then((h2) => {
    clearTimeout(timer);
    return h2 === false ? ALPN_H1 : ALPN;
  });
}

/** Why first bytes that are no usable ClientHello closed the tunnel, for its close record. */
function unusableFirstBytes(peeked: Exclude<ClientHelloPeek, { kind: 'client_hello' }>): string {
  if (peeked.kind === 'need_more') return 'the ClientHello was cut short';
  switch (peeked.error) {
    case 'not_tls':
      return 'the first bytes on a TLS port are not TLS';
    case 'sslv2_hello':
      return 'an SSLv2-format ClientHello (no extensions, no SNI) cannot be intercepted';
    case 'not_client_hello':
      return 'the first TLS handshake message is not a ClientHello';
    case 'malformed':
      return 'the ClientHello is malformed';
    case 'too_large':
      return `the ClientHello is larger than ${MAX_CLIENT_HELLO_BYTES} bytes`;
    default: {
      const never: never = peeked.error;
      return never;
    }
  }
}

/**
 * A ClientHello in a tunnel opened as tcp: decided as https on the IP already checked. A deny is
 * recorded (with the SNI) and yields null; an allow (guarded mode's unlisted, or a policy changed since
 * the CONNECT) is appended, and what the tunnel does next waits on it as on a CONNECT's allow.
 */
function decideTls(rt: ProxyRuntime, tunnel: Tunnel, sni: string | null): { decision: Decision; recorded: Promise<boolean> } | null {
  const check = checkAddresses(rt.policy(), 'https', tunnel.destination, [tunnel.target.ip]);
  const record = decisionRecord({ conn: tunnel.conn, protocol: 'https', destination: tunnel.destination, ip: tunnel.target.ip, sni, decrypted: false }, check.decision);
  if (check.kind === 'denied') {
    rt.counters.denied++;
    rt.appendInBackground(record);
    return null;
  }
  return { decision: check.decision, recorded: rt.appendInBackground(record) };
}

/** Not TLS after CONNECT on a non-TLS port: the flow is raw TCP and must be allowed as such. */
async function runRawTcp(
  rt: ProxyRuntime,
  tunnel: Tunnel,
  bytes: Buffer,
  spliceTo: (upstream: Socket, head: Buffer) => void,
  refuse: (reason: 'bad_request', signals: Decision['signals']) => void,
): Promise<void> {
  const upstream = await openRawTcp(rt, tunnel, refuse);
  if (upstream !== null) spliceTo(upstream, bytes);
}

/**
 * Decides the tunnel as protocol tcp on the CONNECT authority and the IP already checked, makes the
 * allow durable, then dials that IP (or keeps the splice-only upstream). Resolves with the upstream,
 * or null once a deny or a failure has closed the tunnel and been recorded.
 */
async function openRawTcp(
  rt: ProxyRuntime,
  tunnel: Tunnel,
  refuse: (reason: 'bad_request', signals: Decision['signals']) => void,
): Promise<Socket | null> {
  const policy = rt.policy();
  const check = checkAddresses(policy, 'tcp', tunnel.destination, [tunnel.target.ip]);
  const facts = { conn: tunnel.conn, protocol: 'tcp' as const, destination: tunnel.destination, ip: tunnel.target.ip, decrypted: false };
  if (check.kind === 'denied') {
    rt.counters.activeTunnels--;
    rt.counters.denied++;
    rt.appendInBackground(decisionRecord(facts, check.decision));
    tunnel.upstream?.destroy();
    tunnel.socket.destroy();
    return null;
  }
  try {
    await rt.audit.append(decisionRecord(facts, check.decision));
  } catch {
    refuse('bad_request', []);
    return null;
  }
  try {
    return tunnel.upstream ?? (await connected(dialTcp(check.target, rt.limits.connectTimeoutMs)));
  } catch (err) {
    rt.counters.activeTunnels--;
    tunnel.socket.destroy();
    rt.appendInBackground(closeRecord({ conn: tunnel.conn, destination: tunnel.destination, ip: tunnel.target.ip, decrypted: false, bytesUp: 0, bytesDown: 0, startedAt: tunnel.startedAt, reason: 'upstream_unreachable', error: (err as Error).message }));
    return null;
  }
}

async function intercept(
  rt: ProxyRuntime,
  tunnel: Tunnel,
  bytes: Buffer,
  sni: string | null,
  offer: Promise<readonly string[]>,
  handoff: InterceptHandoff,
  closeWith: (extra: { decrypted?: boolean; bytesUp?: number; bytesDown?: number; error?: string; signals?: Decision['signals'] }) => void,
  refuse: (reason: 'bad_request', signals: Decision['signals']) => void,
): Promise<void> {
  const { socket, destination } = tunnel;
  const bound = destinationHost(destination);
  let secureContext;
  let alpn;
  try {
    [secureContext, alpn] = await Promise.all([rt.ca.secureContextFor(bound), offer]);
  } catch {
    refuse('bad_request', []);
    return;
  }
  socket.unshift(bytes);
  const tlsSocket = new TLSSocket(socket, {
    isServer: true,
    secureContext,
    ...(alpn.length === 0 ? {} : { ALPNProtocols: [...alpn] }),
    // Belt and braces: the peeked SNI was already bound; a different name here fails the handshake.
    SNICallback: (servername, cb) =>
      checkSni(destination, servername).kind === 'same' ? cb(null, secureContext) : cb(new Error('SNI does not match the CONNECT authority')),
  });
  let closed = false;
  let handshaken = false;
  // Cut by us, not left by the guest: said so in the close record when it happens mid-handshake.
  const cut = (limit: string, ms: number) => () => {
    if (!handshaken) onClose({ error: `the guest's TLS handshake did not finish within the ${limit} (${ms} ms)`, signals: ['slow_client'] });
    tlsSocket.destroy();
  };
  const total = setTimeout(cut('total timeout', rt.limits.totalTimeoutMs), rt.limits.totalTimeoutMs);
  total.unref();
  tlsSocket.setTimeout(rt.limits.idleTimeoutMs, cut('idle timeout', rt.limits.idleTimeoutMs));
  const onClose = (failure?: { error: string; signals?: Decision['signals'] }) => {
    if (closed) return;
    closed = true;
    clearTimeout(total);
    rt.counters.activeTunnels--;
    closeWith({ decrypted: handshaken, bytesUp: tlsSocket.bytesRead, bytesDown: tlsSocket.bytesWritten, ...failure });
  };
  tlsSocket.on('error', (err: Error) => {
    onClose(handshaken ? { error: err.message } : guestTlsFailure(err, bound));
    tlsSocket.destroy();
  });
  // The HTTP server's sockets allow half-open connections, and HTTP/2 sessions do not notice a peer's
  // FIN: when the guest is done sending, finish our side so the connection (and its record) closes.
  tlsSocket.on('end', () => tlsSocket.end());
  // The raw socket closes with the TLS one; listening on both survives HTTP/2 taking the socket over.
  const onSocketClose = () => onClose(handshaken ? undefined : GUEST_LEFT_HANDSHAKE);
  tlsSocket.on('close', onSocketClose);
  socket.on('close', onSocketClose);
  tlsSocket.once('secure', () => {
    handshaken = true;
    handoff(tlsSocket, { conn: tunnel.conn, destination, target: tunnel.target, sni, startedAt: tunnel.startedAt });
  });
}
