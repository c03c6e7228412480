// mkdir -p without Node's recursive mkdir, which spins forever under /proc.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MicroagentError } from '../src/errors.js';
import { makeDirs } from '../src/make-dirs.js';

const dir = mkdtempSync(join(tmpdir(), 'make-dirs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('makeDirs', () => {
  it('creates missing parents with the mode and returns the first directory it created', () => {
    expect(makeDirs(join(dir, 'a/b/c'), 0o700)).toBe(join(dir, 'a'));
    expect(statSync(join(dir, 'a/b/c')).mode & 0o777).toBe(0o700);
    expect(makeDirs(join(dir, 'a/b/c'))).toBeUndefined();
    expect(makeDirs(join(dir, 'a/b/d'))).toBe(join(dir, 'a/b/d'));
  });

  it('refuses a file in the way', () => {
    writeFileSync(join(dir, 'file'), '');
    expect(() => makeDirs(join(dir, 'file'))).toThrow(/EEXIST/);
    expect(() => makeDirs(join(dir, 'file/below'))).toThrow(/ENOTDIR/);
  });

  it('answers a filesystem that refuses directories (procfs) with a typed error, where Node\'s own spins forever', () => {
    const err = (() => {
      try {
        makeDirs('/proc/microagent-test/x');
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(MicroagentError);
    expect(err).toMatchObject({ kind: 'invalid', code: 'host.mkdir', message: 'cannot create directory /proc/microagent-test: its filesystem refuses new directories (ENOENT)' });
  });

  it('microagent proxy --ca-dir under /proc exits with that error', () => {
    const cli = join(import.meta.dirname, '../dist/cli/main.js');
    const r = spawnSync(process.execPath, [cli, 'proxy', '--policy', join(import.meta.dirname, '../policies/guarded.yaml'), '--listen', '127.0.0.1:0',
      '--ca-dir', '/proc/microagent-test', '--audit', join(dir, 'audit.jsonl')], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('error: cannot create directory /proc/microagent-test: its filesystem refuses new directories (ENOENT)\n  fix: choose a directory on an ordinary, writable filesystem\n');
  });
});
