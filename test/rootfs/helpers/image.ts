/**
 * Test helpers: craft layers with the project's tar writer, write OCI layouts / docker-save / OCI archives,
 * and inspect built ext4 images with debugfs (e2fsprogs) without mounting them.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sha256Digest } from '../../../src/vm/rootfs/digest.js';
import { writeTar, type TarWriteEntry } from '../../../src/vm/rootfs/tar-writer.js';

export interface BuiltLayer {
  readonly tar: Buffer;
  readonly blob: Buffer;
  readonly digest: string;
  readonly diffId: string;
  readonly mediaType: string;
}

export function makeLayer(entries: readonly TarWriteEntry[], compress = true): BuiltLayer {
  const tar = writeTar(entries);
  const blob = compress ? gzipSync(tar) : tar;
  return {
    tar,
    blob,
    digest: sha256Digest(blob),
    diffId: sha256Digest(tar),
    mediaType: compress ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar',
  };
}

export const file = (path: string, content: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path, type: 'file', content: Buffer.from(content), ...extra });
export const dir = (path: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path, type: 'directory', ...extra });

export interface ImageSpec {
  readonly layers: readonly BuiltLayer[];
  readonly config?: Record<string, unknown>;
  readonly architecture?: string;
}

export interface BuiltImage {
  readonly config: Buffer;
  readonly configDigest: string;
  readonly manifest: Buffer;
  readonly manifestDigest: string;
  readonly layers: readonly BuiltLayer[];
}

export function makeImage(spec: ImageSpec): BuiltImage {
  const config = Buffer.from(JSON.stringify({
    architecture: spec.architecture ?? 'amd64',
    os: 'linux',
    config: spec.config ?? {},
    rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => l.diffId) },
  }));
  const configDigest = sha256Digest(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: spec.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.blob.length })),
  }));
  return { config, configDigest, manifest, manifestDigest: sha256Digest(manifest), layers: spec.layers };
}

/** Writes an OCI layout holding the image (tagged `tag`); returns the manifest digest. */
export async function writeLayout(layoutDir: string, image: BuiltImage, tag = 'latest'): Promise<string> {
  const blobs = join(layoutDir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = (digest: string, data: Buffer) => writeFile(join(blobs, digest.slice(7)), data);
  await put(image.configDigest, image.config);
  await put(image.manifestDigest, image.manifest);
  for (const layer of image.layers) await put(layer.digest, layer.blob);
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(layoutDir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: image.manifestDigest, size: image.manifest.length,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    }],
  }));
  return image.manifestDigest;
}

/** A `docker save`-style archive (legacy layout: <id>/layer.tar, <config>.json, manifest.json). */
export function dockerSaveTar(image: BuiltImage): Buffer {
  const entries: TarWriteEntry[] = [];
  const layerPaths = image.layers.map((l, i) => `${l.diffId.slice(7, 19)}${i}/layer.tar`);
  image.layers.forEach((l, i) => {
    entries.push(dir(`${layerPaths[i]!.split('/')[0]}/`));
    entries.push({ path: layerPaths[i]!, type: 'file', content: l.tar });
  });
  const configName = `${image.configDigest.slice(7)}.json`;
  entries.push({ path: configName, type: 'file', content: image.config });
  entries.push(file('manifest.json', JSON.stringify([{ Config: configName, RepoTags: ['test/app:1'], Layers: layerPaths }])));
  return writeTar(entries);
}

/** An OCI archive: a tar of the layout directory's files. */
export function ociArchiveTar(image: BuiltImage): Buffer {
  const blob = (digest: string, content: Buffer): TarWriteEntry => ({ path: `blobs/sha256/${digest.slice(7)}`, type: 'file', content });
  return writeTar([
    file('oci-layout', JSON.stringify({ imageLayoutVersion: '1.0.0' })),
    file('index.json', JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: image.manifestDigest, size: image.manifest.length }] })),
    dir('blobs/'),
    dir('blobs/sha256/'),
    blob(image.configDigest, image.config),
    blob(image.manifestDigest, image.manifest),
    ...image.layers.map((l) => blob(l.digest, l.blob)),
  ]);
}

export interface Ext4Stat {
  readonly type: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtime: number;
  readonly links: number;
  readonly inode: number;
  readonly linkTarget?: string;
}

function debugfs(image: string, request: string): string {
  return execFileSync('debugfs', ['-R', request, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** stat of a path inside an ext4 image, or null when it does not exist. */
export function ext4Stat(image: string, path: string): Ext4Stat | null {
  // debugfs reads a quote inside a quoted argument as two of them.
  const out = debugfs(image, `stat "${path.replaceAll('"', '""')}"`);
  const inode = /Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)/.exec(out);
  if (inode === null) return null;
  const owner = /User:\s+(\d+)\s+Group:\s+(\d+).*Size: (\d+)/.exec(out);
  const mtime = /mtime: 0x([0-9a-f]+)/.exec(out);
  const links = /Links: (\d+)/.exec(out);
  const target = /Fast link dest: "(.*)"/.exec(out);
  return {
    inode: Number(inode[1]),
    type: inode[2]!,
    mode: parseInt(inode[3]!, 8),
    uid: Number(owner![1]),
    gid: Number(owner![2]),
    size: Number(owner![3]),
    mtime: parseInt(mtime![1]!, 16),
    links: Number(links![1]),
    ...(target ? { linkTarget: target[1]! } : {}),
  };
}

export function ext4Cat(image: string, path: string): string {
  return debugfs(image, `cat "${path}"`);
}
