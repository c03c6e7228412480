/**
 * The image cache: `<stateDir>/images/sha256-<hex>/{rootfs.ext4,config.json}`, keyed by the image
 * manifest digest. Builds happen in `<stateDir>/images/.tmp/` and are renamed into place whole, so a
 * cache entry either exists complete or not at all; a lock file per digest serialises concurrent builds.
 * Nothing here ever modifies a committed entry.
 */
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../../errors.js';
import { processAlive, withPidLock } from '../../pid-lock.js';
import { digestHex } from './digest.js';
import type { ImageConfig } from './image-config.js';
import { makeDirs } from '../../make-dirs.js';

export interface CacheRecord {
  readonly schema: 1;
  readonly digest: string;
  readonly reference: string;
  readonly config: ImageConfig;
  readonly sizeBytes: number;
  readonly builtAt: string;
}

export interface CachedImage {
  readonly digest: string;
  readonly rootfsPath: string;
  readonly record: CacheRecord;
}

export function imagesDir(stateDir: string): string {
  return join(stateDir, 'images');
}

export function imageCacheDir(stateDir: string, digest: string): string {
  return join(imagesDir(stateDir), `sha256-${digestHex(digest)}`);
}

export const ROOTFS_FILE = 'rootfs.ext4';
export const RECORD_FILE = 'config.json';

/**
 * The committed entry for digest, or null when there is none or it is damaged: an unreadable record,
 * or a root filesystem that is missing or not the size the build made it (cut short, emptied).
 */
export async function readCachedImage(stateDir: string, digest: string): Promise<CachedImage | null> {
  const dir = imageCacheDir(stateDir, digest);
  try {
    const record = JSON.parse(await readFile(join(dir, RECORD_FILE), 'utf8')) as CacheRecord;
    const rootfsPath = join(dir, ROOTFS_FILE);
    const rootfs = await stat(rootfsPath);
    if (record.schema !== 1 || record.digest !== digest || !rootfs.isFile() || rootfs.size !== record.sizeBytes) return null;
    return { digest, rootfsPath, record };
  } catch {
    return null;
  }
}

/**
 * A multi-platform index a reference pinned (`debian@sha256:<index>`), and the image manifest it led
 * to for this platform: both are content addresses, so the pin is served from the cache offline too.
 */
export async function rememberIndexDigest(stateDir: string, indexDigest: string, manifestDigest: string): Promise<void> {
  const path = indexAliasPath(stateDir, indexDigest);
  const partial = `${path}.${process.pid}.partial`;
  await writeFile(partial, manifestDigest, { mode: 0o600 });
  await rename(partial, path);
}

/** The image manifest an index pin led to before, or null. */
export async function manifestForIndex(stateDir: string, indexDigest: string): Promise<string | null> {
  const text = await readFile(indexAliasPath(stateDir, indexDigest), 'utf8').catch(() => null);
  return text !== null && /^sha256:[0-9a-f]{64}$/.test(text) ? text : null;
}

function indexAliasPath(stateDir: string, indexDigest: string): string {
  return join(imagesDir(stateDir), `index-sha256-${digestHex(indexDigest)}`);
}

/** Removes whatever is at digest's entry (a damaged one, which readCachedImage refused), so a build can take its place. Under the build lock. */
export async function discardCacheEntry(stateDir: string, digest: string): Promise<void> {
  await rm(imageCacheDir(stateDir, digest), { recursive: true, force: true });
}

/**
 * Removes the work under images/.tmp of processes that died mid-build (killed, crashed): their own
 * cleanup never ran. Work of a live process is left alone. Returns the names removed.
 */
export async function removeAbandonedWork(stateDir: string): Promise<string[]> {
  const tmp = join(imagesDir(stateDir), '.tmp');
  const removed: string[] = [];
  for (const name of await readdir(tmp).catch(() => [] as string[])) {
    // freshWorkPath's names: LABEL.PID.RANDOM
    const pid = Number(/\.(\d+)\.[0-9a-z]+$/.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid <= 0 || processAlive(pid)) continue;
    await rm(join(tmp, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** A fresh, not yet existing path under images/.tmp for private work. */
export async function freshWorkPath(stateDir: string, label: string): Promise<string> {
  const tmp = join(imagesDir(stateDir), '.tmp');
  makeDirs(tmp, 0o700);
  return join(tmp, `${label}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`);
}

/** A fresh private work directory under images/.tmp, removed by the caller. */
export async function makeWorkDir(stateDir: string, label: string): Promise<string> {
  const dir = await freshWorkPath(stateDir, label);
  await mkdir(dir, { mode: 0o700 });
  return dir;
}

/** Moves a finished build directory into the cache; a concurrent winner's entry is kept. */
export async function commitCacheEntry(stateDir: string, digest: string, builtDir: string): Promise<void> {
  try {
    await rename(builtDir, imageCacheDir(stateDir, digest));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    await rm(builtDir, { recursive: true, force: true });
  }
}

const LOCK_WAIT_MS = 60 * 60 * 1000;

/** Runs fn while holding the build lock for digest; waits for another holder, breaks stale locks of dead pids. */
export async function withBuildLock<T>(stateDir: string, digest: string, fn: () => Promise<T>): Promise<T> {
  const locks = join(imagesDir(stateDir), '.locks');
  makeDirs(locks, 0o700);
  const lockPath = join(locks, `${digestHex(digest)}.lock`);
  const busy = () =>
    new MicroagentError('transient', `timed out waiting for another build of image ${digest} (lock ${lockPath})`, {
      code: 'image.lock_timeout',
      remediation: `If no other microagent is building it, remove ${lockPath}.`,
    });
  return withPidLock(lockPath, LOCK_WAIT_MS, busy, fn);
}
