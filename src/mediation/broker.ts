/**
 * The mediation broker of one workspace: for each channel it listens on `<socketDir>/<port>.sock`
 * (the VM layer wires the guest's vsock port there) and relays each guest connection to the channel's
 * target over a connection of its own. This is the driver for connection.ts: it performs that step
 * function's actions on real sockets and moves the bytes (with backpressure, never buffering more than
 * a socket's high-water mark).
 *
 * Never: dial before the allow record is durable; queue a connection the channel has no room for; keep
 * a listener or a live connection after `sever()`; accept a socket path that is not ours to replace.
 */
import { randomUUID } from 'node:crypto';
import { writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { AuditSink, MediationConnectEvent } from '../audit/record.js';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import type { MediationChannel } from './channels.js';
import { startConnection, step, type ConnectionAction, type ConnectionEvent, type ConnectionState, type Side } from './connection.js';
import { dialTarget, dialTargetPatiently, probeTarget, RELAY_HIGH_WATER_MARK, type ProbeResult } from './dial.js';
import { encodeMediationHeader } from './proxy-v2.js';
import { closeListener, listenOn, prepareSocketDir } from './listener.js';

const log = childLog('mediation');

export interface BrokerOptions {
  readonly workspace: string;
  readonly runtimeId: string;
  readonly channels: readonly MediationChannel[];
  /** Created 0700 if missing; holds one `<port>.sock` per channel. */
  readonly socketDir: string;
  readonly audit: AuditSink;
}

export interface ChannelReadiness extends ProbeResult {
  readonly port: number;
  readonly target: string;
  readonly required: boolean;
}

export interface MediationReadiness {
  /** False when any required channel is not ready. */
  readonly ready: boolean;
  readonly channels: readonly ChannelReadiness[];
  /** Why not ready: each required channel that failed, with its error. */
  readonly error?: string;
}

export interface ChannelStats {
  readonly port: number;
  readonly target: string;
  readonly socketPath: string;
  readonly live: number;
  readonly accepted: number;
  readonly deniedLimit: number;
  readonly deniedUnreachable: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** The last dial error, so `stats()` shows a target that went away between probes. */
  readonly lastError: string | null;
}

export interface BrokerStats {
  readonly workspace: string;
  readonly severed: boolean;
  readonly channels: readonly ChannelStats[];
}

export interface MediationBroker {
  socketPathFor(port: number): string;
  /** Probes every channel's target now. */
  mediationReady(): Promise<MediationReadiness>;
  /** Quarantine: closes every listener and live connection at once; resolves when all are audited. */
  sever(): Promise<void>;
  /** Stops the broker (live connections are severed). Idempotent. */
  close(): Promise<void>;
  stats(): BrokerStats;
}

/** One channel's listener and counters. */
interface ChannelRuntime {
  readonly channel: MediationChannel;
  readonly socketPath: string;
  readonly server: Server;
  readonly live: Set<Relay>;
  accepted: number;
  deniedLimit: number;
  deniedUnreachable: number;
  bytesUp: number;
  bytesDown: number;
  lastError: string | null;
}

/** The typed context of one guest connection: its step-function state plus the sockets it drives. */
interface Relay {
  state: ConnectionState;
  readonly runtime: ChannelRuntime;
  readonly guest: Socket;
  target: Socket | null;
  readonly dialAbort: AbortController;
  bytesUp: number;
  bytesDown: number;
  /** Resolves when the connection reaches `closed` (its close record, if any, is on its way). */
  readonly closed: Promise<void>;
  readonly markClosed: () => void;
}

export async function startBroker(options: BrokerOptions): Promise<MediationBroker> {
  checkIdentity(options);
  await prepareSocketDir(options.socketDir);
  const pendingAudits = new Set<Promise<void>>();
  const runtimes = new Map<number, ChannelRuntime>();
  let severed = false;
  let closed = false;

  const audit = (event: Parameters<AuditSink['append']>[0]): Promise<void> => {
    const written = Promise.resolve().then(() => options.audit.append(event));
    const tracked = written.then(
      () => {},
      (err: unknown) => {
        if (!options.audit.healthy) abortAll(`audit log unavailable: ${(err as Error).message}`);
      },
    );
    pendingAudits.add(tracked);
    void tracked.then(() => pendingAudits.delete(tracked));
    return written;
  };

  // A failed audit log stays failed, so no live connection could get its close record: fail closed.
  const abortAll = (error: string): void => {
    for (const runtime of runtimes.values()) for (const relay of [...runtime.live]) apply(relay, { type: 'abort', error });
  };

  const apply = (relay: Relay, event: ConnectionEvent): void => {
    const next = step(relay.state, event);
    relay.state = next.state;
    for (const action of next.actions) perform(relay, action);
    if (relay.state.phase === 'closed') {
      relay.runtime.live.delete(relay);
      relay.markClosed();
    }
  };

  const perform = (relay: Relay, action: ConnectionAction): void => {
    switch (action.type) {
      case 'append_audit':
        if (action.event.event === 'mediation.connect') countVerdict(relay.runtime, action.event);
        if (action.gate) {
          audit(action.event).then(
            () => apply(relay, { type: 'admitted' }),
            (err: unknown) => apply(relay, { type: 'audit_failed', error: (err as Error).message }),
          );
        } else {
          audit(action.event).catch((err: unknown) =>
            log.error({ err, conn: relay.state.conn, event: action.event.event }, 'mediation audit record not written'),
          );
        }
        return;
      case 'dial':
        dial(relay);
        return;
      case 'relay':
        startRelay(relay);
        return;
      case 'end_write':
        socketOf(relay, action.side)?.end();
        return;
      case 'destroy':
        if (action.side === 'target' && relay.target === null) relay.dialAbort.abort();
        else socketOf(relay, action.side)?.destroy();
        return;
      default:
        return unreachable(action);
    }
  };

  const dial = (relay: Relay): void => {
    const { channel } = relay.runtime;
    const dialOptions = { timeoutMs: channel.limits.connectTimeoutMs, signal: relay.dialAbort.signal };
    const attempt = channel.failClosed ? dialTarget(channel.target, dialOptions) : dialTargetPatiently(channel.target, dialOptions);
    attempt.then(
      (socket) => {
        relay.target = socket;
        watchSocket(relay, 'target', socket);
        apply(relay, { type: 'dialled' });
      },
      (err: unknown) => {
        relay.runtime.lastError = (err as Error).message;
        apply(relay, { type: 'dial_failed', error: (err as Error).message });
      },
    );
  };

  const startRelay = (relay: Relay): void => {
    const { channel } = relay.runtime;
    const target = relay.target as Socket;
    if (channel.proxyProtocol) {
      writeHeader(target, encodeMediationHeader({ workspace: options.workspace, runtimeId: options.runtimeId, port: channel.port, conn: relay.state.conn }));
    }
    relay.guest.setTimeout(channel.limits.idleTimeoutMs, () =>
      apply(relay, { type: 'limit', error: `idle for ${channel.limits.idleTimeoutMs} ms` }),
    );
    const maxBytes = channel.limits.maxBytesPerConnection;
    const withinLimit = (): boolean => {
      if (relay.bytesUp + relay.bytesDown <= maxBytes) return true;
      apply(relay, { type: 'limit', error: `more than ${maxBytes} bytes` });
      return false;
    };
    pump(relay.guest, target, (n) => {
      relay.bytesUp += n;
      relay.runtime.bytesUp += n;
      return withinLimit();
    });
    pump(target, relay.guest, (n) => {
      relay.bytesDown += n;
      relay.runtime.bytesDown += n;
      return withinLimit();
    });
  };

  const watchSocket = (relay: Relay, side: Side, socket: Socket): void => {
    socket.on('end', () => apply(relay, { type: 'eof', side }));
    socket.on('error', (err) => apply(relay, { type: 'socket_error', side, error: err.message }));
    socket.on('close', () =>
      apply(relay, { type: 'socket_closed', side, bytesUp: relay.bytesUp, bytesDown: relay.bytesDown, now: performance.now() }),
    );
  };

  const onGuest = (runtime: ChannelRuntime, guest: Socket): void => {
    const { channel } = runtime;
    const conn = randomUUID();
    if (severed) {
      // Accepted in the instant before the listener closed: refuse, never relay.
      guest.destroy();
      audit(severedDeny(conn, channel)).catch((err: unknown) => log.error({ err, conn }, 'mediation audit record not written'));
      return;
    }
    const atCapacity = runtime.live.size >= channel.limits.maxConnections;
    const start = startConnection({ conn, port: channel.port, target: channel.targetText, now: performance.now(), atCapacity });
    let markClosed = () => {};
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const relay: Relay = {
      state: start.state,
      runtime,
      guest,
      target: null,
      dialAbort: new AbortController(),
      bytesUp: 0,
      bytesDown: 0,
      closed,
      markClosed,
    };
    if (!atCapacity) runtime.live.add(relay);
    watchSocket(relay, 'guest', guest);
    for (const action of start.actions) perform(relay, action);
  };

  for (const channel of options.channels) {
    const socketPath = join(options.socketDir, `${channel.port}.sock`);
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, highWaterMark: RELAY_HIGH_WATER_MARK });
    const runtime: ChannelRuntime = {
      channel, socketPath, server, live: new Set(),
      accepted: 0, deniedLimit: 0, deniedUnreachable: 0, bytesUp: 0, bytesDown: 0, lastError: null,
    };
    server.on('connection', (guest: Socket) => onGuest(runtime, guest));
    server.on('error', (err) => log.error({ err, port: channel.port }, 'mediation listener failed'));
    runtimes.set(channel.port, runtime);
  }
  try {
    for (const runtime of runtimes.values()) await listenOn(runtime.server, runtime.socketPath);
  } catch (err) {
    await Promise.all([...runtimes.values()].map((r) => closeListener(r.server, r.socketPath)));
    throw err;
  }

  const sever = async (): Promise<void> => {
    severed = true;
    await Promise.all([...runtimes.values()].map(async (runtime) => {
      const closing = closeListener(runtime.server, runtime.socketPath);
      const relays = [...runtime.live];
      for (const relay of relays) apply(relay, { type: 'sever' });
      await Promise.all([closing, ...relays.map((r) => r.closed)]);
    }));
    while (pendingAudits.size > 0) await Promise.allSettled([...pendingAudits]);
  };

  return {
    socketPathFor(port) {
      const runtime = runtimes.get(port);
      if (runtime === undefined) {
        throw new MicroagentError('not_found', `workspace ${options.workspace} has no mediation channel on port ${port}`, {
          code: 'mediation.no_channel',
          remediation: `declare the channel (ports declared: ${[...runtimes.keys()].join(', ') || 'none'})`,
        });
      }
      return runtime.socketPath;
    },
    async mediationReady() {
      const channels = await Promise.all(
        [...runtimes.values()].map(async ({ channel }): Promise<ChannelReadiness> => {
          const probe: ProbeResult = severed
            ? { ready: false, observedAt: new Date().toISOString(), error: 'the workspace was severed (quarantined)' }
            : await probeTarget(channel.target, channel.limits.connectTimeoutMs, { proxyProtocol: channel.proxyProtocol });
          return { port: channel.port, target: channel.targetText, required: channel.required, ...probe };
        }),
      );
      const failed = channels.filter((c) => c.required && !c.ready);
      if (failed.length === 0) return { ready: true, channels };
      const error = failed.map((c) => `mediation channel ${c.port} -> ${c.target}: ${c.error ?? 'not ready'}`).join('; ');
      return { ready: false, channels, error };
    },
    sever,
    async close() {
      if (closed) return;
      closed = true;
      await sever();
    },
    stats() {
      return {
        workspace: options.workspace,
        severed,
        channels: [...runtimes.values()].map((r) => ({
          port: r.channel.port, target: r.channel.targetText, socketPath: r.socketPath, live: r.live.size,
          accepted: r.accepted, deniedLimit: r.deniedLimit, deniedUnreachable: r.deniedUnreachable,
          bytesUp: r.bytesUp, bytesDown: r.bytesDown, lastError: r.lastError,
        })),
      };
    },
  };
}

/** Moves bytes one way: pause the reader while the writer is full, resume on drain (what pipe() does). */
/**
 * Writes the PROXY header straight to the target's descriptor. A target that closed before reading
 * anything (a banner server) fails that write with EPIPE; written through the stream, node would
 * destroy the socket with the target's bytes still unread, and the guest would never get them. Here
 * the failure only means the target reads no more: its bytes and its EOF still reach the guest.
 */
function writeHeader(target: Socket, header: Buffer): void {
  const fd = (target as unknown as { _handle?: { fd?: number } })._handle?.fd;
  let written = 0;
  if (typeof fd === 'number' && fd >= 0) {
    try {
      written = writeSync(fd, header);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EPIPE' || code === 'ECONNRESET') return;
      // EAGAIN and the rest: the stream writes it, and reports what fails.
    }
  }
  if (written < header.length) target.write(header.subarray(written));
}

function pump(from: Socket, to: Socket, count: (bytes: number) => boolean): void {
  from.on('data', (chunk: Buffer) => {
    if (count(chunk.length) && !to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.resume();
}

/** The workspace name and runtime id go into every PROXY header; refuse at start what could not be sent. */
function checkIdentity(options: BrokerOptions): void {
  for (const [field, value] of [['workspace', options.workspace], ['runtimeId', options.runtimeId]] as const) {
    const bytes = Buffer.byteLength(value);
    if (bytes === 0 || bytes > MAX_IDENTITY_BYTES) {
      throw new MicroagentError('invalid', `mediation broker: ${field} must be 1 to ${MAX_IDENTITY_BYTES} bytes, got ${bytes}`, {
        code: 'mediation.invalid',
        remediation: `pass the workspace's name and runtime id as they appear in its audit records`,
      });
    }
  }
}
const MAX_IDENTITY_BYTES = 1024;

function socketOf(relay: Relay, side: Side): Socket | null {
  return side === 'guest' ? relay.guest : relay.target;
}

function countVerdict(runtime: ChannelRuntime, event: MediationConnectEvent): void {
  if (event.verdict === 'allow') runtime.accepted++;
  else if (event.reason === 'limit_exceeded') runtime.deniedLimit++;
  else if (event.reason === 'target_unreachable') runtime.deniedUnreachable++;
}

function severedDeny(conn: string, channel: MediationChannel): MediationConnectEvent {
  return { event: 'mediation.connect', verdict: 'deny', reason: 'channel_severed', conn, port: channel.port, target: channel.targetText };
}

function unreachable(value: never): never {
  throw new Error(`unexpected connection action ${JSON.stringify(value)}`);
}
