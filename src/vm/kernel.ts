/**
 * Guest kernels: install one from Debian's linux-image-cloud-amd64 package (through the host's own
 * apt: `apt-get download`, then `dpkg-deb -x`) or from a path the user gives, keep only the boot image
 * (the unpacked PVH ELF `vmlinux` when the kernel has a PVH entry, see kernel-image.ts, else the
 * `vmlinuz` as shipped) and the modules the guest needs (with their dependencies, decompressed), and
 * record a SHA-256 manifest that is verified before every boot (the guest's first instruction waits
 * for it). It never downloads anything itself and never runs a kernel whose files do not match the manifest.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { findExecutable, hostTool, toolFailure } from './host-tools.js';
import { directBootImage, isKernelImage, virtioDiscoveryOfImage } from './kernel-image.js';
import { moduleName, moduleSignaturesEnforced, resolveModules, withoutSignature } from './modules.js';
import { makeDirs } from '../make-dirs.js';

const run = promisify(execFile);
const log = childLog('vm.kernel');

export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

export interface InstalledKernel {
  readonly version: string;
  readonly dir: string;
  /** The file QEMU boots: `vmlinux` (PVH ELF, loaded directly) or `vmlinuz` (self-decompressing bzImage). */
  readonly image: string;
  /** Module files under `<dir>/modules/`, in load order. */
  readonly modules: readonly string[];
  readonly source: string;
  /** Relative path -> sha256 hex, from the manifest. */
  readonly files: Readonly<Record<string, string>>;
  readonly virtioDiscovery: VirtioDiscovery;
}

/**
 * How the guest kernel finds its virtio-mmio devices: from microvm's ACPI tables, or from the
 * `virtio_mmio.device=` words QEMU adds to the command line when ACPI is off. Only a kernel whose
 * config shows no ACPI and built-in command-line devices gets 'cmdline'; a module could not read
 * them (the agent loads modules without parameters).
 */
export type VirtioDiscovery = 'acpi' | 'cmdline';

export function virtioDiscovery(config: string | null): VirtioDiscovery {
  if (config === null) return 'acpi';
  const acpi = /^CONFIG_ACPI=y$/m.test(config);
  const cmdlineDevices = /^CONFIG_VIRTIO_MMIO=y$/m.test(config) && /^CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y$/m.test(config);
  return !acpi && cmdlineDevices ? 'cmdline' : 'acpi';
}

interface Manifest {
  readonly version: string;
  readonly source: string;
  readonly installedAt: string;
  readonly modules: readonly string[];
  /** The boot image's file name; manifests written before direct boot have none and mean `vmlinuz`. */
  readonly image?: 'vmlinux' | 'vmlinuz';
  /** Relative path -> sha256 hex. */
  readonly files: Readonly<Record<string, string>>;
  /** Absent in manifests written before it existed: 'acpi'. */
  readonly virtioDiscovery?: VirtioDiscovery;
}

const REINSTALL = 'Run `microagent kernel install` to install the guest kernel again.';

/** Hashed in 1 MiB reads: the boot image is ~50 MB, and reading it whole doubled the supervisor's peak memory. */
function sha256File(path: string): string {
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(1 << 20);
  const fd = openSync(path, 'r');
  try {
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0;) hash.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

async function tool(cmd: string, args: readonly string[], cwd?: string): Promise<string> {
  if (findExecutable(cmd) === undefined) {
    throw new MicroagentError('unsupported', `${cmd} is needed to install a kernel package but was not found`, {
      code: 'vm.tool_missing',
      remediation: `Install it (${cmd === 'depmod' ? 'kmod' : cmd === 'dpkg-deb' ? 'dpkg' : cmd}) or install with --from a kernel you already have.`,
    });
  }
  try {
    const { stdout } = await run(hostTool(cmd), [...args], { cwd, maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const stderr = ((err as { stderr?: string }).stderr ?? '').trim();
    const failure = toolFailure(`${cmd} ${args.join(' ')}`, stderr, 'vm.kernel_install', cwd ?? args.at(-1) ?? cmd, err);
    if (failure.kind === 'transient') throw failure; // a full disk, not a package problem
    throw new MicroagentError('transient', `${cmd} ${args.join(' ')} failed: ${stderr || String(err)}`, {
      code: 'vm.kernel_install', cause: err,
      remediation: cmd.startsWith('apt')
        ? 'Run `apt-get update` so the package lists know the kernel package, or pass --from PATH to a kernel image or .deb.'
        : 'Check the kernel package or path you gave.',
    });
  }
}

/** Resolves the meta package to the versioned image package (linux-image-<abi>-cloud-amd64). */
async function downloadKernelPackage(into: string): Promise<string> {
  const depends = await tool('apt-cache', ['depends', KERNEL_META_PACKAGE]);
  const pkg = /Depends:\s*(linux-image-[^\s<>]+)/.exec(depends)?.[1];
  if (pkg === undefined) {
    throw new MicroagentError('not_found', `apt does not know which kernel ${KERNEL_META_PACKAGE} depends on`, {
      code: 'vm.kernel_package', remediation: 'Run `apt-get update`, or pass --from PATH.',
    });
  }
  await tool('apt-get', ['download', '-q', pkg], into);
  const deb = readdirSync(into).find((n) => n.endsWith('.deb'));
  if (deb === undefined) throw new MicroagentError('transient', `apt-get download ${pkg} produced no .deb`, { remediation: REINSTALL });
  return join(into, deb);
}

/** Finds vmlinuz, its build config and the modules tree inside an extracted package or a directory the user gave. */
function locateKernel(root: string): { vmlinuz: string; version: string; config: string | null; modulesDir: string | undefined } {
  const bootDir = existsSync(join(root, 'boot')) ? join(root, 'boot') : root;
  const image = readdirSync(bootDir).filter((n) => /^vmlinu[xz]-/.test(n)).sort().pop();
  if (image === undefined) {
    throw new MicroagentError('not_found', `no vmlinuz-<version> found in ${bootDir}`, {
      code: 'vm.kernel_missing', remediation: 'Point --from at a kernel .deb, an extracted package, or a kernel image file.',
    });
  }
  const version = image.replace(/^vmlinu[xz]-/, '');
  const modulesDir = [join(root, 'lib/modules', version), join(root, 'usr/lib/modules', version)].find((d) => existsSync(d));
  const configPath = join(bootDir, `config-${version}`);
  const config = existsSync(configPath) ? readFileSync(configPath, 'utf8') : null;
  return { vmlinuz: join(bootDir, image), version, config, modulesDir };
}

async function readModule(path: string): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  const decompressor = path.endsWith('.ko.xz') ? 'xz' : path.endsWith('.ko.zst') ? 'zstd' : undefined;
  if (decompressor !== undefined) {
    await tool(decompressor, ['--version']);
    const { stdout } = await run(decompressor, ['-dc', path], { encoding: 'buffer', maxBuffer: 64 << 20 });
    return stdout;
  }
  throw new MicroagentError('unsupported', `unknown module compression: ${path}`, { remediation: REINSTALL });
}

/**
 * Copies the guest's modules, decompressed, into the stage. Where the kernel does not enforce module
 * signatures (Debian's only taints itself when one is missing), they are stripped: checking twelve of
 * them with RSA and SHA-256 emulated cost ~100 ms of every TCG boot and decided nothing. Integrity stays
 * the host's to check: the manifest's SHA-256s, at install and before every boot.
 */
async function stageModules(root: string, version: string, modulesDir: string, stage: string, keepSignatures: boolean): Promise<string[]> {
  if (!existsSync(join(modulesDir, 'modules.dep'))) {
    // Debian ships modules.dep unbuilt (postinst runs depmod); build it in the extracted tree.
    await tool('depmod', ['-b', modulesDir.endsWith(join('usr/lib/modules', version)) ? join(root, 'usr') : root, version]);
  }
  const dep = readFileSync(join(modulesDir, 'modules.dep'), 'utf8');
  const builtinPath = join(modulesDir, 'modules.builtin');
  const builtin = existsSync(builtinPath) ? readFileSync(builtinPath, 'utf8') : '';
  const order = resolveModules(dep, builtin);
  mkdirSync(join(stage, 'modules'));
  const names: string[] = [];
  for (const rel of order) {
    const name = `${moduleName(rel)}.ko`;
    const data = await readModule(join(modulesDir, rel));
    writeFileSync(join(stage, 'modules', name), keepSignatures ? data : withoutSignature(data));
    names.push(name);
  }
  return names;
}

export interface InstallOptions {
  readonly stateDir: string;
  /** A kernel .deb, an extracted package/directory with boot/vmlinuz-*, or a bare kernel image. */
  readonly from?: string;
  /** What the manifest names as the kernel's origin, instead of the path (a build names its sources). */
  readonly source?: string;
  /** false: installed, but the default stays as it was until setDefaultKernel (a build boots it first). */
  readonly makeDefault?: boolean;
}

export async function installKernel(options: InstallOptions): Promise<InstalledKernel> {
  const kernelsDir = join(options.stateDir, 'kernels');
  makeDirs(kernelsDir);
  // Staged beside its destination, not in /tmp: the final rename must not cross filesystems (a
  // tmpfs /tmp under a state directory on disk is the common case), and /tmp may be small.
  const work = mkdtempSync(join(kernelsDir, '.install-'));
  try {
    let root: string | undefined;
    let source: string;
    let bare: string | undefined;
    if (options.from === undefined) {
      const deb = await downloadKernelPackage(work);
      source = `debian:${basename(deb)}`;
      root = join(work, 'root');
      await tool('dpkg-deb', ['-x', deb, root]);
    } else if (!existsSync(options.from)) {
      throw new MicroagentError('not_found', `kernel source ${options.from} does not exist`, {
        code: 'vm.kernel_missing', remediation: 'Give --from an existing .deb, directory or kernel image.',
      });
    } else if (statSync(options.from).isDirectory()) {
      root = options.from;
      source = `dir:${options.from}`;
    } else if (options.from.endsWith('.deb')) {
      root = join(work, 'root');
      source = `deb:${basename(options.from)}`;
      await tool('dpkg-deb', ['-x', options.from, root]);
    } else {
      bare = options.from;
      source = `image:${options.from}`;
    }
    const stage = join(work, 'stage');
    mkdirSync(stage);
    let version: string;
    let modules: string[] = [];
    let shipped: Buffer;
    let config: string | null = null;
    if (root !== undefined) {
      const found = locateKernel(root);
      version = found.version;
      config = found.config;
      shipped = readFileSync(found.vmlinuz);
      if (found.modulesDir !== undefined) {
        modules = await stageModules(root, version, found.modulesDir, stage, moduleSignaturesEnforced(found.config));
      }
    } else {
      // A bare image must have the virtio drivers built in; its content hash names it.
      shipped = readFileSync(bare as string);
      version = `custom-${createHash('sha256').update(shipped).digest('hex').slice(0, 12)}`;
      mkdirSync(join(stage, 'modules'));
    }
    if (!isKernelImage(shipped)) {
      throw new MicroagentError('invalid', `${options.from ?? source} holds no Linux kernel image (neither an ELF vmlinux nor a bzImage)`, {
        code: 'vm.kernel_invalid',
        remediation: 'Give --from a kernel image (vmlinuz or vmlinux), a linux-image .deb, or a directory holding one.',
      });
    }
    const direct = directBootImage(shipped);
    const image = direct.format === 'pvh-elf' ? 'vmlinux' : 'vmlinuz';
    if (direct.format === 'pvh-elf') writeFileSync(join(stage, image), direct.elf);
    else {
      log.info({ version, why: direct.why }, 'kernel boots as shipped (no direct PVH boot)');
      writeFileSync(join(stage, image), shipped);
    }
    const files: Record<string, string> = { [image]: sha256File(join(stage, image)) };
    for (const m of modules) files[`modules/${m}`] = sha256File(join(stage, 'modules', m));
    const manifest: Manifest = {
      version, source: options.source ?? source, installedAt: new Date().toISOString(), modules, image, files,
      // Without a config (a bare image), the kernel's own strings tell.
      virtioDiscovery: config !== null ? virtioDiscovery(config) : direct.format === 'pvh-elf' ? virtioDiscoveryOfImage(direct.elf) : 'acpi',
    };
    writeFileSync(join(stage, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    const dest = join(kernelsDir, version);
    rmSync(dest, { recursive: true, force: true });
    renameSync(stage, dest);
    if (options.makeDefault !== false) setDefaultKernel(options.stateDir, version);
    log.info({ version, source, modules: modules.length }, 'kernel installed');
    return loadKernel(options.stateDir, version);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Makes an installed kernel the one workspaces boot. */
export function setDefaultKernel(stateDir: string, version: string): void {
  writeFileSync(defaultKernelFile(stateDir), `${version}\n`);
}

/** The version workspaces boot, or undefined when none was made the default. */
export function defaultKernelVersion(stateDir: string): string | undefined {
  const file = defaultKernelFile(stateDir);
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

function defaultKernelFile(stateDir: string): string {
  return join(stateDir, 'kernels', 'default');
}

/** The installed kernel (the default one unless `version` is given), verified against its manifest. */
export function loadKernel(stateDir: string, version?: string): InstalledKernel {
  const kernel = readKernel(stateDir, version);
  verifyKernel(kernel);
  return kernel;
}

/**
 * The installed kernel as its manifest describes it, not yet verified: a boot overlaps the hash
 * check (~50 ms for the boot image) with QEMU's start-up and runs the guest only once it passed.
 */
export function readKernel(stateDir: string, version?: string): InstalledKernel {
  const kernelsDir = join(stateDir, 'kernels');
  const chosen = version ?? defaultKernelVersion(stateDir);
  const dir = chosen === undefined ? undefined : join(kernelsDir, chosen);
  if (chosen === undefined || dir === undefined || !existsSync(join(dir, 'manifest.json'))) {
    throw new MicroagentError('not_found', `no guest kernel is installed${chosen ? ` (version ${chosen})` : ''} in ${kernelsDir}`, {
      code: 'vm.kernel_missing',
      remediation: 'Run `microagent kernel install` (uses apt) or `microagent kernel install --from PATH`.',
    });
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch (err) {
    throw new MicroagentError('invalid', `the kernel manifest in ${dir} is unreadable`, {
      code: 'vm.kernel_corrupt', cause: err, remediation: REINSTALL,
    });
  }
  return {
    version: manifest.version, dir, image: join(dir, manifest.image ?? 'vmlinuz'), modules: manifest.modules,
    source: manifest.source, files: manifest.files, virtioDiscovery: manifest.virtioDiscovery ?? 'acpi',
  };
}

/** Throws `vm.kernel_corrupt` unless every file of the kernel matches its manifest's SHA-256. */
export function verifyKernel(kernel: InstalledKernel): void {
  for (const [rel, expected] of Object.entries(kernel.files)) {
    const path = join(kernel.dir, rel);
    const actual = existsSync(path) ? sha256File(path) : 'missing';
    if (actual !== expected) {
      throw new MicroagentError('invalid', `kernel file ${path} does not match its manifest (sha256 ${actual.slice(0, 16)}, expected ${expected.slice(0, 16)})`, {
        code: 'vm.kernel_corrupt', remediation: REINSTALL,
      });
    }
  }
}
