import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, symlink, writeFile, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readTar, type TarHeader } from '../../src/vm/rootfs/tar-reader.js';
import { writeTar, type TarWriteEntry } from '../../src/vm/rootfs/tar-writer.js';

async function* chunked(data: Buffer, sizes: readonly number[]): AsyncGenerator<Buffer> {
  let pos = 0;
  let i = 0;
  while (pos < data.length) {
    const size = Math.max(1, sizes[i++ % Math.max(1, sizes.length)] ?? data.length);
    yield data.subarray(pos, pos + size);
    pos += size;
  }
}

async function readAll(source: AsyncIterable<Buffer>, readBodies = true): Promise<Array<{ header: TarHeader; content: string }>> {
  const out: Array<{ header: TarHeader; content: string }> = [];
  for await (const entry of readTar(source)) {
    const parts: Buffer[] = [];
    if (readBodies) for await (const piece of entry.body) parts.push(Buffer.from(piece));
    out.push({ header: entry.header, content: Buffer.concat(parts).toString() });
  }
  return out;
}

describe('tar reader', () => {
  it('reads what GNU tar writes: long names (GNU and pax), symlinks, hardlinks, modes, owners, mtimes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tar-gnu-'));
    try {
      const long = 'd'.repeat(120);
      await mkdir(join(dir, 'src', long), { recursive: true });
      await writeFile(join(dir, 'src', long, 'file.txt'), 'long name');
      await writeFile(join(dir, 'src', 'x'), 'x');
      await symlink('x', join(dir, 'src', 'link'));
      await utimes(join(dir, 'src', 'x'), 1500000000, 1500000000);
      for (const format of ['gnu', 'posix']) {
        const archive = execFileSync('tar', ['-C', join(dir, 'src'), `--format=${format}`, '--owner=1234', '--group=99', '--mode=u+s', '-cf', '-', '.']);
        const entries = await readAll(chunked(archive, [7, 511, 1024, 3]));
        const byPath = new Map(entries.map((e) => [e.header.path.replace(/\/$/, ''), e]));
        expect(byPath.get(`./${long}/file.txt`)?.content).toBe('long name');
        expect(byPath.get('./x')?.header).toMatchObject({ uid: 1234, gid: 99, mtime: 1500000000, type: 'file' });
        expect((byPath.get('./x')?.header.mode ?? 0) & 0o4000).toBe(0o4000);
        expect(byPath.get('./link')?.header).toMatchObject({ type: 'symlink', linkname: 'x' });
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('round-trips the writer, including pax names, links and big ids, across any chunking', async () => {
    const entry = fc.record({
      path: fc.stringMatching(/^[a-z0-9._-]{1,40}(\/[a-z0-9._-]{1,40}){0,5}$/),
      content: fc.uint8Array({ maxLength: 2000 }),
      uid: fc.integer({ min: 0, max: 5_000_000 }),
      mtime: fc.integer({ min: 0, max: 2 ** 33 }),
      mode: fc.integer({ min: 0, max: 0o7777 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 1500 }), { maxLength: 5 }), async (specs, sizes) => {
        const entries: TarWriteEntry[] = specs.map((s) => ({ path: s.path, type: 'file', content: Buffer.from(s.content), uid: s.uid, gid: s.uid, mtime: s.mtime, mode: s.mode }));
        const read = await readAll(chunked(writeTar(entries), sizes));
        expect(read.map((r) => [r.header.path, r.header.uid, r.header.mtime, r.header.mode, r.content])).toEqual(
          entries.map((e) => [e.path, e.uid, e.mtime, e.mode, (e.content as Buffer).toString()]),
        );
      }),
      { numRuns: 60 },
    );
  });

  it('skips unread bodies correctly', async () => {
    const archive = writeTar([
      { path: 'a', type: 'file', content: Buffer.alloc(1300, 1) },
      { path: 'b', type: 'file', content: Buffer.from('bee') },
    ]);
    const paths = (await readAll(chunked(archive, [100]), false)).map((e) => e.header.path);
    expect(paths).toEqual(['a', 'b']);
  });

  it('fails with tar.corrupt on any truncation, and on a bad checksum', async () => {
    const archive = writeTar([{ path: 'a', type: 'file', content: Buffer.alloc(700, 2) }]);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 512 + 1024 - 1 }), async (cut) => {
        await expect(readAll(chunked(archive.subarray(0, cut), [97]))).rejects.toMatchObject({ code: 'tar.corrupt' });
      }),
      { numRuns: 80 },
    );
    const bad = Buffer.from(archive);
    bad[10] = 0x41;
    await expect(readAll(chunked(bad, [512]))).rejects.toMatchObject({ code: 'tar.corrupt', message: expect.stringContaining('checksum') });
  });

  it.each([2 ** 33, 2 ** 32 - 1])('refuses an owner id of %d as tar.corrupt, not as an internal error at chown', async (uid) => {
    const archive = writeTar([{ path: 'a', type: 'file', content: Buffer.from('x'), uid, gid: 0 }]);
    await expect(readAll(chunked(archive, [512]))).rejects.toMatchObject({ code: 'tar.corrupt', message: expect.stringContaining(`uid ${uid} is not an owner id`) });
  });
});
