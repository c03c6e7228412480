/** `microagent run` and `microagent create`: the flags that describe a workspace, parsed into CreateOptions. */
import { MODES, type Mode } from '../../policy/types.js';
import { kvmAccessProblem } from '../../vm/kvm-access.js';
import type { ImageProgressEvent } from '../../vm/rootfs/progress.js';
import { progressUpdate } from '../progress.js';
import { requireTerminal } from '../terminal.js';
import { parseCpus, parseDiskSize, parseMemory, parseProfile, parseTimeout } from '../../vm/workspace/options.js';
import { runInWorkspace } from '../../vm/workspace/run.js';
import type { CreateOptions } from '../../vm/workspace/service.js';
import { parseCommandArgs, timedOutWarning, usageError, type Command, type CliContext } from '../command.js';

const WORKSPACE_FLAGS = {
  env: { type: 'string', short: 'e', multiple: true },
  egress: { type: 'string' },
  policy: { type: 'string' },
  network: { type: 'string' },
  publish: { type: 'string', short: 'p', multiple: true },
  mediation: { type: 'string', multiple: true },
  'mediation-optional': { type: 'boolean' },
  'mediation-no-proxy-protocol': { type: 'boolean' },
  profile: { type: 'string' },
  memory: { type: 'string' },
  cpus: { type: 'string' },
  disk: { type: 'string' },
  'dns-upstream': { type: 'string', multiple: true },
  'upstream-ca': { type: 'string', multiple: true },
  'insecure-registry': { type: 'string', multiple: true },
} as const;

const FLAG_USAGE =
  '[-e KEY=VAL]... [--egress guarded|strict|off] [--policy FILE] [--network user|isolated] [-p [HOST_IP:]HOST_PORT:GUEST_PORT]... [--mediation PORT=TARGET]... [--mediation-optional] [--mediation-no-proxy-protocol] [--profile tiny|small|medium|large] [--memory SIZE] [--cpus N] [--disk SIZE] [--dns-upstream IP:PORT]... [--upstream-ca FILE]... [--insecure-registry HOST[:PORT]]...';

type FlagValues = { [K in keyof typeof WORKSPACE_FLAGS]?: (typeof WORKSPACE_FLAGS)[K] extends { multiple: true } ? string[] : (typeof WORKSPACE_FLAGS)[K] extends { type: 'boolean' } ? boolean : string };

/** Image progress on a terminal in human mode: a line redrawn in place, erased by `clear` (an error must not land on it). */
function terminalProgress(ctx: CliContext): { readonly listener: (e: ImageProgressEvent) => void; clear(): void } | undefined {
  if (ctx.out.mode !== 'ux' || !process.stderr.isTTY) return undefined;
  let shown = false;
  return {
    listener: (e) => {
      // A terminal without a size (a pty nobody sized) reports 0 columns.
      process.stderr.write(progressUpdate(e, process.stderr.columns || 100));
      shown = e.kind !== 'done';
    },
    clear: () => {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}

function createOptions(values: FlagValues, image: string | undefined, command: string[], onProgress: ((e: ImageProgressEvent) => void) | undefined): CreateOptions {
  if (values.egress !== undefined && !(MODES as readonly string[]).includes(values.egress)) {
    throw usageError(`--egress must be one of ${MODES.join(', ')}, not "${values.egress}"`, 'e.g. --egress strict');
  }
  if (values.network !== undefined && values.network !== 'user' && values.network !== 'isolated') {
    throw usageError(`--network must be user or isolated, not "${values.network}"`, 'e.g. --network isolated');
  }
  return {
    ...(image === undefined ? {} : { image }),
    command,
    env: values.env ?? [],
    ...(values.network === undefined ? {} : { network: values.network as 'user' | 'isolated' }),
    ...(values.egress === undefined ? {} : { egress: values.egress as Mode }),
    ...(values.policy === undefined ? {} : { policyFile: values.policy }),
    publish: values.publish ?? [],
    mediation: values.mediation ?? [],
    mediationOptional: values['mediation-optional'] === true,
    mediationProxyProtocol: values['mediation-no-proxy-protocol'] !== true,
    ...(values.profile === undefined ? {} : { profile: parseProfile(values.profile) }),
    ...(values.memory === undefined ? {} : { memoryMiB: parseMemory(values.memory) }),
    ...(values.disk === undefined ? {} : { diskMiB: parseDiskSize(values.disk) }),
    ...(values.cpus === undefined ? {} : { cpus: parseCpus(values.cpus) }),
    dnsUpstreams: values['dns-upstream'] ?? [],
    upstreamCaFiles: values['upstream-ca'] ?? [],
    insecureRegistries: values['insecure-registry'] ?? [],
    ...(onProgress === undefined ? {} : { onProgress }),
  };
}

/** Said by the verbs that boot a guest: without KVM access it runs under TCG, several times slower. */
export function warnIfKvmDenied(ctx: CliContext): void {
  const denied = kvmAccessProblem();
  if (denied !== null) ctx.out.warn(`${denied.reason}: the guest runs under TCG, several times slower. ${denied.advice}`);
}

/** `[IMAGE] [--] [CMD...]`: before `--` at most the image; without `--`, the first word is the image. */
function splitImageAndCommand(name: string, positionals: readonly string[], dashDash: number): { image?: string; command: string[] } {
  const before = dashDash < 0 ? positionals.slice(0, 1) : positionals.slice(0, dashDash);
  const command = dashDash < 0 ? positionals.slice(1) : positionals.slice(dashDash);
  if (before.length > 1) throw usageError(`${name}: expected at most one IMAGE before "--", got ${before.join(' ')}`, `usage: microagent ${name} [IMAGE] [--] [CMD...]`);
  return before[0] === undefined ? { command } : { image: before[0], command };
}

const run: Command = {
  name: 'run',
  summary: 'Run one command in a throwaway microVM workspace (the image read-only, its writes discarded) with all egress mediated; exits with its exit code',
  usage: `[IMAGE] [--] [CMD...] ${FLAG_USAGE} [--timeout SECONDS] [-i] [-t]`,
  async run(args, ctx) {
    const dash = args.indexOf('--');
    const flags = dash < 0 ? args : args.slice(0, dash);
    const { values, positionals } = parseCommandArgs(run, flags, { ...WORKSPACE_FLAGS, timeout: { type: 'string' }, interactive: { type: 'boolean', short: 'i' }, tty: { type: 'boolean', short: 't' } });
    const all = dash < 0 ? positionals : [...positionals, ...args.slice(dash + 1)];
    const { image, command } = splitImageAndCommand('run', all, dash < 0 ? -1 : positionals.length);
    const timeoutMs = values.timeout === undefined ? undefined : parseTimeout(values.timeout);
    const stream = ctx.out.mode === 'ux';
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const abort = new AbortController();
    void ctx.interrupted.then(() => abort.abort());
    const terminal = values.tty === true ? requireTerminal(ctx, 'run', values.env ?? []) : null;
    const withStdin = values.interactive === true || terminal !== null;
    warnIfKvmDenied(ctx);
    const progress = terminalProgress(ctx);
    terminal?.raw();
    const result = await runInWorkspace(ctx.stateDir, {
      signal: abort.signal,
      ...createOptions(terminal === null ? values : { ...values, env: terminal.env }, image, command, progress?.listener),
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      // Read from the start: the supervisor holds it for the command while the guest boots.
      ...(withStdin ? { stdin: process.stdin } : {}),
      ...(terminal === null ? {} : { tty: terminal.tty }),
      onStdout: (d) => (stream ? process.stdout.write(d) : out.push(d)),
      onStderr: (d) => (stream ? process.stderr.write(d) : err.push(d)),
    }).finally(() => {
      terminal?.restore();
      progress?.clear();
      if (withStdin) process.stdin.destroy();
    });
    if (result.timedOut && timeoutMs !== undefined) ctx.out.warn(timedOutWarning(timeoutMs / 1000));
    // A command that failed because egress was denied should not leave its user guessing where the record is.
    const denied = result.auditSummary.byVerdict['deny'] ?? 0;
    if (stream && denied > 0) ctx.out.warn(`the egress policy denied ${denied} of this run's connections, requests or lookups: microagent audit query ${result.audit} --verdict deny`);
    const exitCode = result.exitCode ?? 1;
    return {
      result: { ...result, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') },
      human: '',
      exitCode,
    };
  },
};

const create: Command = {
  name: 'create',
  summary: 'Create a persistent workspace (root filesystem built from the image) in state "prepared"',
  usage: `NAME [--image IMAGE] [--] [CMD...] ${FLAG_USAGE}`,
  async run(args, ctx) {
    const dash = args.indexOf('--');
    const flags = dash < 0 ? args : args.slice(0, dash);
    const { values, positionals } = parseCommandArgs(create, flags, { ...WORKSPACE_FLAGS, image: { type: 'string' } });
    const [name, ...rest] = positionals;
    if (name === undefined) throw usageError('create: NAME is required', `usage: microagent create ${create.usage}`);
    if (rest.length > 0) throw usageError(`create: unexpected ${rest.join(' ')}`, 'put the command after "--"');
    const command = dash < 0 ? [] : args.slice(dash + 1);
    const { createWorkspace } = await import('../../vm/workspace/service.js');
    const progress = terminalProgress(ctx);
    const manifest = await createWorkspace(ctx.stateDir, name, createOptions(values, values.image, command, progress?.listener)).finally(() => progress?.clear());
    return { result: manifest, human: `created ${name} (${manifest.id}) from ${manifest.config.image}: prepared` };
  },
};

export const commands: readonly Command[] = [run, create];
