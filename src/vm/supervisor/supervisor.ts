/**
 * A workspace's supervisor: starts its mediator, boots its VM with the guest's only ways out pointed at
 * that mediator, records every state change (events.json and the audit log), and serves the control
 * socket until the VM exits. Outlives the CLI call that started it. If it dies, the sockets the guest's
 * forwards lead to are gone, so the guest's egress fails closed.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import type { Server } from 'node:net';
import { asMicroagentError, MicroagentError } from '../../errors.js';
import { childLog } from '../../log.js';
import type { NetworkConfig, RunningVm } from '../backend.js';
import { bootVm, standardGuestConfig, type BootAssets } from '../start.js';
import type { ExitStatus } from '../protocol.js';
import { transition, type Verb, type WorkspaceState } from '../workspace/lifecycle.js';
import { GUEST_USAGE_FILES, guestUsage, processUsage, type GuestUsage, type WorkspaceStats } from '../workspace/stats.js';
import {
  controlSocketOf,
  readManifest,
  recordState,
  runDirOf,
  workspacePaths,
  writeRuntime,
  type WorkspaceManifest,
} from '../workspace/store.js';
import { startControlServer, type ControlConnection } from './control-server.js';
import { FORWARDED_SIGNALS, type CommandExit, type ControlRequest } from './protocol.js';
import type { Mediator } from './mediator.js';
import { allocatePortBackends } from './published-ports.js';
import { mediatorSockets } from './sockets.js';
import { emptyReadiness, observe, type Readiness } from './readiness.js';
import { StartGate } from './start-gate.js';
import { makeDirs } from '../../make-dirs.js';

const log = childLog('supervisor');

/** How long `stop` waits for the guest to power off before marking the workspace failed. */
export const STOP_GRACE_MS = 5_000;
/** The verbs that end a running VM, as a command they cut short reports them. */
const ENDED = { halt: 'halted', stop: 'stopped', kill: 'killed' } as const;

/** What the guest agent (src/vm/guest/main.c, logmsg) puts before each of its console lines. */
const GUEST_LOG_PREFIX = 'microagent-guest: ';

/** The guest agent's last line on the serial console (the end of the log only), or null if it said nothing. */
export function guestLastWords(serialLog: string): string | null {
  let text: string;
  let fd: number | undefined;
  try {
    fd = openSync(serialLog, 'r');
    const size = fstatSync(fd).size;
    const end = Buffer.alloc(Math.min(size, 16_384));
    readSync(fd, end, 0, end.length, size - end.length);
    text = end.toString('utf8');
  } catch {
    return null;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const said = text.split('\n').filter((line) => line.startsWith(GUEST_LOG_PREFIX));
  return said.length === 0 ? null : (said.at(-1) as string).slice(GUEST_LOG_PREFIX.length).trim();
}

function exitOf(status: ExitStatus): CommandExit {
  if (status.kind === 'exited') return { code: status.code, signal: null, timedOut: status.timedOut };
  const name = Object.entries(constants.signals).find(([, n]) => n === status.signal)?.[0] ?? String(status.signal);
  return { code: 128 + status.signal, signal: name, timedOut: status.timedOut };
}

class Supervisor {
  private state: WorkspaceState = 'starting';
  private vm: RunningVm | null = null;
  private readonly readiness: Readiness = emptyReadiness();
  /** Set by halt/stop/kill so the VM's exit is recorded as what was asked for. */
  private exitAs: { verb: Verb; state: WorkspaceState } | null = null;
  /** Set when boot failed: the failure, not the VM's exit, is what gets recorded. */
  private abandoned = false;
  /** The vCPUs are stopped (pause); they stay so through a quarantine, which a paused guest may get. */
  private frozen = false;

  constructor(
    private readonly stateDir: string,
    private readonly manifest: WorkspaceManifest,
    private readonly runtimeId: string,
    private readonly runDir: string,
    private readonly mediator: Mediator,
    private readonly control: Server,
  ) {}

  private async record(verb: string, state: WorkspaceState, detail?: string): Promise<void> {
    this.state = state;
    await Promise.all([
      recordState(this.stateDir, this.manifest.name, verb, state, this.runtimeId, detail),
      this.mediator.audit
        .append({ event: `lifecycle.${state}`, state, ...(detail === undefined ? {} : { detail }) })
        .catch((err: unknown) => log.error({ err }, 'lifecycle record not written to the audit log')),
    ]);
  }

  /**
   * Finishes a start once the mediator is up and QEMU has been spawned (they start side by side): the
   * required channels must be ready, then the guest agent, its configuration and (unless the starter
   * declined it) a shell probe. Once `running` is recorded, `gate` lets the control requests through,
   * an exec the starter sent ahead first.
   */
  async boot(vm: RunningVm, network: NetworkConfig, mediationPorts: readonly number[], bootStarted: number, shellProbe: boolean, gate: StartGate): Promise<void> {
    const { config } = this.manifest;
    const m = this.mediator;
    this.vm = vm;
    void vm.exited.then(() => this.onVmExit());
    await writeRuntime(this.stateDir, this.manifest.name, {
      runtimeId: this.runtimeId,
      supervisorPid: process.pid,
      vmPid: vm.pid,
      controlSocket: controlSocketOf(this.runDir),
      startedAt: new Date().toISOString(),
      backend: 'qemu-microvm',
      accelerator: vm.accelerator,
    });
    // performance.now() counts from this process's start.
    const upMs = Math.round(performance.now());
    if (config.egress === 'off') {
      await m.audit.append({ event: 'lifecycle.egress_off', state: 'starting', detail: 'egress mediation is off: plain NAT, nothing checked' });
    }
    const ready = await m.mediationReady();
    this.readiness.mediationReady = observe(ready === null || ready.ready, ready === null ? 'no channels declared' : undefined, ready?.error);
    if (ready !== null && !ready.ready) {
      throw new MicroagentError('transient', `a required mediation channel is not ready: ${ready.error ?? 'unreachable'}`, {
        code: 'mediation.not_ready',
        remediation: 'start the channel target first, or declare it with --mediation-optional',
      });
    }
    // CONFIG goes out while the guest still boots: the agent channel holds it (as it holds the PINGs
    // below), so the agent applies it right after its HELLO instead of a round trip later.
    const configured = vm.agent.configure(standardGuestConfig({ caPem: m.ca.certPem, hostname: this.manifest.name, network, mediationPorts }));
    configured.catch(() => undefined); // awaited after HELLO; a guest that never says it fails there
    const hello = await vm.agent.ready();
    const agentUp = performance.now();
    this.readiness.guestReady = observe(true, `kernel ${hello.kernel}`);
    await configured;
    this.readiness.execReady = observe(true);
    if (shellProbe) {
      const shell = await vm.agent.run({ argv: ['/bin/sh', '-c', 'true'], timeoutMs: 30_000 }).catch((err: Error) => err);
      const shellOk = !(shell instanceof Error) && shell.status.kind === 'exited' && shell.status.code === 0;
      this.readiness.shellReady = observe(shellOk, undefined, shellOk ? undefined : 'the image has no working /bin/sh');
      this.readiness.resultReady = observe(!(shell instanceof Error), undefined, shell instanceof Error ? shell.message : undefined);
    } else {
      this.readiness.shellReady = observe(false, 'not probed: the starter runs its own command next');
    }
    const after = shellProbe ? 'configure+probe' : 'configure (no shell probe)';
    const timings = `mediator up at ${upMs} ms, boot to agent ${Math.round(agentUp - bootStarted)} ms, ${after} ${Math.round(performance.now() - agentUp)} ms`;
    await this.record('start', 'running', `${vm.accelerator}, pid ${vm.pid}; ${timings}`);
    gate.open((req, conn) => this.handle(req, conn));
    tellStarter('running');
  }

  /** A failed boot must not leave its QEMU running: nothing would ever stop it (gc only sees a dead supervisor). */
  async abandonBoot(): Promise<void> {
    this.abandoned = true;
    await this.vm?.kill().catch((err: unknown) => log.error({ err }, 'could not kill the VM of a failed start'));
  }

  private async onVmExit(): Promise<void> {
    if (this.abandoned) return;
    const exit = this.exitAs ?? { verb: 'exit', state: this.state === 'stopping' ? 'stopped' : 'failed' };
    let detail: string | undefined;
    if (this.exitAs === null) {
      // Exiting while it starts, the guest usually said why on its console (no root disk, a module missing).
      const words = this.state === 'starting' ? guestLastWords(workspacePaths(this.stateDir, this.manifest.name).serialLog) : null;
      detail = words === null ? 'the VM exited on its own' : `the VM exited while starting; the guest's last words: ${words}`;
    }
    try {
      await this.record(exit.verb, exit.state, detail);
    } finally {
      await this.shutdown();
    }
  }

  async shutdown(): Promise<void> {
    this.control.close();
    await Promise.all([
      this.mediator.close().catch((err: unknown) => log.error({ err }, 'mediator close failed')),
      rm(this.runDir, { recursive: true, force: true }).catch(() => undefined),
    ]);
    // Last: while the runtime record names a live supervisor, delete waits; removing it earlier let a
    // delete race this cleanup inside the workspace directory.
    await writeRuntime(this.stateDir, this.manifest.name, null).catch(() => undefined);
    process.exit(0);
  }

  /** A quarantined guest that was paused cannot answer the agent: refused, not left hanging. */
  private refuseFrozen(verb: 'exec' | 'stats' | 'halt'): void {
    if (!this.frozen) return;
    throw new MicroagentError('conflict', `workspace "${this.manifest.name}" is ${this.state} with its vCPUs frozen (it was paused): ${verb} needs the guest agent`, {
      code: 'lifecycle.refused',
      remediation: `end it with "microagent kill ${this.manifest.name}" (or stop it); its disk and audit log are kept`,
    });
  }

  private requireVm(): RunningVm {
    if (this.vm === null) throw new MicroagentError('transient', 'the VM is not up yet', { remediation: 'wait for start to finish' });
    return this.vm;
  }

  private async handle(req: ControlRequest, conn: ControlConnection): Promise<unknown> {
    const name = this.manifest.name;
    switch (req.op) {
      case 'status':
        return {
          state: this.state,
          runtimeId: this.runtimeId,
          pid: this.vm?.pid ?? null,
          accelerator: this.vm?.accelerator ?? null,
          readiness: this.readiness,
          severed: this.mediator.severed,
          policyHash: this.mediator.policy.current().hash,
        };
      case 'stats':
        transition(name, this.state, 'stats');
        this.refuseFrozen('stats');
        return this.stats();
      case 'exec': {
        transition(name, this.state, 'exec');
        this.refuseFrozen('exec');
        if (this.state === 'quarantined') await this.recordQuarantinedExec(req.argv);
        const handle = this.requireVm().agent.exec({
          argv: req.argv,
          env: Object.fromEntries(req.env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
          ...(req.cwd === undefined ? {} : { cwd: req.cwd }),
          ...(req.uid === undefined ? {} : { uid: req.uid }),
          ...(req.gid === undefined ? {} : { gid: req.gid }),
          ...(req.timeoutMs === undefined ? {} : { timeoutMs: req.timeoutMs }),
          stdin: req.stdin,
          ...(req.tty === undefined ? {} : { tty: req.tty }),
        });
        const execs = this.execsOf(conn);
        execs.set(req.id, handle);
        // A client that does not keep up holds the output: the agent client then withholds the guest's
        // credit, and the command blocks on its pipe instead of its output piling up here.
        let holding = false;
        const forward = (stream: 'stdout' | 'stderr') => (d: Buffer) => {
          if (conn.send({ id: req.id, stream, data: d.toString('base64') }) || holding) return;
          holding = true;
          handle.stdout.pause();
          handle.stderr.pause();
          conn.whenDrained(() => {
            holding = false;
            handle.stdout.resume();
            handle.stderr.resume();
          });
        };
        handle.stdout.on('data', forward('stdout'));
        handle.stderr.on('data', forward('stderr'));
        const forwarded = Promise.all([handle.stdout, handle.stderr].map((s) => new Promise<void>((resolve) => s.once('end', resolve).once('close', resolve))));
        // The caller hung up: its command must not linger in the guest, nor its held output here.
        void conn.closed.then(() => {
          handle.signal(constants.signals.SIGKILL);
          handle.stdout.resume();
          handle.stderr.resume();
        });
        try {
          const status = await handle.exit.catch((err: unknown) => Promise.reject(this.endedUnder(err)));
          await forwarded; // every byte goes out before the exit line
          const exit = exitOf(status);
          conn.send({ id: req.id, exit });
          this.readiness.resultReady = observe(true);
          return exit;
        } finally {
          execs.delete(req.id);
          // After this request's reply has gone out (replies follow the handler's promise).
          if (req.killWhenDone === true) setImmediate(() => void this.endWithCommand());
        }
      }
      case 'stdin':
      {
        const command = this.execsOf(conn).get(req.exec);
        // Past the host's high-water mark, the client's further stdin waits in its own socket.
        if (command !== undefined && !command.writeStdin(Buffer.from(req.data, 'base64'))) conn.hold(new Promise<void>((resolve) => command.stdinDrained(resolve)));
      }
        return null;
      case 'stdin_eof':
        this.execsOf(conn).get(req.exec)?.endStdin();
        return null;
      case 'resize':
        this.execsOf(conn).get(req.exec)?.resize({ rows: req.rows, cols: req.cols });
        return null;
      case 'signal':
        if (FORWARDED_SIGNALS.has(req.signal)) this.execsOf(conn).get(req.exec)?.signal(constants.signals[req.signal as NodeJS.Signals]);
        return null;
      case 'pause':
        transition(name, this.state, 'pause');
        await this.requireVm().pause();
        this.frozen = true;
        await this.record('pause', 'paused');
        return { state: this.state };
      case 'resume':
        transition(name, this.state, 'resume');
        await this.requireVm().resume();
        this.frozen = false;
        await this.record('resume', 'running');
        return { state: this.state };
      case 'quarantine':
        transition(name, this.state, 'quarantine');
        await this.mediator.sever();
        // The supervisor's listeners are closed; QEMU's loopback forwards behind them must go too.
        await this.vm?.closePublishedPorts();
        await this.record(
          'quarantine',
          'quarantined',
          `proxy, resolver, published ports and mediation severed; ${this.frozen ? 'the VM stays frozen (it was paused)' : 'the VM keeps running'}`,
        );
        return { state: this.state };
      case 'halt': {
        const next = transition(name, this.state, 'halt');
        this.refuseFrozen('halt');
        this.exitAs = { verb: 'halt', state: next };
        await this.requireVm().halt();
        return { state: next };
      }
      case 'kill':
        return this.kill();
      case 'stop': {
        transition(name, this.state, 'stop');
        const vm = this.requireVm();
        this.exitAs = { verb: 'stop', state: 'stopped' };
        await this.record('stop', 'stopping');
        await vm.requestStop();
        const exited = await Promise.race([vm.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), STOP_GRACE_MS))]);
        if (exited) return { state: 'stopped' };
        this.exitAs = null;
        await this.record('stop', 'failed', `the VM did not exit within ${STOP_GRACE_MS / 1000} s of the stop signal`);
        throw new MicroagentError('transient', `workspace "${name}" did not stop within ${STOP_GRACE_MS / 1000} s; it is marked failed`, {
          code: 'lifecycle.stop_timeout',
          remediation: `kill it with "microagent kill ${name}" (stop never escalates by itself)`,
        });
      }
    }
  }

  private async kill(): Promise<{ state: WorkspaceState }> {
    const next = transition(this.manifest.name, this.state, 'kill');
    this.exitAs = { verb: 'kill', state: next };
    await this.requireVm().kill();
    return { state: next };
  }

  /**
   * A command cut short because its workspace is being halted, stopped or killed: said as such, not as
   * the agent channel closing (which, unasked, means the VM died).
   */
  private endedUnder(err: unknown): unknown {
    const verb = this.exitAs?.verb;
    if ((err as MicroagentError).code !== 'vm.agent_closed' || (verb !== 'halt' && verb !== 'stop' && verb !== 'kill')) return err;
    const name = this.manifest.name;
    return new MicroagentError('conflict', `workspace "${name}" was ${ENDED[verb]} while the command ran`, {
      code: 'lifecycle.ended_during_exec',
      remediation: `start it again ("microagent start ${name}") and run the command again`,
      cause: err,
    });
  }

  /** Host side from /proc and the mediator's counters; guest side read through the agent (`cat` of its /proc files). */
  private async stats(): Promise<WorkspaceStats> {
    const vm = this.requireVm();
    const own = process.cpuUsage();
    const [vmUsage, guest] = await Promise.all([
      Promise.all([readFile(`/proc/${vm.pid}/stat`, 'utf8'), readFile(`/proc/${vm.pid}/status`, 'utf8')]).then(
        ([stat, status]) => processUsage(vm.pid, stat, status),
        () => null,
      ),
      this.guestUsage(vm),
    ]);
    return {
      name: this.manifest.name,
      state: this.state,
      vm: vmUsage,
      supervisor: { pid: process.pid, cpuSeconds: Math.round((own.user + own.system) / 10_000) / 100, rssMiB: Math.round(process.memoryUsage.rss() / 104_857.6) / 10 },
      ...this.mediator.stats(),
      guest: 'usage' in guest ? guest.usage : null,
      ...('error' in guest ? { guestError: guest.error } : {}),
    };
  }

  private async guestUsage(vm: RunningVm): Promise<{ usage: GuestUsage } | { error: string }> {
    // A quarantined guest is evidence: nothing runs in it that its log does not show (exec records itself).
    if (this.state === 'quarantined') return { error: 'not asked: the workspace is quarantined (inspect it with exec, which is recorded)' };
    try {
      const r = await vm.agent.run({ argv: ['cat', ...GUEST_USAGE_FILES], timeoutMs: 5_000 });
      if (r.status.kind !== 'exited' || r.status.code !== 0) throw new Error(`cat of the guest's /proc files failed: ${r.stderr.trim() || JSON.stringify(r.status)}`);
      return { usage: guestUsage(r.stdout) };
    } catch (err) {
      return { error: (err as Error).message };
    }
  }

  /**
   * A command run in a quarantined workspace (live response) changes what an investigation finds, so
   * it is recorded before it starts, and not run when it cannot be: its program, not its arguments
   * (they may hold secrets).
   */
  private async recordQuarantinedExec(argv: readonly string[]): Promise<void> {
    const detail = `exec of ${argv[0] ?? '(none)'} (its ${argv.length - 1} argument(s) not recorded)`;
    await this.mediator.audit.append({ event: 'lifecycle.exec', state: 'quarantined', detail }).catch((err: unknown) => {
      throw new MicroagentError('transient', 'the audit log cannot record this exec into the quarantined workspace, so it was not run', {
        code: 'audit.write_failed',
        cause: err,
        remediation: `fix the audit log (see "microagent logs ${this.manifest.name}" and "microagent audit verify"), or halt or kill the workspace`,
      });
    });
  }

  /** `run`'s workspace ends with its command: killed as by the kill verb, unless something ended it first. */
  private async endWithCommand(): Promise<void> {
    if (this.exitAs !== null) return;
    await this.kill().catch((err: unknown) => log.warn({ err }, 'could not kill the workspace after its command'));
  }

  /**
   * Running commands per control connection: each client numbers its own requests from 1, so a request
   * id names an exec only within its connection (one shared map let client B's exec 1 replace client A's,
   * and A's stdin went nowhere, or to B's command).
   */
  private readonly execs = new WeakMap<ControlConnection, Map<number, ReturnType<RunningVm['agent']['exec']>>>();

  private execsOf(conn: ControlConnection): Map<number, ReturnType<RunningVm['agent']['exec']>> {
    let execs = this.execs.get(conn);
    if (execs === undefined) this.execs.set(conn, (execs = new Map()));
    return execs;
  }
}

/**
 * Tells the process that spawned this one (fd 3, src/vm/workspace/supervisor-process.ts) how the start
 * goes: `control` when the control socket listens, then `running` or `failed` once that outcome is
 * recorded, which ends the report. A starter that is gone, or no fd 3, is not an error.
 */
function tellStarter(line: 'control' | 'running' | 'failed'): void {
  try {
    writeSync(3, `${line}\n`);
    if (line !== 'control') closeSync(3);
  } catch {
    // Nobody is waiting: the state directory holds the outcome.
  }
}

/** What the starter asks of this start (the launch line, see src/vm/workspace/supervisor-process.ts). */
export interface LaunchRequest {
  readonly name: string;
  /** false: skip the `/bin/sh` probe (`run` executes its own command right away). */
  readonly shellProbe: boolean;
}

/** Entry for the supervisor process: runs until the VM exits. `bootAssets`: checked before the launch line arrived. */
export async function superviseWorkspace(stateDir: string, launch: LaunchRequest, bootAssets: Promise<BootAssets>): Promise<void> {
  const { name } = launch;
  const manifest = await readManifest(stateDir, name);
  const { config } = manifest;
  const paths = workspacePaths(stateDir, name);
  const runtimeId = randomUUID();
  const runDir = runDirOf(paths, manifest.id);
  makeDirs(runDir, 0o700);
  const sockets = mediatorSockets(runDir);
  const mediationPorts = config.mediation.map((c) => c.port);
  const gate = new StartGate(name);
  let mediator: Mediator | null = null;
  let vm: RunningVm | null = null;
  let control: Server | null = null;
  let supervisor: Supervisor | null = null;
  try {
    const backends = await allocatePortBackends(config.publish);
    const publish = backends.map((b) => ({ hostPort: b.hostPort, guestPort: b.guestPort, hostAddress: '127.0.0.1' }));
    const network: NetworkConfig =
      config.network === 'isolated'
        ? { mode: 'isolated' }
        : config.egress === 'off'
          ? { mode: 'off', publish }
          : { mode: 'user', proxySocket: sockets.proxySocket, dnsSocket: sockets.dnsSocket, publish };
    const bootStarted = performance.now();
    const vmUp = bootVm({
      stateDir,
      assets: bootAssets,
      ...(config.disk?.kind === 'throwaway' ? { rootfsPath: config.disk.base, rootfsWritesTo: paths.dir } : { rootfsPath: paths.disk }),
      runDir,
      memoryMiB: config.memoryMiB,
      cpus: config.cpus,
      network,
      serialLog: paths.serialLog,
      ...(mediationPorts.length > 0 ? { mediation: { ports: mediationPorts, socketDir: sockets.mediationDir } } : {}),
    });
    // The guest reaches the mediator only after CONFIG, which follows its boot: the mediator starts
    // once the guest runs. Evaluating its modules holds this thread for ~100 ms; started with the
    // boot, that delayed the QMP handshake and so the guest's first instruction by 35-45 ms.
    const mediatorUp = vmUp.then(async () => (await import('./mediator.js')).startMediator(manifest, paths, sockets, runtimeId, backends));
    // Listens while QEMU starts, behind the gate: the starter's command can be on its way before the guest is up.
    const controlUp = startControlServer(controlSocketOf(runDir), gate.handle).then((server) => {
      tellStarter('control');
      return server;
    });
    const [m, v, c] = await Promise.allSettled([mediatorUp, vmUp, controlUp]);
    if (m.status === 'fulfilled') mediator = m.value;
    if (v.status === 'fulfilled') vm = v.value;
    if (c.status === 'fulfilled') control = c.value;
    if (m.status === 'rejected') throw m.reason;
    if (v.status === 'rejected') throw v.reason;
    if (c.status === 'rejected') throw c.reason;
    const started = new Supervisor(stateDir, manifest, runtimeId, runDir, mediator as Mediator, control as Server);
    supervisor = started;
    process.once('SIGTERM', () => void started.shutdown());
    await started.boot(vm as RunningVm, network, mediationPorts, bootStarted, launch.shellProbe, gate);
  } catch (err) {
    const e = asMicroagentError(err);
    log.error({ err: e }, 'workspace start failed');
    gate.fail(e);
    // A failed start must not leave its QEMU running: nothing would ever stop it.
    if (supervisor !== null) await supervisor.abandonBoot();
    else await vm?.kill().catch((killErr: unknown) => log.error({ err: killErr }, 'could not kill the VM of a failed start'));
    // The CLI that waits for the start rethrows this with its kind (a missing kernel is not transient).
    await writeFile(paths.startError, JSON.stringify({ kind: e.kind, code: e.code, message: e.message, remediation: e.remediation }), { mode: 0o600 }).catch(() => undefined);
    await recordState(stateDir, name, 'start', 'failed', runtimeId, `${e.message}${e.remediation ? ` (fix: ${e.remediation})` : ''}`);
    await mediator?.close().catch(() => undefined);
    control?.close();
    await rm(runDir, { recursive: true, force: true }).catch(() => undefined);
    await writeRuntime(stateDir, name, null).catch(() => undefined);
    tellStarter('failed');
    process.exit(1);
  }
}
