/**
 * `microagent run`: a throwaway workspace for one command. Create, start, exec the image's command,
 * kill, delete; the audit log is kept under `<stateDir>/runs/NAME/` so the run's decisions outlive it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { summarizeAuditLog, type AuditSummary } from '../../audit/index.js';
import { MicroagentError } from '../../errors.js';
import { readManifest, workspacePaths } from './store.js';
import { createWorkspace, deleteWorkspace, execInWorkspace, signalWorkspace, startWorkspace, type CreateOptions } from './service.js';

export interface RunOptions extends CreateOptions {
  readonly onStdout: (data: Buffer) => void;
  readonly onStderr: (data: Buffer) => void;
  readonly stdin?: NodeJS.ReadableStream;
  readonly timeoutMs?: number;
}

export interface RunResult {
  readonly workspace: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly timings: { readonly createMs: number; readonly startMs: number; readonly firstOutputMs: number | null; readonly totalMs: number };
  readonly audit: string;
  readonly auditSummary: AuditSummary;
}

export async function runInWorkspace(stateDir: string, options: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const name = `run-${randomBytes(4).toString('hex')}`;
  await createWorkspace(stateDir, name, options);
  const created = performance.now();
  let started = created;
  let firstOutput: number | null = null;
  const first = () => {
    firstOutput ??= performance.now();
  };
  let exit: { code: number | null; signal: string | null } = { code: null, signal: null };
  try {
    await startWorkspace(stateDir, name);
    started = performance.now();
    const { run } = (await readManifest(stateDir, name)).config;
    if (run.argv.length === 0) {
      throw new MicroagentError('invalid', 'the image defines no Entrypoint or Cmd, and no command was given', {
        code: 'image.no_command',
        remediation: 'give a command after "--", e.g. microagent run IMAGE -- /bin/sh -c "echo hi"',
      });
    }
    exit = await execInWorkspace(stateDir, name, {
      argv: run.argv,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
      onStdout: (d) => {
        first();
        options.onStdout(d);
      },
      onStderr: (d) => {
        first();
        options.onStderr(d);
      },
    });
  } finally {
    const manifest = await readManifest(stateDir, name);
    if (manifest.state !== 'prepared' && manifest.state !== 'stopped' && manifest.state !== 'failed') {
      await signalWorkspace(stateDir, name, 'kill').catch(() => undefined);
    }
  }
  const audit = await keepAuditLog(stateDir, name);
  await deleteWorkspace(stateDir, name);
  return {
    workspace: name,
    exitCode: exit.code,
    signal: exit.signal,
    timings: {
      createMs: Math.round(created - t0),
      startMs: Math.round(started - created),
      firstOutputMs: firstOutput === null ? null : Math.round(firstOutput - t0),
      totalMs: Math.round(performance.now() - t0),
    },
    audit,
    auditSummary: await summarizeAuditLog(audit),
  };
}

/** Moves every segment of the workspace's audit log to `<stateDir>/runs/NAME/`. */
async function keepAuditLog(stateDir: string, name: string): Promise<string> {
  const paths = workspacePaths(stateDir, name);
  const dest = join(stateDir, 'runs', name);
  await mkdir(dest, { recursive: true, mode: 0o700 });
  for (const f of await readdir(paths.dir)) {
    if (f.startsWith('audit.jsonl')) await rename(join(paths.dir, f), join(dest, f));
  }
  return join(dest, 'audit.jsonl');
}
