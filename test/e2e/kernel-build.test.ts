/**
 * The microVM guest kernel `microagent kernel build` made for this suite (global-setup.ts): built from
 * the distribution's linux-source, every driver the guest needs built in, booted without ACPI, and
 * installed like any kernel (SHA-256 manifest). The e2e runs in this folder all boot it. A build
 * boots its kernel once before making it the default; that smoke boot is checked here on this
 * kernel and on an image that is no kernel at all.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { probeBoot } from '../../src/vm/accel.js';
import { loadKernel, prepareBootAssets } from '../../src/vm/index.js';
import { smokeBoot } from '../../src/vm/kernel-build.js';
import { isPvhElf } from '../../src/vm/kernel-image.js';
import { cliJson, E2E_STATE_DIR, tempDir, VM_TIMEOUT } from './helpers.js';

describe('the built guest kernel', () => {
  it('names its sources, has no modules, finds its devices on the command line and boots by PVH', () => {
    const kernel = loadKernel(E2E_STATE_DIR);
    expect(kernel.source).toMatch(/^build:linux-source-[\d.]+\.tar\.\w+\+microvm\.config@[0-9a-f]{12}$/);
    expect(kernel.version).toMatch(/-microagent$/);
    expect(kernel.modules).toEqual([]);
    expect(kernel.virtioDiscovery).toBe('cmdline');
    expect(isPvhElf(readFileSync(kernel.image))).toBe(true);
    const fragment = readFileSync(join(import.meta.dirname, '../../src/vm/guest-kernel/microvm.config'));
    expect(kernel.source.endsWith(createHash('sha256').update(fragment).digest('hex').slice(0, 12))).toBe(true);
  });

  it('installed bare with --from, without its config, is still found to use command-line devices', async () => {
    const other = tempDir('bare-kernel');
    const r = await cliJson<{ version: string }>(['kernel', 'install', '--from', loadKernel(E2E_STATE_DIR).image], { stateDir: other });
    expect(r.code, r.stderr).toBe(0);
    expect(loadKernel(other)).toMatchObject({ version: r.json.version, virtioDiscovery: 'cmdline' });
  });

  it('is what `kernel show` reports, verified', async () => {
    const r = await cliJson<{ version: string; virtioDiscovery: string }>(['kernel', 'show']);
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ version: loadKernel(E2E_STATE_DIR).version, virtioDiscovery: 'cmdline' });
  });

  it('boots once in probe mode under TCG, without ACPI', { timeout: VM_TIMEOUT }, async () => {
    const assets = await prepareBootAssets(E2E_STATE_DIR);
    const serialLog = join(tempDir('probe'), 'serial.log');
    const failure = await probeBoot({ kernelPath: assets.kernel.image, initramfsPath: assets.initramfsPath, accelerator: 'tcg', acpi: false, serialLog, timeoutMs: 60_000 });
    expect(failure).toBeNull();
    expect(readFileSync(serialLog, 'utf8')).toContain('probe ok');
  });

  it('a kernel that does not boot is removed and never becomes the default', { timeout: VM_TIMEOUT }, async () => {
    const state = tempDir('unbootable');
    const dir = join(state, 'kernels', 'broken-1');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(state, 'kernels', 'default'), 'good-1\n');
    // An ELF that is no kernel: QEMU loads it, and nothing ever prints `probe ok`.
    copyFileSync(process.execPath, join(dir, 'vmlinux'));
    const broken = { version: 'broken-1', dir, image: join(dir, 'vmlinux'), modules: [], source: 'test', files: {}, virtioDiscovery: 'cmdline' as const };
    await expect(smokeBoot(broken, state, state)).rejects.toMatchObject({
      kind: 'unsupported',
      code: 'vm.kernel_unbootable',
      message: expect.stringContaining('broken-1 did not boot'),
      remediation: expect.stringContaining('The default kernel was not changed'),
    });
    expect(existsSync(dir)).toBe(false);
    expect(readFileSync(join(state, 'kernels', 'default'), 'utf8')).toBe('good-1\n');
  });
});
