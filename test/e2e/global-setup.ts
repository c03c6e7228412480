/**
 * vitest globalSetup for test/e2e: builds the microVM guest kernel (the one scripts/setup.sh makes the
 * default; test/vm boots Debian's cloud kernel) and the default image once, in the state directory
 * every e2e file shares (E2E_STATE_DIR), so no test pays for it. Skipped when the run names only other
 * test folders (they need no kernel). Never deletes the state directory: later runs reuse the verified
 * kernel and the cached image.
 */
import { mkdirSync } from 'node:fs';
import { ensureDefaultImage } from '../../src/vm/rootfs/index.js';
import { buildKernel, isCurrentBuild, loadKernel, prepareBootAssets } from '../../src/vm/index.js';
import { E2E_STATE_DIR } from './helpers.js';

function runIncludesE2e(): boolean {
  const run = process.argv.indexOf('run');
  const filters = process.argv.slice(run < 0 ? 2 : run + 1).filter((a) => !a.startsWith('-'));
  return filters.length === 0 || filters.some((f) => f.includes('e2e'));
}

export default async function setup(): Promise<void> {
  if (!runIncludesE2e()) return;
  mkdirSync(E2E_STATE_DIR, { recursive: true, mode: 0o700 });
  let built = false;
  try {
    built = isCurrentBuild(loadKernel(E2E_STATE_DIR).source);
  } catch {
    // none yet, or one that no longer matches its manifest: build
  }
  if (!built) await buildKernel({ stateDir: E2E_STATE_DIR, onProgress: (line) => process.stderr.write(`[e2e setup] kernel build: ${line}\n`) });
  await prepareBootAssets(E2E_STATE_DIR);
  await ensureDefaultImage(E2E_STATE_DIR);
}
