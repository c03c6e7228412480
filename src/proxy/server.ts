/**
 * startEgressProxy: the explicit HTTP(S) proxy for one workspace. One http.Server takes plain
 * absolute-form requests and CONNECT (on TCP and on a Unix socket, the latter fed into the same
 * server), one shared TLS HTTP/2+1 server takes every intercepted connection. close() stops accepting,
 * drains, ends what is left, and flushes every audit append still in flight.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import type { AuditSink } from '../audit/index.js';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import type { Policy, Signal } from '../policy/index.js';
import { decisionRecord, denyAnswer, proxyVerdict } from './answers.js';
import { handleConnect } from './connect.js';
import { rawDeny } from './http-facts.js';
import { createInterceptServer } from './intercept-server.js';
import type { InterceptedFlow } from './tunnel.js';
import { resolveLimits, type ProxyLimits } from './limits.js';
import { listenOn } from './listen.js';
import { handlePlainRequest, handlePlainUpgrade } from './plain.js';
import type { HostResolver } from './resolver.js';
import { createRuntime, type InterceptCa, type ProxyCounters } from './runtime.js';
import { createUpstreamTrust, UpstreamPool } from './upstream.js';

export interface EgressProxyOptions {
  /** The policy in force now (called per flow, so a reload applies to new flows). */
  readonly policy: () => Policy;
  readonly audit: AuditSink;
  readonly ca: InterceptCa;
  readonly resolver: HostResolver;
  readonly listen?: { readonly host: string; readonly port: number };
  readonly socketPath?: string;
  readonly workspace: string;
  readonly limits?: Partial<ProxyLimits>;
  /** Extra CA certificates (PEM) trusted for upstream TLS besides the system roots. */
  readonly upstreamCa?: readonly string[];
  /** Secret lookup for inject rules; default: env MICROAGENT_SECRET_<NAME>. */
  readonly secrets?: (name: string) => string | undefined;
  /** How long close() waits for in-flight flows before ending them. Default 2 s. */
  readonly drainMs?: number;
}

export interface ProxyStats extends ProxyCounters {
  readonly openConnections: number;
}

export interface EgressProxy {
  readonly addresses: { readonly tcp: { readonly host: string; readonly port: number } | null; readonly socket: string | null };
  readonly workspace: string;
  stats(): ProxyStats;
  close(): Promise<void>;
}

const log = childLog('proxy');

export function secretsFromEnv(name: string): string | undefined {
  return process.env[`MICROAGENT_SECRET_${name}`];
}

/** Parser errors node's HTTP/1 parser reports for ambiguous framing (request smuggling). */
const SMUGGLING_CODES = new Set([
  'HPE_UNEXPECTED_CONTENT_LENGTH',
  'HPE_INVALID_CONTENT_LENGTH',
  'HPE_INVALID_TRANSFER_ENCODING',
  'HPE_INVALID_CHUNK_SIZE',
  'HPE_INVALID_HEADER_TOKEN',
  'HPE_LF_EXPECTED',
  'HPE_CR_EXPECTED',
]);

export async function startEgressProxy(options: EgressProxyOptions): Promise<EgressProxy> {
  if (options.listen === undefined && options.socketPath === undefined) {
    throw new MicroagentError('invalid', 'the egress proxy needs somewhere to listen', {
      code: 'proxy.no_listener',
      remediation: 'pass listen {host, port} and/or socketPath',
    });
  }
  const limits = resolveLimits(options.limits);
  const pool = new UpstreamPool(createUpstreamTrust(options.upstreamCa ?? []), limits.connectTimeoutMs);
  const rt = createRuntime({
    policy: options.policy,
    audit: options.audit,
    ca: options.ca,
    resolver: options.resolver,
    limits,
    pool,
    secrets: options.secrets ?? secretsFromEnv,
  });

  const sockets = new Set<Socket>();
  // `flow`: the request came inside an intercepted tunnel, whose destination the record names.
  const onClientError = (err: NodeJS.ErrnoException, socket: Socket, flow?: InterceptedFlow) => {
    const code = err.code ?? '';
    let reason: 'bad_request' | 'limit_exceeded' = 'bad_request';
    let signals: Signal[] = [];
    let status = 400;
    if (code === 'HPE_HEADER_OVERFLOW') {
      reason = 'limit_exceeded';
      status = 431;
    } else if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      reason = 'limit_exceeded';
      signals = ['slow_client'];
      status = 408;
    } else if (SMUGGLING_CODES.has(code)) {
      signals = ['smuggling'];
    }
    rt.counters.denied++;
    const facts =
      flow === undefined
        ? { conn: rt.nextConn(), protocol: 'http' as const, destination: null, decrypted: false }
        : { conn: flow.conn, protocol: 'https' as const, destination: flow.destination, ip: flow.target.ip, sni: flow.sni, decrypted: true };
    rt.appendInBackground(decisionRecord({ ...facts, status }, proxyVerdict(rt.policy(), reason, signals)));
    if (socket.writable && !(socket as Socket & { _httpMessage?: unknown })._httpMessage) {
      socket.end(rawDeny(denyAnswer(reason, 'a request that could not be parsed', { signals, status })));
    } else {
      socket.destroy();
    }
  };

  const intercept = createInterceptServer(rt, onClientError);
  const http = createHttpServer({
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs),
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
    keepAliveTimeout: 5000,
    // Checked in plain.ts, where the refusal is recorded.
    requireHostHeader: false,
  });
  http.timeout = limits.idleTimeoutMs;
  http.maxConnections = limits.maxConnections;
  // A client may send its FIN right behind its request (busybox wget, Alpine's wget, does): node's HTTP
  // server would abort that request in flight; half-open, it answers and then closes. An undocumented
  // but long-standing Server property: the busybox wget tests in integration.test.ts fail without it.
  (http as typeof http & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  // Past maxConnections node closes the new socket before anything is read: still a refusal to record.
  const recordDropped = () => {
    rt.counters.denied++;
    rt.appendInBackground(
      decisionRecord({ conn: rt.nextConn(), protocol: 'http', destination: null, decrypted: false }, proxyVerdict(rt.policy(), 'limit_exceeded', [])),
    );
  };
  http.on('drop', recordDropped);
  http.on('connection', (socket: Socket) => {
    rt.counters.connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const onPlainRequest = (req: IncomingMessage, res: ServerResponse) => {
    void handlePlainRequest(rt, req, res).catch((err: unknown) => {
      log.error({ err }, 'plain request failed');
      res.destroy();
    });
  };
  http.on('request', onPlainRequest);
  // Listened for, so node does not answer 100 Continue before the request is decided (serve-request.ts).
  http.on('checkContinue', onPlainRequest);
  http.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    void handleConnect(rt, intercept.handoff, req, socket, head).catch((err: unknown) => {
      log.error({ err }, 'CONNECT failed');
      socket.destroy();
    });
  });
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    void handlePlainUpgrade(rt, req, socket, head).catch((err: unknown) => {
      log.error({ err }, 'upgrade failed');
      socket.destroy();
    });
  });
  http.on('clientError', onClientError);

  let tcp: { host: string; port: number } | null = null;
  if (options.listen !== undefined) {
    await listenOn(http, options.listen, 'the egress proxy', 'proxy.listen_failed');
    const address = http.address() as AddressInfo;
    tcp = { host: address.address, port: address.port };
  }
  let unix: NetServer | null = null;
  if (options.socketPath !== undefined) {
    const path = options.socketPath;
    await rm(path, { force: true });
    // The Unix socket feeds the same HTTP server: one stack, two doors. Half-open as the HTTP server's
    // own sockets are: a guest's FIN (sent with its last bytes) must not end the tunnel's way back.
    unix = createNetServer({ allowHalfOpen: true }, (socket) => http.emit('connection', socket));
    unix.maxConnections = limits.maxConnections;
    unix.on('drop', recordDropped);
    // Both doors or none: a TCP listener left open by a failed start would keep the process alive.
    await listenOn(unix, { path }, 'the egress proxy', 'proxy.listen_failed').catch((err: unknown) => {
      http.close();
      throw err;
    });
  }

  let closing: Promise<void> | null = null;
  return {
    addresses: { tcp, socket: options.socketPath ?? null },
    workspace: options.workspace,
    stats: () => ({ ...rt.counters, openConnections: sockets.size }),
    close() {
      closing ??= (async () => {
        const stopped = Promise.all([
          new Promise<void>((resolve) => http.close(() => resolve())),
          unix === null ? Promise.resolve() : new Promise<void>((resolve) => unix?.close(() => resolve())),
        ]);
        http.closeIdleConnections();
        const deadline = Date.now() + (options.drainMs ?? 2000);
        while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
        if (sockets.size > 0) {
          for (const socket of sockets) socket.destroy();
          // Close handlers append their egress.close records on the next turns; let them run first.
          // With nothing left to end there are none, and a workspace's kill does not wait for them.
          await new Promise((r) => setTimeout(r, 20));
        }
        pool.close();
        intercept.server.close();
        await stopped;
        await rt.flush();
        if (options.socketPath !== undefined) await rm(options.socketPath, { force: true });
      })();
      return closing;
    },
  };
}
