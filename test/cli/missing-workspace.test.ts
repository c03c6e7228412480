// Every verb that names a workspace, on one that does not exist: the same not-found error (what, where,
// how to fix) and exit code, never a file error from inside the state directory. And a workspace
// directory without a readable manifest is named as what it is, without hiding the others from list
// and gc. No VM is involved.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openAuditLog } from '../../src/audit/index.js';

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

describe('a run that has ended (its workspace removed, its audit log kept under runs/)', () => {
  const state = mkdtempSync(join(tmpdir(), 'ma-ended-'));
  const kept = join(state, 'runs', 'run-0123abcd', 'audit.jsonl');
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, '--state-dir', state, ...args], { encoding: 'utf8', timeout: 30_000 });

  it('egress reads the kept log; the other verbs point at it instead of at create', async () => {
    mkdirSync(join(state, 'runs', 'run-0123abcd'), { recursive: true });
    const log = await openAuditLog({ path: kept, workspace: 'run-0123abcd' });
    await log.append({ event: 'lifecycle.running', state: 'running' });
    await log.close();
    const egress = run('egress', 'run-0123abcd');
    expect(egress.status).toBe(0);
    expect(egress.stdout).toContain('lifecycle.running');
    const status = run('status', 'run-0123abcd');
    expect(status.status).toBe(1);
    expect(status.stderr).toContain(`fix: "run-0123abcd" was a run and has ended; its audit log is kept: microagent egress run-0123abcd, or microagent audit query ${kept}`);
  });
});

describe('a workspace directory without a readable manifest', () => {
  const state = mkdtempSync(join(tmpdir(), 'ma-damaged-'));
  const root = join(state, 'workspaces');
  mkdirSync(join(root, 'half'), { recursive: true }); // a create that crashed before its manifest
  mkdirSync(join(root, 'torn'));
  writeFileSync(join(root, 'torn', 'manifest.json'), '{"name": "torn", "sta');
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, '--state-dir', state, ...args], { encoding: 'utf8', timeout: 30_000 });

  it.each(['status', 'delete', 'create'])('%s names the incomplete one and how to clear it', (verb) => {
    const r = run(verb, 'half');
    expect(r.stderr).toBe(`error: workspace "half" is incomplete: ${join(root, 'half')} has no manifest.json (a create that did not finish)\n  fix: if no create of "half" is running, remove ${join(root, 'half')}\n`);
    expect(r.status).toBe(1);
  });

  it('status names the damaged manifest', () => {
    const r = run('status', 'torn');
    expect(r.stderr).toMatch(new RegExp(`^error: workspace "torn" has a damaged manifest.json, ${join(root, 'torn', 'manifest.json')}: .+\\n  fix: restore manifest.json, or move ${join(root, 'torn')} aside \\(its audit log is in it\\)\\n$`));
    expect(r.status).toBe(1);
  });

  it('a damaged runtime record is named too; a torn last line of the event history is not an event yet', () => {
    const state2 = mkdtempSync(join(tmpdir(), 'ma-damaged-'));
    const dir = join(state2, 'workspaces', 'rt');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ name: 'rt', id: 'id-rt', createdAt: new Date().toISOString(), state: 'stopped', config: {} }));
    writeFileSync(join(dir, 'runtime.json'), '{"runtimeId": "x", "supervisorP');
    const status = spawnSync(process.execPath, [CLI, '--state-dir', state2, 'status', 'rt'], { encoding: 'utf8', timeout: 30_000 });
    expect(status.stderr).toMatch(new RegExp(`^error: workspace "rt" has a damaged runtime\\.json, ${join(dir, 'runtime.json')}: .+\\n  fix: make sure no supervisor or QEMU of "rt" still runs \\(ps\\), then remove ${join(dir, 'runtime.json')}\\n$`));
    writeFileSync(join(dir, 'events.json'), '{"ts":"2026-11-27T00:00:00.000Z","verb":"create","from":null,"state":"prepared"}\n{"ts":"2026-11-27T00:0');
    const events = spawnSync(process.execPath, [CLI, '--state-dir', state2, '--json', 'events', 'rt'], { encoding: 'utf8', timeout: 30_000 });
    expect(JSON.parse(events.stdout)).toMatchObject([{ verb: 'create', state: 'prepared' }]);
    expect(events.status).toBe(0);
  });

  it('list and gc go on past them: the damaged one is a warning, the incomplete one is skipped', () => {
    const list = run('list');
    expect(list.stdout).toBe('no workspaces\n');
    expect(list.stderr).toMatch(/^warning: workspace "torn" has a damaged manifest\.json/);
    expect(list.stderr).not.toContain('half');
    expect(list.status).toBe(0);
    const gc = run('--json', 'gc');
    expect(JSON.parse(gc.stdout)).toEqual([{ name: 'torn', repaired: expect.stringMatching(/^left alone: workspace "torn" has a damaged manifest\.json/) }]);
    expect(gc.status).toBe(0);
  });
});
