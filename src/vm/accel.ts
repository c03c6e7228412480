/**
 * Chooses the accelerator by a real probe, not by the existence of /dev/kvm: boot the kernel and
 * initramfs under KVM with `microagent.probe` (the agent powers off at once) and a timeout. The
 * answer is cached per host boot (boot_id). It never reports KVM unless a guest actually ran.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { childLog } from '../log.js';
import type { Accelerator } from './backend.js';
import { requireQemu } from './qemu.js';
import { HOST_BOOT_ID } from '../pid-lock.js';
import { makeDirs } from '../make-dirs.js';
import { KVM_DEVICE, kvmAccessProblem } from './kvm-access.js';

const log = childLog('vm.accel');

export interface AccelProbe {
  readonly accelerator: Accelerator;
  /** Why KVM was or was not chosen, for `doctor`. */
  readonly reason: string;
  /** What would let this user use KVM, when the probe knows. */
  readonly advice?: string;
  readonly cached: boolean;
}

export interface ProbeOptions {
  readonly stateDir: string;
  readonly kernelPath: string;
  readonly initramfsPath: string;
  readonly timeoutMs?: number;
  /** Ignore the cached answer. */
  readonly fresh?: boolean;
  /** Runs before the probe guest boots (bootVm's kernel check), so even a probe never runs an unverified kernel. */
  readonly beforeBoot?: () => void;
}

export interface ProbeBootOptions {
  readonly kernelPath: string;
  readonly initramfsPath: string;
  readonly accelerator: Accelerator;
  /** false for a kernel without ACPI (kernel.ts, virtioDiscovery 'cmdline'). */
  readonly acpi: boolean;
  /** Where the guest's serial output goes (replaced). */
  readonly serialLog: string;
  readonly timeoutMs: number;
}

/**
 * Boots a kernel and the agent's initramfs in probe mode (`microagent.probe`: the agent prints
 * `probe ok` and resets at once). Null when the guest got that far and QEMU exited cleanly, else why not.
 */
export async function probeBoot(options: ProbeBootOptions): Promise<string | null> {
  const qemu = requireQemu();
  const serial = options.serialLog;
  rmSync(serial, { force: true });
  const accel = options.accelerator === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max'];
  const args = [
    '-M', `microvm,x-option-roms=off${options.acpi ? '' : ',acpi=off'}`, '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    ...accel, '-m', '128', '-smp', '1',
    '-kernel', options.kernelPath, '-initrd', options.initramfsPath,
    '-append', 'console=ttyS0 earlyprintk=ttyS0 panic=-1 quiet microagent.probe',
    '-chardev', `file,id=console,path=${serial.replaceAll(',', ',,')}`, '-serial', 'chardev:console',
  ];
  const child = spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  const exit = await new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => resolve({ code: null, signal: err.message }));
  });
  clearTimeout(timer);
  const booted = existsSync(serial) && readFileSync(serial, 'utf8').includes('probe ok');
  const what = options.accelerator === 'kvm' ? 'KVM' : 'TCG';
  if (exit.code === 0 && booted) return null;
  if (timedOut) return `the ${what} probe guest did not power off within ${options.timeoutMs} ms`;
  const how = exit.code !== null ? `exit ${exit.code}` : `signal ${exit.signal}`;
  const lines = stderr.trim().split('\n').filter(Boolean);
  return `QEMU with ${what} failed (${how}${booted ? '' : ', guest never booted'}): ${lines.slice(0, 2).join('; ')}`;
}

async function bootProbe(options: ProbeOptions): Promise<string | null> {
  options.beforeBoot?.();
  const dir = join(options.stateDir, 'probe');
  makeDirs(dir);
  return probeBoot({
    kernelPath: options.kernelPath,
    initramfsPath: options.initramfsPath,
    accelerator: 'kvm',
    acpi: true,
    serialLog: join(dir, 'serial.log'),
    timeoutMs: options.timeoutMs ?? 15_000,
  });
}

export async function probeAccelerator(options: ProbeOptions): Promise<AccelProbe> {
  const cacheFile = join(options.stateDir, 'accel.json');
  const bootId = HOST_BOOT_ID;
  if (!options.fresh && existsSync(cacheFile)) {
    try {
      const { bootId: cachedBootId, ...cached } = JSON.parse(readFileSync(cacheFile, 'utf8')) as { bootId: string } & Omit<AccelProbe, 'cached'>;
      if (cachedBootId === bootId) return { ...cached, cached: true };
    } catch {
      // unreadable cache: probe again
    }
  }
  let result: Omit<AccelProbe, 'cached'>;
  const denied = kvmAccessProblem();
  if (!existsSync(KVM_DEVICE)) {
    result = { accelerator: 'tcg', reason: `${KVM_DEVICE} does not exist` };
  } else if (denied !== null) {
    result = { accelerator: 'tcg', ...denied };
  } else {
    const failure = await bootProbe(options);
    result = failure === null
      ? { accelerator: 'kvm', reason: 'a KVM guest booted and powered off' }
      : { accelerator: 'tcg', reason: failure };
  }
  log.info(result, 'accelerator chosen');
  makeDirs(options.stateDir);
  writeFileSync(cacheFile, `${JSON.stringify({ bootId, ...result })}\n`);
  return { ...result, cached: false };
}
