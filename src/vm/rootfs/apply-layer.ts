/**
 * Applies image layers (tar entry streams) in order onto a private staging directory, with OCI whiteouts
 * (`.wh.NAME`) and opaque directories (`.wh..wh..opq`), preserving modes, ownership and mtimes (a
 * builder that is not root records owners for ownership.ts to write into the filesystem instead).
 * Every path goes through safe-path.ts: nothing is ever created, removed or written outside the staging
 * root, and the final component of an entry is replaced, never written through.
 * Device nodes and FIFOs are skipped (the guest's devtmpfs provides /dev); skipped entries are counted.
 */
import { constants } from 'node:fs';
import { lchown, link, lstat, lutimes, mkdir, open, readdir, rm, symlink, chmod, utimes } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { childLog } from '../../log.js';
import { MicroagentError } from '../../errors.js';
import { OwnerLedger } from './ownership.js';
import { archivePathComponents, resolveInRoot } from './safe-path.js';
import type { TarEntry, TarHeader } from './tar-reader.js';

const log = childLog('rootfs');
const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

/** State carried across all layers of one build. */
export interface StagingState {
  readonly root: string;
  /** Directory mtimes, applied once at the end: adding children would otherwise change them. */
  readonly dirMtimes: Map<string, number>;
  /** Owners to write into the filesystem later, when this process cannot chown (not root); else null. */
  readonly owners: OwnerLedger | null;
  skippedDevices: number;
  entries: number;
}

export function newStagingState(root: string, canChown = process.getuid?.() === 0): StagingState {
  return { root, dirMtimes: new Map(), owners: canChown ? null : new OwnerLedger(), skippedDevices: 0, entries: 0 };
}

async function lstatOrNull(path: string) {
  return lstat(path).catch((err: NodeJS.ErrnoException) => {
    // ENOTDIR: a parent was replaced by a file since the path was recorded; the path is gone too.
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
    throw err;
  });
}

/** Removes whatever is at path (never following a symlink), unless it is a directory and keepDirectory. */
async function clearPath(state: StagingState, path: string, keepDirectory: boolean): Promise<boolean> {
  const info = await lstatOrNull(path);
  if (info === null) return false;
  if (info.isDirectory() && keepDirectory) return true;
  await rm(path, { recursive: true, force: true });
  state.owners?.forget(path, info.isDirectory());
  return false;
}

async function setOwnerAndMode(state: StagingState, path: string, header: TarHeader, isSymlink: boolean): Promise<void> {
  if (state.owners === null) await lchown(path, header.uid, header.gid);
  else state.owners.record(path, header.uid, header.gid);
  // chown clears setuid/setgid, so the mode goes on afterwards.
  if (!isSymlink) await chmod(path, header.mode);
}

/** Removes every entry below dir that this layer did not itself create (OCI opaque directory). */
async function clearOpaque(state: StagingState, dir: string, unpacked: ReadonlySet<string>): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const path = `${dir}/${name}`;
    if (!unpacked.has(path)) {
      await rm(path, { recursive: true, force: true });
      state.owners?.forget(path, true);
    } else if ((await lstat(path)).isDirectory()) await clearOpaque(state, path, unpacked);
  }
}

async function applyWhiteout(state: StagingState, parts: string[], name: string, unpacked: ReadonlySet<string>): Promise<void> {
  const parent = await resolveInRoot(state.root, parts.slice(0, -1), { createMissing: false, followLast: true });
  if (parent === null) return;
  const parentInfo = await lstatOrNull(parent);
  if (parentInfo === null || !parentInfo.isDirectory()) return;
  if (name === OPAQUE_MARKER) {
    await clearOpaque(state, parent, unpacked);
    return;
  }
  const hidden = name.slice(WHITEOUT_PREFIX.length);
  if (hidden === '' || hidden === '.' || hidden === '..') return;
  const path = `${parent}/${hidden}`;
  // A whiteout hides only what lower layers made (OCI image spec, "Whiteouts"): what this layer itself
  // put there stays, and of a directory it declared again only the lower layers' entries go.
  if (unpacked.has(path)) {
    if ((await lstat(path)).isDirectory()) await clearOpaque(state, path, unpacked);
    return;
  }
  await rm(path, { recursive: true, force: true });
  state.owners?.forget(path, true);
}

async function writeFile(path: string, body: AsyncIterable<Buffer>): Promise<void> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const handle = await open(path, flags, 0o600);
  await pipeline(body, handle.createWriteStream());
}

async function applyEntry(state: StagingState, entry: TarEntry, unpacked: Set<string>): Promise<void> {
  const { header } = entry;
  const parts = archivePathComponents(header.path);
  const name = parts.at(-1);
  if (name === undefined) return; // the root itself: its owner and mode are fixed by mke2fs
  if (name.startsWith(WHITEOUT_PREFIX)) {
    await applyWhiteout(state, parts, name, unpacked);
    return;
  }
  const path = (await resolveInRoot(state.root, parts, { createMissing: true, followLast: false })) as string;
  switch (header.type) {
    case 'directory': {
      if (!(await clearPath(state, path, true))) await mkdir(path, { mode: 0o700 });
      await setOwnerAndMode(state, path, header, false);
      state.dirMtimes.set(path, header.mtime);
      break;
    }
    case 'file': {
      await clearPath(state, path, false);
      await writeFile(path, entry.body);
      await setOwnerAndMode(state, path, header, false);
      await utimes(path, header.mtime, header.mtime);
      state.dirMtimes.delete(path);
      break;
    }
    case 'symlink': {
      await clearPath(state, path, false);
      await symlink(header.linkname, path);
      await setOwnerAndMode(state, path, header, true);
      await lutimes(path, header.mtime, header.mtime);
      state.dirMtimes.delete(path);
      break;
    }
    case 'hardlink': {
      const targetParts = archivePathComponents(header.linkname);
      const target = await resolveInRoot(state.root, targetParts, { createMissing: false, followLast: false });
      const targetInfo = target === null ? null : await lstatOrNull(target);
      if (target === null || targetInfo === null || targetInfo.isDirectory()) {
        throw new MicroagentError('invalid', `hardlink ${JSON.stringify(header.path)} points at ${JSON.stringify(header.linkname)}, which is not an earlier file of the image`, {
          code: 'image.bad_hardlink',
          remediation: 'The layer is malformed; rebuild the image.',
        });
      }
      if (target === path) break;
      await clearPath(state, path, false);
      await link(target, path);
      if (state.owners !== null) {
        const { uid, gid } = state.owners.ownerOf(target);
        state.owners.record(path, uid, gid);
      }
      state.dirMtimes.delete(path);
      break;
    }
    case 'char':
    case 'block':
    case 'fifo':
      state.skippedDevices++;
      log.debug({ path: header.path, type: header.type }, 'skipping special file in layer');
      return;
    default: {
      const never: never = header.type;
      throw new Error(`unhandled tar entry type ${String(never)}`);
    }
  }
  state.entries++;
  for (let p = path; p.length > state.root.length && !unpacked.has(p); p = dirname(p)) unpacked.add(p);
}

/** Applies one layer's tar entries onto the staging root. */
export async function applyLayer(state: StagingState, entries: AsyncIterable<TarEntry>): Promise<void> {
  const unpacked = new Set<string>();
  for await (const entry of entries) await applyEntry(state, entry, unpacked);
}

/** True when every component from the root down to path is a real directory (no symlink swapped in since). */
async function isDirectoryChain(root: string, path: string): Promise<boolean> {
  for (let p = path; p.length > root.length; p = dirname(p)) {
    const info = await lstatOrNull(p);
    if (info === null || !info.isDirectory()) return false;
  }
  return true;
}

/** Sets directory mtimes deepest-first, after every layer has been applied. */
export async function finishStaging(state: StagingState): Promise<void> {
  const dirs = [...state.dirMtimes.entries()].sort((a, b) => b[0].length - a[0].length);
  for (const [path, mtime] of dirs) {
    // A later layer may have replaced a parent with a symlink; utimes would follow it out of the root.
    if (await isDirectoryChain(state.root, path)) await utimes(path, mtime, mtime);
  }
}

/**
 * Docker makes an image's WorkingDir when a container starts if no layer did (root's, 0755), and
 * images built by other tools (ko, jib, crane mutate) often leave it to that: the build makes it
 * too, so the guest's exec can chdir there. A path that cannot be a directory is left as it is;
 * exec then says it cannot change directory.
 */
export async function makeWorkingDir(state: StagingState, workingDir: string): Promise<void> {
  if (workingDir === '' || workingDir === '/') return;
  try {
    // An absolute guest path (archive paths are relative): its components, `..` resolved in the root.
    const components = workingDir.split('/').filter((part) => part !== '' && part !== '.');
    const path = await resolveInRoot(state.root, components, { createMissing: true, followLast: true });
    if (path !== null && (await lstatOrNull(path)) === null) await mkdir(path, { mode: 0o755 });
  } catch (err) {
    log.debug({ err, workingDir }, 'WorkingDir not made');
  }
}
