// The supervisor spawned before its workspace is named (src/vm/workspace/supervisor-process.ts), with
// the real supervisor process from dist/ (npm test builds first) and no VM: a caller that gives up leaves
// nothing behind, and a supervisor gone before it could record anything fails the start at once instead
// of leaving the caller waiting out its timeout. It starts without NODE_EXTRA_CA_CERTS for Node to parse,
// the file handed over under src/tls-trust.ts's name instead.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startWorkspace } from '../../src/vm/workspace/service.js';
import { listWorkspaceNames, workspacesRoot } from '../../src/vm/workspace/store.js';
import { spawnSupervisor } from '../../src/vm/workspace/supervisor-process.js';
import { processAlive } from '../../src/vm/workspace/lock.js';
import { tempStateDirs, writeTestWorkspace } from './helpers.js';

const stateDir = tempStateDirs('microagent-supervisor-');

async function exited(pid: number): Promise<boolean> {
  for (let i = 0; i < 200 && processAlive(pid); i++) await new Promise((r) => setTimeout(r, 25));
  return !processAlive(pid);
}

describe('a supervisor spawned before its workspace is named', () => {
  it('starts with NODE_EXTRA_CA_CERTS deferred, exits and removes its pending log when the caller gives up, and was never listed as a workspace', async () => {
    const dir = stateDir();
    const saved = process.env['NODE_EXTRA_CA_CERTS'];
    process.env['NODE_EXTRA_CA_CERTS'] = '/etc/extra-ca.pem';
    const supervisor = await spawnSupervisor(dir).finally(() => {
      if (saved === undefined) delete process.env['NODE_EXTRA_CA_CERTS'];
      else process.env['NODE_EXTRA_CA_CERTS'] = saved;
    });
    const environ = readFileSync(`/proc/${supervisor.pid}/environ`, 'utf8').split('\0');
    expect(environ.filter((v) => v.includes('EXTRA_CA_CERTS='))).toEqual(['MICROAGENT_EXTRA_CA_CERTS=/etc/extra-ca.pem']);
    const pending = readdirSync(workspacesRoot(dir));
    expect(pending).toHaveLength(1);
    expect(pending[0]).toMatch(/^\.supervisor-[0-9a-f]{12}\.log$/);
    expect(await listWorkspaceNames(dir)).toEqual([]);

    supervisor.cancel();
    await supervisor.settled;
    expect(await exited(supervisor.pid)).toBe(true);
    expect(readdirSync(workspacesRoot(dir))).toEqual([]);
  });

  it('a supervisor that died before recording anything fails the start at once, not at the timeout', async () => {
    const dir = stateDir();
    await writeTestWorkspace(dir, 'w1', 'prepared', { run: { argv: [], env: [], cwd: '/', uid: 0, gid: 0 } });
    const supervisor = await spawnSupervisor(dir);
    process.kill(supervisor.pid, 'SIGKILL');
    expect(await exited(supervisor.pid)).toBe(true);

    const started = startWorkspace(dir, 'w1', { supervisor, timeoutMs: 600_000 });
    await expect(started).rejects.toMatchObject({ code: 'lifecycle.start_failed' });
    // Its pending log became the workspace's, where the failure message points.
    expect(existsSync(join(workspacesRoot(dir), 'w1', 'supervisor.log'))).toBe(true);
  });
});
