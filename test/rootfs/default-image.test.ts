import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDefaultImageLayout, ensureDefaultImage, imageRunSpec, isDefaultImageReference } from '../../src/vm/rootfs/index.js';
import { ext4Stat } from './helpers/image.js';

// Packages are cached where scripts/setup.sh put them, so this test does not download them again.
const debDir = join(process.env['MICROAGENT_STATE_DIR'] ?? join(homedir(), '.microagent'), 'images', 'default-debs');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rootfs-default-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('default image', () => {
  it('is reproducible, runs busybox and curl (chrooted into the mounted image), and is cached', async () => {
    const stateDir = join(work, 'state');
    const first = await buildDefaultImageLayout(join(stateDir, 'images', 'default-layout'), debDir);
    const second = await buildDefaultImageLayout(join(work, 'again'), debDir);
    expect(second.manifestDigest).toBe(first.manifestDigest);
    expect(first.layerBytes).toBeLessThan(60 << 20);

    const image = await ensureDefaultImage(stateDir);
    expect(image).toMatchObject({ digest: first.manifestDigest, cached: false });
    expect(imageRunSpec(image.config)).toMatchObject({ argv: ['/bin/sh'], cwd: '/', uid: 0, gid: 0 });
    expect(ext4Stat(image.rootfsPath, '/tmp')?.mode).toBe(0o1777);
    expect(ext4Stat(image.rootfsPath, '/usr/bin/curl')?.mtime).toBe(1704067200);

    const server = createServer((_req, res) => res.end('hello from the host'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const mnt = await mkdtemp(join(tmpdir(), 'rootfs-mnt-'));
    execFileSync('mount', ['-o', 'loop,ro', image.rootfsPath, mnt]);
    try {
      const chroot = (...argv: string[]) => execFileSync('chroot', [mnt, ...argv], { encoding: 'utf8' });
      expect(chroot('/bin/sh', '-c', 'echo $((6*7)) && ls /bin/ls')).toBe('42\n/bin/ls\n');
      expect(chroot('/usr/bin/curl', '--version')).toMatch(/^curl \d+\.\d+.*OpenSSL/s);
      const { port } = server.address() as AddressInfo;
      // Asynchronously: the server answering runs on this event loop.
      const { stdout } = await promisify(execFile)('chroot', [mnt, '/usr/bin/curl', '-sS', '--max-time', '20', `http://127.0.0.1:${port}/`]);
      expect(stdout).toBe('hello from the host');
      const bundle = await readFile(join(mnt, 'etc/ssl/certs/ca-certificates.crt'), 'utf8');
      expect(bundle.match(/BEGIN CERTIFICATE/g)?.length).toBeGreaterThan(100);
    } finally {
      execFileSync('umount', [mnt]);
      await rm(mnt, { recursive: true });
      server.close();
    }

    expect(['microagent/default', 'microagent/default:latest'].every(isDefaultImageReference)).toBe(true);
    expect(isDefaultImageReference('microagent/default:2')).toBe(false);
    const again = await ensureDefaultImage(stateDir);
    expect(again).toMatchObject({ digest: image.digest, cached: true });
  }, 300_000);
});

describe('default image packages that cannot be downloaded', () => {
  // A stand-in apt-get whose download fails as the real one's does on a full disk.
  it('a full disk is named as such (transient, free space), not as a missing package mirror', async () => {
    const bin = await mkdtemp(join(tmpdir(), 'fake-apt-'));
    const { writeFile, chmod } = await import('node:fs/promises');
    // Listing what would be fetched (--print-uris) is left to the real one; the download fails.
    await writeFile(join(bin, 'apt-get'), '#!/bin/sh\ncase "$*" in *--print-uris*) exec /usr/bin/apt-get "$@";; esac\necho "E: Write error - write (28: No space left on device)" >&2\nexit 100\n');
    await chmod(join(bin, 'apt-get'), 0o755);
    const emptyDebs = join(work, 'no-debs-yet');
    const path = process.env['PATH'];
    process.env['PATH'] = `${bin}:${path ?? ''}`;
    try {
      await expect(buildDefaultImageLayout(join(work, 'full-layout'), emptyDebs)).rejects.toMatchObject({
        kind: 'transient',
        message: `downloading the default image's packages failed: no space left on the device (${emptyDebs})`,
        remediation: expect.stringContaining('free space'),
      });
    } finally {
      process.env['PATH'] = path;
      await rm(bin, { recursive: true, force: true });
    }
  });
});
