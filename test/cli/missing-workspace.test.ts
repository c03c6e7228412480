// Every verb that names a workspace, on one that does not exist: the same not-found error (what, where,
// how to fix) and exit code, never a file error from inside the state directory. No VM is involved.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../dist/cli/main.js');
const STATE = mkdtempSync(join(tmpdir(), 'ma-missing-'));

describe('a workspace that does not exist', () => {
  it.each([
    ['start'], ['halt'], ['pause'], ['resume'], ['stop'], ['kill'], ['quarantine'], ['delete'],
    ['status'], ['wait'], ['logs'], ['events'], ['egress'], ['connect'], ['exec', '--', 'true'],
  ])('%s names it and says how to find the workspaces', (verb, ...rest) => {
    const r = spawnSync(process.execPath, [CLI, '--state-dir', STATE, verb, 'absent', ...rest], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe(`error: no workspace named "absent" in ${join(STATE, 'workspaces')}\n  fix: list workspaces with "microagent list", or create it with "microagent create NAME"\n`);
    expect(r.status).toBe(1);
  });

  it('the agent mode (--mode=ax) gives it as a not_found error object', () => {
    const r = spawnSync(process.execPath, [CLI, '--state-dir', STATE, '--mode=ax', 'delete', 'absent'], { encoding: 'utf8', timeout: 30_000 });
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, error: { kind: 'not_found', message: `no workspace named "absent" in ${join(STATE, 'workspaces')}` } });
    expect(r.status).toBe(1);
  });
});
