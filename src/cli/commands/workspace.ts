/** Workspace verbs: start, exec, cp, halt, pause, resume, stop, kill, quarantine, delete, status, stats, list, events, logs, egress, connect, wait, gc. */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { MicroagentError } from '../../errors.js';
import { parseTimeout } from '../../vm/workspace/options.js';
import { readEvents, readManifest, workspaceAuditLog, workspacePaths, type LifecycleEventRecord } from '../../vm/workspace/store.js';
import {
  deleteWorkspace,
  execInWorkspace,
  gcWorkspaces,
  listWorkspaces,
  signalWorkspace,
  startWorkspace,
  workspaceStats,
  workspaceStatus,
  type WorkspaceStatus,
} from '../../vm/workspace/service.js';
import type { WorkspaceStats } from '../../vm/workspace/stats.js';
import { copyIntoWorkspace, copyOutOfWorkspace, parseCopyEnd } from '../../vm/workspace/copy.js';
import { parseCommandArgs, timedOutWarning, usageError, type CliContext, type Command } from '../command.js';
import { table } from '../output.js';
import { hasTerminal, requireTerminal, userTerminal } from '../terminal.js';
import { warnIfKvmDenied } from './run.js';

function oneName(command: Command, positionals: readonly string[]): string {
  const [name, ...rest] = positionals;
  if (name === undefined || rest.length > 0) throw usageError(`${command.name}: expected one workspace NAME`, `usage: microagent ${command.name} ${command.usage}`);
  return name;
}

/** The policy decisions carry: the supervisor's while it runs (an invalid edit of the file is not loaded), else the file's. */
function policyText(s: WorkspaceStatus): string {
  if (s.policyInForce === null) return s.policyHash ?? '(policy.yaml is invalid: start will refuse it)';
  if (s.policyHash === null) return `${s.policyInForce} in force; policy.yaml was since edited into an invalid policy and not loaded (see its policy.reload record)`;
  return s.policyInForce;
}

function statusText(s: WorkspaceStatus): string {
  const lines = [
    `${s.name}  ${s.state}  (id ${s.id})`,
    `  image      ${s.image}`,
    `  network    ${s.network}, egress ${s.egress}, policy ${policyText(s)}`,
    `  resources  ${s.memoryMiB} MiB, ${s.cpus} vCPU`,
  ];
  if (s.policySource?.changed === true) {
    lines.push(`  note       ${s.policySource.path} changed since create; this workspace decides with its own copy: to apply the change, cp ${s.policySource.path} ${s.paths.policy}`);
  }
  if (s.runtime !== null) lines.push(`  runtime    ${s.runtime.runtimeId}, ${s.runtime.backend}/${s.runtime.accelerator}, VM pid ${s.runtime.vmPid ?? '-'}, supervisor pid ${s.runtime.supervisorPid}${s.supervisorAlive ? '' : ' (dead: run "microagent gc")'}`);
  if (s.readiness !== null && typeof s.readiness === 'object') {
    for (const [k, v] of Object.entries(s.readiness as Record<string, { ready: boolean; error?: string; detail?: string }>)) {
      lines.push(`  ${k.padEnd(15)}${v.ready ? 'ready' : 'not ready'}${v.error ? `: ${v.error}` : v.detail ? ` (${v.detail})` : ''}`);
    }
  }
  lines.push(`  audit      ${s.paths.audit}`);
  return lines.join('\n');
}

/** halt, pause, resume, stop, kill, quarantine: one shape, the supervisor does the work. */
function verbCommand(verb: 'halt' | 'pause' | 'resume' | 'stop' | 'kill' | 'quarantine', summary: string): Command {
  const command: Command = {
    name: verb,
    summary,
    usage: 'NAME',
    async run(args, ctx) {
      const { positionals } = parseCommandArgs(command, args, {});
      const status = await signalWorkspace(ctx.stateDir, oneName(command, positionals), verb);
      return { result: status, human: `${status.name}: ${status.state}` };
    },
  };
  return command;
}

const start: Command = {
  name: 'start',
  summary: 'Boot a prepared, halted or stopped workspace; returns when it is running',
  usage: 'NAME [--wait]',
  async run(args, ctx) {
    const { positionals } = parseCommandArgs(start, args, { wait: { type: 'boolean' } });
    const name = oneName(start, positionals);
    warnIfKvmDenied(ctx);
    const abort = new AbortController();
    void ctx.interrupted.then(() => abort.abort());
    await startWorkspace(ctx.stateDir, name, { signal: abort.signal });
    const status = await workspaceStatus(ctx.stateDir, name);
    return { result: status, human: statusText(status) };
  },
};

async function execCommand(command: Command, args: readonly string[], ctx: CliContext, interactive: boolean) {
  const dash = args.indexOf('--');
  const flags = dash < 0 ? args : args.slice(0, dash);
  const { values, positionals } = parseCommandArgs(command, flags, {
    env: { type: 'string', short: 'e', multiple: true },
    cwd: { type: 'string' },
    timeout: { type: 'string' },
    interactive: { type: 'boolean', short: 'i' },
    tty: { type: 'boolean', short: 't' },
  });
  const name = positionals[0];
  const argv = interactive ? ['/bin/sh', '-i'] : [...positionals.slice(1), ...(dash < 0 ? [] : args.slice(dash + 1))];
  if (name === undefined || argv.length === 0) throw usageError(`${command.name}: expected NAME and a command`, `usage: microagent ${command.name} ${command.usage}`);
  const timeoutMs = values.timeout === undefined ? undefined : parseTimeout(values.timeout);
  // connect gets the guest a terminal whenever the user has one; without, it is a line-mode shell.
  const terminal = values.tty === true ? requireTerminal(ctx, command.name, values.env ?? []) : interactive && hasTerminal(ctx) ? userTerminal(values.env ?? []) : null;
  const withStdin = interactive || values.interactive === true || terminal !== null;
  const stream = ctx.out.mode === 'ux';
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  terminal?.raw();
  const result = await execInWorkspace(ctx.stateDir, name, {
    argv,
    env: terminal?.env ?? values.env ?? [],
    ...(values.cwd === undefined ? {} : { cwd: values.cwd }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(withStdin ? { stdin: process.stdin } : {}),
    ...(terminal === null ? {} : { tty: terminal.tty }),
    // Ctrl-C (or a SIGTERM) goes to the command, which decides; a second Ctrl-C ends this CLI and,
    // with its connection, the command.
    signals: (forward) => void ctx.interrupted.then(forward),
    onStdout: (d) => (stream ? process.stdout.write(d) : out.push(d)),
    onStderr: (d) => (stream ? process.stderr.write(d) : err.push(d)),
  }).finally(() => terminal?.restore());
  if (withStdin) process.stdin.destroy();
  if (result.timedOut && timeoutMs !== undefined) ctx.out.warn(timedOutWarning(timeoutMs / 1000));
  return {
    result: { ...result, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') },
    human: '',
    exitCode: result.code ?? 1,
  };
}

const exec: Command = {
  name: 'exec',
  summary: "Run a command in a running workspace; exits with the command's exit code",
  usage: 'NAME [-e KEY=VAL]... [--cwd DIR] [--timeout SECONDS] [-i] [-t] -- CMD...',
  run: (args, ctx) => execCommand(exec, args, ctx, false),
};

const connect: Command = {
  name: 'connect',
  summary: 'Interactive shell in a running workspace over the guest agent, on a terminal when this one is',
  usage: 'NAME',
  run: (args, ctx) => execCommand(connect, args, ctx, true),
};

const del: Command = {
  name: 'delete',
  summary: 'Remove a workspace and its state (refused while its VM runs); a run\'s audit log is kept under runs/',
  usage: 'NAME',
  async run(args, ctx) {
    const { positionals } = parseCommandArgs(del, args, {});
    const name = oneName(del, positionals);
    const kept = await deleteWorkspace(ctx.stateDir, name);
    return { result: { deleted: name, ...(kept === null ? {} : { auditKeptIn: kept }) }, human: kept === null ? `deleted ${name}` : `deleted ${name}; its audit log is kept in ${kept}` };
  },
};

const cp: Command = {
  name: 'cp',
  summary: 'Copy a file or folder into a running workspace (NAME:DIR) or out of it (NAME:PATH to a host DIR), landing inside DIR under its own name',
  usage: 'SRC NAME:DIR | NAME:PATH DIR',
  async run(args, ctx) {
    const { positionals } = parseCommandArgs(cp, args, {});
    const [src, dest, ...rest] = positionals;
    if (src === undefined || dest === undefined || rest.length > 0) throw usageError('cp: expected SRC and DEST', `usage: microagent cp ${cp.usage}`);
    const from = parseCopyEnd(src);
    const to = parseCopyEnd(dest);
    let result;
    if (from.workspace === null && to.workspace !== null) result = await copyIntoWorkspace(ctx.stateDir, to.workspace, from.path, to.path);
    else if (from.workspace !== null && to.workspace === null) result = await copyOutOfWorkspace(ctx.stateDir, from.workspace, from.path, to.path);
    else throw usageError('cp: exactly one of SRC and DEST must be NAME:PATH in a workspace', `e.g. microagent cp ./src dev:/work, or microagent cp dev:/work/out ./results`);
    return { result, human: `copied ${result.from} into ${result.into} (${result.bytes} bytes of tar)` };
  },
};

/** status, stats: one workspace's NAME in, the library's view of it out, as JSON or as text. */
function viewCommand<T>(name: 'status' | 'stats', summary: string, view: (stateDir: string, name: string) => Promise<T>, text: (v: T) => string): Command {
  const command: Command = {
    name,
    summary,
    usage: 'NAME',
    async run(args, ctx) {
      const { positionals } = parseCommandArgs(command, args, {});
      const v = await view(ctx.stateDir, oneName(command, positionals));
      return { result: v, human: text(v), exitCode: 0 };
    },
  };
  return command;
}

function statsText(s: WorkspaceStats): string {
  const usage = (u: { pid: number; cpuSeconds: number; rssMiB: number }) => `pid ${u.pid}, CPU ${u.cpuSeconds} s, RSS ${u.rssMiB} MiB`;
  const mib = (bytes: number) => `${(bytes / 1_048_576).toFixed(1)} MiB`;
  const lines = [`${s.name}  ${s.state}`, `  VM         ${s.vm === null ? '-' : usage(s.vm)}`, `  supervisor ${usage(s.supervisor)}`];
  const e = s.egress;
  lines.push(
    e === null
      ? '  egress     - (no egress proxy: isolated, egress off, or quarantined)'
      : `  egress     ${e.requests} request(s), ${e.denied} denied; ${e.tunnels} tunnel(s), ${e.activeTunnels} open; ${mib(e.bytesUp)} up, ${mib(e.bytesDown)} down`,
  );
  for (const c of s.mediation?.channels ?? []) {
    lines.push(`  mediation  ${c.port} -> ${c.target}: ${c.accepted} connection(s), ${c.live} open; ${mib(c.bytesUp)} up, ${mib(c.bytesDown)} down${c.lastError === null ? '' : `; last error: ${c.lastError}`}`);
  }
  const g = s.guest;
  lines.push(
    g === null
      ? `  guest      - (${s.guestError ?? 'not available'})`
      : `  guest      load ${g.load.join(' ')}, memory ${(g.memoryTotalMiB - g.memoryAvailableMiB).toFixed(1)} of ${g.memoryTotalMiB} MiB in use, up ${g.uptimeSeconds} s`,
  );
  return lines.join('\n');
}


function listCommand(name: 'list' | 'ps'): Command {
  const command: Command = {
    name,
    summary: 'List workspaces',
    usage: '',
    async run(args, ctx) {
      parseCommandArgs(command, args, {}, false);
      const all = await listWorkspaces(ctx.stateDir, (err) => ctx.out.warn(`${err.message} (fix: ${err.remediation})`));
      const rows = all.map((s) => [s.name, s.state, s.egress, s.network, s.runtime?.vmPid?.toString() ?? '-', s.image]);
      return { result: all, human: all.length === 0 ? 'no workspaces' : table(['NAME', 'STATE', 'EGRESS', 'NETWORK', 'PID', 'IMAGE'], rows) };
    },
  };
  return command;
}

function eventLine(e: LifecycleEventRecord): string {
  return `${e.ts}  ${e.verb.padEnd(10)} ${(e.from ?? '-').padEnd(11)} -> ${e.state}${e.detail ? `  ${e.detail}` : ''}`;
}

/** Prints a file's new lines until interrupted (events, serial console). */
async function follow(path: string, from: number, ctx: CliContext, onText: (text: string) => void): Promise<void> {
  let offset = from;
  let stopped = false;
  void ctx.interrupted.then(() => (stopped = true));
  while (!stopped) {
    const size = await stat(path).then((s) => s.size, () => offset);
    if (size > offset) {
      const chunks: Buffer[] = [];
      for await (const c of createReadStream(path, { start: offset, end: size - 1 })) chunks.push(c as Buffer);
      offset = size;
      onText(Buffer.concat(chunks).toString('utf8'));
    }
    await sleep(200);
  }
}

const events: Command = {
  name: 'events',
  summary: "A workspace's lifecycle history",
  usage: 'NAME [-f]',
  async run(args, ctx) {
    const { values, positionals } = parseCommandArgs(events, args, { follow: { type: 'boolean', short: 'f' } });
    const name = oneName(events, positionals);
    await readManifest(ctx.stateDir, name);
    const list = await readEvents(ctx.stateDir, name);
    if (values.follow !== true) return { result: list, human: list.map(eventLine).join('\n') };
    for (const e of list) ctx.out.stream(ctx.out.mode === 'json' ? JSON.stringify(e) : eventLine(e));
    const path = workspacePaths(ctx.stateDir, name).events;
    await follow(path, (await stat(path)).size, ctx, (text) => {
      for (const line of text.split('\n').filter((l) => l !== '')) {
        ctx.out.stream(ctx.out.mode === 'json' ? line : eventLine(JSON.parse(line) as LifecycleEventRecord));
      }
    });
    return { result: null, human: '' };
  },
};

const logs: Command = {
  name: 'logs',
  summary: "A workspace's serial console",
  usage: 'NAME [-f]',
  async run(args, ctx) {
    const { values, positionals } = parseCommandArgs(logs, args, { follow: { type: 'boolean', short: 'f' } });
    const name = oneName(logs, positionals);
    await readManifest(ctx.stateDir, name);
    const path = workspacePaths(ctx.stateDir, name).serialLog;
    const text = await readFile(path, 'utf8').catch(() => '');
    if (values.follow !== true) return { result: { path, log: text }, human: text };
    process.stdout.write(text);
    await follow(path, Buffer.byteLength(text), ctx, (t) => process.stdout.write(t));
    return { result: null, human: '' };
  },
};

const egress: Command = {
  name: 'egress',
  summary: "A workspace's audit log through the audit query (or tail with -f): --verdict, --host, --rule, --signal, --event, --since, --until",
  usage: 'NAME [-f] [--verdict V] [--host GLOB] [--rule ID] [--signal S] [--event E] [--since T] [--until T]',
  async run(args, ctx) {
    // NAME first: the rest are audit query/tail flags, passed on untouched (a flag's value may look like a name).
    const [name, ...rest] = args;
    if (name === undefined || name.startsWith('-')) throw usageError('egress: expected the workspace NAME first', `usage: microagent egress ${egress.usage}`);
    const path = await workspaceAuditLog(ctx.stateDir, name);
    const followIt = rest.includes('-f') || rest.includes('--follow');
    // Loaded here, not at the top: the audit commands (verify, tail, checkpoint) would slow every other verb.
    const { commands: auditCommands } = await import('./audit.js');
    const delegate = auditCommands.find((c) => c.name === (followIt ? 'audit tail' : 'audit query'));
    if (delegate === undefined) throw new MicroagentError('internal', 'audit query command missing');
    return delegate.run([path, ...rest], ctx);
  },
};

const wait: Command = {
  name: 'wait',
  summary: 'Wait until a workspace is running (exit 1 if it fails or stops first)',
  usage: 'NAME [--timeout SECONDS]',
  async run(args, ctx) {
    const { values, positionals } = parseCommandArgs(wait, args, { timeout: { type: 'string', default: '120' } });
    const name = oneName(wait, positionals);
    const deadline = Date.now() + parseTimeout(values.timeout);
    let interrupted: NodeJS.Signals | null = null;
    void ctx.interrupted.then((signal) => (interrupted = signal));
    for (;;) {
      if (interrupted !== null) {
        throw new MicroagentError('transient', `stopped waiting for workspace "${name}" (${interrupted})`, { code: 'wait.interrupted', remediation: `wait again with "microagent wait ${name}"` });
      }
      const s = await workspaceStatus(ctx.stateDir, name);
      if (s.state === 'running') return { result: s, human: `${name}: running` };
      if (s.state !== 'starting' && s.state !== 'prepared') {
        throw new MicroagentError('conflict', `workspace "${name}" is ${s.state}, not running`, { remediation: `start it with "microagent start ${name}"` });
      }
      if (Date.now() > deadline) {
        throw new MicroagentError('transient', `workspace "${name}" was not running within ${values.timeout} s`, { remediation: `wait longer, or check "microagent logs ${name}"` });
      }
      await sleep(200);
    }
  },
};

const gc: Command = {
  name: 'gc',
  summary: 'Reconcile workspaces whose supervisor or VM died; remove runs whose CLI went away, keeping their audit logs',
  usage: '',
  async run(args, ctx) {
    parseCommandArgs(gc, args, {}, false);
    const repaired = await gcWorkspaces(ctx.stateDir);
    return { result: repaired, human: repaired.length === 0 ? 'nothing to repair' : repaired.map((r) => `${r.name}: ${r.repaired}`).join('\n') };
  },
};

export const commands: readonly Command[] = [
  start,
  exec,
  connect,
  verbCommand('halt', 'Clean, disk-preserving shutdown through the guest agent'),
  verbCommand('pause', 'Freeze the vCPUs; memory and disk kept'),
  verbCommand('resume', 'Thaw a paused workspace'),
  verbCommand('stop', 'Graceful shutdown signal; marked failed if the VM has not exited after 5 s (never escalates)'),
  verbCommand('kill', 'Hard termination of the VM'),
  verbCommand('quarantine', 'Sever the host-side network and mediation; disk and history kept, the VM may keep running'),
  del,
  cp,
  viewCommand('status', 'State, backend, PID, resources, network and egress mode, policy hash and readiness of a workspace', workspaceStatus, statusText),
  viewCommand('stats', "What a running workspace uses: its VM's and supervisor's CPU and memory, egress and mediation counters, the guest's load and memory", workspaceStats, statsText),
  listCommand('list'),
  listCommand('ps'),
  events,
  logs,
  egress,
  wait,
  gc,
];
