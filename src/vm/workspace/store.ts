/**
 * The state directory: one folder per workspace under `<stateDir>/workspaces/NAME/` holding its
 * manifest, disk, runtime record, lifecycle history (events.json, JSON Lines, append-only), serial log,
 * audit log and CA. Writes are atomic (write + rename) so a crashed call never leaves a torn manifest.
 * Never turns anything but a validated workspace name into a path.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { MicroagentError } from '../../errors.js';
import type { WorkspaceState } from './lifecycle.js';
import { makeDirs } from '../../make-dirs.js';
import { HOST_BOOT_ID } from '../../pid-lock.js';

/** Lowercase DNS-label style: it becomes a hostname, a path segment and a CA subject. */
const NAME = /^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$/;

export function validateWorkspaceName(name: string): string {
  if (!NAME.test(name)) {
    throw new MicroagentError('invalid', `invalid workspace name "${name}"`, {
      code: 'usage',
      remediation: 'use 1-40 lowercase letters, digits and dashes, starting and ending with a letter or digit',
    });
  }
  return name;
}

export interface WorkspaceConfig {
  readonly image: string;
  readonly imageDigest: string;
  /** What `run` executes and what every `exec` inherits: the image's Env, WorkingDir and User. */
  readonly run: { readonly argv: readonly string[]; readonly env: readonly string[]; readonly cwd: string; readonly uid: number; readonly gid: number };
  /** `-e KEY=VAL` given at create, added to every command. */
  readonly env: readonly string[];
  readonly network: 'user' | 'isolated';
  readonly egress: 'guarded' | 'strict' | 'off';
  /** The policy file the workspace was created with, copied into the workspace as policy.yaml. */
  readonly policySource: string | null;
  readonly publish: readonly { hostIp: string; hostPort: number; guestPort: number }[];
  /** `proxyProtocol` is absent in workspaces created before it could be turned off: on. */
  readonly mediation: readonly { port: number; target: string; required: boolean; failClosed: boolean; proxyProtocol?: boolean }[];
  readonly memoryMiB: number;
  readonly cpus: number;
  /** Resolvers the workspace DNS forwards to (`host:port`); empty: the host's /etc/resolv.conf. */
  readonly dnsUpstreams: readonly string[];
  /** Extra CA certificates (PEM text) the proxy trusts for upstream TLS, besides the system roots. */
  readonly upstreamCa: readonly string[];
  /**
   * The root disk. `copy` (also when absent, as in manifests written before the field): the
   * workspace's own `disk.ext4`, kept across restarts. `throwaway` (`run`): the cached image at `base`,
   * opened read-only, the guest's writes lost when the VM stops.
   */
  readonly disk?: { readonly kind: 'copy' } | { readonly kind: 'throwaway'; readonly base: string };
}

export interface WorkspaceManifest {
  readonly name: string;
  readonly id: string;
  readonly createdAt: string;
  readonly state: WorkspaceState;
  readonly config: WorkspaceConfig;
}

export interface RuntimeRecord {
  readonly runtimeId: string;
  readonly supervisorPid: number;
  readonly vmPid: number | null;
  readonly controlSocket: string;
  readonly startedAt: string;
  readonly backend: string;
  readonly accelerator: string;
  /** The host boot the pids belong to (stamped by writeRuntime; absent in older records). */
  readonly bootId?: string;
}

export interface LifecycleEventRecord {
  readonly id: string;
  readonly ts: string;
  readonly workspace_id: string;
  readonly runtime_id: string | null;
  readonly verb: string;
  readonly from: WorkspaceState | null;
  readonly state: WorkspaceState;
  readonly detail?: string;
}

export function workspacesRoot(stateDir: string): string {
  return join(stateDir, 'workspaces');
}

export function workspacePaths(stateDir: string, name: string) {
  const dir = join(workspacesRoot(stateDir), validateWorkspaceName(name));
  return {
    dir,
    manifest: join(dir, 'manifest.json'),
    runtime: join(dir, 'runtime.json'),
    events: join(dir, 'events.json'),
    disk: join(dir, 'disk.ext4'),
    policy: join(dir, 'policy.yaml'),
    serialLog: join(dir, 'serial.log'),
    audit: join(dir, 'audit.jsonl'),
    ca: join(dir, 'ca'),
    lock: join(dir, 'lock'),
    supervisorLog: join(dir, 'supervisor.log'),
    /** Why the last start failed ({kind, code, message, remediation}), written by the supervisor. */
    startError: join(dir, 'start-error.json'),
  };
}
export type WorkspacePaths = ReturnType<typeof workspacePaths>;

/**
 * The control socket of a workspace while its supervisor runs, in the run directory that also holds
 * the mediator's sockets: `<dir>/run`, or a short private directory under /tmp when that path would
 * leave no room in a Unix socket path's 107 bytes.
 */
export function runDirOf(paths: WorkspacePaths, id: string): string {
  const preferred = join(paths.dir, 'run');
  return preferred.length <= 60 ? preferred : join('/tmp', `microagent-${id.slice(0, 12)}`);
}

export function controlSocketOf(runDir: string): string {
  return join(runDir, 'control.sock');
}

/** Written whole or not at all: a reader never sees a half-written file. */
export async function writeAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomUUID().slice(0, 8)}.tmp`;
  await writeFile(tmp, data, { mode: 0o600 });
  await rename(tmp, path);
}

export function workspaceNotFound(stateDir: string, name: string): MicroagentError {
  // A run's workspace is gone once it ends, but its logs are kept: point at them, not at create.
  const kept = keptRunAuditLog(stateDir, name);
  return new MicroagentError('not_found', `no workspace named "${name}" in ${workspacesRoot(stateDir)}`, {
    code: 'workspace.not_found',
    remediation: existsSync(kept)
      ? `"${name}" was a run and has ended; its audit log is kept: microagent egress ${name}, or microagent audit query ${kept}`
      : 'list workspaces with "microagent list", or create it with "microagent create NAME"',
  });
}

/**
 * One of a workspace's own files that does not parse. They are written by rename (events.json is
 * appended to, and its torn last line is skipped), so only a damaged disk or a hand edit makes one.
 */
function damagedFile(name: string, file: string, err: unknown, remediation: string): MicroagentError {
  return new MicroagentError('invalid', `workspace "${name}" has a damaged ${basename(file)}, ${file}: ${(err as Error).message}`, {
    code: 'workspace.damaged',
    remediation,
  });
}

/**
 * The workspace's manifest. A directory without one is a create that has not finished (or never
 * will: it crashed), `workspace.incomplete`; one that does not parse is `workspace.damaged`.
 */
export async function readManifest(stateDir: string, name: string): Promise<WorkspaceManifest> {
  const paths = workspacePaths(stateDir, name);
  let text: string;
  try {
    text = await readFile(paths.manifest, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!(await stat(paths.dir).then((s) => s.isDirectory(), () => false))) throw workspaceNotFound(stateDir, name);
    throw new MicroagentError('invalid', `workspace "${name}" is incomplete: ${paths.dir} has no manifest.json (a create that did not finish)`, {
      code: 'workspace.incomplete',
      remediation: `if no create of "${name}" is running, remove ${paths.dir}`,
    });
  }
  try {
    return JSON.parse(text) as WorkspaceManifest;
  } catch (err) {
    throw damagedFile(name, paths.manifest, err, `restore manifest.json, or move ${paths.dir} aside (its audit log is in it)`);
  }
}

export async function writeManifest(stateDir: string, manifest: WorkspaceManifest): Promise<void> {
  await writeAtomic(workspacePaths(stateDir, manifest.name).manifest, JSON.stringify(manifest, null, 2) + '\n');
}

export async function readRuntime(stateDir: string, name: string): Promise<RuntimeRecord | null> {
  const path = workspacePaths(stateDir, name).runtime;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    return JSON.parse(text) as RuntimeRecord;
  } catch (err) {
    throw damagedFile(name, path, err, `make sure no supervisor or QEMU of "${name}" still runs (ps), then remove ${path}`);
  }
}

export async function writeRuntime(stateDir: string, name: string, record: RuntimeRecord | null): Promise<void> {
  const path = workspacePaths(stateDir, name).runtime;
  if (record === null) await rm(path, { force: true });
  else await writeAtomic(path, JSON.stringify({ ...record, bootId: HOST_BOOT_ID }, null, 2) + '\n');
}

/** Records a state change in the manifest and appends it to the lifecycle history. */
export async function recordState(
  stateDir: string,
  name: string,
  verb: string,
  state: WorkspaceState,
  runtimeId: string | null,
  detail?: string,
): Promise<LifecycleEventRecord> {
  const manifest = await readManifest(stateDir, name);
  const event: LifecycleEventRecord = {
    id: randomUUID(),
    ts: new Date().toISOString(),
    workspace_id: manifest.id,
    runtime_id: runtimeId,
    verb,
    from: manifest.state,
    state,
    ...(detail === undefined ? {} : { detail }),
  };
  await appendFile(workspacePaths(stateDir, name).events, JSON.stringify(event) + '\n', { mode: 0o600 });
  await writeManifest(stateDir, { ...manifest, state });
  return event;
}

export async function readEvents(stateDir: string, name: string): Promise<LifecycleEventRecord[]> {
  const path = workspacePaths(stateDir, name).events;
  const text = await readFile(path, 'utf8').catch(() => '');
  const lines = text.split('\n');
  // An append cut short by a crash leaves a last line without its newline: not an event yet.
  if (!text.endsWith('\n')) lines.pop();
  return lines
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as LifecycleEventRecord;
      } catch (err) {
        throw damagedFile(name, path, err, `the lifecycle history cannot be read; move ${path} aside to start a new one`);
      }
    });
}

export async function listWorkspaceNames(stateDir: string): Promise<string[]> {
  const entries = await readdir(workspacesRoot(stateDir), { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && NAME.test(e.name)).map((e) => e.name).sort();
}

export async function createWorkspaceDir(stateDir: string, name: string): Promise<WorkspacePaths> {
  const paths = workspacePaths(stateDir, name);
  makeDirs(workspacesRoot(stateDir), 0o700);
  try {
    await mkdir(paths.dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      // An incomplete or damaged one cannot be deleted with "microagent delete": say what it is.
      await readManifest(stateDir, name);
      throw new MicroagentError('conflict', `a workspace named "${name}" already exists`, {
        code: 'workspace.exists',
        remediation: `choose another name, or delete the existing one with "microagent delete ${name}"`,
      });
    }
    throw err;
  }
  return paths;
}

/** Where a `run`'s audit log (and a failed run's logs) outlive its throwaway workspace. */
export function runLogsDir(stateDir: string, name: string): string {
  return join(stateDir, 'runs', validateWorkspaceName(name));
}

function keptRunAuditLog(stateDir: string, name: string): string {
  return join(runLogsDir(stateDir, name), 'audit.jsonl');
}

/** A workspace's audit log; for a run that has ended (its workspace removed), the one kept under runs/. */
export async function workspaceAuditLog(stateDir: string, name: string): Promise<string> {
  try {
    await readManifest(stateDir, name);
    return workspacePaths(stateDir, name).audit;
  } catch (err) {
    const kept = keptRunAuditLog(stateDir, name);
    if ((err as MicroagentError).code === 'workspace.not_found' && existsSync(kept)) return kept;
    throw err;
  }
}

/** Moves every segment of the workspace's audit log (and `extra` files) to runLogsDir; returns it. */
export async function keepRunLogs(stateDir: string, name: string, extra: readonly string[]): Promise<string> {
  const from = workspacePaths(stateDir, name).dir;
  const dest = runLogsDir(stateDir, name);
  makeDirs(dest, 0o700);
  for (const f of await readdir(from)) {
    if (f.startsWith('audit.jsonl') || extra.includes(f)) await rename(join(from, f), join(dest, f));
  }
  return dest;
}

export async function removeWorkspaceDir(stateDir: string, name: string): Promise<void> {
  // Retries: a concurrent call may be creating its lock file inside while we remove the folder.
  await rm(workspacePaths(stateDir, name).dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
}
