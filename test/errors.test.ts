// asMicroagentError: typed errors pass through; the host's own failures (a full disk, a read-only or
// forbidden path, no file descriptors left) say what they are and what to do; anything else is a bug.
// A host tool's failure likewise (toolFailure). And the CLI says so when its output cannot be
// written, instead of a stack trace.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { asMicroagentError, MicroagentError } from '../src/errors.js';
import { toolFailure } from '../src/vm/host-tools.js';

const CLI = join(import.meta.dirname, '../dist/cli/main.js');
const errno = (code: string, syscall: string, path?: string) => Object.assign(new Error(`${code}: ${syscall}`), { code, syscall, ...(path === undefined ? {} : { path }) });

describe('asMicroagentError', () => {
  it('keeps a typed error as it is', () => {
    const typed = new MicroagentError('conflict', 'busy');
    expect(asMicroagentError(typed)).toBe(typed);
  });

  it.each([
    ['ENOSPC', 'transient', 75, /no space left on the device: \/state\/audit.jsonl \(write ENOSPC\)/, /free space on the filesystem of \/state\/audit.jsonl/],
    ['EDQUOT', 'transient', 75, /disk quota exceeded/, /quota/],
    ['EROFS', 'invalid', 1, /read-only file system/, /writable location/],
    ['EACCES', 'invalid', 1, /permission denied: \/state\/audit.jsonl/, /permissions of \/state\/audit.jsonl/],
    ['EPERM', 'invalid', 1, /operation not permitted/, /permissions/],
    ['EMFILE', 'transient', 75, /too many open files/, /ulimit -n/],
  ])('%s is the host\'s, with its fix', (code, kind, exit, message, fix) => {
    const e = asMicroagentError(errno(code, 'write', '/state/audit.jsonl'));
    expect(e).toMatchObject({ kind, code: `host.${code.toLowerCase()}`, retryable: exit === 75 });
    expect(e.message).toMatch(message);
    expect(e.remediation).toMatch(fix);
  });

  it('anything else is a bug in microagent', () => {
    expect(asMicroagentError(new TypeError('x is undefined'))).toMatchObject({ kind: 'internal', remediation: expect.stringContaining('bug in microagent') });
    expect(asMicroagentError(errno('ENOENT', 'open', '/x'))).toMatchObject({ kind: 'internal' });
  });
});

describe('toolFailure: a host tool that failed', () => {
  it('a full disk, which only its stderr shows, is transient with the fix', () => {
    const e = toolFailure('unpacking libc6.deb', 'tar: ./a: Wrote only 1536 of 10240 bytes\ntar: ./b: Cannot write: No space left on device\n', 'image.default_build', '/state/images/x');
    expect(e).toMatchObject({ kind: 'transient', code: 'image.default_build', message: 'unpacking libc6.deb failed: no space left on the device (/state/images/x)' });
    expect(e.remediation).toBe('free space on the filesystem of /state/images/x and retry');
  });

  it('anything else is internal, quoting only the last lines of a long stderr', () => {
    const stderr = Array.from({ length: 300 }, (_, i) => `line ${i}`).join('\n');
    const e = toolFailure('mke2fs (exit 1)', stderr, 'image.tool_failed', '/x.ext4');
    expect(e.kind).toBe('internal');
    expect(e.message).toBe(`mke2fs (exit 1) failed: ${['line 294', 'line 295', 'line 296', 'line 297', 'line 298', 'line 299'].join('\n')}`);
  });
});

describe.runIf(existsSync('/dev/full'))('output that cannot be written', () => {
  it('stdout on a full device: exit 75 with the reason, no stack trace', () => {
    const dir = mkdtempSync(join(tmpdir(), 'errors-'));
    const full = openSync('/dev/full', 'w');
    try {
      const r = spawnSync(process.execPath, [CLI, '--state-dir', dir, 'help'], { stdio: ['ignore', full, 'pipe'], encoding: 'utf8' });
      expect(r.stderr).toMatch(/^error: no space left on the device \(write ENOSPC\)\n {2}fix: free space on the filesystem and retry\n$/);
      expect(r.status).toBe(75);
    } finally {
      closeSync(full);
    }
  });

  it('ca export --out on a full device says so, not "give --out a file path"', () => {
    const dir = mkdtempSync(join(tmpdir(), 'errors-'));
    expect(spawnSync(process.execPath, [CLI, '--state-dir', dir, 'ca', 'create', '--dir', join(dir, 'ca')]).status).toBe(0);
    const r = spawnSync(process.execPath, [CLI, '--state-dir', dir, 'ca', 'export', '--dir', join(dir, 'ca'), '--out', '/dev/full'], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/^error: cannot write the export to \/dev\/full: no space left on the device \(write ENOSPC\)\n {2}fix: free space/);
    expect(r.status).toBe(75);
  });
});
