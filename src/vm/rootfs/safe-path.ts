/**
 * Path resolution confined to an image root. Archive paths are split into clean components (no `..`,
 * not absolute); symlinks met on the way are followed the way the guest would see them: absolute targets
 * start again at the image root, relative targets that climb above it are refused. Must never hand back
 * a host path outside the root, and never follow the host's idea of an absolute symlink.
 */
import { lstat, mkdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../../errors.js';

const MAX_SYMLINK_HOPS = 40;

function escapeError(message: string): MicroagentError {
  return new MicroagentError('invalid', message, {
    code: 'image.path_escape',
    remediation: 'The image contains a path that would land outside its root filesystem; do not use this image.',
  });
}

/** Clean components of a path stored in an archive. Throws on `..`, absolute paths and NUL bytes. */
export function archivePathComponents(raw: string): string[] {
  if (raw.includes('\0')) throw escapeError(`archive path ${JSON.stringify(raw)} contains a NUL byte`);
  if (raw.startsWith('/')) throw escapeError(`archive path ${JSON.stringify(raw)} is absolute`);
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw escapeError(`archive path ${JSON.stringify(raw)} contains ".."`);
  return parts;
}

function linkTargetComponents(target: string): string[] {
  return target.split('/').filter((part) => part !== '' && part !== '.');
}

export interface ResolveOptions {
  /** Create missing directories on the way (mode 0755), as layer application does. */
  readonly createMissing: boolean;
  /** Follow a symlink in the last component too (reading a file), instead of stopping at it. */
  readonly followLast: boolean;
}

/**
 * Resolves components inside root and returns the host path, whose every directory component is a real
 * directory under root. With `createMissing: false`, a missing component returns null.
 */
export async function resolveInRoot(root: string, components: readonly string[], opts: ResolveOptions): Promise<string | null> {
  const resolved: string[] = [];
  const pending = [...components];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    const isLast = pending.length === 0;
    if (part === '..') {
      if (resolved.length === 0) {
        throw escapeError(`path ${JSON.stringify(components.join('/'))} climbs above the image root through a symlink`);
      }
      resolved.pop();
      continue;
    }
    const candidate = join(root, ...resolved, part);
    if (isLast && !opts.followLast) {
      resolved.push(part);
      break;
    }
    const info = await lstat(candidate).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (info === null) {
      if (isLast) {
        resolved.push(part);
        break;
      }
      if (!opts.createMissing) return null;
      await mkdir(candidate, { mode: 0o755 });
      resolved.push(part);
    } else if (info.isSymbolicLink()) {
      if (++hops > MAX_SYMLINK_HOPS) {
        throw escapeError(`too many symlinks resolving ${JSON.stringify(components.join('/'))} (a loop?)`);
      }
      const target = await readlink(candidate);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...linkTargetComponents(target));
    } else if (info.isDirectory() || isLast) {
      resolved.push(part);
    } else {
      throw new MicroagentError('invalid', `path ${JSON.stringify(components.join('/'))} goes through "${resolved.concat(part).join('/')}", which is not a directory`, {
        code: 'image.not_a_directory',
        remediation: 'The image layers are inconsistent; rebuild the image.',
      });
    }
  }
  return join(root, ...resolved);
}
