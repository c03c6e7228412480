/**
 * Image source: a tarball, either an OCI archive (a tar of a layout) or a `docker save` archive
 * (manifest.json + config + layer tars), optionally gzip/zstd-compressed. The archive is unpacked with
 * the same guarded applier as layers into a private scratch directory (removed by close()); docker-save
 * images get a synthesized OCI manifest whose digest is the cache key. Never reads outside the scratch dir.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { MicroagentError } from '../../errors.js';
import { applyLayer, newStagingState } from './apply-layer.js';
import { decompressLayer } from './decompress.js';
import { readVerified, sha256Digest, verifyBlob } from './digest.js';
import { MANIFEST_CAP, MEDIA_TYPES, type Descriptor } from './oci.js';
import { archivePathComponents, resolveInRoot } from './safe-path.js';
import { openLayout } from './source-layout.js';
import type { ImageSource } from './source.js';
import { readTar } from './tar-reader.js';

export type ArchiveFormat = 'auto' | 'docker-archive' | 'oci-archive';

function archiveError(description: string, detail: string, cause?: unknown): MicroagentError {
  return new MicroagentError('invalid', `${description}: ${detail}`, {
    code: 'image.archive_invalid',
    remediation: 'Re-create the archive with `docker save IMAGE -o FILE.tar` or `skopeo copy ... oci-archive:FILE.tar`.',
    cause,
  });
}

async function existingFile(root: string, rawPath: string): Promise<string | null> {
  const path = await resolveInRoot(root, archivePathComponents(rawPath), { createMissing: false, followLast: true });
  const info = path === null ? null : await stat(path).catch(() => null);
  return path !== null && info?.isFile() ? path : null;
}

async function hashFile(path: string): Promise<{ digest: string; size: number; gzipped: boolean }> {
  const hash = createHash('sha256');
  let size = 0;
  let head: Buffer | undefined;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    head ??= chunk.subarray(0, 2);
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size, gzipped: head?.[0] === 0x1f && head[1] === 0x8b };
}

interface DockerSaveEntry {
  readonly Config: string;
  readonly Layers: readonly string[];
}

function parseDockerManifest(bytes: Buffer, description: string): DockerSaveEntry {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw archiveError(description, 'manifest.json is not JSON', err);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw archiveError(description, 'manifest.json lists no image');
  if (parsed.length > 1) {
    throw new MicroagentError('invalid', `${description} holds ${parsed.length} images; microagent reads archives of one image`, {
      code: 'image.ambiguous',
      remediation: 'Save one image per archive: `docker save IMAGE -o FILE.tar`.',
    });
  }
  const entry = parsed[0] as Partial<DockerSaveEntry>;
  if (typeof entry.Config !== 'string' || !Array.isArray(entry.Layers) || !entry.Layers.every((l) => typeof l === 'string')) {
    throw archiveError(description, 'manifest.json entry lacks Config or Layers');
  }
  return { Config: entry.Config, Layers: entry.Layers };
}

async function openDockerSave(scratch: string, description: string, close: () => Promise<void>): Promise<ImageSource> {
  const manifestPath = (await existingFile(scratch, 'manifest.json')) as string;
  const entry = parseDockerManifest(await readFile(manifestPath), description);
  const files = new Map<string, string>();
  const describe = async (rawPath: string, mediaType: (gzipped: boolean) => string): Promise<Descriptor> => {
    const path = await existingFile(scratch, rawPath);
    if (path === null) throw archiveError(description, `manifest.json names ${JSON.stringify(rawPath)}, which is not in the archive`);
    const { digest, size, gzipped } = await hashFile(path);
    files.set(digest, path);
    return { mediaType: mediaType(gzipped), digest, size };
  };
  const config = await describe(entry.Config, () => MEDIA_TYPES.ociConfig);
  const layers: Descriptor[] = [];
  for (const layer of entry.Layers) {
    layers.push(await describe(layer, (gz) => (gz ? MEDIA_TYPES.ociLayerGzip : 'application/vnd.oci.image.layer.v1.tar')));
  }
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config, layers }));
  const open = (descriptor: Descriptor): AsyncIterable<Buffer> => {
    const path = files.get(descriptor.digest);
    if (path === undefined) throw archiveError(description, `no blob ${descriptor.digest}`);
    return createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
  };
  return {
    description,
    tag: undefined,
    root: async () => ({ bytes: manifest, digest: sha256Digest(manifest), mediaType: MEDIA_TYPES.ociManifest }),
    manifest: (descriptor) => readVerified(open(descriptor), descriptor, `${description}: manifest`, MANIFEST_CAP),
    blob: (descriptor, what, cap) => verifyBlob(open(descriptor), descriptor, `${description}: ${what}`, cap),
    close,
  };
}

/** Unpacks an archive into scratchDir (which must not exist) and opens the image inside it. */
export async function openArchive(path: string, format: ArchiveFormat, scratchDir: string, tag?: string): Promise<ImageSource> {
  const description = `image archive ${path}`;
  await mkdir(scratchDir, { recursive: false, mode: 0o700 });
  const close = (): Promise<void> => rm(scratchDir, { recursive: true, force: true });
  try {
    try {
      await applyLayer(newStagingState(scratchDir), readTar(decompressLayer(createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>)));
    } catch (err) {
      if (err instanceof MicroagentError && err.code !== 'tar.corrupt') throw err;
      throw archiveError(description, `cannot be unpacked: ${(err as Error).message}`, err);
    }
    const hasLayout = (await existingFile(scratchDir, 'index.json')) !== null && (await existingFile(scratchDir, 'oci-layout')) !== null;
    const hasDocker = (await existingFile(scratchDir, 'manifest.json')) !== null;
    if (hasLayout && format !== 'docker-archive') {
      const layout = await openLayout(scratchDir, tag, description);
      return { ...layout, close };
    }
    if (hasDocker && format !== 'oci-archive') return await openDockerSave(scratchDir, description, close);
    throw archiveError(description, `is not ${format === 'oci-archive' ? 'an OCI archive (no index.json/oci-layout)' : format === 'docker-archive' ? 'a docker-save archive (no manifest.json)' : 'an OCI or docker-save archive'}`);
  } catch (err) {
    await close();
    throw err;
  }
}
