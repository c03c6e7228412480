/**
 * Dialling a mediation target: one connection attempt with a deadline (`dialTarget`), the retrying
 * form optional channels may use, and the live readiness probe (`probeTarget`). A probe is a real
 * connect that is closed at once; for PROXY-protocol targets it sends a LOCAL header, which the spec
 * defines as a health check the target must not treat as relayed traffic. Never caches a result:
 * readiness is always observed now.
 */
import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { MicroagentError } from '../errors.js';
import { encodeProxyV2 } from './proxy-v2.js';
import { formatTarget, parseTarget, type MediationTarget } from './target.js';

/** Sockets on both ends of a relay share these: half-close passes through and writes batch in 256 KiB. */
export const RELAY_HIGH_WATER_MARK = 256 * 1024;

export interface DialOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

/** Connects once; rejects with the socket error, a timeout or the abort. */
export function dialTarget(target: MediationTarget, options: DialOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) return reject(new Error('dial aborted'));
    // net.Socket passes highWaterMark on to its Duplex; @types/node does not list it.
    const socketOptions: NetConnectOpts & { readonly highWaterMark: number } =
      target.kind === 'unix'
        ? { path: target.path, allowHalfOpen: true, highWaterMark: RELAY_HIGH_WATER_MARK }
        : { host: target.host, port: target.port, allowHalfOpen: true, noDelay: true, highWaterMark: RELAY_HIGH_WATER_MARK };
    const socket = connect(socketOptions);
    const timer = setTimeout(() => fail(new Error(`connect to ${formatTarget(target)} timed out after ${options.timeoutMs} ms`)), options.timeoutMs);
    const onAbort = () => fail(new Error('dial aborted'));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const cleanUp = () => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      socket.off('error', fail);
    };
    function fail(err: Error): void {
      cleanUp();
      socket.destroy();
      reject(err);
    }
    socket.once('error', fail);
    socket.once('connect', () => {
      cleanUp();
      resolve(socket);
    });
  });
}

/**
 * Keeps trying until one attempt succeeds or `timeoutMs` has passed in total, for channels that do not
 * fail closed: their target may be restarting. The guest connection waits meanwhile (bounded by the
 * channel's connection cap and this deadline).
 */
export async function dialTargetPatiently(target: MediationTarget, options: DialOptions): Promise<Socket> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const remaining = deadline - Date.now();
    try {
      return await dialTarget(target, { ...options, timeoutMs: Math.max(1, remaining) });
    } catch (err) {
      if (options.signal?.aborted || deadline - Date.now() < RETRY_PAUSE_MS) throw err;
      await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS));
    }
  }
}
const RETRY_PAUSE_MS = 100;

export interface ProbeResult {
  readonly ready: boolean;
  /** When the probe finished (ISO 8601). */
  readonly observedAt: string;
  readonly error?: string;
}

export interface ProbeOptions {
  /** Send a PROXY v2 LOCAL header first, so a PROXY-protocol target sees a health check. */
  readonly proxyProtocol?: boolean;
}

/** Connects to the target now (with a short timeout) and reports whether that worked. */
export async function probeTarget(target: MediationTarget | string, timeoutMs: number, options: ProbeOptions = {}): Promise<ProbeResult> {
  const resolved = typeof target === 'string' ? parseProbeTarget(target) : target;
  try {
    const socket = await dialTarget(resolved, { timeoutMs });
    socket.on('error', () => {});
    if (options.proxyProtocol === true) socket.end(encodeProxyV2('local', []));
    else socket.end();
    socket.destroySoon();
    return { ready: true, observedAt: new Date().toISOString() };
  } catch (err) {
    return { ready: false, observedAt: new Date().toISOString(), error: (err as Error).message };
  }
}

function parseProbeTarget(text: string): MediationTarget {
  const parsed = parseTarget(text);
  if (parsed.ok) return parsed.target;
  throw new MicroagentError('invalid', `mediation target: ${parsed.problem}`, {
    code: 'mediation.invalid',
    remediation: 'give the target as HOST:PORT, [IPV6]:PORT or an absolute Unix socket path',
  });
}
