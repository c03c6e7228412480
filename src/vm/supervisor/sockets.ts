/**
 * Where a workspace's host-side endpoints live in its run directory. Known before anything starts, so
 * QEMU can be pointed at them while the mediator is still coming up: a guest connection that arrives
 * before its socket exists simply fails (closed, never around the mediator).
 */
import { join } from 'node:path';

export interface MediatorSockets {
  readonly proxySocket: string;
  readonly dnsSocket: string;
  /** Holds one `<port>.sock` per mediation channel (src/mediation). */
  readonly mediationDir: string;
}

export function mediatorSockets(runDir: string): MediatorSockets {
  return { proxySocket: join(runDir, 'proxy.sock'), dnsSocket: join(runDir, 'dns.sock'), mediationDir: join(runDir, 'mediation') };
}
