/**
 * Spawning a workspace's supervisor (src/vm/supervisor/main.ts): detached, so it outlives the CLI call,
 * and told which workspace to run (and whether to probe its shell) only by one line on its stdin. A caller can therefore spawn it before
 * the workspace exists: node's start-up, the supervisor's module loading and its boot assets
 * (together a few hundred milliseconds on the way to the guest's boot) overlap the caller's own work,
 * such as `run` building the workspace's disk. A supervisor never named exits and removes its log.
 * It reports on fd 3 when the start has settled; see `settled`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { PACKAGE_ROOT } from '../../paths.js';
import { deferExtraCaCerts } from '../../tls-trust.js';
import type { LaunchRequest } from '../supervisor/supervisor.js';
import { workspacePaths, workspacesRoot } from './store.js';

// The supervisor's bundle (package.json "build": esbuild over dist/vm/supervisor/main.js): one file
// instead of ~60 modules, so node loads it ~15-25 ms sooner on the way to QEMU's spawn.
const SUPERVISOR_MAIN = join(PACKAGE_ROOT, 'dist', 'supervisor', 'main.js');

export interface SupervisorProcess {
  readonly pid: number;
  /** Resolves once the start has settled (running, or failed and recorded) or the supervisor is gone. */
  readonly settled: Promise<void>;
  /** Resolves when the supervisor process has exited (while this process lives to see it). */
  readonly exited: Promise<void>;
  /** Names the workspace to run (a pending log becomes that workspace's supervisor.log). */
  launch(request: LaunchRequest): Promise<void>;
  /** The workspace will not be started: the supervisor exits and removes its log. */
  cancel(): void;
}

/**
 * Spawns a supervisor that waits for its workspace's name. Its output is appended to `logPath` (an
 * existing workspace's supervisor.log), or, for a workspace not created yet, goes to a pending log
 * beside the workspaces that `launch` moves into the new workspace, which has no log of its own yet.
 */
export async function spawnSupervisor(stateDir: string, logPath?: string): Promise<SupervisorProcess> {
  await mkdir(workspacesRoot(stateDir), { recursive: true, mode: 0o700 });
  // A dot file: workspace listings only see directories with valid names.
  const pendingLog = logPath === undefined ? join(workspacesRoot(stateDir), `.supervisor-${randomBytes(6).toString('hex')}.log`) : null;
  const log = await open(logPath ?? (pendingLog as string), 'a', 0o600);
  const args = pendingLog === null ? [SUPERVISOR_MAIN, stateDir] : [SUPERVISOR_MAIN, stateDir, pendingLog];
  // fd 3: the supervisor writes one line there when the start has settled, so nobody polls for it.
  const child = spawn(process.execPath, args, { detached: true, stdio: ['pipe', log.fd, log.fd, 'pipe'], env: deferExtraCaCerts(process.env) });
  const spawned = new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid as number));
    child.once('error', reject);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.unref();
  const stdin = child.stdin as NodeJS.WritableStream;
  // A supervisor that died before its name arrived makes the write fail; the start then reports its log.
  stdin.on('error', () => undefined);
  const pid = await spawned.finally(() => log.close());
  const report = child.stdio[3] as Readable;
  const settled = new Promise<void>((resolve) => {
    const done = () => {
      report.destroy();
      resolve();
    };
    report.once('data', done).once('end', done).once('error', done);
  });
  return {
    pid,
    settled,
    exited,
    async launch(request) {
      if (pendingLog !== null) await rename(pendingLog, workspacePaths(stateDir, request.name).supervisorLog);
      stdin.end(`${JSON.stringify(request)}\n`);
    },
    cancel() {
      stdin.end();
    },
  };
}
