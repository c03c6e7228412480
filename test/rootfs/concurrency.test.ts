import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dir, file, makeImage, makeLayer, writeLayout } from './helpers/image.js';

// Separate processes resolving the same image at once: one builds, the others wait on the lock file and
// are served the committed entry. Runs the built library (npm test builds first).
const dist = resolve('dist/vm/rootfs/index.js');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rootfs-procs-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('concurrent builds across processes', () => {
  it('builds an image once however many processes ask for it', async () => {
    const layers = [makeLayer([dir('data/'), ...Array.from({ length: 200 }, (_, i) => file(`data/f${i}`, 'x'.repeat(i * 100)))])];
    const image = makeImage({ layers });
    const layout = join(work, 'layout');
    await writeLayout(layout, image);
    const stateDir = join(work, 'state');
    const script = `const { resolveImage } = await import(${JSON.stringify(dist)});
      const r = await resolveImage(${JSON.stringify(`oci:${layout}`)}, { stateDir: ${JSON.stringify(stateDir)} });
      process.stdout.write(JSON.stringify({ cached: r.cached, digest: r.digest, rootfsPath: r.rootfsPath }));`;
    const runs = await Promise.all(
      Array.from({ length: 4 }, () => promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]).then((r) => JSON.parse(r.stdout) as { cached: boolean; digest: string; rootfsPath: string })),
    );
    expect(runs.filter((r) => !r.cached)).toHaveLength(1);
    expect(new Set(runs.map((r) => r.rootfsPath)).size).toBe(1);
    expect(runs.every((r) => r.digest === image.manifestDigest)).toBe(true);
    expect(await readdir(join(stateDir, 'images', '.locks'))).toEqual([]);
    expect(await readdir(join(stateDir, 'images', '.tmp'))).toEqual([]);
  });
});
