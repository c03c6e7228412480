import { execFileSync, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MicroagentError } from '../../src/errors.js';
import { sha256Digest } from '../../src/vm/rootfs/digest.js';
import { imageRunSpec, prepareWorkspaceDisk, resolveImage } from '../../src/vm/rootfs/index.js';
import { dir, ext4Cat, ext4Stat, file, makeImage, makeLayer, writeLayout, type BuiltImage } from './helpers/image.js';

let work: string;
let stateDir: string;
let n = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rootfs-layers-'));
  stateDir = join(work, 'state');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function layoutOf(image: BuiltImage): Promise<string> {
  const path = join(work, `layout-${n++}`);
  await writeLayout(path, image);
  return path;
}

async function build(image: BuiltImage) {
  return resolveImage(`oci:${await layoutOf(image)}`, { stateDir });
}

async function buildError(image: BuiltImage): Promise<MicroagentError> {
  const err = await build(image).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(MicroagentError);
  return err as MicroagentError;
}

describe('layer application', () => {
  it('applies layers in order: later files replace earlier ones, and types may change', async () => {
    const image = makeImage({
      layers: [
        makeLayer([dir('etc/'), file('etc/motd', 'first'), file('etc/kind', 'was a file'), dir('data/'), file('data/keep', 'k')]),
        makeLayer([file('etc/motd', 'second'), dir('etc/kind/'), file('etc/kind/inner', 'now a dir')]),
      ],
    });
    const img = await build(image);
    expect(img.digest).toBe(image.manifestDigest);
    expect(ext4Cat(img.rootfsPath, '/etc/motd')).toBe('second');
    expect(ext4Stat(img.rootfsPath, '/etc/kind')?.type).toBe('directory');
    expect(ext4Cat(img.rootfsPath, '/etc/kind/inner')).toBe('now a dir');
    expect(ext4Cat(img.rootfsPath, '/data/keep')).toBe('k');
  });

  it('honours whiteouts and opaque directories, only against lower layers', async () => {
    const image = makeImage({
      layers: [
        makeLayer([dir('a/'), file('a/gone', 'x'), file('a/stays', 'y'), dir('a/sub/'), file('a/sub/deep', 'z'), dir('opq/'), file('opq/old1', '1'), dir('opq/olddir/'), file('opq/olddir/f', 'f')]),
        makeLayer([file('a/.wh.gone', ''), file('a/.wh.sub', ''), dir('opq/'), file('opq/new', 'n'), file('opq/.wh..wh..opq', ''), file('a/.wh.never-existed', '')]),
      ],
    });
    const img = await build(image);
    expect(ext4Stat(img.rootfsPath, '/a/gone')).toBeNull();
    expect(ext4Stat(img.rootfsPath, '/a/sub')).toBeNull();
    expect(ext4Cat(img.rootfsPath, '/a/stays')).toBe('y');
    expect(ext4Stat(img.rootfsPath, '/opq/old1')).toBeNull();
    expect(ext4Stat(img.rootfsPath, '/opq/olddir')).toBeNull();
    // The opaque marker came after opq/new in the same layer: that file must survive.
    expect(ext4Cat(img.rootfsPath, '/opq/new')).toBe('n');
    expect(ext4Stat(img.rootfsPath, '/opq/.wh..wh..opq')).toBeNull();
    expect(ext4Stat(img.rootfsPath, '/a/.wh.gone')).toBeNull();
  });

  it('a whiteout leaves what its own layer made: a file, and a directory declared again (less its lower entries)', async () => {
    const image = makeImage({
      layers: [
        makeLayer([dir('opt/'), dir('opt/d/'), file('opt/d/lower', 'l')]),
        makeLayer([file('opt/samelayer', 's'), file('opt/.wh.samelayer', ''), dir('opt/d/'), file('opt/d/inner', 'i'), file('opt/.wh.d', '')]),
      ],
    });
    const img = await build(image);
    expect(ext4Cat(img.rootfsPath, '/opt/samelayer')).toBe('s');
    expect(ext4Cat(img.rootfsPath, '/opt/d/inner')).toBe('i');
    expect(ext4Stat(img.rootfsPath, '/opt/d/lower')).toBeNull();
  });

  it('preserves modes (setuid, sticky), ownership, mtimes, symlinks and hardlinks', async () => {
    const image = makeImage({
      layers: [
        makeLayer([
          dir('usr/', { mtime: 1500000000 }),
          dir('usr/bin/', { mode: 0o755, mtime: 1500000001 }),
          file('usr/bin/su', 'suid', { mode: 0o4755, uid: 0, gid: 0, mtime: 1600000000 }),
          file('home/u/notes', 'mine', { mode: 0o600, uid: 1000, gid: 1001, mtime: 1234567890 }),
          dir('tmp/', { mode: 0o1777 }),
          { path: 'usr/bin/sh', type: 'symlink', linkname: 'su', mtime: 1600000002 },
          { path: 'usr/bin/su-again', type: 'hardlink', linkname: 'usr/bin/su' },
          { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3 },
          { path: 'big-ids', type: 'file', content: Buffer.from('x'), uid: 3000000, gid: 3000001 },
        ]),
      ],
    });
    const img = await build(image);
    const su = ext4Stat(img.rootfsPath, '/usr/bin/su')!;
    expect(su.mode).toBe(0o4755);
    expect(su.mtime).toBe(1600000000);
    expect(su.links).toBe(2);
    expect(ext4Stat(img.rootfsPath, '/usr/bin/su-again')!.inode).toBe(su.inode);
    const notes = ext4Stat(img.rootfsPath, '/home/u/notes')!;
    expect([notes.mode, notes.uid, notes.gid, notes.mtime]).toEqual([0o600, 1000, 1001, 1234567890]);
    expect(ext4Stat(img.rootfsPath, '/tmp')!.mode).toBe(0o1777);
    expect(ext4Stat(img.rootfsPath, '/usr/bin/sh')).toMatchObject({ type: 'symlink', linkTarget: 'su', mtime: 1600000002 });
    // Directory mtimes survive children being added after them.
    expect(ext4Stat(img.rootfsPath, '/usr/bin')!.mtime).toBe(1500000001);
    expect(ext4Stat(img.rootfsPath, '/usr')!.mtime).toBe(1500000000);
    expect(ext4Stat(img.rootfsPath, '/big-ids')).toMatchObject({ uid: 3000000, gid: 3000001 });
    // Device nodes are skipped (the guest's devtmpfs provides them).
    expect(ext4Stat(img.rootfsPath, '/dev/null')).toBeNull();
    expect(ext4Stat(img.rootfsPath, '/')).toMatchObject({ uid: 0, gid: 0 });
  });

  it('reads zstd-compressed, uncompressed and empty layers', async () => {
    const plain = makeLayer([file('plain', 'p')], false);
    const zstdTar = makeLayer([file('zstd', 'z')], false).tar;
    const zstdBlob = execFileSync('zstd', ['-q', '-c'], { input: zstdTar });
    const zstd = { ...makeLayer([file('zstd', 'z')], false), blob: zstdBlob, digest: sha256Digest(zstdBlob), mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' };
    const empty = { tar: Buffer.alloc(0), blob: Buffer.alloc(0), digest: sha256Digest(''), diffId: sha256Digest(''), mediaType: 'application/vnd.oci.image.layer.v1.tar' };
    const img = await build(makeImage({ layers: [plain, zstd, empty] }));
    expect(ext4Cat(img.rootfsPath, '/plain')).toBe('p');
    expect(ext4Cat(img.rootfsPath, '/zstd')).toBe('z');
  });

  it('resolves absolute symlinks inside the image root, never on the host', async () => {
    const image = makeImage({
      layers: [makeLayer([dir('etc/'), { path: 'hostetc', type: 'symlink', linkname: '/etc' }]), makeLayer([file('hostetc/written-through', 'inside')])],
    });
    const img = await build(image);
    expect(ext4Cat(img.rootfsPath, '/etc/written-through')).toBe('inside');
    await expect(stat('/etc/written-through')).rejects.toThrow();
  });
});

describe('path guards', () => {
  const outside = () => join(work, 'escaped');
  it.each([
    ['dot-dot', [file('../../escaped', 'x')], 'contains ".."'],
    ['dot-dot in the middle', [dir('a/'), file('a/../../escaped', 'x')], 'contains ".."'],
    ['absolute path', [file('/tmp/escaped', 'x')], 'is absolute'],
    ['symlink climbing out, then written through', [{ path: 'evil', type: 'symlink', linkname: '../../../../../../tmp' }, file('evil/escaped', 'x')], 'climbs above the image root'],
    ['hardlink to an outside path', [{ path: 'h', type: 'hardlink', linkname: '../../../etc/passwd' }], 'contains ".."'],
    ['a symlink loop', [{ path: 'a', type: 'symlink', linkname: 'b' }, { path: 'b', type: 'symlink', linkname: 'a' }, file('a/x', 'x')], 'too many symlinks'],
    ['hardlink through an escaping symlink', [{ path: 'up', type: 'symlink', linkname: '../..' }, { path: 'h', type: 'hardlink', linkname: 'up/etc/passwd' }], 'climbs above the image root'],
  ] as const)('rejects %s with a typed error naming the layer', async (_name, entries, detail) => {
    const layer = makeLayer(entries);
    const err = await buildError(makeImage({ layers: [layer] }));
    expect(err.kind).toBe('invalid');
    expect(err.code).toBe('image.path_escape');
    expect(err.message).toContain(detail);
    expect(err.message).toContain(layer.digest);
    await expect(stat(outside())).rejects.toThrow();
    await expect(stat('/tmp/escaped')).rejects.toThrow();
  });

  it('rejects a hardlink to a path that is not an earlier file', async () => {
    const err = await buildError(makeImage({ layers: [makeLayer([{ path: 'h', type: 'hardlink', linkname: 'nope' }])] }));
    expect(err.code).toBe('image.bad_hardlink');
  });

  it('leaves no partial cache entry or work directory behind after a failure', async () => {
    await buildError(makeImage({ layers: [makeLayer([file('ok', 'x'), file('../bad', 'x')])] }));
    const entries = await readdir(join(stateDir, 'images', '.tmp'));
    expect(entries).toEqual([]);
  });
});

describe('corrupt layers and platforms', () => {
  it('names the layer when its blob does not match its digest', async () => {
    const good = makeLayer([file('a', 'a')]);
    const image = makeImage({ layers: [good] });
    const layout = await layoutOf(image);
    const tampered = makeLayer([file('a', 'evil')]).blob;
    await writeFile(join(layout, 'blobs/sha256', good.digest.slice(7)), tampered);
    const err = await resolveImage(`oci:${layout}`, { stateDir }).then(() => null, (e: unknown) => e as MicroagentError);
    expect(err?.code).toMatch(/image\.(digest_mismatch|blob_truncated|blob_too_large)/);
    expect(err?.message).toContain(good.digest);
    expect(err?.message).toContain('layer 1/1');
  });

  it('reports a truncated gzip layer as corrupt, naming the digest, with a remediation', async () => {
    const layer = makeLayer([file('a', 'x'.repeat(100000))]);
    const cut = layer.blob.subarray(0, layer.blob.length - 40);
    const broken = { ...layer, blob: cut, digest: sha256Digest(cut) };
    const err = await buildError(makeImage({ layers: [broken] }));
    expect(err.code).toBe('image.layer_corrupt');
    expect(err.message).toContain(broken.digest);
    expect(err.remediation).toMatch(/again/);
  });

  it('reports a layer whose uncompressed content does not match its diff_id', async () => {
    const layer = makeLayer([file('a', 'x')]);
    const other = makeLayer([file('a', 'y')]);
    const err = await buildError(makeImage({ layers: [{ ...layer, diffId: other.diffId }] }));
    expect(err.code).toBe('image.digest_mismatch');
    expect(err.message).toContain('diff_id');
  });

  it('refuses an image for another architecture, naming it', async () => {
    const err = await buildError(makeImage({ layers: [makeLayer([file('a', 'x')])], architecture: 'arm64' }));
    expect(err.kind).toBe('unsupported');
    expect(err.code).toBe('image.platform');
    expect(err.message).toContain('linux/arm64');
  });
});

describe('cache, workspace disks and run spec', () => {
  it('builds once per manifest digest and serves the second resolve from the cache', async () => {
    const image = makeImage({ layers: [makeLayer([file('hello', 'world')])] });
    const layout = await layoutOf(image);
    const [a, b] = await Promise.all([resolveImage(`oci:${layout}`, { stateDir }), resolveImage(`oci:${layout}`, { stateDir })]);
    expect([a.cached, b.cached].sort()).toEqual([false, true]);
    const built = await stat(a.rootfsPath);
    const events: string[] = [];
    const again = await resolveImage(`oci:${layout}:latest`, { stateDir, onProgress: (e) => events.push(e.kind) });
    expect(again.cached).toBe(true);
    expect(again.rootfsPath).toBe(a.rootfsPath);
    expect((await stat(again.rootfsPath)).mtimeMs).toBe(built.mtimeMs);
    expect(events).toEqual(['resolve', 'cached', 'done']);
    expect(JSON.parse(await readFile(join(a.rootfsPath, '..', 'config.json'), 'utf8')).digest).toBe(image.manifestDigest);
  });

  it.each([
    ['an unreadable record', async (dir: string) => writeFile(join(dir, 'config.json'), '{broken')],
    ['an emptied root filesystem', async (dir: string) => writeFile(join(dir, 'rootfs.ext4'), '')],
    ['a missing root filesystem', async (dir: string) => rm(join(dir, 'rootfs.ext4'))],
  ])('a cache entry with %s is rebuilt in its place, not trusted and not left in the way', async (_, damage) => {
    const image = makeImage({ layers: [makeLayer([file('again', 'rebuilt')])] });
    const layout = await layoutOf(image);
    const first = await resolveImage(`oci:${layout}`, { stateDir });
    await damage(join(first.rootfsPath, '..'));
    const second = await resolveImage(`oci:${layout}`, { stateDir });
    expect(second.cached).toBe(false);
    expect(ext4Cat(second.rootfsPath, '/again')).toBe('rebuilt');
    expect((await resolveImage(`oci:${layout}`, { stateDir })).cached).toBe(true);
  });

  it('breaks the build lock of a dead process', async () => {
    const image = makeImage({ layers: [makeLayer([file('stale', 'lock')])] });
    const dead = spawnSync('true').pid as number;
    await mkdir(join(stateDir, 'images', '.locks'), { recursive: true });
    await writeFile(join(stateDir, 'images', '.locks', `${image.manifestDigest.slice(7)}.lock`), String(dead));
    const img = await build(image);
    expect(ext4Cat(img.rootfsPath, '/stale')).toBe('lock');
  });

  it('gives each workspace a private copy and never writes to the cached base', async () => {
    const img = await build(makeImage({ layers: [makeLayer([file('f', 'base')])] }));
    const head = async (path: string): Promise<Buffer> => {
      const handle = await open(path, 'r');
      const { buffer } = await handle.read(Buffer.alloc(1 << 16), 0, 1 << 16, 0);
      await handle.close();
      return buffer;
    };
    const before = await head(img.rootfsPath);
    const disk = join(work, 'ws.ext4');
    await prepareWorkspaceDisk(img.rootfsPath, disk);
    expect((await head(disk)).equals(before)).toBe(true);
    expect(ext4Cat(disk, '/f')).toBe('base');
    await writeFile(disk, Buffer.alloc(4096, 0xff), { flag: 'r+' });
    expect((await head(img.rootfsPath)).equals(before)).toBe(true);
    await expect(prepareWorkspaceDisk(img.rootfsPath, disk)).rejects.toMatchObject({ kind: 'conflict' });
    const grown = join(work, 'ws-grown.ext4');
    expect(await prepareWorkspaceDisk(img.rootfsPath, grown, { sizeBytes: 1 << 30 })).toEqual({ sizeBytes: 1 << 30 });
    const blocks = /Block count:\s+(\d+)/.exec(execFileSync('dumpe2fs', ['-h', grown], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))?.[1];
    expect(Number(blocks) * 4096).toBe(1 << 30);
    expect(ext4Cat(grown, '/f')).toBe('base');
  });

  it('parses Env/Entrypoint/Cmd/WorkingDir/User and resolves the user from the image', async () => {
    const image = makeImage({
      layers: [makeLayer([
        dir('etc/'),
        file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n'),
        file('etc/group', 'root:x:0:\napp:x:1000:\nstaff:x:50:app\n'),
      ])],
      config: { Env: ['PATH=/opt/bin:/bin', 'LANG=C.UTF-8'], Entrypoint: ['/entry', '--flag'], Cmd: ['serve'], WorkingDir: '/srv', User: 'app:staff' },
    });
    const img = await build(image);
    expect(img.config).toMatchObject({ uid: 1000, gid: 50, home: '/home/app', workingDir: '/srv', user: 'app:staff' });
    expect(imageRunSpec(img.config)).toEqual({
      argv: ['/entry', '--flag', 'serve'],
      env: ['PATH=/opt/bin:/bin', 'LANG=C.UTF-8', 'HOME=/home/app'],
      cwd: '/srv', uid: 1000, gid: 50,
    });
    expect(imageRunSpec(img.config, ['migrate', '--now']).argv).toEqual(['/entry', '--flag', 'migrate', '--now']);
    const noEntry = { ...img.config, entrypoint: [], cmd: ['/bin/sh'], env: [], workingDir: '', uid: 0, gid: 0, home: '/root' };
    expect(imageRunSpec(noEntry, ['ls', '-l'])).toEqual({
      argv: ['ls', '-l'], env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root'], cwd: '/', uid: 0, gid: 0,
    });
    expect(() => imageRunSpec({ ...noEntry, cmd: [] })).toThrow(/no Entrypoint or Cmd/);
  });

  it('makes a WorkingDir no layer made (root\'s, 0755), as Docker does when a container starts', async () => {
    const missing = await build(makeImage({ layers: [makeLayer([dir('srv/', { uid: 7, gid: 7 })])], config: { WorkingDir: '/srv/app/data' } }));
    expect(ext4Stat(missing.rootfsPath, '/srv/app')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0 });
    expect(ext4Stat(missing.rootfsPath, '/srv/app/data')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0 });
    expect(ext4Stat(missing.rootfsPath, '/srv')).toMatchObject({ uid: 7, gid: 7 });
    // One that names a file stays a file: exec then says it cannot change directory there.
    const aFile = await build(makeImage({ layers: [makeLayer([file('work', 'x')])], config: { WorkingDir: '/work' } }));
    expect(ext4Stat(aFile.rootfsPath, '/work')).toMatchObject({ type: 'regular' });
  });

  it('rejects a User that the image does not define, and accepts numeric ids', async () => {
    const passwd = makeLayer([dir('etc/'), file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n')]);
    const err = await buildError(makeImage({ layers: [passwd], config: { User: 'ghost' } }));
    expect(err.code).toBe('image.user_unknown');
    const numeric = await build(makeImage({ layers: [passwd], config: { User: '4242:4343' } }));
    expect(numeric.config).toMatchObject({ uid: 4242, gid: 4343, home: '/' });
  });
});
