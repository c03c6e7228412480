/**
 * Builds the microVM guest kernel from the distribution's own kernel source package (Debian's and
 * Ubuntu's `linux-source`, installed through apt: no download of our own), configured by
 * `make tinyconfig` plus src/vm/guest-kernel/microvm.config, and installs it like any other kernel
 * (kernel.ts: manifest, SHA-256s, default). A distribution kernel probes hundreds of drivers that a
 * microVM does not have; under TCG, where every instruction is emulated, Debian's cloud kernel took
 * 1.5-2.3 s to the agent's HELLO and this one takes 0.5-0.8 s (docs/guest.md).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { PACKAGE_ROOT } from '../paths.js';
import { processAlive } from '../pid-lock.js';
import { findExecutable } from './host-tools.js';
import { probeBoot } from './accel.js';
import { buildInitramfs } from './initramfs.js';
import { defaultKernelVersion, installKernel, setDefaultKernel, type InstalledKernel } from './kernel.js';
import { makeDirs } from '../make-dirs.js';

const log = childLog('vm.kernel');

/** Where the distributions put their kernel source tarballs (Debian: directly; Ubuntu: in a directory). */
const SOURCE_ROOT = '/usr/src';
/** Tools `make bzImage` runs for an x86 kernel (objtool needs libelf's headers: libelf-dev). */
const BUILD_TOOLS = ['make', 'gcc', 'flex', 'bison', 'bc', 'tar', 'xz'] as const;
const SETUP = 'Run ./scripts/setup.sh, or `apt-get install linux-source flex bison bc libelf-dev`.';

export function microvmConfigPath(): string {
  return join(PACKAGE_ROOT, 'src', 'vm', 'guest-kernel', 'microvm.config');
}

/** Between the tarball and the fragment's hash in a built kernel's `source`. */
const FRAGMENT_MARK = '+microvm.config@';

/** The fragment this package ships, and the SHA-256 prefix a build from it records in its `source`. */
function shippedFragment(): { text: string; hash: string } {
  const text = readFileSync(microvmConfigPath(), 'utf8');
  return { text, hash: createHash('sha256').update(text).digest('hex').slice(0, 12) };
}

/**
 * Whether a kernel's `source` says `kernel build` made it from the fragment this package ships. A
 * build from an older fragment boots, but without what the fragment gained since (setup and the e2e
 * tests rebuild it).
 */
export function isCurrentBuild(source: string): boolean {
  return source.startsWith('build:') && source.endsWith(`${FRAGMENT_MARK}${shippedFragment().hash}`);
}

/** The newest kernel source tarball apt installed, e.g. /usr/src/linux-source-6.1.tar.xz. */
export function findKernelSource(root = SOURCE_ROOT): string {
  const tarball = /^linux-source-[\d.]+\.tar\.(xz|bz2|gz)$/;
  const found: string[] = [];
  for (const name of existsSync(root) ? readdirSync(root) : []) {
    if (tarball.test(name)) found.push(join(root, name));
    else if (/^linux-source-[\d.]+$/.test(name) && statSync(join(root, name)).isDirectory()) {
      for (const inner of readdirSync(join(root, name))) if (tarball.test(inner)) found.push(join(root, name, inner));
    }
  }
  const byVersion = (path: string) => basename(path).match(/\d+/g)!.map(Number);
  found.sort((a, b) => {
    const [va, vb] = [byVersion(a), byVersion(b)];
    for (let i = 0; i < Math.max(va.length, vb.length); i++) if ((va[i] ?? 0) !== (vb[i] ?? 0)) return (va[i] ?? 0) - (vb[i] ?? 0);
    return 0;
  });
  const newest = found.pop();
  if (newest === undefined) {
    throw new MicroagentError('not_found', `no kernel source package (linux-source-<version>.tar.*) in ${root}`, {
      code: 'vm.kernel_source_missing',
      remediation: `${SETUP} Or give --source PATH to a kernel source tarball.`,
    });
  }
  return newest;
}

/** A config fragment's settings: `CONFIG_X=value`, with `=n` and `# CONFIG_X is not set` as 'n'. */
export function parseConfigFragment(text: string): Map<string, string> {
  const settings = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_\w+)=(.*)$/.exec(line);
    const unset = /^# (CONFIG_\w+) is not set$/.exec(line);
    if (set) settings.set(set[1]!, set[2] === 'n' ? 'n' : set[2]!);
    else if (unset) settings.set(unset[1]!, 'n');
  }
  return settings;
}

/** Fragment settings the final .config does not have (Kconfig drops what its dependencies forbid). */
export function unmetSettings(fragment: Map<string, string>, final: Map<string, string>): string[] {
  const unmet: string[] = [];
  for (const [name, wanted] of fragment) {
    const actual = final.get(name) ?? 'n';
    if (actual !== wanted) unmet.push(`${name}=${wanted} (got ${actual})`);
  }
  return unmet;
}

export interface BuildOptions {
  readonly stateDir: string;
  /** A kernel source tarball; default: the newest under /usr/src. */
  readonly source?: string;
  /** Parallel make jobs; default: the CPUs available. */
  readonly jobs?: number;
  /** One line per step, for a terminal. */
  readonly onProgress?: (line: string) => void;
}

export async function buildKernel(options: BuildOptions): Promise<InstalledKernel> {
  for (const tool of BUILD_TOOLS) {
    if (findExecutable(tool) === undefined) {
      throw new MicroagentError('unsupported', `${tool} is needed to build the guest kernel but was not found`, {
        code: 'vm.tool_missing', remediation: SETUP,
      });
    }
  }
  const source = options.source ?? findKernelSource();
  if (!existsSync(source)) {
    throw new MicroagentError('not_found', `kernel source ${source} does not exist`, {
      code: 'vm.kernel_source_missing', remediation: 'Give --source an existing linux-source tarball.',
    });
  }
  const { text: fragmentText, hash: fragmentHash } = shippedFragment();
  const progress = options.onProgress ?? (() => undefined);
  makeDirs(options.stateDir);
  removeAbandonedTrees(options.stateDir);
  // Under the state directory, not /tmp: the tree is ~1.5 GB and /tmp is often a small tmpfs.
  const work = mkdtempSync(join(options.stateDir, `${WORK_PREFIX}${process.pid}-`));
  // Kept after the build (the next one replaces it), so a failure can be read in full.
  const buildLog = join(options.stateDir, 'kernel-build.log');
  writeFileSync(buildLog, '');
  try {
    progress(`unpacking ${source}`);
    await step('tar', ['-xf', source, '-C', work], work, buildLog);
    const tree = readdirSync(work).map((n) => join(work, n)).find((p) => statSync(p).isDirectory());
    if (tree === undefined || !existsSync(join(tree, 'Makefile'))) {
      throw new MicroagentError('invalid', `${source} holds no kernel source tree`, {
        code: 'vm.kernel_source_missing', remediation: 'Give --source a linux-source tarball.',
      });
    }
    progress('configuring: make tinyconfig + src/vm/guest-kernel/microvm.config');
    writeFileSync(join(tree, 'microvm.config'), fragmentText);
    await step('make', ['tinyconfig'], tree, buildLog);
    await step('scripts/kconfig/merge_config.sh', ['-m', '.config', 'microvm.config'], tree, buildLog);
    await step('make', ['olddefconfig'], tree, buildLog);
    const config = readFileSync(join(tree, '.config'), 'utf8');
    const unmet = unmetSettings(parseConfigFragment(fragmentText), parseConfigFragment(config));
    if (unmet.length > 0) {
      throw new MicroagentError('unsupported', `${basename(source)} cannot be configured as the microVM kernel: ${unmet.join(', ')}`, {
        code: 'vm.kernel_config_rejected',
        remediation: 'Use a kernel source of the series microagent was tested with (Debian 12 linux-source-6.1), or install a distribution kernel with `microagent kernel install`.',
      });
    }
    const jobs = options.jobs ?? availableParallelism();
    progress(`compiling with ${jobs} job${jobs === 1 ? '' : 's'} (a few minutes; log: ${buildLog})`);
    await step('make', [`-j${jobs}`, 'bzImage'], tree, buildLog);
    const release = (await step('make', ['-s', 'kernelrelease'], tree, buildLog, true)).trim();
    // Installed as a directory holding boot/vmlinuz-<release> and its config, like a package.
    const boot = join(work, 'install', 'boot');
    makeDirs(boot);
    copyFileSync(join(tree, 'arch/x86/boot/bzImage'), join(boot, `vmlinuz-${release}`));
    writeFileSync(join(boot, `config-${release}`), config);
    progress(`installing ${release}`);
    const kernel = await installKernel({
      stateDir: options.stateDir,
      from: join(work, 'install'),
      source: `build:${basename(source)}${FRAGMENT_MARK}${fragmentHash}`,
      makeDefault: false,
    });
    progress('booting it once (TCG, the agent in probe mode) before it becomes the default');
    await smokeBoot(kernel, options.stateDir, work);
    setDefaultKernel(options.stateDir, kernel.version);
    log.info({ version: kernel.version, source: kernel.source }, 'guest kernel built');
    return kernel;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * A kernel that builds may still not boot (a source series whose defaults differ): it is booted once
 * under TCG, which every host has, with the agent's initramfs in probe mode, and becomes the default
 * only if the agent ran. Otherwise it is removed and the default is left as it was.
 */
export async function smokeBoot(kernel: InstalledKernel, stateDir: string, work: string): Promise<void> {
  const serialLog = join(work, 'smoke-serial.log');
  const failure = await probeBoot({
    kernelPath: kernel.image,
    initramfsPath: await buildInitramfs(stateDir, kernel),
    accelerator: 'tcg',
    acpi: kernel.virtioDiscovery !== 'cmdline',
    serialLog,
    timeoutMs: 60_000,
  });
  if (failure === null) return;
  const serial = existsSync(serialLog) ? readFileSync(serialLog, 'utf8').trim().split('\n').slice(-10).join('\n') : '';
  rmSync(kernel.dir, { recursive: true, force: true });
  // A rebuild of the default's own version replaced it on install: there is no default left to keep.
  const replacedDefault = defaultKernelVersion(stateDir) === kernel.version;
  throw new MicroagentError('unsupported', `the built kernel ${kernel.version} did not boot: ${failure}${serial ? `; its console ended:\n${serial}` : ''}`, {
    code: 'vm.kernel_unbootable',
    remediation: `${replacedDefault ? `It replaced the installed ${kernel.version}, so no kernel is installed now.` : 'The default kernel was not changed.'} Install a distribution kernel with \`microagent kernel install\`, or build from the sources microagent was tested with (Debian 12 linux-source-6.1).`,
  });
}

const WORK_PREFIX = 'kernel-build-';

/** Trees of builds whose process is gone (killed mid-build) are removed; a running build's are kept. */
function removeAbandonedTrees(stateDir: string): void {
  for (const name of readdirSync(stateDir)) {
    const pid = name.startsWith(WORK_PREFIX) ? Number(name.slice(WORK_PREFIX.length).split('-')[0]) : NaN;
    if (!Number.isInteger(pid) || pid === process.pid || processAlive(pid)) continue;
    log.info({ dir: name }, 'removing the tree of an interrupted kernel build');
    rmSync(join(stateDir, name), { recursive: true, force: true });
  }
}

/**
 * Runs one build step with its output appended to the build log (stdout returned instead when
 * `capture`); a failure quotes the log's tail.
 */
async function step(cmd: string, args: readonly string[], cwd: string, buildLog: string, capture = false): Promise<string> {
  const fd = openSync(buildLog, 'a');
  let stdout = '';
  try {
    const exit = await new Promise<number | string>((resolve) => {
      const child = spawn(cmd, args, { cwd, stdio: ['ignore', capture ? 'pipe' : fd, fd] });
      child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.once('error', (err) => resolve(err.message));
      child.once('close', (code, signal) => resolve(code ?? String(signal)));
    });
    if (exit !== 0) {
      const tail = readFileSync(buildLog, 'utf8').trim().split('\n').slice(-15).join('\n');
      throw new MicroagentError('transient', `kernel build step \`${cmd} ${args.join(' ')}\` failed (${exit}); the end of ${buildLog}:\n${tail}`, {
        code: 'vm.kernel_build', remediation: `${SETUP} Then run \`microagent kernel build\` again.`,
      });
    }
    return stdout;
  } finally {
    closeSync(fd);
  }
}
