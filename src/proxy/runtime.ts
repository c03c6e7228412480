/**
 * What every proxy driver shares for one running proxy: the current policy, the audit sink (with the
 * appends still in flight, so close() can flush them), the CA, the resolver, the upstream pools, the
 * limits and counters. One object per proxy; no globals. Never holds a secret value beyond the lookup.
 */
import type { SecureContext } from 'node:tls';
import type { AuditEvent, AuditSink, EgressCloseEvent } from '../audit/index.js';
import { childLog } from '../log.js';
import type { Policy, Reason, Signal } from '../policy/index.js';
import type { ProxyLimits } from './limits.js';
import type { HostResolver } from './resolver.js';
import type { UpstreamPool } from './upstream.js';
import type { Destination } from './destination.js';
import { destinationHost } from './destination.js';

/** The part of the CA the proxy uses (src/ca CertificateAuthority satisfies it). */
export interface InterceptCa {
  readonly certPem: string;
  secureContextFor(name: string): Promise<SecureContext>;
}

export interface ProxyCounters {
  connections: number;
  activeTunnels: number;
  tunnels: number;
  requests: number;
  denied: number;
  bytesUp: number;
  bytesDown: number;
}

export interface ProxyRuntime {
  readonly policy: () => Policy;
  readonly audit: AuditSink;
  readonly ca: InterceptCa;
  readonly resolver: HostResolver;
  readonly limits: ProxyLimits;
  readonly pool: UpstreamPool;
  readonly secrets: (name: string) => string | undefined;
  readonly counters: ProxyCounters;
  nextConn(): string;
  /**
   * Appends without blocking the flow (denies, closes, per-request flows' allows); close() waits for
   * these. Resolves true once the record is durable, false if it failed (logged); never rejects.
   * A close record only reports what already happened, so it resolves once written (AppendWait):
   * it then rides on the next decision's sync instead of costing one of its own.
   */
  appendInBackground(event: AuditEvent): Promise<boolean>;
  /** True once the workspace byte budget is spent: new flows are refused. */
  overBudget(): boolean;
  flush(): Promise<void>;
}

const log = childLog('proxy');

export function createRuntime(parts: Omit<ProxyRuntime, 'counters' | 'nextConn' | 'appendInBackground' | 'overBudget' | 'flush'>): ProxyRuntime {
  // A count, not a set of promises: this runs for every request's close record.
  let inFlight = 0;
  const idle: Array<() => void> = [];
  const settled = () => {
    if (--inFlight === 0) for (const wake of idle.splice(0)) wake();
  };
  const prefix = Math.floor(Math.random() * 0x1000000).toString(36);
  let sequence = 0;
  const counters: ProxyCounters = { connections: 0, activeTunnels: 0, tunnels: 0, requests: 0, denied: 0, bytesUp: 0, bytesDown: 0 };
  return {
    ...parts,
    counters,
    nextConn: () => `${prefix}-${(++sequence).toString(36)}`,
    appendInBackground(event) {
      inFlight++;
      return parts.audit.append(event, event.event === 'egress.close' ? 'written' : 'durable').then(
        () => {
          settled();
          return true;
        },
        (err: unknown) => {
          log.error({ err, event: event.event }, 'audit append failed');
          settled();
          return false;
        },
      );
    },
    overBudget: () => counters.bytesUp + counters.bytesDown >= parts.limits.maxWorkspaceBytes,
    async flush() {
      while (inFlight > 0) await new Promise<void>((resolve) => idle.push(resolve));
    },
  };
}

/** Optional facts may be given as undefined: the record then leaves them out. */
export interface CloseFacts {
  readonly conn: string;
  readonly destination: Destination | null;
  readonly ip: string | null;
  /** A request's close (method, and path without its query); a connection's close has neither. */
  readonly request?: { readonly method: string; readonly path: string } | undefined;
  readonly decrypted: boolean;
  readonly status?: number | undefined;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly startedAt: number;
  readonly reason?: Reason | undefined;
  readonly signals?: readonly Signal[] | undefined;
  readonly error?: string | undefined;
}

export function closeRecord(facts: CloseFacts): EgressCloseEvent {
  const record: { -readonly [K in keyof EgressCloseEvent]: EgressCloseEvent[K] } = {
    event: 'egress.close',
    conn: facts.conn,
    host: facts.destination === null ? null : destinationHost(facts.destination),
    port: facts.destination?.port ?? 0,
    ip: facts.ip,
    decrypted: facts.decrypted,
    bytes_up: facts.bytesUp,
    bytes_down: facts.bytesDown,
    duration_ms: Date.now() - facts.startedAt,
  };
  if (facts.request !== undefined) {
    record.method = facts.request.method;
    record.path = facts.request.path;
  }
  if (facts.status !== undefined) record.status = facts.status;
  if (facts.reason !== undefined) record.reason = facts.reason;
  if (facts.signals !== undefined && facts.signals.length > 0) record.signals = facts.signals;
  if (facts.error !== undefined) record.error = facts.error;
  return record;
}
