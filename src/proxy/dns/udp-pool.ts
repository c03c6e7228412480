/**
 * UDP sockets to one upstream resolver, shared by concurrent queries. Each socket is connected to the
 * upstream (the kernel then delivers only datagrams from its address and port) and bound to a
 * kernel-chosen random port; each query picks a random socket and a random id not in flight on it, and
 * a reply counts only if it echoes that id and our question byte for byte (RFC 5452). Sockets are
 * retired after a fixed number of queries so source ports keep changing. Reusing sockets is what makes
 * misses fast: a fresh socket per query costs about eight times more (bench/dns.bench.mjs notes).
 * It never decides, caches or retries; upstream.ts does the rest of an exchange.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import { isIPv6 } from 'node:net';

export interface UdpPoolOptions {
  /** Sockets open at once. */
  readonly sockets: number;
  /** Queries one socket carries before it is replaced by a socket on a new random port. */
  readonly queriesPerSocket: number;
}

export const DEFAULT_UDP_POOL: UdpPoolOptions = { sockets: 8, queriesPerSocket: 256 };

export interface UdpPool {
  /**
   * Sends `buildQuery(id)` and resolves with the first reply (with that id) that `parse` turns into
   * a value rather than null; rejects on timeout or socket error.
   */
  exchange<T>(buildQuery: (id: number) => Buffer, parse: (reply: Buffer, query: Buffer) => T | null, timeoutMs: number): Promise<T>;
  close(): void;
}

interface InFlight {
  readonly query: Buffer;
  /** Settles with the reply if `parse` accepts it; otherwise keeps waiting (a stray or forged reply). */
  readonly offer: (reply: Buffer) => void;
  readonly fail: (err: Error) => void;
}

interface PooledSocket {
  readonly socket: Socket;
  readonly inFlight: Map<number, InFlight>;
  used: number;
  ready: Promise<void>;
  /** Out of the pool: takes no new queries, closes when the last one settles. */
  retired: boolean;
  closed: boolean;
}

export function createUdpPool(host: string, port: number, options: UdpPoolOptions = DEFAULT_UDP_POOL): UdpPool {
  const slots: (PooledSocket | null)[] = Array.from({ length: options.sockets }, () => null);

  const open = (): PooledSocket => {
    const socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
    const pooled: PooledSocket = { socket, inFlight: new Map(), used: 0, ready: Promise.resolve(), retired: false, closed: false };
    pooled.ready = new Promise<void>((resolve) => socket.connect(port, host, resolve));
    // The pool must not keep a process alive; pending queries keep their own timers.
    socket.unref();
    socket.on('message', (reply) => {
      if (reply.length < 2) return;
      pooled.inFlight.get(reply.readUInt16BE(0))?.offer(reply);
    });
    socket.on('error', (err) => {
      // ICMP port unreachable and friends: fail what is waiting here, and stop using the socket.
      retire(pooled);
      for (const entry of [...pooled.inFlight.values()]) entry.fail(err);
    });
    return pooled;
  };

  const closeIfIdle = (pooled: PooledSocket) => {
    if (!pooled.retired || pooled.closed || pooled.inFlight.size > 0) return;
    pooled.closed = true;
    pooled.socket.close();
  };

  const retire = (pooled: PooledSocket) => {
    const slot = slots.indexOf(pooled);
    if (slot !== -1) slots[slot] = null;
    pooled.retired = true;
    closeIfIdle(pooled);
  };

  const pick = (): PooledSocket => {
    const slot = randomInt(0, slots.length);
    let pooled = slots[slot];
    if (pooled === null || pooled === undefined) {
      pooled = open();
      slots[slot] = pooled;
    }
    pooled.used++;
    return pooled;
  };

  return {
    async exchange<T>(buildQuery: (id: number) => Buffer, parse: (reply: Buffer, query: Buffer) => T | null, timeoutMs: number) {
      const pooled = pick();
      let id = randomInt(0, 65536);
      while (pooled.inFlight.has(id)) id = randomInt(0, 65536);
      const query = buildQuery(id);
      let fail: (err: Error) => void = () => undefined;
      const reply = new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          pooled.inFlight.delete(id);
          closeIfIdle(pooled);
        };
        const entry: InFlight = {
          query,
          offer(candidate) {
            const value = parse(candidate, query);
            if (value === null) return;
            finish();
            resolve(value);
          },
          fail(err) {
            if (pooled.inFlight.get(id) !== entry) return;
            finish();
            reject(err);
          },
        };
        fail = entry.fail;
        pooled.inFlight.set(id, entry);
      });
      // Retired only now that this query is registered, so the socket stays open until it settles.
      if (pooled.used >= options.queriesPerSocket) retire(pooled);
      await pooled.ready;
      if (!pooled.closed && pooled.inFlight.has(id)) pooled.socket.send(query, (err) => err && fail(err));
      return reply;
    },
    close() {
      for (const pooled of slots) if (pooled !== null) retire(pooled);
    },
  };
}
