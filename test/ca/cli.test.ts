// `microagent ca ...` end to end: the built CLI (dist/, run `npm run build` first) in UX, --json and
// AX modes, checking output, files and exit codes (0 ok, 1 failed, 2 usage).
import { X509Certificate } from 'node:crypto';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, cli, run, tempDir } from './helpers.js';

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" before the CLI tests`);
});

async function newCaDir(extra: readonly string[] = []): Promise<string> {
  const dir = join(await tempDir(), 'ca');
  const r = await cli(['ca', 'create', '--dir', dir, '--workspace', 'cli-test', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return dir;
}

function ax(r: { stdout: string }): { ok: boolean; result?: Record<string, unknown>; error?: Record<string, unknown> } {
  return JSON.parse(r.stdout) as ReturnType<typeof ax>;
}

describe('microagent ca create', () => {
  it('creates the CA and prints subject, fingerprint and validity', async () => {
    const dir = join(await tempDir(), 'ca');
    const r = await cli(['ca', 'create', '--dir', dir, '--workspace', 'cli-test']);
    expect(r.code).toBe(0);
    const fingerprint = new X509Certificate(await readFile(join(dir, 'ca.pem'))).fingerprint256;
    expect(r.stdout).toContain('CN=microagent CA cli-test, O=microagent');
    expect(r.stdout).toContain(fingerprint);
    expect((await stat(join(dir, 'ca.key.pem'))).mode & 0o777).toBe(0o600);
  });

  it('defaults to <state-dir>/ca and workspace "default"', async () => {
    const state = await tempDir();
    const r = await cli(['--json', '--state-dir', state, 'ca', 'create']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ dir: join(state, 'ca'), workspace: 'default', cert_path: join(state, 'ca', 'ca.pem') });
  });

  it('refuses to overwrite: exit 1, conflict, rotate as the fix', async () => {
    const dir = await newCaDir();
    const r = await cli(['ca', 'create', '--dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error: a CA already exists at ${join(dir, 'ca.key.pem')}; refusing to overwrite it`);
    expect(r.stderr).toContain('fix: ');
    const axr = await cli(['--mode=ax', 'ca', 'create', '--dir', dir]);
    expect(axr.code).toBe(1);
    expect(ax(axr)).toMatchObject({ ok: false, error: { kind: 'conflict' } });
  });

  it.each([['--days', 'ten'], ['--days', '0'], ['--bogus', 'x']])('usage error for %s %s: exit 2', async (flag, value) => {
    const r = await cli(['ca', 'create', '--dir', join(await tempDir(), 'ca'), flag, value]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: /);
  });
});

describe('microagent ca show', () => {
  it('shows the CA without a warning when it is far from expiry', async () => {
    const dir = await newCaDir();
    const r = await cli(['--mode=ax', 'ca', 'show', '--dir', dir]);
    expect(r.code).toBe(0);
    const doc = ax(r);
    expect(doc.ok).toBe(true);
    expect(doc.result).toMatchObject({ dir, cert_path: join(dir, 'ca.pem'), workspace: 'cli-test', subject: 'CN=microagent CA cli-test, O=microagent' });
    expect(doc.result).not.toHaveProperty('warning');
    expect(r.stderr).not.toContain('warning');
  });

  it('warns on stderr and in the result when the CA expires within 30 days', async () => {
    const dir = await newCaDir(['--days', '10']);
    const ux = await cli(['ca', 'show', '--dir', dir]);
    expect(ux.code).toBe(0);
    expect(ux.stderr).toMatch(/^warning: the CA expires in 10 days .*microagent ca rotate/m);
    const json = await cli(['--json', 'ca', 'show', '--dir', dir]);
    expect(JSON.parse(json.stdout)).toMatchObject({ warning: expect.stringContaining('expires in 10 days') });
  });

  it('a missing CA: exit 1, not_found, create as the fix', async () => {
    const dir = join(await tempDir(), 'none');
    const r = await cli(['--mode=ax', 'ca', 'show', '--dir', dir]);
    expect(r.code).toBe(1);
    expect(ax(r)).toMatchObject({ ok: false, error: { kind: 'not_found', remediation: expect.stringContaining('microagent ca create') } });
  });

  it('a world-readable key: exit 1, invalid, chmod as the fix', async () => {
    const dir = await newCaDir();
    await chmod(join(dir, 'ca.key.pem'), 0o644);
    const r = await cli(['ca', 'show', '--dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('refusing to use it');
    expect(r.stderr).toContain(`chmod 600 ${join(dir, 'ca.key.pem')}`);
  });
});

describe('microagent ca export', () => {
  it('prints the PEM on stdout by default', async () => {
    const dir = await newCaDir();
    const r = await cli(['ca', 'export', '--dir', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(await readFile(join(dir, 'ca.pem'), 'utf8'));
  });

  it('binary formats need --out: exit 2', async () => {
    const dir = await newCaDir();
    for (const format of ['der', 'p12']) {
      const r = await cli(['ca', 'export', '--dir', dir, '--format', format]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('needs --out FILE');
    }
  });

  it('an unknown format is a usage error', async () => {
    const r = await cli(['ca', 'export', '--dir', await newCaDir(), '--format', 'jks']);
    expect(r.code).toBe(2);
  });

  it('writes DER and a cert-only p12 (0644) that openssl reads', async () => {
    const dir = await newCaDir();
    const der = join(dir, '..', 'ca.der');
    expect((await cli(['ca', 'export', '--dir', dir, '--format', 'der', '--out', der])).code).toBe(0);
    expect(new X509Certificate(await readFile(der)).raw.equals(new X509Certificate(await readFile(join(dir, 'ca.pem'))).raw)).toBe(true);
    const p12 = join(dir, '..', 'ca.p12');
    const r = await cli(['ca', 'export', '--dir', dir, '--format', 'p12', '--out', p12, '--password', 'pw']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`to ${p12}`);
    expect((await stat(p12)).mode & 0o777).toBe(0o644);
    const info = await run('openssl', ['pkcs12', '-info', '-in', p12, '-nokeys', '-passin', 'pass:pw']);
    expect(info.code).toBe(0);
    expect(info.stdout).toContain('subject=CN = microagent CA cli-test');
  });

  it('--include-key needs a password and writes a 0600 p12 holding the key', async () => {
    const dir = await newCaDir();
    const p12 = join(dir, '..', 'ca-with-key.p12');
    const refused = await cli(['ca', 'export', '--dir', dir, '--format', 'p12', '--out', p12, '--include-key']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('without a password');
    expect(existsSync(p12)).toBe(false);
    const ok = await cli(['--json', 'ca', 'export', '--dir', dir, '--format', 'p12', '--out', p12, '--include-key', '--password', 'pw']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ format: 'p12', out: p12, include_key: true });
    expect((await stat(p12)).mode & 0o777).toBe(0o600);
    const info = await run('openssl', ['pkcs12', '-info', '-in', p12, '-nodes', '-passin', 'pass:pw']);
    expect(info.stdout).toContain('-----BEGIN PRIVATE KEY-----');
  });

  it('over an existing world-readable file, a bundle with the key ends 0600', async () => {
    const dir = await newCaDir();
    const p12 = join(dir, '..', 'existing.p12');
    await writeFile(p12, 'old', { mode: 0o644 });
    expect((await cli(['ca', 'export', '--dir', dir, '--format', 'p12', '--out', p12, '--include-key', '--password', 'pw'])).code).toBe(0);
    expect((await stat(p12)).mode & 0o777).toBe(0o600);
  });

  it.each([
    ['a directory that does not exist', (dir: string) => join(dir, 'absent', 'ca.der'), 'ENOENT'],
    ['a directory', (dir: string) => dir, 'EISDIR'],
  ])('--out in %s is a clear error', async (_what, out, code) => {
    const dir = await newCaDir();
    const r = await cli(['ca', 'export', '--dir', dir, '--format', 'der', '--out', out(dir)]);
    expect(r.stderr).toBe(`error: cannot write the export to ${out(dir)}: ${code}\n  fix: give --out a file path in an existing directory this user may write to\n`);
    expect(r.code).toBe(1);
  });
});

describe('microagent ca rotate', () => {
  it('replaces the CA and keeps the previous certificate', async () => {
    const dir = await newCaDir();
    const before = await readFile(join(dir, 'ca.pem'), 'utf8');
    const r = await cli(['--json', 'ca', 'rotate', '--dir', dir]);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as Record<string, string>;
    expect(result).toMatchObject({ workspace: 'cli-test', previous_cert_path: join(dir, 'ca.prev.pem') });
    expect(await readFile(join(dir, 'ca.prev.pem'), 'utf8')).toBe(before);
    expect(result['fingerprint_sha256']).toBe(new X509Certificate(await readFile(join(dir, 'ca.pem'))).fingerprint256);
    expect(result['fingerprint_sha256']).not.toBe(new X509Certificate(before).fingerprint256);
  });

  it('rotating an empty directory with --workspace creates a CA and claims no previous certificate', async () => {
    const dir = join(await tempDir(), 'ca');
    const r = await cli(['--json', 'ca', 'rotate', '--dir', dir, '--workspace', 'fresh']);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as Record<string, string>;
    expect(result).toMatchObject({ workspace: 'fresh' });
    expect(result).not.toHaveProperty('previous_cert_path');
    expect(existsSync(join(dir, 'ca.prev.pem'))).toBe(false);
  });

  it('rotating where there is no CA: exit 1 naming --workspace', async () => {
    const r = await cli(['ca', 'rotate', '--dir', join(await tempDir(), 'none')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--workspace');
  });
});
