/**
 * Four workspaces at once (tiny profile, real QEMU guests), driven through the library API
 * (src/vm/workspace/service.ts): each has its own CA, policy and audit log. Each guest reaches its own
 * allowed host and tries a neighbour's; every workspace's log holds its own traffic and none of the
 * others', and each guest trusts only its own workspace CA.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryAuditLog } from '../../src/audit/index.js';
import { createWorkspace, deleteWorkspace, execInWorkspace, signalWorkspace, startWorkspace, workspaceStatus } from '../../src/vm/workspace/service.js';
import { workspacePaths } from '../../src/vm/workspace/store.js';
import {
  E2E_STATE_DIR,
  makeOriginCa,
  startDnsUpstream,
  startOrigin,
  tempDir,
  VM_TIMEOUT,
  writePolicy,
  type DnsUpstream,
  type Origin,
} from './helpers.js';

const COUNT = 4;
const names = Array.from({ length: COUNT }, (_, i) => `e2e-par${i}-${process.pid}`);
const host = (i: number) => `ws${i}.test`;

async function exec(name: string, argv: string[]): Promise<{ code: number | null; stdout: string }> {
  let stdout = '';
  const r = await execInWorkspace(E2E_STATE_DIR, name, { argv, onStdout: (d) => (stdout += d.toString()), onStderr: (d) => (stdout += d.toString()) });
  return { code: r.code, stdout };
}

describe.sequential('four workspaces at once', () => {
  let origin: Origin;
  let dns: DnsUpstream;

  beforeAll(async () => {
    const dir = tempDir('par');
    const hosts = names.map((_, i) => host(i));
    const ca = makeOriginCa(dir, hosts);
    origin = await startOrigin(ca);
    dns = await startDnsUpstream(hosts);
    await Promise.all(
      names.map((name, i) => {
        const own = tempDir(`par${i}`);
        return createWorkspace(E2E_STATE_DIR, name, {
          profile: 'tiny',
          policyFile: writePolicy(own, [host(i)], [host((i + 2) % COUNT)]),
          dnsUpstreams: [dns.address],
          upstreamCaFiles: [ca.caFile],
        });
      }),
    );
  }, VM_TIMEOUT);

  afterAll(async () => {
    for (const name of names) {
      await signalWorkspace(E2E_STATE_DIR, name, 'kill').catch(() => undefined);
      await deleteWorkspace(E2E_STATE_DIR, name).catch(() => undefined);
    }
    await origin?.close();
    await dns?.close();
  }, VM_TIMEOUT);

  it('each runs its own traffic through its own CA, policy and audit log', { timeout: VM_TIMEOUT * 2 }, async () => {
    await Promise.all(names.map((name) => startWorkspace(E2E_STATE_DIR, name, { timeoutMs: VM_TIMEOUT })));
    const statuses = await Promise.all(names.map((name) => workspaceStatus(E2E_STATE_DIR, name)));
    expect(statuses.map((s) => s.state)).toEqual(names.map(() => 'running'));
    expect(new Set(statuses.map((s) => s.runtime?.vmPid)).size).toBe(COUNT);

    const outputs = await Promise.all(
      names.map((name, i) => {
        const neighbour = host((i + 1) % COUNT);
        const script = [
          `curl -sS --max-time 60 https://${host(i)}:${origin.port}/from-${name}`,
          `curl -sS --max-time 60 -o /dev/null -w 'neighbour=%{http_connect}\\n' https://${neighbour}:${origin.port}/from-${name}`,
          'cat /etc/ssl/certs/microagent-ca.pem',
        ].join('; ');
        return exec(name, ['sh', '-c', script]);
      }),
    );

    const cas = names.map((name) => readFileSync(join(workspacePaths(E2E_STATE_DIR, name).ca, 'ca.pem'), 'utf8'));
    expect(new Set(cas).size).toBe(COUNT);
    for (const [i, name] of names.entries()) {
      const out = outputs[i]?.stdout ?? '';
      expect(out).toContain(`hello from ${host(i)} /from-${name}`);
      // guarded mode: the neighbour's host is unlisted here and resolves to an internal address: CONNECT refused.
      expect(out).toContain('neighbour=403');
      expect(out).not.toContain(`hello from ${host((i + 1) % COUNT)}`);
      expect(out).toContain((cas[i] as string).trim());
      for (const [j, other] of cas.entries()) if (j !== i) expect(out).not.toContain(other.trim());
    }
    for (const [i, name] of names.entries()) {
      expect(origin.requests.filter((r) => r.endsWith(`/from-${name}`))).toEqual([`${host(i)} /from-${name}`]);
    }

    const policyHashes = new Set<string | null>();
    for (const [i, name] of names.entries()) {
      const status = await workspaceStatus(E2E_STATE_DIR, name);
      policyHashes.add(status.policyHash);
      const records = (await queryAuditLog(status.paths.audit)) as unknown as Record<string, unknown>[];
      expect(records.every((r) => r['workspace'] === name)).toBe(true);
      const text = JSON.stringify(records);
      expect(text).toContain(`/from-${name}`);
      for (const other of names) if (other !== name) expect(text).not.toContain(other);
      const egress = records.filter((r) => r['event'] === 'egress.decision');
      expect(egress.find((r) => r['host'] === host(i) && r['decrypted'] === true)).toMatchObject({ verdict: 'allow', rule: 'e2e-origin' });
      expect(egress.find((r) => r['host'] === host((i + 1) % COUNT))).toMatchObject({ verdict: 'deny', reason: 'internal_address' });
      const hostsSeen = new Set(egress.map((r) => r['host']));
      expect([...hostsSeen].sort()).toEqual([host(i), host((i + 1) % COUNT)].sort());
    }
    expect(policyHashes.size).toBe(COUNT);

    await Promise.all(names.map((name) => signalWorkspace(E2E_STATE_DIR, name, 'kill')));
    for (const name of names) expect((await workspaceStatus(E2E_STATE_DIR, name)).state).toBe('stopped');
  });
});
