/**
 * Kernel install from Debian's linux-image-cloud-amd64 through the CLI (real apt-get download into
 * a fresh state directory), manifest verification (a boot holds the guest until it passes), and the
 * typed errors for a missing kernel, a tampered kernel, bad `kernel build` input and a host without
 * QEMU; `doctor` on this host (real KVM probe). The kernel build itself runs in test/e2e/global-setup.ts
 * and is checked in test/e2e/kernel-build.test.ts.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootVm, loadKernel, prepareBootAssets, qemuBackend } from '../../src/vm/index.js';
import { isPvhElf } from '../../src/vm/kernel-image.js';
import { removeTestDirs, runDir, TEST_STATE_DIR, testKernel, testRootfs } from './helpers.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '../../dist/cli/main.js');

async function cli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env, maxBuffer: 8 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const scratch: string[] = [];
afterAll(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
  removeTestDirs();
});

describe('guest kernel install', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'ma-kernel-'));
  scratch.push(stateDir);
  let installed: { version: string; dir: string; image: string; modules: string[] };

  beforeAll(async () => {
    const r = await cli(['--json', 'kernel', 'install', '--state-dir', stateDir]);
    expect(r.code).toBe(0);
    installed = JSON.parse(r.stdout) as typeof installed;
  }, 180_000);

  it('installs the unpacked PVH kernel and the guest modules with a SHA-256 manifest', () => {
    expect(installed.version).toMatch(/-cloud-amd64$/);
    // Debian's cloud kernel has a PVH entry, so QEMU loads the ELF directly; the bzImage is not kept.
    expect(installed.image).toBe(join(installed.dir, 'vmlinux'));
    expect(isPvhElf(readFileSync(installed.image))).toBe(true);
    expect(existsSync(join(installed.dir, 'vmlinuz'))).toBe(false);
    for (const m of ['virtio_mmio.ko', 'virtio_blk.ko', 'virtio_console.ko', 'virtio_net.ko']) expect(installed.modules).toContain(m);
    // Debian signs its modules but does not enforce signatures (its config says so): install strips them.
    const marker = Buffer.from('~Module signature appended~\n');
    for (const m of installed.modules) expect(readFileSync(join(installed.dir, 'modules', m)).subarray(-marker.length).equals(marker), m).toBe(false);
    // Dependencies load before their users.
    expect(installed.modules.indexOf('virtio_ring.ko')).toBeLessThan(installed.modules.indexOf('virtio_mmio.ko'));
    const manifest = JSON.parse(readFileSync(join(installed.dir, 'manifest.json'), 'utf8')) as { files: Record<string, string> };
    for (const [rel, sha] of Object.entries(manifest.files)) {
      expect(createHash('sha256').update(readFileSync(join(installed.dir, rel))).digest('hex')).toBe(sha);
    }
    expect(loadKernel(stateDir).version).toBe(installed.version);
  });

  it('installs a bare kernel image given with --from, named by its hash', async () => {
    const other = mkdtempSync(join(tmpdir(), 'ma-kernel-from-'));
    scratch.push(other);
    const r = await cli(['--json', 'kernel', 'install', '--from', installed.image, '--state-dir', other]);
    expect(r.code).toBe(0);
    const k = JSON.parse(r.stdout) as { version: string; modules: string[]; source: string; image: string };
    expect(k.version).toMatch(/^custom-[0-9a-f]{12}$/);
    expect(k.image).toMatch(/\/vmlinux$/);
    expect(k.modules).toEqual([]);
    expect(loadKernel(other).version).toBe(k.version);
    // Without a config beside it, the image's own strings give its virtio discovery: ACPI for this one,
    // command-line devices for the suite's built kernel (when that is the suite's kernel).
    expect(loadKernel(other).virtioDiscovery).toBe('acpi');
    const suiteKernel = await testKernel();
    const bare = mkdtempSync(join(tmpdir(), 'ma-kernel-from-'));
    scratch.push(bare);
    expect((await cli(['kernel', 'install', '--from', suiteKernel.image, '--state-dir', bare])).code).toBe(0);
    expect(loadKernel(bare).virtioDiscovery).toBe(suiteKernel.virtioDiscovery);
    const missing = await cli(['--mode=ax', 'kernel', 'install', '--from', '/nonexistent/vmlinuz', '--state-dir', other]);
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: { kind: 'not_found' } });
  });

  it('refuses a file that is no kernel image, installing nothing', async () => {
    const other = mkdtempSync(join(tmpdir(), 'ma-kernel-from-'));
    scratch.push(other);
    const notKernel = join(other, 'notes.txt');
    writeFileSync(notKernel, 'not a kernel\n'.repeat(100));
    const r = await cli(['kernel', 'install', '--from', notKernel, '--state-dir', other]);
    expect(r.stderr).toContain(`error: ${notKernel} holds no Linux kernel image (neither an ELF vmlinux nor a bzImage)\n`);
    expect(r.code).toBe(1);
    expect(readdirSync(join(other, 'kernels'))).toEqual([]); // no kernel, no leftover staging
  });

  it('installs into a state directory on another filesystem than the temporary directory', async () => {
    // /dev/shm is a tmpfs and the OS temporary directory is not, here: staging in /tmp failed with
    // EXDEV at the final rename, as it would for any state directory on disk under a tmpfs /tmp.
    const other = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'ma-kernel-xdev-'));
    scratch.push(other);
    const r = await cli(['--json', 'kernel', 'install', '--from', installed.image, '--state-dir', other]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(loadKernel(other).version).toMatch(/^custom-[0-9a-f]{12}$/);
    expect(readdirSync(join(other, 'kernels')).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('refuses a kernel whose files no longer match the manifest, naming the fix', async () => {
    appendFileSync(join(installed.dir, 'modules', 'virtio_blk.ko'), 'tampered');
    expect(() => loadKernel(stateDir)).toThrow(expect.objectContaining({ kind: 'invalid', code: 'vm.kernel_corrupt' }));
    const r = await cli(['--mode=ax', 'kernel', 'show', '--state-dir', stateDir]);
    expect(r.code).not.toBe(0);
    const doc = JSON.parse(r.stdout) as { ok: boolean; error: { kind: string; remediation: string } };
    expect(doc.ok).toBe(false);
    expect(doc.error.kind).toBe('invalid');
    expect(doc.error.remediation).toContain('kernel install');
  });

  it('a boot refuses the tampered kernel before the accelerator probe and before the guest runs', async () => {
    for (const accelerator of ['auto', 'tcg'] as const) {
      const dir = runDir();
      await expect(bootVm({ stateDir, rootfsPath: testRootfs(), runDir: dir, network: { mode: 'isolated' }, accelerator }))
        .rejects.toMatchObject({ kind: 'invalid', code: 'vm.kernel_corrupt', remediation: expect.stringContaining('kernel install') });
    }
    // The KVM probe (uncached in this state directory) never booted it either.
    expect(existsSync(join(stateDir, 'probe'))).toBe(false);
  }, 60_000);
});

describe('the guest waits for the boot check', () => {
  it('holds the vCPUs while the check runs: a check failing after 3 s leaves the serial console empty and kills QEMU', async () => {
    const kernel = await testKernel();
    const { initramfsPath } = await prepareBootAssets(TEST_STATE_DIR);
    const dir = runDir();
    const serialLog = join(dir, 'serial.log');
    const started = Date.now();
    await expect(qemuBackend.boot({
      kernelPath: kernel.image, initramfsPath, rootfsPath: testRootfs(), memoryMiB: 128, cpus: 1,
      network: { mode: 'isolated' }, runDir: dir, accelerator: 'tcg', serialLog,
      beforeGuestRuns: () => {
        // Blocks like the real (synchronous) hash check, long enough for an unheld guest to print its boot.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000);
        throw new Error('check failed');
      },
    })).rejects.toThrow('check failed');
    expect(Date.now() - started).toBeGreaterThanOrEqual(3000);
    expect(existsSync(serialLog) ? readFileSync(serialLog, 'utf8') : '').toBe('');
    expect(spawnSync('pgrep', ['-f', dir], { encoding: 'utf8' }).stdout.trim()).toBe('');
  }, 60_000);
});

describe('typed errors before any boot', () => {
  it('kernel build refuses bad input with a typed error before compiling anything', async () => {
    const other = mkdtempSync(join(tmpdir(), 'ma-kernel-build-'));
    scratch.push(other);
    const jobs = await cli(['--mode=ax', 'kernel', 'build', '--jobs', '0', '--state-dir', other]);
    expect(jobs.code).not.toBe(0);
    expect(JSON.parse(jobs.stdout)).toMatchObject({ ok: false, error: { kind: 'invalid', message: expect.stringContaining('--jobs 0'), remediation: expect.stringContaining('usage: microagent kernel build') } });
    const missing = await cli(['--mode=ax', 'kernel', 'build', '--source', '/nonexistent/linux-source-6.1.tar.xz', '--state-dir', other]);
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: { kind: 'not_found', message: expect.stringContaining('/nonexistent/linux-source-6.1.tar.xz') } });
    // A real tarball that holds no kernel tree: unpacked, then refused, and nothing is left behind.
    // The tree of a killed build (its pid is gone) is removed first; a running build's stays.
    const notKernel = join(other, 'linux-source-9.9.tar.xz');
    spawnSync('tar', ['-cJf', notKernel, '-C', join(import.meta.dirname, '../../src/vm'), 'guest-kernel']);
    mkdirSync(join(other, 'kernel-build-999999999-killed', 'linux-source-9.9'), { recursive: true });
    mkdirSync(join(other, `kernel-build-${process.pid}-running`));
    const wrong = await cli(['--mode=ax', 'kernel', 'build', '--source', notKernel, '--state-dir', other]);
    expect(JSON.parse(wrong.stdout)).toMatchObject({ ok: false, error: { kind: 'invalid', message: expect.stringContaining('holds no kernel source tree') } });
    expect(readdirSync(other).filter((n) => n.startsWith('kernel-build-'))).toEqual([`kernel-build-${process.pid}-running`]);
    expect(() => loadKernel(other)).toThrow(expect.objectContaining({ code: 'vm.kernel_missing' }));
  });

  it('a missing kernel is not_found with the install command as the fix', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'ma-nokernel-'));
    scratch.push(empty);
    await expect(bootVm({ stateDir: empty, rootfsPath: '/nonexistent', runDir: runDir(), network: { mode: 'isolated' } }))
      .rejects.toMatchObject({ kind: 'not_found', code: 'vm.kernel_missing', remediation: expect.stringContaining('microagent kernel install') });
  });

  it('a run directory too long for Unix sockets is refused before QEMU starts', async () => {
    const kernel = await testKernel();
    await expect(qemuBackend.boot({
      kernelPath: kernel.image, initramfsPath: '/nonexistent', rootfsPath: '/nonexistent', memoryMiB: 128, cpus: 1,
      network: { mode: 'isolated' }, runDir: join(runDir(), 'x'.repeat(100)), accelerator: 'tcg',
    })).rejects.toMatchObject({ kind: 'invalid', code: 'vm.run_dir' });
  });

  it('a host without QEMU on PATH is unsupported, and doctor names the package', async () => {
    const kernel = await testKernel();
    const saved = process.env['PATH'];
    process.env['PATH'] = '/nonexistent';
    try {
      await expect(qemuBackend.boot({
        kernelPath: kernel.image, initramfsPath: '/nonexistent', rootfsPath: '/nonexistent', memoryMiB: 128, cpus: 1,
        network: { mode: 'isolated' }, runDir: runDir(), accelerator: 'tcg',
      })).rejects.toMatchObject({ kind: 'unsupported', code: 'vm.qemu_missing' });
    } finally {
      process.env['PATH'] = saved;
    }
    const r = await cli(['--json', 'doctor', '--state-dir', TEST_STATE_DIR], { ...process.env, PATH: '/nonexistent' });
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; remediation?: string }> };
    expect(report.checks.find((c) => c.name === 'qemu')).toMatchObject({ ok: false, remediation: 'apt-get install qemu-system-x86' });
  });

  // Distributions give /dev/kvm to the kvm group; a user outside it would get TCG and never know why.
  it.runIf(process.getuid?.() === 0 && existsSync('/dev/kvm'))('a user who cannot open /dev/kvm gets TCG without a probe boot, and is told how to get access', () => {
    const nobody = 65534;
    const stateDir = mkdtempSync(join(tmpdir(), 'ma-accel-'));
    scratch.push(stateDir);
    spawnSync('chown', [`${nobody}:${nobody}`, stateDir]);
    const accel = JSON.stringify(join(import.meta.dirname, '../../dist/vm/accel.js'));
    // A boot would fail on the missing kernel, so an answer proves no guest was started.
    const script = `const { probeAccelerator } = await import(${accel});
      const probe = await probeAccelerator({ stateDir: process.argv[1], kernelPath: '/nonexistent', initramfsPath: '/nonexistent', fresh: true });
      process.stdout.write(JSON.stringify(probe));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, stateDir], { uid: nobody, gid: nobody, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({
      accelerator: 'tcg',
      reason: `/dev/kvm is not readable and writable by this user (uid ${nobody})`,
      advice: 'Give this user access to /dev/kvm: `sudo usermod -aG kvm $USER`, then log in again.',
      cached: false,
    });
  });

  it.runIf(process.getuid?.() === 0 && existsSync('/dev/kvm'))('run and start tell such a user their guests will be slow, and how to fix it', () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'ma-kvm-warn-'));
    scratch.push(stateDir);
    for (const verb of [['start', 'nothing-here'], ['run', '--memory', '1', '--', 'true']]) {
      const r = spawnSync(process.execPath, [CLI, '--state-dir', stateDir, ...verb], { uid: 65534, gid: 65534, encoding: 'utf8' });
      expect(r.stderr.split('\n')[0]).toBe('warning: /dev/kvm is not readable and writable by this user (uid 65534): the guest runs under TCG, several times slower. Give this user access to /dev/kvm: `sudo usermod -aG kvm $USER`, then log in again.');
    }
  });

  it('doctor passes on this host and reports the accelerator from a real probe', async () => {
    await testKernel();
    const r = await cli(['--json', 'doctor', '--state-dir', TEST_STATE_DIR]);
    const report = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; detail: string; remediation?: string }> };
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(r.code).toBe(0);
    const kvm = report.checks.find((c) => c.name === 'kvm');
    expect(kvm?.detail).toMatch(/^(KVM usable|using TCG)/);
    // This state directory boots Debian's kernel: under TCG doctor points at the faster built one.
    if (kvm?.detail.startsWith('using TCG')) expect(kvm.remediation).toContain('microagent kernel build');
    // The boot form follows the installed manifest (kernels installed before direct boot keep vmlinuz).
    const form = basename((await testKernel()).image) === 'vmlinux' ? 'direct PVH boot' : 'self-decompressing bzImage';
    expect(report.checks.find((c) => c.name === 'kernel')?.detail).toContain(`manifest verified; ${form}`);
  }, 120_000);
});
