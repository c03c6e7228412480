import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Digest } from '../../src/vm/rootfs/digest.js';
import { resolveImage } from '../../src/vm/rootfs/index.js';
import { writeTar } from '../../src/vm/rootfs/tar-writer.js';
import { dir, dockerSaveTar, ext4Cat, file, makeImage, makeLayer, ociArchiveTar } from './helpers/image.js';

let work: string;
let stateDir: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rootfs-archives-'));
  stateDir = join(work, 'state');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const image = makeImage({
  layers: [makeLayer([dir('etc/'), file('etc/os', 'one')], false), makeLayer([file('etc/os', 'two'), file('etc/extra', 'e')], false)],
  config: { Cmd: ['/bin/sh'] },
});

async function put(name: string, data: Buffer): Promise<string> {
  const path = join(work, name);
  await writeFile(path, data);
  return path;
}

describe('image archives', () => {
  it('reads a docker save tarball (legacy layout) by prefix and by plain path, and caches it', async () => {
    const path = await put('app-docker.tar', dockerSaveTar(image));
    const first = await resolveImage(`docker-archive:${path}`, { stateDir });
    expect(first.cached).toBe(false);
    expect(ext4Cat(first.rootfsPath, '/etc/os')).toBe('two');
    expect(ext4Cat(first.rootfsPath, '/etc/extra')).toBe('e');
    expect(first.config.cmd).toEqual(['/bin/sh']);
    const second = await resolveImage(path, { stateDir });
    expect(second).toMatchObject({ cached: true, digest: first.digest });
    expect(await readdir(join(stateDir, 'images', '.tmp'))).toEqual([]);
  });

  it('reads an OCI archive, gzip-compressed, under its manifest digest', async () => {
    const gz = makeImage({ layers: [makeLayer([file('gz', 'yes')])] });
    const path = await put('app-oci.tar.gz', gzipSync(ociArchiveTar(gz)));
    const img = await resolveImage(`oci-archive:${path}`, { stateDir });
    expect(img.digest).toBe(gz.manifestDigest);
    expect(ext4Cat(img.rootfsPath, '/gz')).toBe('yes');
  });

  it('refuses the wrong format for an explicit prefix', async () => {
    const path = await put('really-docker.tar', dockerSaveTar(image));
    await expect(resolveImage(`oci-archive:${path}`, { stateDir })).rejects.toMatchObject({ code: 'image.archive_invalid' });
  });

  it('never reads a blob through a symlink that leaves the archive', async () => {
    // A blob path that is a symlink to a host file whose digest the attacker knows.
    const hostFile = await put('host-secret', Buffer.from('secret'));
    const digest = sha256Digest('secret');
    const archive = writeTar([
      file('oci-layout', JSON.stringify({ imageLayoutVersion: '1.0.0' })),
      file('index.json', JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 6 }] })),
      dir('blobs/sha256/'),
      { path: `blobs/sha256/${digest.slice(7)}`, type: 'symlink', linkname: hostFile },
    ]);
    const err = await resolveImage(await put('symlink-blob.tar', archive), { stateDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'image.blob_missing' });
  });

  it('names a truncated archive as unreadable', async () => {
    const whole = dockerSaveTar(image);
    const path = await put('cut.tar', whole.subarray(0, 1500));
    const err = await resolveImage(path, { stateDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'image.archive_invalid', kind: 'invalid' });
    expect((err as Error).message).toMatch(/truncated/);
  });
});
