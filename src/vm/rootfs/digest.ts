/**
 * Content digests: validation of `sha256:<hex>` strings and a streaming verifier that hashes and counts
 * bytes as they pass, failing on the first byte past the declared size and at the end on any mismatch.
 * Every manifest, config and layer goes through `verifyBlob`; nothing may be trusted before it ends.
 */
import { createHash } from 'node:crypto';
import { MicroagentError } from '../../errors.js';

const SHA256 = /^sha256:[a-f0-9]{64}$/;

/** Validates a digest string; only sha256 is supported (as by every registry in use). */
export function checkDigest(raw: string, where: string): string {
  if (SHA256.test(raw)) return raw;
  const algorithm = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):[a-zA-Z0-9=_-]+$/.exec(raw)?.[1];
  if (algorithm !== undefined && algorithm !== 'sha256') {
    throw new MicroagentError('unsupported', `${where}: digest algorithm "${algorithm}" is not supported`, {
      code: 'image.digest_algorithm',
      remediation: 'Use an image whose manifests and blobs are addressed by sha256 digests.',
    });
  }
  throw new MicroagentError('invalid', `${where}: ${JSON.stringify(raw)} is not a valid sha256 digest`, {
    code: 'image.digest_invalid',
    remediation: 'A digest looks like sha256: followed by 64 lowercase hex digits.',
  });
}

export function digestHex(digest: string): string {
  return digest.slice('sha256:'.length);
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export interface ExpectedBlob {
  readonly digest: string;
  /** Declared size; undefined only where the format does not record one (docker-save layers). */
  readonly size: number | undefined;
}

export function digestMismatch(what: string, expected: string, actual: string): MicroagentError {
  return new MicroagentError('invalid', `${what} ${expected}: content hashes to ${actual}, not the digest it is addressed by`, {
    code: 'image.digest_mismatch',
    remediation: 'The blob is corrupt or was tampered with; pull or export the image again. If it persists, the source is serving bad data.',
  });
}

/** Passes bytes through while hashing; throws on oversize (immediately), short size or digest mismatch (at the end). */
export async function* verifyBlob(source: AsyncIterable<Buffer>, expected: ExpectedBlob, what: string, cap: number): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  const limit = Math.min(expected.size ?? cap, cap);
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > limit) {
      throw new MicroagentError('invalid', `${what} ${expected.digest} is larger than ${expected.size === undefined || expected.size > cap ? `the ${cap}-byte limit` : `its declared ${expected.size} bytes`}`, {
        code: 'image.blob_too_large',
        remediation: 'The source sent more data than the manifest declares; pull again, or raise the size limit for unusually large images.',
      });
    }
    hash.update(chunk);
    yield chunk;
  }
  if (expected.size !== undefined && total !== expected.size) {
    throw new MicroagentError('invalid', `${what} ${expected.digest} is truncated: ${total} of ${expected.size} bytes`, {
      code: 'image.blob_truncated',
      remediation: 'The transfer or file was cut short; pull or export the image again.',
      retryable: true,
    });
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== expected.digest) throw digestMismatch(what, expected.digest, actual);
}

/** Collects a small verified blob (manifest, config) into memory. */
export async function readVerified(source: AsyncIterable<Buffer>, expected: ExpectedBlob, what: string, cap: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of verifyBlob(source, expected, what, cap)) parts.push(chunk);
  return Buffer.concat(parts);
}
