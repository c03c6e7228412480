// `microagent proxy` as a user runs it: spawned from dist/ (run `npm run build` first), it prints
// where it listens and where the CA is, serves, reloads the policy on change, and stops on SIGINT
// with its audit records flushed.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readAuditRecords, verifyAuditLog } from '../../src/audit/index.js';
import { curl, startHttpOrigin } from './helpers.js';

const ALLOW = (rule: 'allow' | 'deny') => `version: 1\nmode: guarded\nrules:\n  - id: loopback\n    action: ${rule}\n    cidrs: [127.0.0.1/32]\n`;

describe('microagent proxy', () => {
  it('serves, hot-reloads the policy, and shuts down cleanly on SIGINT', async () => {
    const { port: originPort, server } = await startHttpOrigin();
    const dir = mkdtempSync(join(tmpdir(), 'proxy-cli-'));
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, ALLOW('allow'));
    const child = spawn(process.execPath, ['dist/cli/main.js', '--state-dir', dir, 'proxy', '--policy', policyFile, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const waitFor = (pattern: RegExp) =>
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const check = () => {
          const m = pattern.exec(out);
          if (m !== null) {
            child.stdout.off('data', onData);
            resolve(m);
          }
        };
        const onData = (c: Buffer) => {
          out += c.toString();
          check();
        };
        child.stdout.on('data', onData);
        child.once('exit', () => reject(new Error(`proxy exited early:\n${out}`)));
        check();
      });
    const stderr: string[] = [];
    child.stderr.on('data', (c: Buffer) => stderr.push(c.toString()));
    const listening = await waitFor(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
    const caLine = await waitFor(/CA certificate (\S+)/);
    expect(caLine[1]).toBe(join(dir, 'proxy-ca', 'ca.pem'));
    expect(existsSync(caLine[1] as string)).toBe(true);
    const proxyUrl = `http://127.0.0.1:${listening[1]}`;

    const allowed = await curl(['-x', proxyUrl, `http://127.0.0.1:${originPort}/echo`]);
    expect(allowed.status).toBe(200);

    writeFileSync(policyFile, ALLOW('deny'));
    await waitFor(/policy reloaded/);
    const denied = await curl(['-x', proxyUrl, `http://127.0.0.1:${originPort}/echo`]);
    expect(denied.status).toBe(403);
    expect(denied.body).toBe(`microagent: denied by rule "loopback" (rule_deny) for 127.0.0.1:${originPort}\n`);

    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, stderr.join('')).toBe(0);
    server.close();

    const auditPath = join(dir, 'proxy-audit.jsonl');
    const events: string[] = [];
    for await (const r of readAuditRecords(auditPath)) events.push(`${r.event}${'reason' in r && r.reason ? `:${r.reason}` : ''}`);
    expect(events).toContain('policy.reload:reload_ok');
    expect(events).toContain('egress.decision:rule_allow');
    expect(events).toContain('egress.decision:rule_deny');
    expect(events.filter((e) => e.startsWith('egress.close')).length).toBeGreaterThan(0);
    expect((await verifyAuditLog(auditPath)).ok).toBe(true);
  });
});
