/**
 * Published guest ports (`-p HOST_IP:HOST_PORT:GUEST_PORT`). The supervisor, not QEMU, owns the
 * user-facing listener so every inbound connection is audited (`inbound.connect`) and quarantine can
 * close it; each accepted connection is piped to a loopback port that QEMU forwards into the guest.
 */
import { randomUUID } from 'node:crypto';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { AuditSink } from '../../audit/record.js';
import { MicroagentError } from '../../errors.js';

export interface PublishedPorts {
  close(): Promise<void>;
}

/** For QEMU: hostfwd from 127.0.0.1:hostPort (an internal loopback port) to guestPort. */
export interface PortBackend {
  readonly hostPort: number;
  readonly guestPort: number;
}

/** How long the guest side of a connection may still flush after the host client has closed. */
const CLIENT_GONE_GRACE_MS = 5_000;

async function freeLoopbackPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** One internal loopback port per published port, chosen before QEMU starts (it forwards from them). */
export async function allocatePortBackends(publish: readonly { guestPort: number }[]): Promise<PortBackend[]> {
  const backends: PortBackend[] = [];
  for (const p of publish) backends.push({ hostPort: await freeLoopbackPort(), guestPort: p.guestPort });
  return backends;
}

export async function startPublishedPorts(
  publish: readonly { hostIp: string; hostPort: number; guestPort: number }[],
  backends: readonly PortBackend[],
  audit: AuditSink,
): Promise<PublishedPorts> {
  const servers: Server[] = [];
  const live = new Set<Socket>();
  for (const [i, p] of publish.entries()) {
    const backendPort = backends[i]?.hostPort;
    if (backendPort === undefined) throw new MicroagentError('internal', `no backend port for published port ${p.hostPort}`);
    // Half-open both ways: a client that sends its request and its FIN together (HTTP/1.0 clients,
    // nc -N) still gets the answer, and its bytes reach the guest even if it closes at once.
    const server = createServer({ allowHalfOpen: true }, (client) => {
      live.add(client);
      client.once('close', () => live.delete(client));
      const conn = randomUUID();
      const peer = `${client.remoteAddress ?? '?'}:${client.remotePort ?? 0}`;
      client.on('error', () => client.destroy());
      audit
        .append({ event: 'inbound.connect', conn, host_port: p.hostPort, guest_port: p.guestPort, peer, verdict: 'allow', reason: null })
        .then(() => {
          if (client.destroyed) return;
          const upstream = createConnection({ host: '127.0.0.1', port: backendPort, allowHalfOpen: true });
          const end = () => {
            client.destroy();
            upstream.destroy();
          };
          upstream.on('error', end);
          client.on('error', end);
          // Each FIN is passed on by pipe; a client gone for good leaves the guest side a moment to flush.
          client.once('close', () => setTimeout(() => upstream.destroy(), CLIENT_GONE_GRACE_MS).unref());
          client.pipe(upstream).pipe(client);
        })
        // Not recorded, not forwarded: fail closed.
        .catch(() => client.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new MicroagentError('conflict', `cannot publish ${p.hostIp}:${p.hostPort}: ${err.code ?? err.message}`, {
            code: 'publish.bind',
            remediation: err.code === 'EACCES' && p.hostPort < 1024
              ? 'ports below 1024 need root (or CAP_NET_BIND_SERVICE): choose a host port from 1024 up with -p HOST_PORT:GUEST_PORT'
              : 'choose a free host port with -p HOST_PORT:GUEST_PORT',
          }),
        ),
      );
      server.listen(p.hostPort, p.hostIp, resolve);
    });
    servers.push(server);
  }
  return {
    close: async () => {
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      for (const socket of live) socket.destroy();
      await closed;
    },
  };
}
