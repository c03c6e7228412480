/**
 * One workspace DNS server wired to real parts: the real policy engine (parsePolicy), the real audit
 * log in a temporary directory, a workspace resolver pointed at a test upstream. Tests swap the policy
 * through `setPolicy` (what the CLI's watcher does on reload) and read back the audit records.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAuditLog, type AuditEvent, type AuditSink, type DnsQueryEvent } from '../../../src/audit/index.js';
import { parsePolicy, type Policy } from '../../../src/policy/index.js';
import {
  createWorkspaceResolver,
  startDnsServer,
  type DnsServer,
  type DnsServerLimits,
  type WorkspaceResolver,
  type WorkspaceResolverOptions,
} from '../../../src/proxy/dns/index.js';

export interface Harness {
  readonly server: DnsServer;
  readonly port: number;
  readonly socketPath: string;
  readonly resolver: WorkspaceResolver;
  readonly audit: AuditSink;
  readonly auditPath: string;
  setPolicy(yaml: string): void;
  /** Every dns.query record written so far, in order. */
  records(): Promise<(DnsQueryEvent & { seq: number })[]>;
  /** The newest dns.query record for `name` (and `qtype`, default A). */
  lastRecord(name: string, qtype?: string): Promise<DnsQueryEvent>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  readonly policy: string;
  readonly upstreams: readonly string[];
  readonly resolver?: Omit<WorkspaceResolverOptions, 'upstreams'>;
  readonly limits?: Partial<DnsServerLimits>;
  /** Wraps the real audit log (to make it fail at a chosen record). */
  readonly audit?: (real: AuditSink) => AuditSink;
}

/**
 * Wraps a real audit log so that it fails at the first `event` record, and for good after it (the
 * writer's own contract for a failed write): that append and every later one reject.
 */
export function failingAt(event: AuditEvent['event']): (real: AuditSink) => AuditSink {
  return (real) => {
    let failed = false;
    return {
      get healthy() {
        return !failed && real.healthy;
      },
      append(e, wait) {
        if (e.event === event) failed = true;
        return failed ? Promise.reject(new Error(`audit write failed (test, at ${event})`)) : real.append(e, wait);
      },
      close: () => real.close(),
    };
  };
}

export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'microagent-dns-'));
  const auditPath = join(dir, 'audit.jsonl');
  const socketPath = join(dir, 'dns.sock');
  const realAudit = await openAuditLog({ path: auditPath, workspace: 'dns-test' });
  const audit = options.audit ? options.audit(realAudit) : realAudit;
  let policy: Policy = parsePolicy(options.policy, 'policy.yaml');
  const resolver = createWorkspaceResolver({ timeoutMs: 300, retries: 0, ...options.resolver, upstreams: options.upstreams });
  const server = await startDnsServer({
    policy: () => policy,
    audit,
    resolver,
    listen: { host: '127.0.0.1', port: 0 },
    socketPath,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
  });
  const records = async () =>
    (await readFile(auditPath, 'utf8'))
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as DnsQueryEvent & { seq: number })
      .filter((r) => r.event === 'dns.query');
  return {
    server,
    port: server.addresses.udp?.port ?? 0,
    socketPath,
    resolver,
    audit,
    auditPath,
    setPolicy(yaml) {
      policy = parsePolicy(yaml, 'policy.yaml');
    },
    records,
    async lastRecord(name, qtype = 'A') {
      const found = (await records()).filter((r) => r.name === name && r.qtype === qtype).at(-1);
      if (found === undefined) throw new Error(`no dns.query audit record for ${name} ${qtype}`);
      return found;
    },
    async close() {
      await server.close();
      resolver.close();
      await realAudit.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const GUARDED_POLICY = `
version: 1
mode: guarded
rules:
  - id: allow-web
    action: allow
    hosts: [web.test, "*.allowed.test"]
  - id: deny-bad
    action: deny
    hosts: [bad.test]
  - id: intranet
    action: allow
    hosts: [intranet.test]
  - id: allow-quad9
    action: allow
    hosts: [dns.quad9.net]
`;

export const STRICT_POLICY = GUARDED_POLICY.replace('mode: guarded', 'mode: strict');
export const OFF_POLICY = GUARDED_POLICY.replace('mode: guarded', 'mode: off');
