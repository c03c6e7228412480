/**
 * Unpacks a tar stream a guest produced (`microagent cp NAME:PATH DIR`) into a host directory without
 * trusting it: the guest may be compromised, and the host's tar, run by root, would keep its owners and
 * setuid bits and could be steered by its paths. Every path resolves inside the destination
 * (safe-path.ts: no `..`, no absolute paths, symlinks followed as if the destination were the root);
 * an existing final component is replaced, never written through; files and directories get the
 * permission bits of the archive without setuid, setgid or sticky, and the copying user as owner;
 * hardlinks must name an earlier file of the copy; device nodes and FIFOs are skipped.
 */
import { constants } from 'node:fs';
import { chmod, link, lstat, mkdir, open, rm, symlink, utimes } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { MicroagentError } from '../../errors.js';
import { archivePathComponents, resolveInRoot } from '../rootfs/safe-path.js';
import { readTar, type TarEntry } from '../rootfs/tar-reader.js';

export interface UnpackResult {
  readonly entries: number;
  /** Device nodes and FIFOs, which a copy never creates on the host. */
  readonly skipped: number;
}

const PERMISSIONS = 0o777;

export async function unpackGuestArchive(source: AsyncIterable<Buffer>, into: string): Promise<UnpackResult> {
  let entries = 0;
  let skipped = 0;
  try {
    for await (const entry of readTar(source)) {
      if (await unpackEntry(entry, into)) entries++;
      else skipped++;
    }
  } catch (err) {
    if (err instanceof MicroagentError && err.code === 'image.path_escape') {
      throw new MicroagentError('invalid', `the workspace sent a copy with a path outside ${into}: ${err.message}; the copy stopped there`, {
        code: 'cp.path_escape',
        remediation: 'the guest may be compromised: inspect what was written, and quarantine the workspace',
        cause: err,
      });
    }
    throw err;
  }
  return { entries, skipped };
}

/** False for an entry a copy skips. */
async function unpackEntry(entry: TarEntry, root: string): Promise<boolean> {
  const { header } = entry;
  const parts = archivePathComponents(header.path);
  if (parts.length === 0) return true; // `.` itself: the destination exists
  const path = (await resolveInRoot(root, parts, { createMissing: true, followLast: false })) as string;
  const existing = await lstat(path).catch(() => null);
  const mode = header.mode & PERMISSIONS;
  switch (header.type) {
    case 'directory':
      if (existing?.isDirectory() !== true) {
        if (existing !== null) await rm(path, { force: true });
        await mkdir(path, { mode: 0o700 });
      }
      // Writable by us whatever the archive says: later entries go inside it.
      await chmod(path, mode | 0o700);
      return true;
    case 'file': {
      await replace(path, existing);
      const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      await pipeline(entry.body, handle.createWriteStream());
      await chmod(path, mode);
      await utimes(path, header.mtime, header.mtime);
      return true;
    }
    case 'symlink':
      await replace(path, existing);
      await symlink(header.linkname, path);
      return true;
    case 'hardlink': {
      const target = await resolveInRoot(root, archivePathComponents(header.linkname), { createMissing: false, followLast: false });
      const targetInfo = target === null ? null : await lstat(target).catch(() => null);
      if (target === null || targetInfo === null || !targetInfo.isFile()) {
        throw new MicroagentError('invalid', `the workspace sent a hardlink ${JSON.stringify(header.path)} to ${JSON.stringify(header.linkname)}, which is not an earlier file of the copy`, {
          code: 'cp.bad_hardlink',
          remediation: 'copy the files the link names, or the folder that holds both',
        });
      }
      if (target !== path) {
        await replace(path, existing);
        await link(target, path);
      }
      return true;
    }
    case 'char':
    case 'block':
    case 'fifo':
      return false;
    default: {
      const never: never = header.type;
      throw new Error(`unhandled tar entry type ${String(never)}`);
    }
  }
}

/** Removes what stands at path (a file, a symlink, a folder the copy replaces with a file). */
async function replace(path: string, existing: Awaited<ReturnType<typeof lstat>> | null): Promise<void> {
  if (existing !== null) await rm(path, { recursive: existing.isDirectory(), force: true });
}
