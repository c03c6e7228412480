/**
 * The QEMU backend: starts `qemu-system-x86_64 -M microvm` for a boot spec, connects the guest agent
 * channel and QMP, and owns the process until it exits. Pause/resume/halt/kill go through one
 * transition table, so an out-of-state request is a typed `conflict`, never a silent no-op. It never
 * leaves a QEMU process behind when boot fails.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { AgentClient } from './agent-client.js';
import type { BootSpec, RunningVm, VmBackend, VmExit, VmState } from './backend.js';
import { attachMediationTunnel } from './mediation-tunnel.js';
import { findExecutable } from './host-tools.js';
import { buildQemuArgs, type HostFacts, type RunPaths } from './qemu-args.js';
import { QmpClient } from './qmp.js';
import { makeDirs } from '../make-dirs.js';

const log = childLog('vm.qemu');
export const QEMU_BINARY = 'qemu-system-x86_64';

export type VmVerb = 'pause' | 'resume' | 'halt' | 'kill';

/** (state, verb) -> next state; a missing entry is a refusal. */
const TRANSITIONS: Readonly<Record<VmState, Partial<Record<VmVerb, VmState>>>> = {
  running: { pause: 'paused', halt: 'stopped', kill: 'stopped' },
  paused: { resume: 'running', kill: 'stopped', halt: 'stopped' },
  stopped: {},
};

export function nextVmState(state: VmState, verb: VmVerb): VmState {
  const next = TRANSITIONS[state][verb];
  if (next === undefined) {
    throw new MicroagentError('conflict', `cannot ${verb} a microVM that is ${state}`, {
      code: 'vm.state',
      remediation: state === 'stopped' ? 'Start the workspace again.' : `The microVM is ${state}; use the matching verb.`,
    });
  }
  return next;
}

export function requireQemu(): string {
  const qemu = findExecutable(QEMU_BINARY);
  if (qemu === undefined) {
    throw new MicroagentError('unsupported', `${QEMU_BINARY} was not found on PATH`, {
      code: 'vm.qemu_missing',
      remediation: 'Install QEMU: `apt-get install qemu-system-x86` (or run `microagent doctor --fix` as root).',
    });
  }
  return qemu;
}

export function runPaths(runDir: string, serialLog?: string): RunPaths {
  return {
    agentSocket: join(runDir, 'agent.sock'),
    qmpSocket: join(runDir, 'qmp.sock'),
    serialLog: serialLog ?? join(runDir, 'serial.log'),
  };
}

/** Host facts the command line needs: the TSC frequency from /proc/cpuinfo. */
export function hostFacts(): HostFacts {
  try {
    const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1];
    return mhz === undefined ? {} : { tscKhz: Math.round(Number(mhz) * 1000) };
  } catch {
    return {};
  }
}

function tail(path: string, bytes = 2000): string {
  try {
    const text = readFileSync(path, 'utf8');
    return text.slice(-bytes).trim();
  } catch {
    return '';
  }
}

class QemuVm implements RunningVm {
  state: VmState = 'running';
  constructor(
    readonly pid: number,
    readonly spec: BootSpec,
    readonly serialLog: string,
    readonly agent: AgentClient,
    private readonly qmp: QmpClient,
    readonly exited: Promise<VmExit>,
    private readonly forceKill: () => void,
  ) {
    void exited.then(() => {
      this.state = 'stopped';
      agent.close();
      qmp.close();
    });
  }

  get accelerator() {
    return this.spec.accelerator;
  }
  get runDir() {
    return this.spec.runDir;
  }

  async pause(): Promise<void> {
    const next = nextVmState(this.state, 'pause');
    await this.qmp.execute('stop');
    this.state = next;
  }

  async resume(): Promise<void> {
    const next = nextVmState(this.state, 'resume');
    await this.qmp.execute('cont');
    this.state = next;
  }

  async status(): Promise<string> {
    const reply = (await this.qmp.execute('query-status')) as { status?: string };
    return reply.status ?? 'unknown';
  }

  async halt(timeoutMs = 15_000): Promise<VmExit> {
    nextVmState(this.state, 'halt');
    if (this.state === 'paused') await this.resume();
    const timer = setTimeout(() => this.forceKill(), timeoutMs);
    try {
      await this.agent.halt();
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async requestStop(): Promise<void> {
    nextVmState(this.state, 'halt');
    if (this.state === 'paused') await this.resume();
    this.agent.requestStop();
  }

  async closePublishedPorts(): Promise<void> {
    const network = this.spec.network;
    if (network.mode === 'isolated') return;
    for (const p of network.publish ?? []) {
      const rule = `tcp:${p.hostAddress ?? '127.0.0.1'}:${p.hostPort}`;
      // HMP answers errors as text, not as a QMP error.
      const reply = await this.qmp.execute('human-monitor-command', { 'command-line': `hostfwd_remove net0 ${rule}` });
      if (typeof reply === 'string' && reply.trim() !== '' && !reply.includes('removed')) {
        throw new MicroagentError('internal', `QEMU did not remove the host forward ${rule}: ${reply.trim()}`, {
          code: 'vm.hostfwd_remove',
          remediation: 'kill the workspace: its published port may still be reachable from the host',
        });
      }
    }
  }

  async kill(): Promise<VmExit> {
    if (this.state === 'stopped') return this.exited;
    nextVmState(this.state, 'kill');
    // `quit` lets QEMU flush the workspace's disk file; a throwaway disk's writes are discarded
    // anyway, so SIGKILL ends it at once (~4 ms sooner, at the end of every `run`).
    if (this.spec.rootfsWritesTo !== undefined) this.forceKill();
    else await this.qmp.execute('quit').catch(() => this.forceKill());
    const timer = setTimeout(() => this.forceKill(), 3000);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

export const qemuBackend: VmBackend = {
  name: 'qemu',
  async boot(spec: BootSpec): Promise<RunningVm> {
    const qemu = requireQemu();
    makeDirs(spec.runDir);
    const paths = runPaths(spec.runDir, spec.serialLog);
    for (const socket of [paths.agentSocket, paths.qmpSocket]) {
      if (Buffer.byteLength(socket) > 107) {
        throw new MicroagentError('invalid', `the run directory path is too long for a Unix socket: ${socket}`, {
          code: 'vm.run_dir',
          remediation: 'Use a shorter run directory (socket paths are limited to 107 bytes), e.g. under /tmp or $XDG_RUNTIME_DIR.',
        });
      }
    }
    for (const p of [paths.agentSocket, paths.qmpSocket]) rmSync(p, { force: true });
    rmSync(paths.serialLog, { force: true });
    const qemuLog = join(spec.runDir, 'qemu.log');
    const args = buildQemuArgs(spec, paths, hostFacts());
    log.debug({ args }, 'starting QEMU');
    // QEMU puts snapshot=on's temporary file in TMPDIR.
    const env = spec.rootfsWritesTo === undefined ? process.env : { ...process.env, TMPDIR: spec.rootfsWritesTo };
    // In the run directory: the guest forwards' commands name their sockets relative to it (qemu-args.ts).
    const child = spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'], env, cwd: spec.runDir });
    child.stderr?.pipe(createWriteStream(qemuLog));
    const exited = new Promise<VmExit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    const forceKill = () => child.kill('SIGKILL');
    const startFailed = exited.then((exit) => {
      throw new MicroagentError('internal', `QEMU exited during start (code ${exit.code}): ${tail(qemuLog) || 'no output'}`, {
        code: 'vm.qemu_failed',
        remediation: `Read ${qemuLog} and ${paths.serialLog}; run \`microagent doctor\` to check the host.`,
      });
    });
    startFailed.catch(() => {}); // only meaningful while starting; later exits are `exited`
    try {
      // QEMU initialises (tens of ms) on its own core meanwhile; the guest has not run an instruction yet.
      spec.beforeGuestRuns?.();
      const [agent, qmp] = await Promise.race([
        Promise.all([AgentClient.connect(paths.agentSocket), QmpClient.connect(paths.qmpSocket)]),
        startFailed,
      ]);
      if (spec.beforeGuestRuns !== undefined) await Promise.race([qmp.execute('cont'), startFailed]);
      if (spec.mediation) attachMediationTunnel(agent, spec.mediation);
      return new QemuVm(child.pid ?? -1, spec, paths.serialLog, agent, qmp, exited, forceKill);
    } catch (err) {
      forceKill();
      await exited;
      throw err;
    }
  },
};
