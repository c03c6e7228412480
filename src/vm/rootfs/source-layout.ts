/**
 * Image source: an OCI image layout directory (oci-layout, index.json, blobs/sha256/...).
 * Blob paths are built from validated digests and resolved inside the layout with safe-path.ts, so a
 * layout unpacked from an untrusted archive cannot point a blob at a host file. Read-only.
 */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { MicroagentError } from '../../errors.js';
import { digestHex, readVerified, verifyBlob } from './digest.js';
import { MANIFEST_CAP, MEDIA_TYPES, type Descriptor } from './oci.js';
import { resolveInRoot } from './safe-path.js';
import type { ImageSource } from './source.js';

async function readSmallFile(dir: string, name: string, description: string): Promise<Buffer> {
  const path = await resolveInRoot(dir, [name], { createMissing: false, followLast: true });
  const info = path === null ? null : await stat(path).catch(() => null);
  if (path === null || info === null || !info.isFile()) {
    throw new MicroagentError('invalid', `${description} has no ${name}; it is not an OCI image layout`, {
      code: 'image.layout_invalid',
      remediation: 'Point at a directory written by `skopeo copy ... oci:DIR`, `docker save` (OCI) or scripts/build-default-image.sh.',
    });
  }
  if (info.size > MANIFEST_CAP) throw new MicroagentError('invalid', `${description}: ${name} is too large`, { code: 'image.layout_invalid' });
  return readFile(path);
}

async function* blobBytes(dir: string, descriptor: Descriptor, description: string): AsyncGenerator<Buffer> {
  const path = await resolveInRoot(dir, ['blobs', 'sha256', digestHex(descriptor.digest)], { createMissing: false, followLast: true });
  const info = path === null ? null : await stat(path).catch(() => null);
  if (path === null || info === null || !info.isFile()) {
    throw new MicroagentError('not_found', `${description} is missing blob ${descriptor.digest}`, {
      code: 'image.blob_missing',
      remediation: 'The layout is incomplete; export or copy the image again.',
    });
  }
  yield* createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
}

/** Opens a layout directory; `tag` selects among several images by their ref-name annotation. */
export async function openLayout(dir: string, tag: string | undefined, description = `OCI layout ${dir}`): Promise<ImageSource> {
  const marker = await readSmallFile(dir, 'oci-layout', description);
  let version: unknown;
  try {
    version = (JSON.parse(marker.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    version = undefined;
  }
  if (version !== '1.0.0') {
    throw new MicroagentError('unsupported', `${description}: oci-layout version ${String(version)} is not supported`, {
      code: 'image.layout_version',
      remediation: 'Write the layout with imageLayoutVersion 1.0.0.',
    });
  }
  return {
    description,
    tag,
    root: async () => ({ bytes: await readSmallFile(dir, 'index.json', description), digest: undefined, mediaType: MEDIA_TYPES.ociIndex }),
    manifest: (descriptor) => readVerified(blobBytes(dir, descriptor, description), descriptor, `${description}: manifest`, MANIFEST_CAP),
    blob: (descriptor, what, cap) => verifyBlob(blobBytes(dir, descriptor, description), descriptor, `${description}: ${what}`, cap),
    close: async () => undefined,
  };
}
