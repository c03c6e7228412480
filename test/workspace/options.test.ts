import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCpus, parseDiskSize, parseMemory, parseProfile, parsePublish, parseWorkspaceFlags } from '../../src/vm/workspace/options.js';
import {
  createWorkspaceDir,
  readEvents,
  readManifest,
  recordState,
  validateWorkspaceName,
  workspacePaths,
  writeManifest,
  type WorkspaceManifest,
} from '../../src/vm/workspace/store.js';
import { withWorkspaceLock } from '../../src/vm/workspace/lock.js';

/** The error's message and remediation together, so a test can check both say the right thing. */
function failure(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    const e = err as { message: string; remediation?: string };
    return `${e.message} | ${e.remediation ?? ''}`;
  }
  return 'did not throw';
}

describe('workspace flags', () => {
  it.each([
    ['8080:80', { hostIp: '127.0.0.1', hostPort: 8080, guestPort: 80 }],
    ['0.0.0.0:8080:80', { hostIp: '0.0.0.0', hostPort: 8080, guestPort: 80 }],
  ])('publishes %s', (value, expected) => expect(parsePublish(value)).toEqual(expected));

  it.each(['80', '8080:0', '8080:70000', 'x:8080:80', '::1:80:80', '8080:80:'])('rejects -p %s with the form', (value) => {
    expect(failure(() => parsePublish(value))).toMatch(/not valid \| use -p \[HOST_IP:\]HOST_PORT:GUEST_PORT/);
  });

  it.each([
    [['8080:80', '8080:81'], '-p 127.0.0.1:8080:81 takes a host port that -p 127.0.0.1:8080:80 already takes'],
    [['0.0.0.0:8080:80', '127.0.0.1:8080:81'], '-p 127.0.0.1:8080:81 takes a host port that -p 0.0.0.0:8080:80 already takes'],
  ])('refuses two -p taking one host port: %j', (publish, message) => {
    expect(failure(() => parseWorkspaceFlags({ publish }))).toBe(`${message} | give each -p its own HOST_PORT (several host ports may lead to one guest port)`);
  });

  it.each([
    ['registry.local:5000', 'registry.local:5000'],
    ['Registry.Local', 'registry.local'],
    ['[::1]:5000', '[::1]:5000'],
  ])('--insecure-registry %s names %s', (value, host) => {
    expect(parseWorkspaceFlags({ insecureRegistries: [value] }).insecureRegistries).toEqual([host]);
  });

  it.each([
    // A URL would never equal an image reference's registry: the flag would silently do nothing.
    ['http://registry.local:5000/', 'give it without the scheme or path: --insecure-registry registry.local:5000'],
    ['https://Reg.Example', 'give it without the scheme or path: --insecure-registry reg.example'],
    ['a b', 'give the registry as HOST[:PORT], e.g. --insecure-registry registry.local:5000'],
    ['registry.local:5000/team', 'give the registry as HOST[:PORT], e.g. --insecure-registry registry.local:5000'],
  ])('--insecure-registry %s is refused: %s', (value, remediation) => {
    expect(failure(() => parseWorkspaceFlags({ insecureRegistries: [value] }))).toBe(`--insecure-registry ${JSON.stringify(value)} is not a registry HOST[:PORT] | ${remediation}`);
  });

  it('lets several host ports lead to one guest port, and one port on two addresses', () => {
    expect(parseWorkspaceFlags({ publish: ['8080:80', '8081:80', '127.0.0.2:8080:80'] }).publish.map((p) => p.hostPort)).toEqual([8080, 8081, 8080]);
  });

  // Run as root, the suite binds anything; a user who is not root is the one who meets this.
  it.runIf(process.getuid?.() === 0 && readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim() === '1024')(
    'a host port below 1024 published by a user who is not root says why it cannot be bound',
    () => {
      const module = JSON.stringify(join(import.meta.dirname, '../../dist/vm/supervisor/published-ports.js'));
      const script = `const { startPublishedPorts } = await import(${module});
        await startPublishedPorts([{ hostIp: '127.0.0.1', hostPort: 80, guestPort: 80 }], [{ hostPort: 1, guestPort: 80 }], { append: async () => {} })
          .catch((err) => process.stdout.write(err.message + ' | ' + err.remediation));`;
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
      expect(out).toBe('cannot publish 127.0.0.1:80: EACCES | ports below 1024 need root (or CAP_NET_BIND_SERVICE): choose a host port from 1024 up with -p HOST_PORT:GUEST_PORT');
    },
  );

  it.each([['2048', 2048], ['512M', 512], ['4G', 4096], ['1T', 1048576], ['2GiB', 2048]])('--disk %s is %i MiB', (value, mib) => {
    expect(parseDiskSize(value)).toBe(mib);
  });

  it.each(['0', '10M', 'big', '1.5G', '-1G'])('--disk %s is refused with the form', (value) => {
    expect(failure(() => parseDiskSize(value))).toMatch(/^--disk .* \| use (a size in MiB such as 2048, 512M or 4G|at least 64M)/);
  });

  it('parses memory, cpus and profiles', () => {
    expect(parseMemory('512')).toBe(512);
    expect(parseMemory('1G')).toBe(1024);
    expect(failure(() => parseMemory('12'))).toMatch(/at least 64M/);
    expect(parseMemory('2G', 2048)).toBe(2048);
    expect(failure(() => parseMemory('2049M', 2048))).toBe('--memory "2049M" is not valid | use at most this host\'s memory, 2048M');
    expect(failure(() => parseMemory('99999999G'))).toMatch(/at most this host's memory, \d+M$/);
    expect(parseCpus('2')).toBe(2);
    expect(failure(() => parseCpus('1.5'))).toMatch(/whole number/);
    expect(parseProfile('small')).toBe('small');
    expect(failure(() => parseProfile('huge'))).toMatch(/tiny, small, medium, large/);
  });
});

describe('state directory', () => {
  it.each(['Upper', '-lead', 'trail-', 'a/b', '..', '', 'x'.repeat(41)])('rejects the name %j', (name) => {
    expect(() => validateWorkspaceName(name)).toThrow(/invalid workspace name/);
  });

  it('creates a private folder, records history and refuses a duplicate', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'ma-state-'));
    const paths = await createWorkspaceDir(stateDir, 'dev-1');
    expect((await stat(paths.dir)).mode & 0o777).toBe(0o700);
    // Before its manifest is written, the folder is a create that has not finished (or crashed).
    await expect(createWorkspaceDir(stateDir, 'dev-1')).rejects.toMatchObject({ kind: 'invalid', code: 'workspace.incomplete' });
    const manifest = { name: 'dev-1', id: 'id-1', createdAt: new Date().toISOString(), state: 'prepared' } as unknown as WorkspaceManifest;
    await writeManifest(stateDir, manifest);
    await expect(createWorkspaceDir(stateDir, 'dev-1')).rejects.toMatchObject({ kind: 'conflict', code: 'workspace.exists' });
    await recordState(stateDir, 'dev-1', 'start', 'starting', 'rt-1');
    await recordState(stateDir, 'dev-1', 'start', 'running', 'rt-1', 'guest ready');
    expect((await readManifest(stateDir, 'dev-1')).state).toBe('running');
    const events = await readEvents(stateDir, 'dev-1');
    expect(events.map((e) => [e.from, e.state])).toEqual([['prepared', 'starting'], ['starting', 'running']]);
    expect(events[1]).toMatchObject({ workspace_id: 'id-1', runtime_id: 'rt-1', detail: 'guest ready' });
    await expect(readManifest(stateDir, 'nope')).rejects.toMatchObject({ kind: 'not_found' });
  });

  it('serialises two calls on one workspace and takes over a dead owner\'s lock', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'ma-lock-'));
    await createWorkspaceDir(stateDir, 'w');
    const lock = workspacePaths(stateDir, 'w').lock;
    const order: string[] = [];
    await Promise.all([
      withWorkspaceLock(stateDir, 'w', async () => {
        order.push('a-in');
        await new Promise((r) => setTimeout(r, 100));
        order.push('a-out');
      }),
      new Promise((r) => setTimeout(r, 10)).then(() => withWorkspaceLock(stateDir, 'w', async () => void order.push('b'))),
    ]);
    expect(order).toEqual(['a-in', 'a-out', 'b']);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(lock, '999999999');
    await withWorkspaceLock(stateDir, 'w', async () => void order.push('c'), 1000);
    expect(order.at(-1)).toBe('c');
    await expect(readFile(lock)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('reports a workspace that does not exist as not found, not as a lock file error', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'ma-lock-'));
    let ran = false;
    await expect(withWorkspaceLock(stateDir, 'absent', async () => void (ran = true))).rejects.toMatchObject({
      kind: 'not_found',
      code: 'workspace.not_found',
      message: expect.stringContaining('no workspace named "absent"'),
    });
    expect(ran).toBe(false);
  });

  it('passes on what the locked call throws, a missing file included', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'ma-lock-'));
    await createWorkspaceDir(stateDir, 'w');
    await expect(withWorkspaceLock(stateDir, 'w', () => readFile(join(stateDir, 'absent')))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
