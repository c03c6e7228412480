/**
 * Image ownership for a build that cannot chown (microagent run by a user who is not root). The layer
 * applier records each entry's owner in an OwnerLedger instead; once mke2fs has copied the staging
 * tree (with the builder's ids), debugfs writes the recorded owners into the new filesystem's inodes.
 * A path no entry named (a parent a layer left implicit) gets root, as a root build gives it.
 */
import { spawn } from 'node:child_process';
import { lstat, readdir } from 'node:fs/promises';
import { MicroagentError } from '../../errors.js';
import { childLog } from '../../log.js';
import { hostTool, toolFailure } from '../host-tools.js';

const log = childLog('rootfs');

interface Owner {
  readonly uid: number;
  readonly gid: number;
}

const ROOT_OWNER: Owner = { uid: 0, gid: 0 };

/** Owners the layers asked for, by absolute staging path, kept in step with removals. */
export class OwnerLedger {
  private readonly owners = new Map<string, Owner>();

  record(path: string, uid: number, gid: number): void {
    this.owners.set(path, { uid, gid });
  }

  /** A removed path takes its recorded owner along, and (for a directory) those of everything below it. */
  forget(path: string, directory: boolean): void {
    this.owners.delete(path);
    if (!directory) return;
    const prefix = `${path}/`;
    for (const key of this.owners.keys()) if (key.startsWith(prefix)) this.owners.delete(key);
  }

  ownerOf(path: string): Owner {
    return this.owners.get(path) ?? ROOT_OWNER;
  }
}

/**
 * A path as a debugfs argument: double-quoted, an inner quote doubled (its parser's rule). A newline
 * cannot be said at all in a line-based command file: null.
 */
function debugfsPath(path: string): string | null {
  return path.includes('\n') ? null : `"${path.replaceAll('"', '""')}"`;
}

/**
 * debugfs commands giving every inode below root its recorded owner, where the staged one differs.
 * A hardlinked inode is set once, through the first of its paths seen (each was recorded with the
 * inode's owner).
 */
async function ownerCommands(root: string, ledger: OwnerLedger): Promise<{ commands: string[]; unnameable: string[] }> {
  const commands: string[] = [];
  const unnameable: string[] = [];
  const seen = new Set<number>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = `${dir}/${name}`;
      const info = await lstat(path);
      if (info.nlink > 1 && !info.isDirectory()) {
        if (seen.has(info.ino)) continue;
        seen.add(info.ino);
      }
      const owner = ledger.ownerOf(path);
      if (owner.uid !== info.uid || owner.gid !== info.gid) {
        const inImage = debugfsPath(path.slice(root.length));
        if (inImage === null) unnameable.push(path.slice(root.length));
        else commands.push(`sif ${inImage} uid ${owner.uid}`, `sif ${inImage} gid ${owner.gid}`);
      }
      if (info.isDirectory()) await walk(path);
    }
  };
  await walk(root);
  return { commands, unnameable };
}

/** Writes the ledger's owners into imagePath, an ext4 filesystem mke2fs built from root. */
export async function applyOwners(root: string, ledger: OwnerLedger, imagePath: string): Promise<void> {
  const { commands, unnameable } = await ownerCommands(root, ledger);
  if (unnameable.length > 0) {
    log.warn({ paths: unnameable.slice(0, 5), count: unnameable.length }, 'paths whose names hold a newline keep the builder\'s owner (build as root to preserve them)');
  }
  if (commands.length === 0) return;
  const stderr = await debugfs(imagePath, `${commands.join('\n')}\n`);
  // debugfs exits 0 whatever a command said; its only other stderr line is its banner.
  const complaints = stderr.split('\n').filter((line) => line !== '' && !line.startsWith('debugfs '));
  if (complaints.length > 0) throw toolFailure('debugfs (setting the image\'s owners)', complaints.join('\n'), 'image.tool_failed', imagePath);
}

function debugfs(imagePath: string, script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(hostTool('debugfs'), ['-w', '-f', '-', imagePath], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (err) =>
      reject(new MicroagentError('unsupported', `debugfs could not be started: ${err.message}`, {
        code: 'image.tool_missing', remediation: 'Install e2fsprogs (scripts/setup.sh does).', cause: err,
      })),
    );
    child.on('close', (code) => (code === 0 ? resolve(stderr) : reject(toolFailure(`debugfs (exit ${code})`, stderr, 'image.tool_failed', imagePath))));
    child.stdin.end(script);
  });
}
