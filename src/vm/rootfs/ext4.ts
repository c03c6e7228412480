/**
 * Builds an ext4 filesystem image from a staging directory with `mke2fs -d` (e2fsprogs), sized from the
 * content plus headroom, and copies it for workspaces. The image file is sparse; a cached base image is
 * only ever read here, never opened for writing.
 */
import { spawn } from 'node:child_process';
import { lstat, open, readdir, rename, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../../errors.js';
import { hostTool, toolFailure } from '../host-tools.js';

const MiB = 1 << 20;
const BLOCK = 4096;

export interface Ext4SizeOptions {
  /** Smallest image (default 256 MiB; sparse, so unused space costs nothing on disk). */
  readonly minSizeBytes?: number;
  /** Free space added on top of the content (default: a quarter of the content plus 64 MiB). */
  readonly headroomBytes?: number;
}

interface ContentUsage {
  bytes: number;
  inodes: number;
}

async function measure(dir: string, usage: ContentUsage): Promise<void> {
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const info = await lstat(path);
    usage.inodes++;
    usage.bytes += Math.ceil(info.size / BLOCK) * BLOCK + (info.isDirectory() ? BLOCK : 0);
    if (info.isDirectory()) await measure(path, usage);
  }
}

export function run(command: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(hostTool(command), args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: Buffer[] = [];
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (err) =>
      reject(
        new MicroagentError('unsupported', `${command} could not be started: ${err.message}`, {
          code: 'image.tool_missing',
          remediation: 'Install e2fsprogs and coreutils (scripts/setup.sh does).',
          cause: err,
        }),
      ),
    );
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(toolFailure(`${command} (exit ${code})`, Buffer.concat(stderr).toString(), 'image.tool_failed', args.at(-1) ?? command));
    });
  });
}

/** Creates `imagePath` (which must not exist) as an ext4 filesystem holding the staging tree. */
export async function buildExt4(staging: string, imagePath: string, opts: Ext4SizeOptions = {}): Promise<{ sizeBytes: number; contentBytes: number }> {
  const usage: ContentUsage = { bytes: 0, inodes: 1 };
  await measure(staging, usage);
  const headroom = opts.headroomBytes ?? Math.ceil(usage.bytes / 4) + 64 * MiB;
  const wanted = Math.max(opts.minSizeBytes ?? 256 * MiB, usage.bytes + headroom);
  const sizeBytes = Math.ceil(wanted / MiB) * MiB;
  // Room for the image's files and as many again created by the workspace, at least 64k inodes.
  const inodes = Math.max(65536, usage.inodes * 2);
  const handle = await open(imagePath, 'wx', 0o644);
  await handle.truncate(sizeBytes);
  await handle.close();
  // A fresh sparse file reads as zeros, so lazy inode-table and journal init are safe and much faster.
  await run('mke2fs', [
    '-q', '-F', '-t', 'ext4', '-b', String(BLOCK), '-N', String(inodes), '-L', 'rootfs',
    '-E', 'root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1',
    '-d', staging, imagePath, `${sizeBytes / 1024}k`,
  ]);
  return { sizeBytes, contentBytes: usage.bytes };
}

export interface WorkspaceDiskOptions {
  /** Grow the copy (file and filesystem, with resize2fs) to this size; never shrinks. */
  readonly sizeBytes?: number;
}

/**
 * A private, writable copy of a cached base image for one workspace: reflinked where the filesystem
 * allows it, sparse otherwise, optionally grown, written under a temporary name and renamed into place.
 */
export async function prepareWorkspaceDisk(base: string, dest: string, opts: WorkspaceDiskOptions = {}): Promise<{ sizeBytes: number }> {
  const exists = await lstat(dest).then(() => true, () => false);
  if (exists) {
    throw new MicroagentError('conflict', `workspace disk ${dest} already exists`, {
      code: 'image.disk_exists',
      remediation: 'Remove the workspace (or its disk) first, or use another workspace name.',
    });
  }
  const partial = `${dest}.partial-${process.pid}`;
  try {
    await run('cp', ['--reflink=auto', '--sparse=always', '--', base, partial]);
    let sizeBytes = (await lstat(partial)).size;
    if (opts.sizeBytes !== undefined && opts.sizeBytes > sizeBytes) {
      sizeBytes = Math.ceil(opts.sizeBytes / MiB) * MiB;
      await truncate(partial, sizeBytes);
      await run('resize2fs', ['-f', partial]);
    }
    await rename(partial, dest);
    return { sizeBytes };
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}
