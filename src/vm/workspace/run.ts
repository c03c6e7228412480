/**
 * `microagent run`: a throwaway workspace for one command. Create, start, exec the image's command,
 * kill, delete; the audit log is kept under `<stateDir>/runs/NAME/` so the run's decisions outlive it.
 * The guest boots the cached image read-only and its writes are lost with the VM: no disk copy.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditSummary } from '../../audit/query.js';
import { MicroagentError } from '../../errors.js';
import type { CreateOptions } from './service.js';
import type { ExecOptions, ExecResult } from '../supervisor/control-client.js';
import { parseWorkspaceFlags } from './options.js';
import { readManifest, runLogsDir, workspacePaths, type WorkspaceManifest } from './store.js';
import { spawnSupervisor, type SupervisorProcess } from './supervisor-process.js';

/** How long a supervisor may take to end the workspace after its command and exit, before `kill` is sent. */
const SUPERVISOR_EXIT_MS = 10_000;

export interface RunOptions extends CreateOptions {
  readonly onStdout: (data: Buffer) => void;
  readonly onStderr: (data: Buffer) => void;
  readonly stdin?: NodeJS.ReadableStream;
  /** Run the command on a terminal (see the control client's exec). */
  readonly tty?: ExecOptions['tty'];
  readonly timeoutMs?: number;
  /** Aborting (Ctrl-C) kills the workspace and removes it, keeping its audit log. */
  readonly signal?: AbortSignal;
}

export interface RunResult {
  readonly workspace: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** The guest killed the command when `timeoutMs` ran out. */
  readonly timedOut: boolean;
  readonly timings: { readonly createMs: number; readonly startMs: number; readonly firstOutputMs: number | null; readonly totalMs: number };
  readonly audit: string;
  readonly auditSummary: AuditSummary;
}

export async function runInWorkspace(stateDir: string, options: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const name = `run-${randomBytes(4).toString('hex')}`;
  parseWorkspaceFlags(options); // before a supervisor is spawned for nothing
  // Spawned first, so its start-up overlaps creating the workspace; the rest of the workspace code
  // loads after the spawn, while the supervisor's node starts (~15 ms sooner on its way to QEMU).
  const supervisor = await spawnSupervisor(stateDir);
  const { createWorkspace, deleteWorkspace, execAtStart, sendSignal, startWorkspace } = await import('./service.js');
  let manifest: WorkspaceManifest;
  try {
    manifest = await createWorkspace(stateDir, name, { ...options, throwawayDisk: true });
  } catch (err) {
    supervisor.cancel();
    throw err;
  }
  const created = performance.now();
  let started = created;
  let firstOutput: number | null = null;
  const first = () => {
    firstOutput ??= performance.now();
  };
  let exit: ExecResult = { code: null, signal: null, timedOut: false };
  let endedWithCommand = false;
  let failure: unknown = null;
  let auditQuery: Promise<typeof import('../../audit/query.js')> | null = null;
  try {
    const { argv } = manifest.config.run;
    if (argv.length === 0) {
      supervisor.cancel();
      throw new MicroagentError('invalid', 'the image defines no Entrypoint or Cmd, and no command was given', {
        code: 'image.no_command',
        remediation: 'give a command after "--", e.g. microagent run IMAGE -- /bin/sh -c "echo hi"',
      });
    }
    const interrupted = new Promise<never>((_, reject) => {
      const stop = () =>
        reject(new MicroagentError('transient', `run interrupted: workspace ${name} was killed and removed`, { code: 'run.interrupted', remediation: 'its audit log is kept under the runs/ directory of the state directory' }));
      if (options.signal?.aborted === true) stop();
      options.signal?.addEventListener('abort', stop, { once: true });
    });
    // Ctrl-C during the boot is acted on once the start has settled (a starting workspace takes no
    // kill): until the race below, nobody else listens.
    interrupted.catch(() => undefined);
    // The command goes to the supervisor while the guest boots: it starts the moment the guest is
    // configured, and the supervisor kills the workspace when it exits. No /bin/sh probe before it:
    // that would only delay the command (and cold-load a shell it may not use).
    const command = execAtStart(stateDir, manifest, supervisor, {
      argv,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
      ...(options.tty === undefined ? {} : { tty: options.tty }),
      onStdout: (d) => {
        first();
        options.onStdout(d);
      },
      onStderr: (d) => {
        first();
        options.onStderr(d);
      },
    });
    command.catch(() => undefined); // a failed start is reported by the start
    await startWorkspace(stateDir, name, { supervisor, shellProbe: false });
    started = performance.now();
    exit = await Promise.race([interrupted, command]);
    endedWithCommand = true;
  } catch (err) {
    failure = err;
  } finally {
    // Loaded while the VM is torn down: nothing on the way to the boot needs the audit reader.
    auditQuery = import('../../audit/query.js');
    // After the command, the supervisor kills the workspace itself; `kill` is for every other ending.
    if (!(endedWithCommand && (await exitsWithin(supervisor, SUPERVISOR_EXIT_MS)))) {
      const { state } = await readManifest(stateDir, name);
      if (state !== 'prepared' && state !== 'stopped' && state !== 'failed') {
        await sendSignal(stateDir, name, 'kill', supervisor.exited).catch(() => undefined);
      }
    }
  }
  // A failed run is thrown away like a successful one; its logs move next to its audit log.
  const kept = await deleteWhenSupervisorGone(stateDir, name, () => deleteWorkspace(stateDir, name, failure === null ? [] : ['supervisor.log', 'serial.log']));
  if (failure !== null) throw pointAt(failure, workspacePaths(stateDir, name).dir, kept);
  return {
    workspace: name,
    exitCode: exit.code,
    signal: exit.signal,
    timedOut: exit.timedOut,
    timings: {
      createMs: Math.round(created - t0),
      startMs: Math.round(started - created),
      firstOutputMs: firstOutput === null ? null : Math.round(firstOutput - t0),
      totalMs: Math.round(performance.now() - t0),
    },
    audit: join(kept, 'audit.jsonl'),
    auditSummary: await (await auditQuery).summarizeAuditLog(join(kept, 'audit.jsonl')),
  };
}

/** Whether the supervisor exits within `ms`; the timer also keeps this process up to see its exit event. */
async function exitsWithin(supervisor: SupervisorProcess, ms: number): Promise<boolean> {
  const timer = new AbortController();
  const timedOut = sleep(ms, false, { signal: timer.signal }).catch(() => false);
  try {
    return await Promise.race([supervisor.exited.then(() => true), timedOut]);
  } finally {
    timer.abort();
  }
}

/**
 * Deletes the workspace, keeping its logs (see deleteWorkspace), and returns where they are. A
 * supervisor that failed to start may still be closing its mediator: delete is refused until it
 * exits. A `gc` that took the workspace first has kept the logs in the same place.
 */
async function deleteWhenSupervisorGone(stateDir: string, name: string, deleteWorkspace: () => Promise<string | null>): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      return (await deleteWorkspace()) ?? runLogsDir(stateDir, name);
    } catch (err) {
      const gone = (err as MicroagentError).kind === 'not_found' || (err as NodeJS.ErrnoException).code === 'ENOENT';
      if (gone && existsSync(runLogsDir(stateDir, name))) return runLogsDir(stateDir, name);
      if ((err as MicroagentError).kind !== 'conflict' || attempt >= 100) throw err;
      await sleep(100);
    }
  }
}

/** The error of a failed run, its remediation pointing at the kept logs instead of the deleted workspace. */
function pointAt(err: unknown, workspaceDir: string, kept: string): unknown {
  if (!(err instanceof MicroagentError) || !err.remediation.includes(workspaceDir)) return err;
  return new MicroagentError(err.kind, err.message, {
    remediation: err.remediation.replaceAll(workspaceDir, kept),
    code: err.code,
    retryable: err.retryable,
    cause: err,
  });
}
