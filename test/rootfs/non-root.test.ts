// An image built by a user who is not root (who cannot chown) has the same owners, modes and mtimes
// as one built by root: the root build is the oracle. The non-root build runs in a child process as
// `nobody`, through the built library (`npm run build` first), so it needs this suite to run as root;
// run as anyone else, the whole suite already builds as non-root and layers.test.ts checks owners.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveImage } from '../../src/vm/rootfs/index.js';
import { dir, ext4Stat, file, makeImage, makeLayer, writeLayout } from './helpers/image.js';

const ROOT = join(import.meta.dirname, '../..');
const NOBODY = 65534;
const work = mkdtempSync(join(tmpdir(), 'rootfs-non-root-'));
chmodSync(work, 0o755);
afterAll(() => rmSync(work, { recursive: true, force: true }));

const image = makeImage({
  layers: [
    makeLayer([
      dir('etc/', { mtime: 1500000000 }),
      file('etc/passwd', 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n'),
      dir('home/app/', { mode: 0o750, uid: 1000, gid: 1000 }),
      file('home/app/.profile', 'export A=1', { uid: 1000, gid: 1000, mtime: 1234567890 }),
      file('usr/bin/su', 'suid', { mode: 0o4755 }),
      { path: 'usr/bin/a-su', type: 'hardlink', linkname: 'usr/bin/su' },
      file('usr/bin/mine', 'x', { uid: 1000, gid: 1000, mode: 0o2755 }),
      // Sorts before its target: the inode's owner must not depend on which path is seen first.
      { path: 'usr/bin/a-mine', type: 'hardlink', linkname: 'usr/bin/mine' },
      { path: 'usr/bin/sh', type: 'symlink', linkname: 'su', uid: 5, gid: 6 },
      file('srv/with space/q"uote', 'odd name', { uid: 33, gid: 33 }),
      dir('var/lib/db/', { uid: 999, gid: 999, mode: 0o700 }),
      file('var/lib/db/data', 'rows', { uid: 999, gid: 999 }),
      file('big-ids', 'x', { uid: 3000000, gid: 3000001 }),
    ]),
    makeLayer([file('var/lib/.wh.db', ''), file('opt/tool', 't', { uid: 12, gid: 13 }), file('usr/bin/su', 'replaced', { mode: 0o4755, uid: 0, gid: 4 })]),
    // db/ comes back implicitly, as a parent no entry names: root's, as in a root build.
    makeLayer([file('var/lib/db/new', 'n', { uid: 5, gid: 5 })]),
  ],
});

const PATHS = [
  '/', '/etc', '/etc/passwd', '/home', '/home/app', '/home/app/.profile', '/usr', '/usr/bin', '/usr/bin/su',
  '/usr/bin/a-su', '/usr/bin/mine', '/usr/bin/a-mine', '/usr/bin/sh', '/srv', '/srv/with space',
  '/srv/with space/q"uote', '/var/lib', '/var/lib/db', '/var/lib/db/new', '/big-ids', '/opt/tool',
];

/** Directories no entry names: made when the build runs, so their mtimes are the build's own. */
const IMPLICIT = new Set(['/', '/home', '/usr', '/usr/bin', '/srv', '/srv/with space', '/var/lib', '/var/lib/db']);

function statsOf(rootfs: string) {
  return Object.fromEntries(PATHS.map((path) => {
    const stat = ext4Stat(rootfs, path);
    if (stat === null) return [path, null];
    const { type, mode, uid, gid, mtime, links } = stat;
    return [path, { type, mode, uid, gid, links, ...(IMPLICIT.has(path) ? {} : { mtime }) }];
  }));
}

describe.runIf(process.getuid?.() === 0)('an image built by a user who is not root', () => {
  it('has the owners, modes, mtimes and links of the same image built by root', async () => {
    const layout = join(work, 'layout');
    await writeLayout(layout, image);
    const asRoot = await resolveImage(`oci:${layout}`, { stateDir: join(work, 'root-state') });

    const nobodyState = join(work, 'nobody-state');
    execFileSync('install', ['-d', '-o', String(NOBODY), '-g', String(NOBODY), nobodyState]);
    const script = `const { resolveImage } = await import(${JSON.stringify(join(ROOT, 'dist/vm/rootfs/index.js'))});
      const image = await resolveImage('oci:' + process.argv[1], { stateDir: process.argv[2] });
      process.stdout.write(image.rootfsPath);`;
    const rootfs = execFileSync(process.execPath, ['--input-type=module', '-e', script, layout, nobodyState], {
      uid: NOBODY, gid: NOBODY, cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    });

    const expected = statsOf(asRoot.rootfsPath);
    // The oracle is itself what the layers say.
    expect(expected['/home/app']).toMatchObject({ uid: 1000, gid: 1000, mode: 0o750 });
    expect(expected['/usr/bin/su']).toMatchObject({ uid: 0, gid: 4, mode: 0o4755, links: 1 });
    expect(expected['/usr/bin/a-su']).toMatchObject({ uid: 0, gid: 0, links: 1 });
    expect(expected['/usr/bin/mine']).toMatchObject({ uid: 1000, gid: 1000, mode: 0o2755, links: 2 });
    expect(expected['/usr/bin/sh']).toMatchObject({ type: 'symlink', uid: 5, gid: 6 });
    expect(expected['/srv/with space/q"uote']).toMatchObject({ uid: 33, gid: 33 });
    expect(expected['/var/lib/db']).toMatchObject({ uid: 0, gid: 0 });
    expect(expected['/big-ids']).toMatchObject({ uid: 3000000, gid: 3000001 });
    expect(statsOf(rootfs)).toEqual(expected);
  });
});

