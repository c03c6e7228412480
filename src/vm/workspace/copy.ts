/**
 * `microagent cp`: a file or a tree into or out of a running workspace, as a tar stream through exec
 * (stdin in, stdout out): nothing of the host is mounted into the guest. The guest's tar (busybox and
 * every distribution have one) does its end; on the host, the host's tar packs what goes in, and what
 * comes out is unpacked by guest-archive.ts, which trusts nothing in it. The copy lands in a directory,
 * keeping its name, as `cp -r SRC DIR/` does.
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { MicroagentError } from '../../errors.js';
import { makeDirs } from '../../make-dirs.js';
import { hostTool } from '../host-tools.js';
import { unpackGuestArchive } from './guest-archive.js';
import { execInWorkspace } from './service.js';

/** `NAME:PATH` names a path in a workspace; anything else is a host path. */
export type CopyEnd = { readonly workspace: string; readonly path: string } | { readonly workspace: null; readonly path: string };

export function parseCopyEnd(text: string): CopyEnd {
  const colon = text.indexOf(':');
  // A host path with a colon in it can be given as ./a:b; a workspace name never holds a slash.
  if (colon <= 0 || text.slice(0, colon).includes('/')) return { workspace: null, path: text };
  const path = text.slice(colon + 1);
  if (!path.startsWith('/')) {
    throw new MicroagentError('invalid', `"${text}": a path in a workspace must be absolute`, {
      code: 'usage',
      remediation: `write it as ${text.slice(0, colon)}:/${path}`,
    });
  }
  return { workspace: text.slice(0, colon), path };
}

export interface CopyResult {
  readonly workspace: string;
  readonly from: string;
  readonly into: string;
  readonly bytes: number;
}

/** Copies host `source` into the guest directory `guestDir` (made if missing). */
export async function copyIntoWorkspace(stateDir: string, name: string, source: string, guestDir: string): Promise<CopyResult> {
  const from = resolve(source);
  if (!existsSync(from)) {
    throw new MicroagentError('not_found', `nothing to copy at ${from}`, { code: 'cp.source_missing', remediation: 'check the host path' });
  }
  // `./NAME`: a name starting with "-" must not read as an option, on either side.
  const pack = spawn(hostTool('tar'), ['-c', '-C', dirname(from), `./${basename(from)}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Counted on the way through: a 'data' listener on tar's own stdout would start it flowing before
  // the exec reads it, and those bytes would be lost.
  let bytes = 0;
  const archive = pack.stdout.pipe(new Transform({ transform: (chunk: Buffer, _enc, done) => done(null, ((bytes += chunk.length), chunk)) }));
  const packed = packedOnHost(pack);
  const guestErr: Buffer[] = [];
  let exit;
  try {
    exit = await execInWorkspace(stateDir, name, {
      argv: ['sh', '-c', 'mkdir -p -- "$1" && exec tar -x -C "$1"', 'sh', guestDir],
      stdin: archive,
      onStdout: () => undefined,
      onStderr: (d) => guestErr.push(d),
    });
    guestFailed(exit, guestErr, `unpacking into ${name}:${guestDir}`);
  } catch (err) {
    pack.kill(); // nobody reads its pipe any more
    packed.catch(() => undefined);
    throw err;
  }
  // The guest's tar may stop at the archive's end marker, before the host tar's trailing padding.
  archive.resume();
  await packed;
  return { workspace: name, from, into: `${name}:${guestDir}`, bytes };
}

/**
 * Copies the guest path `guestPath` into the host directory `hostDir` (made if missing). The guest's
 * archive is unpacked by guest-archive.ts, not by the host's tar: it comes from inside the sandbox.
 */
export async function copyOutOfWorkspace(stateDir: string, name: string, guestPath: string, hostDir: string): Promise<CopyResult> {
  const entry = basename(guestPath.replace(/\/+$/, ''));
  if (entry === '') {
    throw new MicroagentError('invalid', `"${name}:${guestPath}" is the guest's whole root filesystem`, {
      code: 'usage',
      remediation: `copy the folders you need, e.g. microagent cp ${name}:/root ${hostDir}`,
    });
  }
  const into = resolve(hostDir);
  if (statSync(into, { throwIfNoEntry: false })?.isDirectory() === false) {
    throw new MicroagentError('invalid', `${into} is a file, and cp copies into a directory (the copy keeps its name, ${entry})`, {
      code: 'usage',
      remediation: `give the directory to copy into, e.g. microagent cp ${name}:${guestPath} ${dirname(into)}`,
    });
  }
  makeDirs(into);
  const archive = new PassThrough();
  const unpacked = unpackGuestArchive(archive, into);
  // Awaited below, after the exec's own failure is known; once it has refused the archive, the rest
  // of what the guest sends is dropped, not kept in memory.
  let refused = false;
  unpacked.catch(() => (refused = true));
  let bytes = 0;
  const guestErr: Buffer[] = [];
  const exit = await execInWorkspace(stateDir, name, {
    argv: ['tar', '-c', '-C', guestDir(guestPath), `./${entry}`],
    onStdout: (d) => {
      bytes += d.length;
      if (!refused) archive.write(d);
    },
    onStderr: (d) => guestErr.push(d),
  }).finally(() => archive.end());
  guestFailed(exit, guestErr, `packing ${name}:${guestPath}`);
  await unpacked;
  return { workspace: name, from: `${name}:${guestPath}`, into, bytes };
}

function guestDir(path: string): string {
  return dirname(path.replace(/\/+$/, ''));
}

function guestFailed(exit: { code: number | null; signal: string | null }, stderr: Buffer[], what: string): void {
  if (exit.code === 0) return;
  const said = Buffer.concat(stderr).toString('utf8').trim();
  throw new MicroagentError('invalid', `${what} failed in the guest: ${said || (exit.signal ?? `exit code ${exit.code}`)}`, {
    code: 'cp.guest_failed',
    remediation: exit.code === 127 ? 'the image needs sh and tar (busybox has both)' : 'check the path in the workspace (microagent exec NAME -- ls -la PATH)',
  });
}

/** The host tar's end, its stderr said when it fails (a file it cannot read). */
function packedOnHost(tar: ReturnType<typeof spawn>): Promise<void> {
  const err: Buffer[] = [];
  tar.stderr?.on('data', (d: Buffer) => err.push(d));
  return new Promise((ok, fail) =>
    tar.on('close', (code) => {
      if (code === 0) return ok();
      const said = Buffer.concat(err).toString('utf8').trim() || `tar exited ${code}`;
      fail(new MicroagentError('invalid', `packing on the host failed: ${said}`, { code: 'cp.host_failed', remediation: 'check the host path and its permissions' }));
    }),
  );
}
