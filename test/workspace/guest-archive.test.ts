/**
 * What `microagent cp NAME:PATH DIR` unpacks on the host comes from a guest that may be compromised:
 * hostile archives (crafted with the project's tar writer) must write nothing outside DIR, never through
 * a symlink, never a setuid bit or a foreign owner, and a real tree must come through intact.
 */
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeTar, type TarWriteEntry } from '../../src/vm/rootfs/tar-writer.js';
import { unpackGuestArchive } from '../../src/vm/workspace/guest-archive.js';

async function* chunks(buf: Buffer): AsyncGenerator<Buffer> {
  // Odd-sized pieces, as a pipe delivers them.
  for (let i = 0; i < buf.length; i += 700) yield buf.subarray(i, i + 700);
}

function setup(): { base: string; into: string; outside: string } {
  const base = mkdtempSync(join(tmpdir(), 'guest-archive-'));
  const into = join(base, 'into');
  const outside = join(base, 'outside');
  mkdirSync(into);
  mkdirSync(outside);
  writeFileSync(join(outside, 'victim'), 'untouched');
  return { base, into, outside };
}

const unpack = (entries: TarWriteEntry[], into: string) => unpackGuestArchive(chunks(writeTar(entries)), into);
const file = (path: string, content: string, extra: Partial<TarWriteEntry> = {}): TarWriteEntry => ({ path, type: 'file', content: Buffer.from(content), mode: 0o644, ...extra });

describe('unpackGuestArchive', () => {
  it('brings a tree through: folders, files with their modes and times, symlinks, hardlinks; devices and FIFOs skipped', async () => {
    const { into } = setup();
    const result = await unpack([
      { path: 'out', type: 'directory', mode: 0o755 },
      file('out/run.sh', '#!/bin/sh\n', { mode: 0o755, mtime: 1_700_000_000 }),
      { path: 'out/latest', type: 'symlink', linkname: 'run.sh' },
      { path: 'out/again', type: 'hardlink', linkname: 'out/run.sh' },
      { path: 'out/null', type: 'char', devmajor: 1, devminor: 3 },
      { path: 'out/pipe', type: 'fifo' },
    ], into);
    expect(result).toEqual({ entries: 4, skipped: 2 });
    expect(readFileSync(join(into, 'out/run.sh'), 'utf8')).toBe('#!/bin/sh\n');
    expect(statSync(join(into, 'out/run.sh')).mode & 0o7777).toBe(0o755);
    expect(statSync(join(into, 'out/run.sh')).mtimeMs).toBe(1_700_000_000_000);
    expect(readlinkSync(join(into, 'out/latest'))).toBe('run.sh');
    expect(statSync(join(into, 'out/again')).ino).toBe(statSync(join(into, 'out/run.sh')).ino);
    expect(existsSync(join(into, 'out/null')) || existsSync(join(into, 'out/pipe'))).toBe(false);
  });

  it('drops setuid, setgid and sticky bits, and gives every file the copying user', async () => {
    const { into } = setup();
    await unpack([file('su', 'x', { mode: 0o4755, uid: 4242, gid: 4242 }), { path: 'shared', type: 'directory', mode: 0o3777, uid: 4242 }], into);
    expect(statSync(join(into, 'su')).mode & 0o7777).toBe(0o755);
    expect(statSync(join(into, 'shared')).mode & 0o7777).toBe(0o777);
    expect(statSync(join(into, 'su')).uid).toBe(process.getuid?.());
  });

  it.each([
    ['a path with ..', [file('../outside/victim', 'owned')]],
    ['an absolute path', [file('/etc/owned-by-guest', 'owned')]],
    ['a relative symlink out, then a file through it', [{ path: 'up', type: 'symlink', linkname: '../outside' } as TarWriteEntry, file('up/victim', 'owned')]],
  ])('refuses %s, and writes nothing outside', async (_label, entries) => {
    const { into, outside } = setup();
    await expect(unpack(entries, into)).rejects.toMatchObject({ code: 'cp.path_escape', message: expect.stringContaining(`a path outside ${into}`) });
    expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched');
  });

  it('follows an absolute symlink as if the destination were the root, never to the host path', async () => {
    const { into, outside } = setup();
    await unpack([{ path: 'etc', type: 'symlink', linkname: outside }, file('etc/victim', 'inside')], into);
    expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched');
    expect(readFileSync(join(into, outside.slice(1), 'victim'), 'utf8')).toBe('inside');
  });

  it('replaces a symlink already standing in the destination instead of writing through it', async () => {
    const { into, outside } = setup();
    symlinkSync(join(outside, 'victim'), join(into, 'report.txt'));
    await unpack([file('report.txt', 'from the guest')], into);
    expect(lstatSync(join(into, 'report.txt')).isFile()).toBe(true);
    expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched');
  });

  it('refuses a hardlink to anything but an earlier file of the copy', async () => {
    const { into } = setup();
    await expect(unpack([{ path: 'shadow', type: 'hardlink', linkname: 'etc/shadow' }], into)).rejects.toMatchObject({ code: 'cp.bad_hardlink' });
  });
});
