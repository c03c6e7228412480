/**
 * The workspace DNS server: one per workspace, listening on a loopback address (UDP and TCP on the
 * same port) and/or a Unix socket path (TCP framing), all answering through answer.ts.
 * This file only moves bytes: datagrams in and out, length-prefixed streams with several queries per
 * connection, an idle timeout and caps on connections and in-flight queries. It never decides.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { lstat, unlink } from 'node:fs/promises';
import { lookup, type LookupOneOptions } from 'node:dns';
import { createServer, isIP, isIPv6, type AddressInfo, type Server, type Socket } from 'node:net';
import type { AuditSink } from '../../audit/record.js';
import { MicroagentError } from '../../errors.js';
import { childLog } from '../../log.js';
import type { Policy } from '../../policy/index.js';
import { listenError, listenOn } from '../listen.js';
import { answerMessage, type AnswerContext } from './answer.js';
import { frame, splitFrames } from './framing.js';
import { createExfiltrationGuard, DEFAULT_EXFILTRATION_LIMITS, type ExfiltrationLimits } from './guard.js';
import { createNameDecider } from './query-step.js';
import type { WorkspaceResolver } from './resolver.js';

const log = childLog('dns');

export interface DnsServerLimits extends ExfiltrationLimits {
  /** A TCP connection with no complete query for this long is closed (RFC 7766 section 6.2.3). */
  readonly tcpIdleTimeoutMs: number;
  readonly maxTcpConnections: number;
  /** Queries one TCP connection may have in flight before we stop reading from it. */
  readonly maxInflightPerConnection: number;
}

const UDP_RECEIVE_BUFFER = 4 * 1024 * 1024;

export const DEFAULT_DNS_SERVER_LIMITS: DnsServerLimits = {
  ...DEFAULT_EXFILTRATION_LIMITS,
  tcpIdleTimeoutMs: 10_000,
  maxTcpConnections: 128,
  maxInflightPerConnection: 32,
};

export interface DnsServerOptions {
  /** Called per query, so a reloaded policy applies to the next question. */
  readonly policy: () => Policy;
  readonly audit: AuditSink;
  readonly resolver: WorkspaceResolver;
  /** Loopback address and port (0 = any free port) for UDP and TCP. */
  readonly listen?: { readonly host: string; readonly port: number };
  /** A Unix socket path for length-prefixed (TCP-style) DNS. */
  readonly socketPath?: string;
  readonly limits?: Partial<DnsServerLimits>;
}

export interface DnsServerAddresses {
  readonly udp: AddressInfo | null;
  readonly tcp: AddressInfo | null;
  readonly socketPath: string | null;
}

export interface DnsServer {
  readonly addresses: DnsServerAddresses;
  close(): Promise<void>;
}

export async function startDnsServer(options: DnsServerOptions): Promise<DnsServer> {
  if (options.listen === undefined && options.socketPath === undefined) {
    throw new MicroagentError('invalid', 'the DNS server needs an address or a socket path to listen on', {
      code: 'dns.no_listener',
      remediation: 'pass listen: {host: "127.0.0.1", port: 0} or socketPath',
    });
  }
  const limits: DnsServerLimits = { ...DEFAULT_DNS_SERVER_LIMITS, ...options.limits };
  const ctx: AnswerContext = {
    policy: options.policy,
    audit: options.audit,
    resolver: options.resolver,
    guard: createExfiltrationGuard(limits),
    decideName: createNameDecider(),
    prepared: new WeakMap(),
  };
  const connections = new Set<Socket>();
  const closers: (() => Promise<void>)[] = [];
  let udp: AddressInfo | null = null;
  let tcp: AddressInfo | null = null;
  try {
    if (options.listen !== undefined) {
      const bound = await bindUdpAndTcp(options.listen.host, options.listen.port, ctx, limits, connections);
      udp = bound.udp.address();
      tcp = bound.tcp.address() as AddressInfo;
      closers.push(() => closeUdp(bound.udp), () => closeServer(bound.tcp));
    }
    if (options.socketPath !== undefined) {
      const path = options.socketPath;
      const server = streamServer(ctx, limits, connections);
      await removeStaleSocket(path);
      await listenOn(server, { path }, 'DNS', 'dns.listen_failed');
      closers.push(async () => {
        await closeServer(server);
        await unlink(path).catch(() => undefined);
      });
    }
  } catch (err) {
    await Promise.all(closers.map((close) => close()));
    throw err;
  }
  return {
    addresses: { udp, tcp, socketPath: options.socketPath ?? null },
    async close() {
      for (const socket of connections) socket.destroy();
      await Promise.all(closers.map((close) => close()));
    },
  };
}

/** Binds UDP first, then TCP on the same port; with port 0, retries when TCP finds it taken. */
async function bindUdpAndTcp(
  host: string,
  port: number,
  ctx: AnswerContext,
  limits: DnsServerLimits,
  connections: Set<Socket>,
): Promise<{ udp: UdpSocket; tcp: Server }> {
  for (let attempt = 0; ; attempt++) {
    const udp = await bindUdp(host, port, ctx);
    const tcp = streamServer(ctx, limits, connections);
    try {
      await listenOn(tcp, { host, port: udp.address().port }, 'DNS', 'dns.listen_failed');
      return { udp, tcp };
    } catch (err) {
      await closeUdp(udp);
      const taken = ((err as MicroagentError).cause as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE';
      if (port !== 0 || attempt >= 10 || !taken) throw err;
    }
  }
}

/**
 * Every answer goes to the address its query came from, an IP literal. node's default lookup sends
 * each one through dns.lookup, which defers the send by a tick even for a literal: handing the literal
 * back at once raised a bare node UDP echo's rate by 12-25 % under dnsperf (bench/dns.bench.mjs).
 */
function literalLookup(address: string, options: LookupOneOptions, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const literal = isIP(address);
  if (literal === 0) lookup(address, options, callback);
  else callback(null, address, literal);
}

function bindUdp(host: string, port: number, ctx: AnswerContext): Promise<UdpSocket> {
  const socket = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4', lookup: literalLookup });
  socket.on('message', (message, peer) => {
    answerMessage(ctx, message, 'udp')
      .then((response) => {
        if (response !== null) socket.send(response, peer.port, peer.address);
      })
      .catch((err: unknown) => log.warn({ err }, 'DNS UDP answer not sent (socket closing?)'));
  });
  return new Promise((resolve, reject) => {
    socket.once('error', (err) => reject(listenError('DNS', { host, port }, err, 'dns.listen_failed')));
    socket.bind(port, host, () => {
      socket.removeAllListeners('error');
      // Bursts arrive while answers wait for the audit log's fsync; a deeper queue drops fewer of them.
      // Best effort: the kernel caps it at net.core.rmem_max.
      try {
        socket.setRecvBufferSize(UDP_RECEIVE_BUFFER);
      } catch (err) {
        log.debug({ err }, 'could not enlarge the DNS UDP receive buffer');
      }
      socket.on('error', (err) => log.warn({ err }, 'DNS UDP socket error'));
      resolve(socket);
    });
  });
}

/** A server for length-prefixed DNS: pipelined queries, answered as each completes (RFC 7766 6.2.1.1). */
function streamServer(ctx: AnswerContext, limits: DnsServerLimits, connections: Set<Socket>): Server {
  // Half-open: a client may send its FIN right after its queries, and still gets every answer; our
  // side ends once the last one is written.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    connections.add(socket);
    let pending: Buffer = Buffer.alloc(0);
    let inflight = 0;
    let clientDone = false;
    const endIfAnswered = () => {
      if (clientDone && inflight === 0 && !socket.destroyed) socket.end();
    };
    // Idle means no whole query and no answer for the timeout: a client dribbling a byte at a time
    // (socket.setTimeout counts any byte) would otherwise hold one of the few connection slots for good.
    let idle: NodeJS.Timeout | undefined;
    const stillActive = () => {
      clearTimeout(idle);
      idle = setTimeout(() => (inflight > 0 ? stillActive() : socket.destroy()), limits.tcpIdleTimeoutMs);
    };
    stillActive();
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(idle);
      connections.delete(socket);
    });
    socket.on('end', () => {
      clientDone = true;
      endIfAnswered();
    });
    socket.on('data', (chunk: Buffer) => {
      const split = splitFrames(pending.length === 0 ? chunk : Buffer.concat([pending, chunk]));
      pending = split.rest;
      if (split.messages.length > 0) stillActive();
      for (const message of split.messages) {
        inflight++;
        if (inflight >= limits.maxInflightPerConnection) socket.pause();
        answerMessage(ctx, message, 'tcp')
          .then((response) => {
            inflight--;
            if (socket.destroyed) return;
            // Nothing parseable on a stream means we lost framing: close rather than guess (RFC 7766 6.2.3).
            if (response === null) return void socket.destroy();
            if (inflight < limits.maxInflightPerConnection) socket.resume();
            socket.write(frame(response));
            stillActive();
            endIfAnswered();
          })
          .catch((err: unknown) => {
            log.warn({ err }, 'DNS stream answer not sent; closing the connection');
            socket.destroy();
          });
      }
    });
  });
  server.maxConnections = limits.maxTcpConnections;
  return server;
}

/** A socket file left by a previous run is removed; any other file at the path is left alone. */
async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => null);
  if (stat === null) return;
  if (!stat.isSocket()) {
    throw new MicroagentError('conflict', `${path} exists and is not a socket`, {
      code: 'dns.socket_path_taken',
      remediation: 'choose another --socket path or remove that file',
    });
  }
  await unlink(path);
}

function closeUdp(socket: UdpSocket): Promise<void> {
  return new Promise((resolve) => socket.close(() => resolve()));
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
