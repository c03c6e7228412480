/**
 * The microVM guest kernel `microagent kernel build` made for this suite (global-setup.ts): built from
 * the distribution's linux-source, every driver the guest needs built in, booted without ACPI, and
 * installed like any kernel (SHA-256 manifest). The e2e runs in this folder all boot it.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadKernel } from '../../src/vm/index.js';
import { isPvhElf } from '../../src/vm/kernel-image.js';
import { cliJson, E2E_STATE_DIR } from './helpers.js';

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

  it('is what `kernel show` reports, verified', async () => {
    const r = await cliJson<{ version: string; virtioDiscovery: string }>(['kernel', 'show']);
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ version: loadKernel(E2E_STATE_DIR).version, virtioDiscovery: 'cmdline' });
  });
});
