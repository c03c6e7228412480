import { mkdir, mkdtemp, readdir, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MicroagentError } from '../../src/errors.js';
import { applyLayer, finishStaging, newStagingState } from '../../src/vm/rootfs/apply-layer.js';
import { readTar } from '../../src/vm/rootfs/tar-reader.js';
import { writeTar, type TarWriteEntry } from '../../src/vm/rootfs/tar-writer.js';

// Random layers built from hostile ingredients (dot-dot, absolute paths into a watched host directory,
// symlinks out of the root, hardlinks, whiteouts) must never change anything outside the staging root:
// each either applies or fails with one of the declared typed errors.
let sandbox: string;
let outside: string;
const DECLARED = new Set(['image.path_escape', 'image.bad_hardlink', 'image.not_a_directory']);

beforeAll(async () => {
  sandbox = await mkdtemp(join(tmpdir(), 'rootfs-fuzz-'));
  outside = join(sandbox, 'outside');
  await mkdir(outside);
  await writeFile(join(outside, 'canary'), 'untouched');
});
afterAll(async () => {
  await rm(sandbox, { recursive: true, force: true });
});

describe('layer application under hostile input', () => {
  it('never writes outside the root and only fails with declared errors', async () => {
    const name = fc.constantFrom('a', 'b', 'etc', 'canary', '.wh.a', '.wh.b', '.wh..wh..opq', '..', '.');
    const path = fc.array(name, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/'));
    const target = fc.oneof(path, fc.constant('/'), fc.constantFrom('../outside', '../../outside', '../../../..'), path.map((p) => `/${p}`), fc.constant('OUTSIDE'));
    const entry: fc.Arbitrary<TarWriteEntry> = fc.oneof(
      path.map((p) => ({ path: p, type: 'file' as const, content: Buffer.from('payload') })),
      path.map((p) => ({ path: `${p}/`, type: 'directory' as const })),
      fc.tuple(path, target).map(([p, t]) => ({ path: p, type: 'symlink' as const, linkname: t })),
      fc.tuple(path, target).map(([p, t]) => ({ path: p, type: 'hardlink' as const, linkname: t })),
      path.map((p) => ({ path: `/${p}`, type: 'file' as const, content: Buffer.from('abs') })),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(entry, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 3 }), async (layers) => {
        const root = join(sandbox, `root-${run++}`);
        await mkdir(root);
        const state = newStagingState(root);
        try {
          for (const layer of layers) {
            const tar = writeTar(layer.map((e) => (e.linkname === 'OUTSIDE' ? { ...e, linkname: outside } : e)));
            await applyLayer(state, readTar((async function* () { yield tar; })()));
          }
          await finishStaging(state);
        } catch (err) {
          if (!(err instanceof MicroagentError) || !DECLARED.has(err.code)) throw err;
        }
        expect(await readdir(outside)).toEqual(['canary']);
        expect(await readFile(join(outside, 'canary'), 'utf8')).toBe('untouched');
        expect((await readdir(sandbox)).filter((n) => !n.startsWith('root-')).sort()).toEqual(['outside']);
        await rm(root, { recursive: true, force: true });
      }),
      { numRuns: 300 },
    );
  }, 120_000);
});
