/**
 * `microagent doctor`: checks that this host can run workspaces (QEMU, a real KVM probe, e2fsprogs,
 * the guest kernel, gcc for the guest agent, socat for network forwarding) and, with `fix`, installs
 * what apt can install (as root) and the guest kernel. Every failed check carries its remediation.
 * It never installs anything unless asked to.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { asMicroagentError } from '../errors.js';
import { probeAccelerator } from './accel.js';
import { findExecutable } from './host-tools.js';
import { installKernel, loadKernel, type InstalledKernel } from './kernel.js';
import { QEMU_BINARY } from './qemu.js';
import { prepareBootAssets } from './start.js';

const run = promisify(execFile);

export interface DoctorCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly remediation?: string;
  /** Debian package that fixes it, for --fix. */
  readonly aptPackage?: string;
}

export interface DoctorReport {
  readonly ok: boolean;
  readonly checks: readonly DoctorCheck[];
  readonly fixed: readonly string[];
}

function toolCheck(name: string, binary: string, pkg: string, why: string): DoctorCheck {
  const path = findExecutable(binary);
  return path
    ? { name, ok: true, detail: path }
    : { name, ok: false, detail: `${binary} not found on PATH (${why})`, remediation: `apt-get install ${pkg}`, aptPackage: pkg };
}

async function qemuCheck(): Promise<DoctorCheck> {
  const base = toolCheck('qemu', QEMU_BINARY, 'qemu-system-x86', 'runs the microVMs');
  if (!base.ok) return base;
  const { stdout } = await run(QEMU_BINARY, ['--version']).catch(() => ({ stdout: '' }));
  return { ...base, detail: `${stdout.split('\n')[0] ?? ''} (${base.detail})` };
}

function staticLibcCheck(): DoctorCheck {
  const found = ['/usr/lib/x86_64-linux-gnu/libc.a', '/usr/lib64/libc.a', '/usr/lib/libc.a'].find((p) => existsSync(p));
  return found
    ? { name: 'static libc', ok: true, detail: found }
    : { name: 'static libc', ok: false, detail: 'libc.a not found (the guest agent is linked statically)', remediation: 'apt-get install libc6-dev', aptPackage: 'libc6-dev' };
}

async function kernelAndAccelChecks(stateDir: string): Promise<DoctorCheck[]> {
  let kernel: InstalledKernel;
  try {
    kernel = loadKernel(stateDir);
  } catch (err) {
    const e = asMicroagentError(err);
    return [
      { name: 'kernel', ok: false, detail: e.message, remediation: e.remediation },
      { name: 'kvm', ok: false, detail: 'not probed: needs the guest kernel', remediation: 'Install the kernel first.' },
    ];
  }
  // A bzImage boots too, only slower (it decompresses itself on every boot): reported, not a failure.
  const direct = basename(kernel.image) === 'vmlinux';
  const checks: DoctorCheck[] = [{
    name: 'kernel',
    ok: true,
    detail: `${kernel.version} (manifest verified; ${direct ? 'direct PVH boot' : 'self-decompressing bzImage'})`,
    ...(direct ? {} : { remediation: 'For faster boots install lz4 (or xz-utils/zstd) and run `microagent kernel install` again.' }),
  }];
  try {
    const assets = await prepareBootAssets(stateDir);
    const probe = await probeAccelerator({ stateDir, kernelPath: assets.kernel.image, initramfsPath: assets.initramfsPath, fresh: true });
    // TCG works everywhere, only slower: report it, but it is not a failure.
    checks.push({
      name: 'kvm',
      ok: true,
      detail: probe.accelerator === 'kvm' ? `KVM usable: ${probe.reason}` : `using TCG (software emulation): ${probe.reason}`,
      ...(probe.accelerator === 'tcg' ? { remediation: probe.advice ?? tcgAdvice(kernel) } : {}),
    });
  } catch (err) {
    const e = asMicroagentError(err);
    checks.push({ name: 'kvm', ok: false, detail: `probe failed: ${e.message}`, remediation: e.remediation });
  }
  return checks;
}

function tcgAdvice(kernel: InstalledKernel): string {
  const kvm = 'For fast guests run on a host with working KVM (nested virtualisation enabled, access to /dev/kvm).';
  // A distribution kernel spends most of a TCG boot on drivers a microVM does not have (docs/guest.md).
  return kernel.virtioDiscovery === 'cmdline' ? kvm : `${kvm} Under TCG, \`microagent kernel build\` boots about twice as fast as a distribution kernel.`;
}

async function collect(stateDir: string): Promise<DoctorCheck[]> {
  return [
    await qemuCheck(),
    toolCheck('e2fsprogs', 'mke2fs', 'e2fsprogs', 'builds root filesystems'),
    toolCheck('gcc', 'gcc', 'gcc', 'builds the guest agent'),
    staticLibcCheck(),
    toolCheck('socat', 'socat', 'socat', 'forwards guest proxy/DNS connections to the workspace sockets'),
    toolCheck('kmod', 'depmod', 'kmod', 'resolves kernel module dependencies at kernel install'),
    ...(await kernelAndAccelChecks(stateDir)),
  ];
}

export async function runDoctor(options: { stateDir: string; fix?: boolean }): Promise<DoctorReport> {
  let checks = await collect(options.stateDir);
  const fixed: string[] = [];
  if (options.fix) {
    const packages = [...new Set(checks.flatMap((c) => (!c.ok && c.aptPackage ? [c.aptPackage] : [])))];
    if (packages.length > 0 && process.getuid?.() !== 0) {
      fixed.push(`not root: run \`sudo apt-get install ${packages.join(' ')}\` (or doctor --fix as root)`);
    } else if (packages.length > 0) {
      await run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...packages], {
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
      fixed.push(...packages.map((p) => `installed ${p}`));
    }
    if (checks.some((c) => c.name === 'kernel' && !c.ok)) {
      const kernel = await installKernel({ stateDir: options.stateDir });
      fixed.push(`installed kernel ${kernel.version}`);
    }
    checks = await collect(options.stateDir);
  }
  return { ok: checks.every((c) => c.ok), checks, fixed };
}
