/**
 * Spawning a workspace's supervisor (src/vm/supervisor/main.ts): detached, so it outlives the CLI call,
 * and told which workspace to run (and whether to probe its shell) only by one line on its stdin. A caller can therefore spawn it before
 * the workspace exists: node's start-up, the supervisor's module loading and its boot assets
 * (together a few hundred milliseconds on the way to the guest's boot) overlap the caller's own work,
 * such as `run` building the workspace's disk. A supervisor never named exits and removes its log.
 * It reports on fd 3, one word per line: `control` when its control socket listens (`listening`), then
 * `running` or `failed` once the start's outcome is recorded (`settled`).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { PACKAGE_ROOT } from '../../paths.js';
import { deferExtraCaCerts } from '../../tls-trust.js';
import { splitLines } from '../supervisor/protocol.js';
import type { LaunchRequest } from '../supervisor/supervisor.js';
import { workspacePaths, workspacesRoot } from './store.js';
import { makeDirs } from '../../make-dirs.js';

// The supervisor's bundle (package.json "build": esbuild over dist/vm/supervisor/main.js): one file
// instead of ~60 modules, so node loads it ~15-25 ms sooner on the way to QEMU's spawn.
const SUPERVISOR_MAIN = join(PACKAGE_ROOT, 'dist', 'supervisor', 'main.js');

/** How a start settled: recorded as running, recorded as failed, or the supervisor died first. */
export type StartOutcome = 'running' | 'failed' | 'gone';

export interface SupervisorProcess {
  readonly pid: number;
  /** Resolves true once the workspace's control socket listens (requests wait behind its start gate), false if the start ended first. */
  readonly listening: Promise<boolean>;
  /** Resolves once the start has settled (running, or failed and recorded) or the supervisor is gone. */
  readonly settled: Promise<StartOutcome>;
  /** Resolves when the supervisor process has exited (while this process lives to see it). */
  readonly exited: Promise<void>;
  /** Names the workspace to run (a pending log becomes that workspace's supervisor.log). */
  launch(request: LaunchRequest): Promise<void>;
  /** The workspace will not be started: the supervisor exits and removes its log. */
  cancel(): void;
  /** After launch: stop listening to its progress, so this process may end while the supervisor goes on. */
  detach(): void;
}

/**
 * Spawns a supervisor that waits for its workspace's name. Its output is appended to `logPath` (an
 * existing workspace's supervisor.log), or, for a workspace not created yet, goes to a pending log
 * beside the workspaces that `launch` moves into the new workspace, which has no log of its own yet.
 */
export async function spawnSupervisor(stateDir: string, logPath?: string): Promise<SupervisorProcess> {
  makeDirs(workspacesRoot(stateDir), 0o700);
  // A dot file: workspace listings only see directories with valid names.
  const pendingLog = logPath === undefined ? join(workspacesRoot(stateDir), `.supervisor-${randomBytes(6).toString('hex')}.log`) : null;
  const log = await open(logPath ?? (pendingLog as string), 'a', 0o600);
  const args = pendingLog === null ? [SUPERVISOR_MAIN, stateDir] : [SUPERVISOR_MAIN, stateDir, pendingLog];
  // fd 3: the supervisor reports the start's progress there, so nobody polls for it.
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
  let listen!: (listening: boolean) => void;
  let settle!: (outcome: StartOutcome) => void;
  const listening = new Promise<boolean>((resolve) => (listen = resolve));
  const settled = new Promise<StartOutcome>((resolve) => (settle = resolve));
  const end = (outcome: StartOutcome) => {
    listen(false);
    settle(outcome);
    report.destroy();
  };
  let pending = '';
  report.setEncoding('utf8');
  report.on('data', (chunk: string) => {
    const { lines, rest } = splitLines(pending, chunk);
    pending = rest;
    for (const line of lines) {
      if (line === 'control') listen(true);
      else if (line === 'running' || line === 'failed') end(line);
    }
  });
  report.once('end', () => end('gone')).once('error', () => end('gone'));
  return {
    pid,
    listening,
    settled,
    exited,
    async launch(request) {
      if (pendingLog !== null) await rename(pendingLog, workspacePaths(stateDir, request.name).supervisorLog);
      stdin.end(`${JSON.stringify(request)}\n`);
    },
    cancel() {
      stdin.end();
    },
    detach() {
      report.removeAllListeners();
      report.on('error', () => undefined);
      report.destroy();
    },
  };
}
