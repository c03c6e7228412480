/**
 * Byte splicing for tunnels the proxy does not decrypt (passthrough rules, non-TLS CONNECT, mode off)
 * and for upgraded (WebSocket) connections: pipes client and upstream both ways, counts bytes,
 * enforces the idle and total timeouts and the workspace byte budget, and reports exactly once when
 * either side ends. It inspects nothing, except what an upgraded connection that carried an injected
 * secret sends the guest: that goes through the echo scan, and an echo cuts the connection before it.
 */
import type { Socket } from 'node:net';
import type { StreamScan } from './echo-scan.js';
import type { ProxyRuntime } from './runtime.js';

export interface SpliceResult {
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly error?: string;
  /** Set when a limit, or the echo scan, cut the tunnel. */
  readonly cut?: 'idle' | 'total' | 'budget' | 'secret_echo';
}

/**
 * `head`: client bytes already read (the peeked ClientHello) to send first. `scanDown`: the echo scan
 * the upstream's bytes must pass before they reach the client.
 */
export function splice(rt: ProxyRuntime, client: Socket, upstream: Socket, head: Buffer, done: (result: SpliceResult) => void, scanDown: StreamScan | null = null): void {
  let bytesUp = 0;
  let bytesDown = 0;
  let reported = false;
  let cut: SpliceResult['cut'];
  let error: string | undefined;
  const report = () => {
    if (reported) return;
    reported = true;
    clearTimeout(total);
    client.destroy();
    upstream.destroy();
    rt.counters.bytesUp += bytesUp;
    rt.counters.bytesDown += bytesDown;
    done({ bytesUp, bytesDown, ...(error === undefined ? {} : { error }), ...(cut === undefined ? {} : { cut }) });
  };
  const stop = (why: NonNullable<SpliceResult['cut']>) => {
    cut ??= why;
    report();
  };
  const total = setTimeout(() => stop('total'), rt.limits.totalTimeoutMs);
  total.unref();
  const budget = rt.limits.maxWorkspaceBytes;
  const overBudget = () => rt.counters.bytesUp + rt.counters.bytesDown + bytesUp + bytesDown > budget;
  client.setTimeout(rt.limits.idleTimeoutMs, () => stop('idle'));
  upstream.setTimeout(rt.limits.idleTimeoutMs, () => stop('idle'));
  if (head.length > 0) {
    bytesUp += head.length;
    upstream.write(head);
  }
  client.on('data', (chunk: Buffer) => {
    bytesUp += chunk.length;
    if (overBudget()) stop('budget');
  });
  upstream.on('data', (chunk: Buffer) => {
    bytesDown += chunk.length;
    if (overBudget()) stop('budget');
  });
  client.pipe(upstream);
  if (scanDown === null) upstream.pipe(client);
  else {
    upstream.on('data', (chunk: Buffer) => {
      const out = scanDown.push(chunk);
      if (out === null) stop('secret_echo');
      else if (out.length > 0 && !client.write(out)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    upstream.on('end', () => client.end(scanDown.end()));
  }
  const onError = (err: Error) => {
    error ??= err.message;
    report();
  };
  client.on('error', onError);
  upstream.on('error', onError);
  client.on('close', report);
  upstream.on('close', report);
  client.resume();
}

/** Resolves once `socket` connected, rejects on its first error. */
export function connected(socket: Socket): Promise<Socket> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
