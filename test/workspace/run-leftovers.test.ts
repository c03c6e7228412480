// A run's throwaway workspace keeps its audit log under runs/NAME whoever removes it (delete, or gc
// for a run whose CLI went away), and gc removes only runs that have ended: a prepared one is a run
// between create and start. State directories made by hand, no VM.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WorkspaceState } from '../../src/vm/workspace/lifecycle.js';
import { deleteWorkspace, gcWorkspaces, workspaceStatus } from '../../src/vm/workspace/service.js';
import { readManifest, runLogsDir, workspacePaths, type WorkspaceConfig } from '../../src/vm/workspace/store.js';
import { tempStateDirs, writeTestWorkspace } from './helpers.js';

const stateDir = tempStateDirs('microagent-leftovers-');

async function workspace(dir: string, name: string, state: WorkspaceState, disk: WorkspaceConfig['disk']): Promise<void> {
  await writeTestWorkspace(dir, name, state, disk === undefined ? {} : { disk });
  const paths = workspacePaths(dir, name);
  writeFileSync(paths.audit, `{"seq":1,"event":"lifecycle.${state}"}\n`);
  writeFileSync(`${paths.audit}.1`, '{"seq":0}\n');
  writeFileSync(paths.serialLog, 'serial\n');
}

const throwaway = { kind: 'throwaway', base: '/images/rootfs.ext4' } as const;

describe("a run's leftovers", () => {
  it.each<[string, WorkspaceConfig['disk'], boolean]>([
    ['a run\'s throwaway workspace keeps its audit log, every segment', throwaway, true],
    ['a persistent workspace (its own disk) takes its audit log with it', { kind: 'copy' }, false],
    ['a workspace from before the disk field takes its audit log with it', undefined, false],
  ])('delete: %s', async (_, disk, kept) => {
    const dir = stateDir();
    await workspace(dir, 'w1', 'stopped', disk);
    expect(await deleteWorkspace(dir, 'w1')).toBe(kept ? runLogsDir(dir, 'w1') : null);
    expect(existsSync(workspacePaths(dir, 'w1').dir)).toBe(false);
    expect(existsSync(join(runLogsDir(dir, 'w1'), 'audit.jsonl'))).toBe(kept);
    if (kept) {
      expect(readFileSync(join(runLogsDir(dir, 'w1'), 'audit.jsonl.1'), 'utf8')).toBe('{"seq":0}\n');
      expect(existsSync(join(runLogsDir(dir, 'w1'), 'serial.log'))).toBe(false);
    }
  });

  it('gc removes ended runs, keeping their audit and start logs, and leaves alone a prepared run and every persistent workspace', async () => {
    const dir = stateDir();
    await workspace(dir, 'run-stopped', 'stopped', throwaway);
    await workspace(dir, 'run-failed', 'failed', throwaway);
    await workspace(dir, 'run-prepared', 'prepared', throwaway);
    await workspace(dir, 'kept-stopped', 'stopped', { kind: 'copy' });
    const repaired = await gcWorkspaces(dir);
    expect(repaired.map((r) => r.name).sort()).toEqual(['run-failed', 'run-stopped']);
    expect(repaired).toContainEqual({ name: 'run-failed', repaired: `abandoned run removed; its audit log is kept in ${runLogsDir(dir, 'run-failed')}` });
    for (const name of ['run-stopped', 'run-failed']) {
      expect(existsSync(workspacePaths(dir, name).dir)).toBe(false);
      expect(existsSync(join(runLogsDir(dir, name), 'audit.jsonl'))).toBe(true);
      expect(existsSync(join(runLogsDir(dir, name), 'serial.log'))).toBe(true);
    }
    expect(existsSync(workspacePaths(dir, 'run-prepared').dir)).toBe(true);
    expect(existsSync(workspacePaths(dir, 'kept-stopped').dir)).toBe(true);
  });

  it("gc removes image build work left by a process that died, and leaves a live process's alone", async () => {
    const dir = stateDir();
    const tmp = join(dir, 'images', '.tmp');
    const dead = spawnSync('true').pid as number;
    const mine = join(tmp, `build.${process.pid}.abc123`);
    const left = join(tmp, `build.${dead}.def456`);
    for (const work of [mine, left]) mkdirSync(join(work, 'staging'), { recursive: true });
    const repaired = await gcWorkspaces(dir);
    expect(repaired).toEqual([{ name: `images/.tmp/build.${dead}.def456`, repaired: 'work of an image build whose process died, removed' }]);
    expect(existsSync(left)).toBe(false);
    expect(existsSync(mine)).toBe(true);
  });
});

describe('a workspace whose runtime record is from an earlier boot of the host', () => {
  // After a reboot its pids name nothing of ours: here, live processes that are neither its supervisor
  // nor its VM (a gc that believed them would kill the one standing in for the VM).
  const strangers: ChildProcess[] = [];
  afterAll(() => strangers.forEach((p) => p.kill('SIGKILL')));
  async function rebooted(dir: string, name: string): Promise<ChildProcess> {
    await workspace(dir, name, 'running', { kind: 'copy' });
    const stranger = spawn('sleep', ['60'], { stdio: 'ignore' });
    strangers.push(stranger);
    const record = { runtimeId: 'r1', supervisorPid: stranger.pid, vmPid: stranger.pid, controlSocket: '', startedAt: '', backend: 'qemu-microvm', accelerator: 'tcg', bootId: '00000000-0000-0000-0000-000000000000' };
    writeFileSync(workspacePaths(dir, name).runtime, JSON.stringify(record));
    return stranger;
  }

  it('reads failed, with no live supervisor, and delete removes it', async () => {
    const dir = stateDir();
    await rebooted(dir, 'w1');
    expect(await workspaceStatus(dir, 'w1')).toMatchObject({ state: 'failed', supervisorAlive: false });
    await deleteWorkspace(dir, 'w1');
    expect(existsSync(workspacePaths(dir, 'w1').dir)).toBe(false);
  });

  it('gc records it failed without killing the unrelated process that now has its VM\'s pid', async () => {
    const dir = stateDir();
    const stranger = await rebooted(dir, 'w2');
    expect(await gcWorkspaces(dir)).toEqual([{ name: 'w2', repaired: 'supervisor gone' }]);
    expect((await readManifest(dir, 'w2')).state).toBe('failed');
    expect(stranger.exitCode === null && stranger.signalCode === null).toBe(true);
  });
});

describe('microagent wait', () => {
  it('stops at Ctrl-C instead of waiting out its timeout, saying so', async () => {
    const dir = stateDir();
    await writeTestWorkspace(dir, 'w3', 'prepared');
    const cli = join(import.meta.dirname, '../../dist/cli/main.js');
    const child = spawn(process.execPath, [cli, '--state-dir', dir, 'wait', 'w3', '--timeout', '120'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(75);
    expect(stderr).toBe('error: stopped waiting for workspace "w3" (SIGINT)\n  fix: wait again with "microagent wait w3"\n');
  }, 30_000);
});
