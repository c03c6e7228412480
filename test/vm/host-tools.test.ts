// Host tools as a non-root user finds them: Debian leaves sbin (mke2fs, resize2fs, depmod) out of
// such a user's PATH, and microagent must still find them there.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findExecutable, hostToolPath } from '../../src/vm/host-tools.js';

/** Debian's default PATH for a user who is not root (/etc/profile, /etc/login.defs). */
const USER_PATH = '/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games';
const ROOT = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'microagent-host-tools-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('host tools', () => {
  it('search sbin after the caller\'s PATH, without repeating a directory it has', () => {
    expect(hostToolPath(USER_PATH)).toBe(`${USER_PATH}:/usr/local/sbin:/usr/sbin:/sbin`);
    expect(hostToolPath('/opt/bin:/usr/sbin')).toBe('/opt/bin:/usr/sbin:/usr/local/sbin:/sbin');
    expect(findExecutable('mke2fs', hostToolPath(USER_PATH))).toMatch(/\/sbin\/mke2fs$/);
    expect(findExecutable('mke2fs', USER_PATH)).toBeUndefined();
  });

  it('an ext4 root filesystem builds with a non-root user\'s PATH', () => {
    const staging = join(dir, 'staging');
    mkdirSync(join(staging, 'etc'), { recursive: true });
    writeFileSync(join(staging, 'etc', 'hostname'), 'guest\n');
    const image = join(dir, 'rootfs.ext4');
    const script = `const { buildExt4 } = await import(${JSON.stringify(join(ROOT, 'dist/vm/rootfs/ext4.js'))});
      await buildExt4(process.argv[1], process.argv[2]);`;
    execFileSync(process.execPath, ['--input-type=module', '-e', script, staging, image], {
      env: { ...process.env, PATH: USER_PATH }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(statSync(image).size).toBeGreaterThan(0);
    const listing = execFileSync(findExecutable('debugfs') as string, ['-R', 'cat /etc/hostname', image], { stdio: ['ignore', 'pipe', 'ignore'] });
    expect(listing.toString()).toBe('guest\n');
  });
});
