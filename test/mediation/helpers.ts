/**
 * Test helpers for the mediation broker: real targets (TCP and Unix) that read the broker's PROXY v2
 * header with the real parser, guest-side clients, and an audit sink. Targets here are real servers on
 * 127.0.0.1 / ::1 / temp Unix sockets; nothing leaves the host.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readAuditRecords } from '../../src/audit/index.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { parseProxyV2, type ProxyV2Parse } from '../../src/mediation/proxy-v2.js';

export async function tempDir(prefix = 'ma-med-'): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** What a target does with a connection once the PROXY header (if expected) is read. */
export type TargetBehaviour =
  /** Echo every byte; end when the peer ends. */
  | 'echo'
  /** Collect until EOF, then reply with the upper-cased bytes and end (proves half-close passes through). */
  | 'reply-after-eof'
  /** Send `count` bytes of 'x' as fast as backpressure allows, then end. */
  | { readonly stream: number }
  /** Swallow everything, reply nothing (for idle/limit tests). */
  | 'sink';

export interface TestTarget {
  /** The target as a declaration string: `127.0.0.1:PORT`, `[::1]:PORT` or a socket path. */
  readonly address: string;
  /** Every header parse result, one per connection (only when `proxyProtocol`). */
  readonly headers: ProxyV2Parse[];
  /** Connections accepted so far. */
  readonly sockets: Socket[];
  readonly server: Server;
  close(): Promise<void>;
}

export async function startTarget(options: {
  readonly kind: 'tcp4' | 'tcp6' | 'unix';
  readonly dir?: string;
  readonly proxyProtocol: boolean;
  readonly behaviour: TargetBehaviour;
}): Promise<TestTarget> {
  const headers: ProxyV2Parse[] = [];
  const sockets: Socket[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    if (!options.proxyProtocol) return behave(socket, options.behaviour, Buffer.alloc(0));
    let pending = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      const parsed = parseProxyV2(pending);
      if (parsed.kind === 'need_more') return;
      socket.off('data', onData);
      socket.pause();
      headers.push(parsed);
      if (parsed.kind === 'error') return void socket.destroy();
      behave(socket, options.behaviour, pending.subarray(parsed.length));
    };
    socket.on('data', onData);
  });
  let address: string;
  if (options.kind === 'unix') {
    if (options.dir === undefined) throw new Error('a Unix target needs a dir');
    const path = join(options.dir, `target-${Math.random().toString(36).slice(2)}.sock`);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    address = path;
  } else {
    const host = options.kind === 'tcp4' ? '127.0.0.1' : '::1';
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const port = (server.address() as { port: number }).port;
    address = options.kind === 'tcp4' ? `${host}:${port}` : `[${host}]:${port}`;
  }
  return {
    address,
    headers,
    sockets,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function behave(socket: Socket, behaviour: TargetBehaviour, early: Buffer): void {
  if (behaviour === 'echo') {
    if (early.length > 0) socket.write(early);
    socket.pipe(socket);
    socket.resume();
    return;
  }
  if (behaviour === 'reply-after-eof') {
    const parts: Buffer[] = [early];
    socket.on('data', (c: Buffer) => parts.push(c));
    socket.on('end', () => socket.end(Buffer.concat(parts).toString('utf8').toUpperCase()));
    socket.resume();
    return;
  }
  if (behaviour === 'sink') {
    socket.resume();
    return;
  }
  socket.resume();
  socket.on('end', () => {});
  writeMany(socket, behaviour.stream);
}

/** Writes `total` bytes in 64 KiB chunks, waiting for drain: the sender respects backpressure too. */
function writeMany(socket: Socket, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let left = total;
  const more = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!socket.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void socket.once('drain', more);
    }
    socket.end();
  };
  more();
}

/** Connects to a broker socket as the guest would (through the VM layer's vsock wiring). */
export function guestConnect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ path, allowHalfOpen: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

export interface GuestOutcome {
  readonly data: Buffer;
  /** 'end' when the broker/target sent EOF, 'error' when the socket errored, 'close' otherwise. */
  readonly how: 'end' | 'error' | 'close';
  readonly error?: string;
}

/** Collects what the guest receives until its socket closes. */
export function collect(socket: Socket): Promise<GuestOutcome> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let how: GuestOutcome['how'] = 'close';
    let error: string | undefined;
    socket.on('data', (c: Buffer) => parts.push(c));
    socket.on('end', () => {
      how = 'end';
      socket.end();
    });
    socket.on('error', (err) => {
      how = 'error';
      error = err.message;
    });
    socket.on('close', () => resolve({ data: Buffer.concat(parts), how, ...(error === undefined ? {} : { error }) }));
  });
}

/** Waits until `check` is true, polling; for state that settles after socket events. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every record in a real audit log file, in order. */
export async function readRecords(path: string): Promise<AuditRecord[]> {
  const all: AuditRecord[] = [];
  for await (const r of readAuditRecords(path)) all.push(r);
  return all;
}
