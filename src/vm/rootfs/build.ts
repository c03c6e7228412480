/**
 * Builds one image into a cache entry: fetch and verify the config, check the platform, stream every
 * layer (compressed digest, then uncompressed diff_id verified) through the guarded applier into a
 * private staging directory, resolve the User, run mke2fs, and commit atomically. Must never leave a
 * partial cache entry: any failure removes the work directory and reports which layer and why.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../../errors.js';
import { childLog } from '../../log.js';
import { applyLayer, finishStaging, makeWorkingDir, newStagingState } from './apply-layer.js';
import { decompressLayer } from './decompress.js';
import { digestHex, readVerified, verifyBlob } from './digest.js';
import { buildExt4, type Ext4SizeOptions } from './ext4.js';
import { applyOwners } from './ownership.js';
import { commitCacheEntry, makeWorkDir, RECORD_FILE, ROOTFS_FILE, type CacheRecord } from './image-cache.js';
import { parseImageConfig, resolveImageUser, type ImageConfig } from './image-config.js';
import { GUEST_PLATFORM, platformError, type Descriptor } from './oci.js';
import type { ProgressListener } from './progress.js';
import type { ImageSource, SelectedManifest } from './source.js';
import { readTar } from './tar-reader.js';

const log = childLog('rootfs');
const CONFIG_CAP = 8 << 20;

export interface BuildLimits extends Ext4SizeOptions {
  /** Largest compressed layer accepted (default 8 GiB). */
  readonly maxLayerBytes?: number;
  /** Largest uncompressed layer accepted (default 32 GiB). */
  readonly maxUncompressedLayerBytes?: number;
}

const PROGRESS_STEP = 1 << 20;

async function* counted(source: AsyncIterable<Buffer>, report: (bytes: number) => void): AsyncGenerator<Buffer> {
  let total = 0;
  let reported = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total - reported >= PROGRESS_STEP) {
      reported = total;
      report(total);
    }
    yield chunk;
  }
  report(total);
}

/** Typed error for a layer that fails to apply, naming the layer and keeping path-guard errors' codes. */
function layerError(err: unknown, source: ImageSource, layer: Descriptor, position: string): MicroagentError {
  const where = `layer ${position} (${layer.digest}) of ${source.description}`;
  if (err instanceof MicroagentError && err.code !== 'tar.corrupt') {
    return new MicroagentError(err.kind, `${where}: ${err.message}`, { code: err.code, remediation: err.remediation, retryable: err.retryable, cause: err });
  }
  const errno = (err as NodeJS.ErrnoException).code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return new MicroagentError('transient', `${where}: no space left while unpacking`, { code: 'image.no_space', remediation: 'Free space in the microagent state directory and retry.', cause: err });
  }
  // The registry's connection went away mid-body (node reports it as ECONNRESET "aborted").
  if (errno === 'ECONNRESET' || errno === 'EPIPE' || errno === 'ETIMEDOUT') {
    return new MicroagentError('transient', `${where} is truncated: the connection dropped while it was read (${(err as Error).message})`, {
      code: 'image.blob_truncated',
      remediation: 'The transfer was cut short; pull again. If it keeps happening, check the registry and the network in between.',
      retryable: true,
      cause: err,
    });
  }
  const isDecodeError = err instanceof MicroagentError || (typeof errno === 'string' && errno.startsWith('Z_')) || /zstd/.test(String(err));
  if (!isDecodeError) {
    return new MicroagentError('internal', `${where}: ${(err as Error).message}`, { remediation: 'Re-run with MICROAGENT_LOG_LEVEL=debug and report it.', cause: err });
  }
  return new MicroagentError('invalid', `${where} is corrupt: ${(err as Error).message}`, {
    code: 'image.layer_corrupt',
    remediation: 'Pull or export the image again; if it persists, the image is damaged at its source and must be rebuilt.',
    cause: err,
  });
}

export interface BuildRequest {
  readonly stateDir: string;
  readonly source: ImageSource;
  readonly selected: SelectedManifest;
  readonly reference: string;
  readonly limits: BuildLimits;
  readonly onProgress: ProgressListener | undefined;
}

/** Builds and commits the cache entry; returns the resolved config. Caller holds the build lock. */
export async function buildImage(req: BuildRequest): Promise<{ config: ImageConfig; sizeBytes: number }> {
  const { source, selected, onProgress } = req;
  const started = Date.now();
  const work = await makeWorkDir(req.stateDir, digestHex(selected.digest).slice(0, 16));
  try {
    const configBytes = await readVerified(source.blob(selected.manifest.config, 'config', CONFIG_CAP), selected.manifest.config, `${source.description}: config`, CONFIG_CAP);
    const parsed = parseImageConfig(configBytes, source.description);
    if (parsed.os !== GUEST_PLATFORM.os || parsed.architecture !== GUEST_PLATFORM.architecture) {
      throw platformError(source.description, [`${parsed.os || 'unknown'}/${parsed.architecture || 'unknown'}`]);
    }
    const layers = selected.manifest.layers;
    if (parsed.diffIds.length !== layers.length) {
      throw new MicroagentError('invalid', `${source.description}: the manifest lists ${layers.length} layers but the config ${parsed.diffIds.length} diff_ids`, {
        code: 'image.manifest_invalid',
        remediation: 'The image is inconsistent; rebuild and re-push it.',
      });
    }
    const staging = join(work, 'staging');
    await mkdir(staging, { mode: 0o755 });
    const state = newStagingState(staging);
    for (const [i, layer] of layers.entries()) {
      const position = `${i + 1}/${layers.length}`;
      const report = (bytes: number): void =>
        onProgress?.({ kind: 'layer', index: i + 1, count: layers.length, digest: layer.digest, bytes, totalBytes: layer.size });
      report(0);
      try {
        const compressed = counted(source.blob(layer, `layer ${position}`, req.limits.maxLayerBytes ?? 8 * 2 ** 30), report);
        const tar = verifyBlob(decompressLayer(compressed), { digest: parsed.diffIds[i] as string, size: undefined }, `${source.description}: uncompressed layer ${position} (diff_id)`, req.limits.maxUncompressedLayerBytes ?? 32 * 2 ** 30);
        await applyLayer(state, readTar(tar));
      } catch (err) {
        throw layerError(err, source, layer, position);
      }
    }
    await finishStaging(state);
    await makeWorkingDir(state, parsed.workingDir);
    const user = await resolveImageUser(staging, parsed.user, source.description);
    const { diffIds: _diffIds, ...rest } = parsed;
    const config: ImageConfig = { ...rest, ...user };
    onProgress?.({ kind: 'filesystem', digest: selected.digest });
    const out = join(work, 'out');
    await mkdir(out, { mode: 0o755 });
    const { sizeBytes } = await buildExt4(staging, join(out, ROOTFS_FILE), req.limits);
    if (state.owners !== null) await applyOwners(staging, state.owners, join(out, ROOTFS_FILE));
    const record: CacheRecord = { schema: 1, digest: selected.digest, reference: req.reference, config, sizeBytes, builtAt: new Date().toISOString() };
    await writeFile(join(out, RECORD_FILE), JSON.stringify(record, null, 2) + '\n', { mode: 0o644 });
    await commitCacheEntry(req.stateDir, selected.digest, out);
    log.info({ digest: selected.digest, layers: layers.length, entries: state.entries, skippedDevices: state.skippedDevices, sizeBytes, ms: Date.now() - started }, 'image built');
    return { config, sizeBytes };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
