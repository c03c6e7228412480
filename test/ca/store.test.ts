// The CA directory: creation with the right modes, loading with its safety checks, refusal to
// overwrite, rotation keeping the previous certificate, and loadOrCreateCa's workspace binding.
import { chmod, readFile, stat, symlink, rename, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createCa, loadCa, loadOrCreateCa, rotateCa } from '../../src/ca/index.js';
import { opensslCa, rejection, tempDir } from './helpers.js';

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe('createCa', () => {
  it('writes a 0700 directory holding a 0600 PKCS#8 key and a 0644 certificate', async () => {
    const dir = join(await tempDir(), 'nested', 'ca');
    const ca = await createCa({ dir, workspace: 'alpha' });
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(join(dir, 'ca.key.pem'))).toBe(0o600);
    expect(await mode(join(dir, 'ca.pem'))).toBe(0o644);
    expect(await readFile(join(dir, 'ca.key.pem'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(ca.certPath).toBe(join(dir, 'ca.pem'));
    expect(ca.certPem).toBe(await readFile(join(dir, 'ca.pem'), 'utf8'));
    expect(ca.workspace).toBe('alpha');
    expect(ca.subject).toBe('CN=microagent CA alpha, O=microagent');
    expect(ca.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    ca.close();
  });

  it('defaults to one year, backdated for clock skew, and honours validityDays', async () => {
    const before = Date.now();
    const year = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'a' });
    const days = (year.notAfter.getTime() - before) / 86_400_000;
    expect(days).toBeGreaterThan(364.9);
    expect(days).toBeLessThan(365.1);
    expect(year.notBefore.getTime()).toBeLessThan(before - 3_600_000);
    const ten = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'a', validityDays: 10 });
    expect(Math.round((ten.notAfter.getTime() - before) / 86_400_000)).toBe(10);
    year.close();
    ten.close();
  });

  it('tightens a pre-existing directory to 0700 even under a permissive umask', async () => {
    const dir = await tempDir();
    await chmod(dir, 0o755);
    const previous = process.umask(0o000);
    try {
      (await createCa({ dir, workspace: 'a' })).close();
    } finally {
      process.umask(previous);
    }
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(join(dir, 'ca.key.pem'))).toBe(0o600);
  });

  it('refuses to overwrite an existing CA (conflict) and leaves it intact', async () => {
    const dir = join(await tempDir(), 'ca');
    const first = await createCa({ dir, workspace: 'a' });
    const err = await rejection(() => createCa({ dir, workspace: 'b' }));
    expect(err).toMatchObject({ kind: 'conflict', code: 'ca.exists' });
    expect(err.remediation).toContain('microagent ca rotate');
    const again = await loadCa({ dir });
    expect(again.fingerprint256).toBe(first.fingerprint256);
    first.close();
    again.close();
  });

  it('lets exactly one of two concurrent creates win', async () => {
    const dir = join(await tempDir(), 'ca');
    const results = await Promise.allSettled([createCa({ dir, workspace: 'a' }), createCa({ dir, workspace: 'a' })]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const failed = results.find((r) => r.status === 'rejected');
    expect(failed?.status === 'rejected' && failed.reason).toMatchObject({ kind: 'conflict' });
  });

  it.each([
    ['', 'empty'],
    ['has space', 'space'],
    ['a/../b', 'path separator'],
    ['-leading-dash', 'leading dash'],
    ['x'.repeat(51), 'too long for the CN'],
    ['a,O=evil', 'DN injection'],
  ])('rejects workspace name %j (%s)', async (workspace) => {
    const err = await rejection(async () => createCa({ dir: join(await tempDir(), 'ca'), workspace }));
    expect(err).toMatchObject({ kind: 'invalid', code: 'ca.invalid_workspace' });
  });

  it.each([0, -1, 1.5, 4000])('rejects validityDays %d', async (validityDays) => {
    const err = await rejection(async () => createCa({ dir: join(await tempDir(), 'ca'), workspace: 'a', validityDays }));
    expect(err).toMatchObject({ kind: 'invalid', code: 'ca.invalid_validity' });
  });
});

describe('loadCa', () => {
  it('loads what createCa wrote', async () => {
    const dir = join(await tempDir(), 'ca');
    const created = await createCa({ dir, workspace: 'beta' });
    const loaded = await loadCa({ dir });
    expect(loaded.fingerprint256).toBe(created.fingerprint256);
    expect(loaded.workspace).toBe('beta');
    expect(loaded.notAfter.getTime()).toBe(created.notAfter.getTime());
    created.close();
    loaded.close();
  });

  it('reports a missing CA as not_found with the create command as remedy', async () => {
    const dir = join(await tempDir(), 'nothing-here');
    const err = await rejection(() => loadCa({ dir }));
    expect(err).toMatchObject({ kind: 'not_found', code: 'ca.not_found' });
    expect(err.remediation).toContain(`microagent ca create --dir ${dir}`);
  });

  it('reports a missing key file as not_found', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'a' })).close();
    await rename(join(dir, 'ca.key.pem'), join(dir, 'elsewhere.pem'));
    expect(await rejection(() => loadCa({ dir }))).toMatchObject({ kind: 'not_found', message: expect.stringContaining('ca.key.pem') });
  });

  it.each([0o644, 0o640, 0o604, 0o660])('refuses a key with mode %s (invalid, chmod 600 as fix)', async (keyMode) => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'a' })).close();
    await chmod(join(dir, 'ca.key.pem'), keyMode);
    const err = await rejection(() => loadCa({ dir }));
    expect(err).toMatchObject({ kind: 'invalid', code: 'ca.key_permissions' });
    expect(err.remediation).toContain(`chmod 600 ${join(dir, 'ca.key.pem')}`);
  });

  it('refuses a group- or world-writable CA directory', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'a' })).close();
    await chmod(dir, 0o777);
    expect(await rejection(() => loadCa({ dir }))).toMatchObject({ kind: 'invalid', code: 'ca.dir_permissions' });
  });

  it('refuses a key that is a symlink, even to a 0600 file', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'a' })).close();
    await rename(join(dir, 'ca.key.pem'), join(dir, 'real.key'));
    await symlink(join(dir, 'real.key'), join(dir, 'ca.key.pem'));
    expect(await rejection(() => loadCa({ dir }))).toMatchObject({ kind: 'invalid', code: 'ca.key_symlink' });
  });

  it('refuses a key that does not belong to the certificate', async () => {
    const [a, b] = [join(await tempDir(), 'ca'), join(await tempDir(), 'ca')];
    (await createCa({ dir: a, workspace: 'a' })).close();
    (await createCa({ dir: b, workspace: 'a' })).close();
    await copyFile(join(b, 'ca.pem'), join(a, 'ca.pem'));
    expect(await rejection(() => loadCa({ dir: a }))).toMatchObject({ kind: 'invalid', code: 'ca.key_mismatch' });
  });

  it.each([
    ['CA:FALSE', 'ca.not_a_ca', '/CN=microagent CA a/O=microagent', ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature']],
    ['CA:TRUE without keyCertSign', 'ca.not_a_ca', '/CN=microagent CA a/O=microagent', ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,digitalSignature,cRLSign']],
    ['CA:TRUE without keyUsage', 'ca.not_a_ca', '/CN=microagent CA a/O=microagent', ['basicConstraints=critical,CA:TRUE']],
    ['a CA of someone else', 'ca.foreign', '/CN=Some Other CA/O=microagent', ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign']],
  ])('refuses a certificate that is %s (invalid, %s)', async (_what, code, subject, extensions) => {
    const dir = join(await tempDir(), 'ca');
    await opensslCa(dir, subject, extensions);
    expect(await rejection(() => loadCa({ dir }))).toMatchObject({ kind: 'invalid', code });
  });

  it('refuses garbage in place of the certificate', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'a' })).close();
    await writeFile(join(dir, 'ca.pem'), 'not a certificate\n');
    expect(await rejection(() => loadCa({ dir }))).toMatchObject({ kind: 'invalid', code: 'ca.unreadable' });
  });
});

describe('loadOrCreateCa', () => {
  it('creates once, then loads the same CA', async () => {
    const dir = join(await tempDir(), 'ca');
    const first = await loadOrCreateCa({ dir, workspace: 'w' });
    const second = await loadOrCreateCa({ dir, workspace: 'w' });
    expect(second.fingerprint256).toBe(first.fingerprint256);
    first.close();
    second.close();
  });

  it('refuses a directory holding another workspace\'s CA', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'one' })).close();
    expect(await rejection(() => loadOrCreateCa({ dir, workspace: 'two' }))).toMatchObject({ kind: 'conflict', code: 'ca.workspace_mismatch' });
  });

  it('still refuses an unsafe existing CA instead of replacing it', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'w' })).close();
    await chmod(join(dir, 'ca.key.pem'), 0o644);
    expect(await rejection(() => loadOrCreateCa({ dir, workspace: 'w' }))).toMatchObject({ kind: 'invalid', code: 'ca.key_permissions' });
  });
});

describe('rotateCa', () => {
  it('replaces key and certificate, keeps the old certificate as ca.prev.pem, same workspace', async () => {
    const dir = join(await tempDir(), 'ca');
    const old = await createCa({ dir, workspace: 'gamma' });
    const oldKey = await readFile(join(dir, 'ca.key.pem'), 'utf8');
    const rotated = await rotateCa({ dir });
    expect(rotated.fingerprint256).not.toBe(old.fingerprint256);
    expect(rotated.workspace).toBe('gamma');
    expect(await readFile(join(dir, 'ca.prev.pem'), 'utf8')).toBe(old.certPem);
    expect(await readFile(join(dir, 'ca.key.pem'), 'utf8')).not.toBe(oldKey);
    expect(await mode(join(dir, 'ca.key.pem'))).toBe(0o600);
    expect(await mode(join(dir, 'ca.prev.pem'))).toBe(0o644);
    expect((await loadCa({ dir })).fingerprint256).toBe(rotated.fingerprint256);
    old.close();
    rotated.close();
  });

  it('repairs a CA whose key was exposed when the workspace is given', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'w' })).close();
    await chmod(join(dir, 'ca.key.pem'), 0o644);
    expect(await rejection(() => rotateCa({ dir }))).toMatchObject({ kind: 'invalid', code: 'ca.rotate_needs_workspace' });
    const rotated = await rotateCa({ dir, workspace: 'w' });
    expect(await mode(join(dir, 'ca.key.pem'))).toBe(0o600);
    rotated.close();
  });
});

describe('loadCa, tolerated variations', () => {
  it('follows a symlinked CA directory and exposes only the certificate from a file with extra text', async () => {
    const base = await tempDir();
    const dir = join(base, 'real');
    const created = await createCa({ dir, workspace: 'a' });
    await writeFile(join(dir, 'ca.pem'), `comment before\n${created.certPem}trailing junk\n`);
    await symlink(dir, join(base, 'link'));
    const loaded = await loadCa({ dir: join(base, 'link') });
    expect(loaded.certPem).toBe(created.certPem);
    expect(loaded.fingerprint256).toBe(created.fingerprint256);
    created.close();
    loaded.close();
  });
});
