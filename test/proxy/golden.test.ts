// Golden audit records: one scenario (an intercepted allowed request, a request denied by a method
// rule, a CONNECT denied on the metadata address) must produce exactly the records in
// golden/intercept.jsonl, volatile fields (times, ids, hashes, ports, byte counts) replaced by
// placeholders. Then the chain must verify, and flipping one byte must be caught on that line.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAuditLog, type AuditRecord } from '../../src/audit/index.js';
import { connectTunnel, curl, startOriginBehindProxy, type TestProxy } from './helpers.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: block-metadata
    action: deny
    cidrs: [169.254.169.254]
  - id: no-delete
    action: deny
    hosts: [origin.test]
    methods: [DELETE]
  - id: origins
    action: allow
    hosts: [origin.test]
`;

const VOLATILE = new Set(['ts', 'seq', 'prev', 'hash', 'conn', 'port', 'policy_hash', 'duration_ms', 'bytes_up', 'bytes_down', 'v', 'error']);

function normalise(record: AuditRecord): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record)) out[key] = VOLATILE.has(key) ? `<${key}>` : value;
  return out;
}

let tp: TestProxy;
let port: number;

beforeAll(async () => {
  ({ port, tp } = await startOriginBehindProxy(POLICY));
});
afterAll(async () => tp?.close());

describe('golden audit records', () => {
  it('an allowed request, a method deny and a metadata CONNECT deny', async () => {
    expect((await curl(['-x', tp.url, '--cacert', tp.caPath, '--http1.1', `https://origin.test:${port}/echo?token=x`])).status).toBe(200);
    expect((await curl(['-x', tp.url, '--cacert', tp.caPath, '--http1.1', '-X', 'DELETE', `https://origin.test:${port}/item`])).status).toBe(403);
    const { socket } = await connectTunnel(tp.port, '169.254.169.254:443');
    socket.destroy();
    const records = await tp.records((rs) => rs.filter((r) => r.event === 'egress.close').length >= 3 && rs.some((r) => 'ip' in r && r.ip === '169.254.169.254'));
    const actual = records.map(normalise);
    const goldenPath = join(import.meta.dirname, 'golden', 'intercept.jsonl');
    if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(goldenPath, actual.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const golden = readFileSync(goldenPath, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    // Close records land when sockets close; compare per kind in order, decisions strictly.
    expect(actual.filter((r) => r['event'] === 'egress.decision')).toEqual(golden.filter((r) => r['event'] === 'egress.decision'));
    expect(actual.filter((r) => r['event'] === 'egress.close').sort(byJson)).toEqual(golden.filter((r) => r['event'] === 'egress.close').sort(byJson));

    await tp.close();
    expect((await verifyAuditLog(tp.auditPath)).ok).toBe(true);
    const bytes = readFileSync(tp.auditPath);
    const at = bytes.indexOf('"no-delete"') + 2;
    bytes[at] = bytes[at] === 0x6e ? 0x4e : 0x6e;
    writeFileSync(tp.auditPath, bytes);
    const broken = await verifyAuditLog(tp.auditPath);
    expect(broken.ok).toBe(false);
    const line = bytes.subarray(0, at).toString('latin1').split('\n').length;
    expect(broken.firstBad?.line).toBe(line);
  });
});

function byJson(a: unknown, b: unknown): number {
  return JSON.stringify(a).localeCompare(JSON.stringify(b));
}
