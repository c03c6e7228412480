/**
 * Workspace verbs as library calls: create, start, exec, halt, pause, resume, stop, kill, quarantine,
 * delete, status, list, gc. Each takes the workspace lock, checks the lifecycle table, and then either
 * acts on the state directory or asks the workspace's supervisor over its control socket.
 */
import { randomUUID } from 'node:crypto';
import { readFile, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MicroagentError, type ErrorKind } from '../../errors.js';
import type { Mode } from '../../policy/types.js';
import { DEFAULT_POLICY_FILE } from '../../paths.js';
import { readExtraCaFile } from '../../tls-trust.js';
import { prepareWorkspaceDisk } from '../rootfs/ext4.js';
import { imageRunSpec } from '../rootfs/image-config.js';
import type { ProgressListener } from '../rootfs/progress.js';
import type { RegistryCredentials } from '../rootfs/registry-auth.js';
import { ControlClient, type ExecOptions, type ExecResult } from '../supervisor/control-client.js';
import { checkPolicyFile } from './checked-policy.js';
import { transition, VM_STATES, type Verb, type WorkspaceState } from './lifecycle.js';
import { recordedProcessAlive, withWorkspaceLock } from './lock.js';
import { checkEnv, parseWorkspaceFlags, PROFILES, type Profile } from './options.js';
import { spawnSupervisor, type SupervisorProcess } from './supervisor-process.js';
import type { WorkspaceStats } from './stats.js';
import {
  controlSocketOf,
  createWorkspaceDir,
  keepRunLogs,
  listWorkspaceNames,
  readEvents,
  readManifest,
  readRuntime,
  recordState,
  removeWorkspaceDir,
  runDirOf,
  workspacePaths,
  writeAtomic,
  writeManifest,
  writeRuntime,
  type RuntimeRecord,
  type WorkspaceConfig,
  type WorkspaceManifest,
} from './store.js';

export interface CreateOptions {
  readonly image?: string;
  readonly command?: readonly string[];
  readonly env?: readonly string[];
  readonly network?: 'user' | 'isolated';
  readonly egress?: Mode;
  readonly policyFile?: string;
  readonly publish?: readonly string[];
  readonly mediation?: readonly string[];
  readonly mediationOptional?: boolean;
  /** False: target connections start without the PROXY v2 header, for targets that cannot parse it. */
  readonly mediationProxyProtocol?: boolean;
  readonly profile?: Profile;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly dnsUpstreams?: readonly string[];
  /** Paths of extra CA certificates (PEM) trusted for upstream TLS. */
  readonly upstreamCaFiles?: readonly string[];
  readonly onProgress?: ProgressListener;
  /** Registries (HOST[:PORT]) the image may be pulled from over plain HTTP; loopback ones always may. */
  readonly insecureRegistries?: readonly string[];
  /** Credentials by registry; by default those `docker login` saved (readDockerCredentials). */
  readonly registryAuth?: Readonly<Record<string, RegistryCredentials>>;
  /**
   * Boot the cached image read-only, the guest's writes going to a temporary file QEMU deletes at
   * once, instead of giving the workspace its own copy of the disk: for `run`, which throws the
   * workspace away. A copy per run cost ~15-25 ms for the default image, and scales with the image.
   */
  readonly throwawayDisk?: boolean;
  /** Grow the disk (file and filesystem) to this size, at least the image's; a throwaway one then boots a grown copy. */
  readonly diskMiB?: number;
}

/** The size a workspace's disk grows to: at least its image's, which it is a copy of. */
async function diskSize(diskMiB: number | undefined, imagePath: string): Promise<{ sizeBytes?: number }> {
  if (diskMiB === undefined) return {};
  const imageMiB = Math.ceil((await stat(imagePath)).size / 2 ** 20);
  if (diskMiB < imageMiB) {
    throw new MicroagentError('invalid', `--disk ${diskMiB}M is smaller than the image's root filesystem (${imageMiB}M)`, {
      code: 'usage', remediation: `give --disk ${imageMiB}M or more`,
    });
  }
  return { sizeBytes: diskMiB * 2 ** 20 };
}

/** Builds the root filesystem (cached base, plus a private copy unless `throwawayDisk`) and records the workspace as `prepared`. */
export async function createWorkspace(stateDir: string, name: string, options: CreateOptions = {}): Promise<WorkspaceManifest> {
  const policyFile = options.policyFile ?? DEFAULT_POLICY_FILE;
  const policy = await checkPolicyFile(stateDir, policyFile);
  const egress = options.egress ?? policy.mode;
  if (egress === 'off' && options.egress !== 'off') {
    throw new MicroagentError('invalid', `the policy ${policyFile} turns egress mediation off`, {
      code: 'egress.off_implicit',
      remediation: 'egress off means plain, unchecked NAT: ask for it explicitly with --egress off',
    });
  }
  const { publish, channels, insecureRegistries } = parseWorkspaceFlags(options);
  const size = PROFILES[options.profile ?? 'small'];
  const paths = await createWorkspaceDir(stateDir, name);
  try {
    const progress = options.onProgress === undefined ? {} : { onProgress: options.onProgress };
    // The image code (registry client, layer unpacking) loads where it is used, not at the top: exec,
    // the verb agents call most, never needs it, and loading it would be most of its start-up.
    const { ensureDefaultImage, isDefaultImageReference, readDockerCredentials, resolveImage } = await import('../rootfs/index.js');
    const image =
      options.image === undefined || isDefaultImageReference(options.image)
        ? await ensureDefaultImage(stateDir, progress)
        : await resolveImage(options.image, { stateDir, ...progress, insecureRegistries, auth: options.registryAuth ?? readDockerCredentials() });
    // A throwaway disk asked to be larger boots a grown copy of its own, still read-only to the guest.
    const ownCopy = options.throwawayDisk !== true || options.diskMiB !== undefined;
    if (ownCopy) await prepareWorkspaceDisk(image.rootfsPath, paths.disk, await diskSize(options.diskMiB, image.rootfsPath));
    await writeAtomic(paths.policy, policy.text);
    const config: WorkspaceConfig = {
      image: image.reference,
      imageDigest: image.digest,
      run: runSpecOrShell(image.config, options.command ?? []),
      env: options.env ?? [],
      network: options.network ?? 'user',
      egress,
      policySource: resolve(policyFile),
      publish,
      mediation: channels.map((c) => ({
        port: c.port,
        target: c.targetText,
        required: options.mediationOptional !== true,
        failClosed: options.mediationOptional !== true,
        proxyProtocol: options.mediationProxyProtocol !== false,
      })),
      memoryMiB: options.memoryMiB ?? size.memoryMiB,
      cpus: options.cpus ?? size.cpus,
      dnsUpstreams: options.dnsUpstreams ?? [],
      upstreamCa: await Promise.all((options.upstreamCaFiles ?? []).map(readExtraCaFile)),
      disk: options.throwawayDisk === true ? { kind: 'throwaway', base: ownCopy ? paths.disk : image.rootfsPath } : { kind: 'copy' },
    };
    const manifest: WorkspaceManifest = { name, id: randomUUID(), createdAt: new Date().toISOString(), state: 'prepared', config };
    await writeManifest(stateDir, manifest);
    await recordState(stateDir, name, 'create', 'prepared', null, `image ${image.reference} (${image.digest})${image.cached ? ', cached' : ''}`);
    return { ...manifest };
  } catch (err) {
    await removeWorkspaceDir(stateDir, name);
    throw err;
  }
}

/** The image's run spec; an image with neither Entrypoint nor Cmd gets a shell, for exec-only use. */
function runSpecOrShell(config: Parameters<typeof imageRunSpec>[0], command: readonly string[]) {
  try {
    return imageRunSpec(config, command);
  } catch (err) {
    if ((err as MicroagentError).code !== 'image.no_command') throw err;
    return { ...imageRunSpec(config, ['/bin/sh']), argv: [] };
  }
}

export interface StartOptions {
  readonly timeoutMs?: number;
  /** A supervisor spawned earlier by the caller (see supervisor-process.ts); by default one is spawned here. */
  readonly supervisor?: SupervisorProcess;
  /** false: no `/bin/sh` probe before `running` (shellReady stays unobserved); `run` runs its command next. */
  readonly shellProbe?: boolean;
  /** Aborted (Ctrl-C): stop waiting; the workspace goes on starting without this caller. */
  readonly signal?: AbortSignal;
}

/**
 * Spawns the workspace's supervisor and waits until the workspace is running (or failed). It returns
 * nothing: a caller that wants the status asks `workspaceStatus` (a policy parse and a control-socket
 * round trip `run` has no use for on its way to the command).
 */
export async function startWorkspace(stateDir: string, name: string, options: StartOptions = {}): Promise<void> {
  const paths = workspacePaths(stateDir, name);
  const timeoutMs = options.timeoutMs ?? 180_000;
  let supervisor = options.supervisor;
  try {
    await withWorkspaceLock(stateDir, name, async () => {
      let manifest = await readManifest(stateDir, name);
      // A workspace whose processes died (a host reboot) starts again, as a failed one does.
      const runtime = await readRuntime(stateDir, name);
      if ((await reconcileDeadSupervisor(stateDir, manifest, runtime, 'start')) !== null) manifest = await readManifest(stateDir, name);
      // A stop that timed out leaves the workspace failed with its VM (and supervisor) still running:
      // a second VM on the same disk would fail, and its start would forget the first one.
      else if (manifest.state === 'failed' && stillRunning(runtime)) throw stillRunningError(name, runtime as RuntimeRecord, 'start');
      transition(name, manifest.state, 'start');
      await rm(paths.startError, { force: true });
      await recordState(stateDir, name, 'start', 'starting', null);
      supervisor ??= await spawnSupervisor(stateDir, paths.supervisorLog);
      // Recorded under the lock, before the supervisor can write its own: otherwise a concurrent gc sees a
      // `starting` workspace without a runtime record and marks it failed while it boots.
      await writeRuntime(stateDir, name, {
        runtimeId: 'pending',
        supervisorPid: supervisor.pid,
        vmPid: null,
        controlSocket: '',
        startedAt: new Date().toISOString(),
        backend: 'qemu-microvm',
        accelerator: 'pending',
      });
      await supervisor.launch({ name, shellProbe: options.shellProbe ?? true });
    });
  } catch (err) {
    supervisor?.cancel();
    throw err;
  }
  const timedOut = Symbol('timeout');
  const stopTimer = new AbortController();
  const timer = sleep(timeoutMs, timedOut, { signal: stopTimer.signal }).catch(() => undefined);
  const stoppedWaiting = Symbol('interrupted');
  const interrupted = new Promise<symbol>((resolve) => {
    if (options.signal?.aborted === true) resolve(stoppedWaiting);
    options.signal?.addEventListener('abort', () => resolve(stoppedWaiting), { once: true });
  });
  const outcome = await Promise.race([(supervisor as SupervisorProcess).settled, timer, interrupted]);
  stopTimer.abort();
  if (outcome === stoppedWaiting) {
    // Its progress no longer has a reader here: let this process end while the supervisor goes on.
    (supervisor as SupervisorProcess).detach();
    throw new MicroagentError('transient', `stopped waiting for workspace "${name}" to start; it goes on starting`, {
      code: 'lifecycle.start_interrupted',
      remediation: `"microagent wait ${name}" waits for it again; "microagent kill ${name}" ends it`,
    });
  }
  if (outcome === timedOut) {
    throw new MicroagentError('transient', `workspace "${name}" did not become ready within ${timeoutMs / 1000} s`, {
      code: 'lifecycle.start_timeout',
      remediation: `see ${paths.serialLog}; kill it with "microagent kill ${name}"`,
    });
  }
  // Settled means recorded, or a supervisor that died first (its workspace still says starting).
  if (outcome === 'running') return;
  throw await startFailure(stateDir, name);
}

/** The supervisor's reason with its own kind (a missing kernel is not_found, not worth retrying), else the last event. */
async function startFailure(stateDir: string, name: string): Promise<MicroagentError> {
  const paths = workspacePaths(stateDir, name);
  const logs = `see ${paths.supervisorLog} and ${paths.serialLog}`;
  const recorded = await readFile(paths.startError, 'utf8').then((t) => JSON.parse(t) as StartError, () => null);
  if (recorded !== null) {
    return new MicroagentError(recorded.kind, `workspace "${name}" failed to start: ${recorded.message}`, {
      code: recorded.code,
      remediation: recorded.remediation === '' ? logs : `${recorded.remediation} (${logs})`,
    });
  }
  const detail = (await readEvents(stateDir, name)).at(-1)?.detail ?? `see ${paths.supervisorLog}`;
  return new MicroagentError('transient', `workspace "${name}" failed to start: ${detail}`, {
    code: 'lifecycle.start_failed',
    remediation: `${logs}; "microagent doctor" checks the host`,
  });
}

interface StartError {
  readonly kind: ErrorKind;
  readonly code: string;
  readonly message: string;
  readonly remediation: string;
}

async function control(stateDir: string, name: string): Promise<{ client: ControlClient; runtime: RuntimeRecord }> {
  const runtime = await readRuntime(stateDir, name);
  if (runtime === null || !recordedProcessAlive(runtime.supervisorPid, runtime.bootId)) {
    throw new MicroagentError('conflict', `workspace "${name}" has no running supervisor`, {
      code: 'workspace.not_running',
      remediation: `start it with "microagent start ${name}"; "microagent gc" repairs a workspace whose processes died`,
    });
  }
  return { client: await ControlClient.connect(runtime.controlSocket, name), runtime };
}

/** A verb the supervisor performs (halt, pause, resume, stop, kill, quarantine). */
export async function signalWorkspace(stateDir: string, name: string, verb: SignalVerb): Promise<WorkspaceStatus> {
  await sendSignal(stateDir, name, verb);
  return workspaceStatus(stateDir, name);
}

type SignalVerb = Exclude<Verb, 'start' | 'delete' | 'exec' | 'stats'>;

/**
 * `signalWorkspace` without reading the status afterwards, for a caller that does not show it
 * (`run`'s teardown). `supervisorExited`, from a caller that spawned the supervisor, ends the wait for
 * its exit at once instead of at the next poll.
 */
export async function sendSignal(stateDir: string, name: string, verb: SignalVerb, supervisorExited?: Promise<void>): Promise<void> {
  await withWorkspaceLock(stateDir, name, async () => {
    const manifest = await readManifest(stateDir, name);
    transition(name, manifest.state, verb);
    if (verb === 'kill' && (await killWithoutSupervisor(stateDir, name))) return;
    const { client } = await control(stateDir, name);
    try {
      await client.request(verb);
    } finally {
      client.close();
    }
    if (verb === 'halt' || verb === 'kill' || verb === 'stop') await waitForSupervisorExit(stateDir, name, supervisorExited);
  });
}

/** Kill when the supervisor is already gone: the VM process is killed directly. */
async function killWithoutSupervisor(stateDir: string, name: string): Promise<boolean> {
  const runtime = await readRuntime(stateDir, name);
  if (runtime !== null && recordedProcessAlive(runtime.supervisorPid, runtime.bootId)) return false;
  if (runtime?.vmPid != null && recordedProcessAlive(runtime.vmPid, runtime.bootId)) process.kill(runtime.vmPid, 'SIGKILL');
  await writeRuntime(stateDir, name, null);
  await recordState(stateDir, name, 'kill', 'stopped', runtime?.runtimeId ?? null, 'supervisor was gone; VM process killed directly');
  return true;
}

/**
 * Returns once the supervisor has cleared its runtime record (its last step) or died, or `exited`
 * (the child's exit event, for the process that spawned it) resolves. Polled every
 * 5 ms: a supervisor shutting down after a kill takes 10-20 ms, and `run` waits for it before it
 * keeps the audit log, so a coarser poll added its whole period to every run.
 */
async function waitForSupervisorExit(stateDir: string, name: string, exited?: Promise<void>, timeoutMs = 20_000): Promise<void> {
  let gone = false;
  void exited?.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  while (!gone && Date.now() < deadline) {
    const runtime = await readRuntime(stateDir, name);
    if (runtime === null || !recordedProcessAlive(runtime.supervisorPid, runtime.bootId)) return;
    await Promise.race([sleep(5), ...(exited === undefined ? [] : [exited])]);
  }
}

export async function execInWorkspace(stateDir: string, name: string, options: ExecOptions): Promise<ExecResult> {
  checkEnv(options.env ?? []);
  const manifest = await readManifest(stateDir, name);
  transition(name, manifest.state, 'exec');
  const { client } = await control(stateDir, name);
  try {
    return await client.exec(withImageDefaults(manifest, options));
  } finally {
    client.close();
  }
}

/**
 * `run`'s command, handed to the supervisor while its workspace starts (`supervisor`: the one the
 * caller spawned and launched): it runs the moment the guest is configured, with no round trip
 * through the CLI in between, and the supervisor kills the workspace once it has exited. Rejects when
 * the start fails; the start itself says why.
 */
export async function execAtStart(stateDir: string, manifest: WorkspaceManifest, supervisor: SupervisorProcess, options: ExecOptions): Promise<ExecResult> {
  const { name } = manifest;
  if (!(await supervisor.listening)) {
    throw new MicroagentError('transient', `workspace "${name}" did not start`, { code: 'lifecycle.start_failed', remediation: `see ${workspacePaths(stateDir, name).supervisorLog}` });
  }
  const client = await ControlClient.connect(controlSocketOf(runDirOf(workspacePaths(stateDir, name), manifest.id)), name);
  try {
    return await client.exec({ ...withImageDefaults(manifest, options), waitForStart: true, killWhenDone: true });
  } finally {
    client.close();
  }
}

/** The image's working directory and user, and its environment under the workspace's and the command's own. */
function withImageDefaults(manifest: WorkspaceManifest, options: ExecOptions): ExecOptions {
  const { run, env } = manifest.config;
  return { cwd: run.cwd, uid: run.uid, gid: run.gid, ...options, env: [...run.env, ...env, ...(options.env ?? [])] };
}

/**
 * Removes the workspace; refused while a VM process may still run. A throwaway (`run`) workspace's
 * audit log, and the `alsoKeep` files, move to `<stateDir>/runs/NAME/` first: the decisions of a run
 * outlive it, whoever removes it. Returns that folder, or null for a workspace with nothing kept.
 */
export async function deleteWorkspace(stateDir: string, name: string, alsoKeep: readonly string[] = []): Promise<string | null> {
  return withWorkspaceLock(stateDir, name, async () => {
    let manifest = await readManifest(stateDir, name);
    let runtime = await readRuntime(stateDir, name);
    if ((await reconcileDeadSupervisor(stateDir, manifest, runtime, 'delete')) !== null) {
      manifest = await readManifest(stateDir, name);
      runtime = null;
    }
    transition(name, manifest.state, 'delete');
    if (stillRunning(runtime)) throw stillRunningError(name, runtime as RuntimeRecord, 'delete');
    return removeLocked(stateDir, manifest, alsoKeep);
  });
}

/** Whether the recorded supervisor or VM process is still alive. */
function stillRunning(runtime: RuntimeRecord | null): boolean {
  return runtime !== null && (recordedProcessAlive(runtime.supervisorPid, runtime.bootId) || (runtime.vmPid !== null && recordedProcessAlive(runtime.vmPid, runtime.bootId)));
}

function stillRunningError(name: string, runtime: RuntimeRecord, verb: 'start' | 'delete'): MicroagentError {
  const vm = runtime.vmPid === null ? 'its supervisor' : `its VM process ${runtime.vmPid}`;
  return new MicroagentError('conflict', `workspace "${name}": ${vm} still runs`, {
    code: 'lifecycle.refused',
    remediation: `end it with "microagent kill ${name}", then ${verb} it`,
  });
}

/** The removal itself, under the workspace lock, so no other call acts on a half-removed workspace. */
async function removeLocked(stateDir: string, manifest: WorkspaceManifest, alsoKeep: readonly string[]): Promise<string | null> {
  const kept = manifest.config.disk?.kind === 'throwaway' ? await keepRunLogs(stateDir, manifest.name, alsoKeep) : null;
  await removeWorkspaceDir(stateDir, manifest.name);
  return kept;
}

function abandonedRun(manifest: WorkspaceManifest, runtime: RuntimeRecord | null): boolean {
  return manifest.config.disk?.kind === 'throwaway' && (manifest.state === 'stopped' || manifest.state === 'failed') && (runtime?.vmPid == null || !recordedProcessAlive(runtime.vmPid, runtime.bootId));
}

/** True for a workspace directory whose create has not written its manifest (yet): not a workspace to list or repair. */
function unfinished(err: unknown): boolean {
  return (err as MicroagentError).code === 'workspace.incomplete';
}

/** True when `err` says the workspace vanished under us (deleted by a concurrent call): skip it. */
function vanished(err: unknown): boolean {
  return (err as MicroagentError).kind === 'not_found' || (err as NodeJS.ErrnoException).code === 'ENOENT';
}

export interface WorkspaceStatus {
  readonly name: string;
  readonly id: string;
  readonly state: WorkspaceState;
  readonly image: string;
  readonly network: string;
  readonly egress: string;
  /** The hash of policy.yaml as it is on disk; null when it is not a valid policy now. */
  readonly policyHash: string | null;
  /** The hash of the policy the running supervisor decides with (its audit records carry it); null without one. */
  readonly policyInForce: string | null;
  /** The file the workspace's policy.yaml was copied from at create, and whether it has changed since (null: gone or unreadable). */
  readonly policySource: { readonly path: string; readonly changed: boolean | null } | null;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly runtime: RuntimeRecord | null;
  readonly supervisorAlive: boolean;
  readonly readiness: unknown;
  readonly paths: { readonly audit: string; readonly serialLog: string; readonly events: string; readonly policy: string };
}

/** What a running workspace uses (docs/lifecycle.md, `stats`); refused while paused: a frozen guest cannot answer. */
export async function workspaceStats(stateDir: string, name: string): Promise<WorkspaceStats> {
  const manifest = await readManifest(stateDir, name);
  transition(name, manifest.state, 'stats');
  const { client } = await control(stateDir, name);
  try {
    return (await client.request('stats')) as WorkspaceStats;
  } finally {
    client.close();
  }
}

export async function workspaceStatus(stateDir: string, name: string): Promise<WorkspaceStatus> {
  const manifest = await readManifest(stateDir, name);
  const paths = workspacePaths(stateDir, name);
  const runtime = await readRuntime(stateDir, name);
  const alive = runtime !== null && recordedProcessAlive(runtime.supervisorPid, runtime.bootId);
  let readiness: unknown = null;
  let policyInForce: string | null = null;
  let state = manifest.state;
  if (alive) {
    try {
      const { client } = await control(stateDir, name);
      // Closed whatever the answer: a supervisor still starting refuses the request, and an open
      // connection would keep this process (`wait`, polling through a start) alive after it is done.
      const live = (await client.request('status').finally(() => client.close())) as { readiness: unknown; policyHash?: string };
      readiness = live.readiness;
      policyInForce = live.policyHash ?? null;
    } catch {
      readiness = null;
    }
  } else if (VM_STATES.has(state)) {
    // The record says a VM runs but its supervisor is gone: report the truth; gc repairs it.
    state = 'failed';
  }
  const policyHash = await checkPolicyFile(stateDir, paths.policy).then((p) => p.hash, () => null);
  const source = manifest.config.policySource;
  return {
    name,
    id: manifest.id,
    state,
    image: manifest.config.image,
    network: manifest.config.network,
    egress: manifest.config.egress,
    policyHash,
    policyInForce,
    policySource: source === null ? null : { path: source, changed: await changedSince(source, paths.policy) },
    memoryMiB: manifest.config.memoryMiB,
    cpus: manifest.config.cpus,
    runtime,
    supervisorAlive: alive,
    readiness,
    paths: { audit: paths.audit, serialLog: paths.serialLog, events: paths.events, policy: paths.policy },
  };
}

/**
 * Whether the file a workspace's policy was copied from now differs from the copy: the workspace
 * decides with its copy, so an edit of the source does not apply until it is copied over. Null when
 * the source cannot be read (moved, deleted).
 */
async function changedSince(source: string, copy: string): Promise<boolean | null> {
  const [a, b] = await Promise.all([readFile(source).catch(() => null), readFile(copy).catch(() => null)]);
  return a === null || b === null ? null : !a.equals(b);
}

/** Every workspace's status; one with a damaged file is left out and passed to `onDamaged`, so it cannot hide the others. */
export async function listWorkspaces(stateDir: string, onDamaged: (error: MicroagentError) => void = () => undefined): Promise<WorkspaceStatus[]> {
  const names = await listWorkspaceNames(stateDir);
  const all = await Promise.all(
    names.map((n) =>
      workspaceStatus(stateDir, n).catch((err: unknown) => {
        if (vanished(err) || unfinished(err)) return null;
        if ((err as MicroagentError).code !== 'workspace.damaged') throw err;
        onDamaged(err as MicroagentError);
        return null;
      }),
    ),
  );
  return all.filter((s): s is WorkspaceStatus => s !== null);
}

/**
 * A workspace whose record says a VM runs while its supervisor is gone (a crash, the OOM killer, a
 * host reboot) is recorded `failed`; the detail says what was repaired, null when nothing was. gc
 * kills a VM process the supervisor left behind; start and delete refuse to (a VM still running is
 * the user's to kill) and say so. Under the workspace lock.
 */
async function reconcileDeadSupervisor(stateDir: string, manifest: WorkspaceManifest, runtime: RuntimeRecord | null, by: 'gc' | 'start' | 'delete'): Promise<string | null> {
  if (runtime !== null && recordedProcessAlive(runtime.supervisorPid, runtime.bootId)) return null;
  if (!VM_STATES.has(manifest.state) && runtime === null) return null;
  let detail = 'supervisor gone';
  if (runtime?.vmPid != null && recordedProcessAlive(runtime.vmPid, runtime.bootId)) {
    if (by !== 'gc') {
      throw new MicroagentError('conflict', `workspace "${manifest.name}": its supervisor died and its VM process ${runtime.vmPid} still runs, without egress`, {
        code: 'lifecycle.orphaned_vm',
        remediation: `end it with "microagent kill ${manifest.name}" (or "microagent gc"), then ${by} again`,
      });
    }
    process.kill(runtime.vmPid, 'SIGKILL');
    detail += '; orphaned VM process killed';
  }
  await writeRuntime(stateDir, manifest.name, null);
  await recordState(stateDir, manifest.name, by, 'failed', runtime?.runtimeId ?? null, detail);
  return detail;
}

/** Reconciles workspaces whose supervisor died: kills an orphaned VM and records `failed`. */
export async function gcWorkspaces(stateDir: string): Promise<{ name: string; repaired: string }[]> {
  const repaired: { name: string; repaired: string }[] = [];
  for (const name of await listWorkspaceNames(stateDir)) {
    await withWorkspaceLock(stateDir, name, async () => {
      const manifest = await readManifest(stateDir, name);
      const runtime = await readRuntime(stateDir, name);
      if (runtime !== null && recordedProcessAlive(runtime.supervisorPid, runtime.bootId)) return;
      if (abandonedRun(manifest, runtime)) {
        // A run ends stopped or failed and its own teardown removes it at once (under this lock too):
        // one still here lost its CLI. Prepared is left alone: that is a run between create and start.
        const kept = await removeLocked(stateDir, manifest, ['supervisor.log', 'serial.log']);
        repaired.push({ name, repaired: `abandoned run removed; its audit log is kept in ${kept}` });
        return;
      }
      const detail = await reconcileDeadSupervisor(stateDir, manifest, runtime, 'gc');
      if (detail !== null) repaired.push({ name, repaired: detail });
    }).catch((err: unknown) => {
      if (vanished(err) || unfinished(err)) return;
      if ((err as MicroagentError).code !== 'workspace.damaged') throw err;
      repaired.push({ name, repaired: `left alone: ${(err as MicroagentError).message}` });
    });
  }
  const { removeAbandonedWork } = await import('../rootfs/image-cache.js');
  for (const work of await removeAbandonedWork(stateDir)) repaired.push({ name: `images/.tmp/${work}`, repaired: 'work of an image build whose process died, removed' });
  return repaired;
}
