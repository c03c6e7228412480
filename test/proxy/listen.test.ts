// `microagent proxy` and `microagent dns` where they cannot listen: a typed error saying where and how
// to fix it, and the process exits (a TCP listener left open by a failed socket listen kept it alive);
// and which listen addresses answer other machines (the CLIs warn about those).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reachableBeyondHost } from '../../src/proxy/listen.js';

const CLI = join(import.meta.dirname, '../../dist/cli/main.js');
const dir = mkdtempSync(join(tmpdir(), 'listen-fail-'));
const policy = join(dir, 'policy.yaml');
writeFileSync(policy, 'version: 1\nmode: strict\nrules:\n  - id: nothing\n    action: deny\n    hosts: [example.invalid]\n');
let taken: Server;
let takenPort: number;

beforeAll(async () => {
  taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  takenPort = (taken.address() as AddressInfo).port;
});
afterAll(() => taken.close());

function run(command: 'proxy' | 'dns', where: string[]) {
  const r = spawnSync(process.execPath, [CLI, '--state-dir', dir, command, '--policy', policy, '--audit', join(dir, `${command}.jsonl`), ...where], {
    encoding: 'utf8',
    // A process that hangs after its error ignores SIGTERM (the CLI catches it to shut down cleanly).
    timeout: 20_000,
    killSignal: 'SIGKILL',
  });
  return { code: r.status, stderr: r.stderr };
}

describe.each([
  ['proxy', 'the egress proxy'],
  ['dns', 'DNS'],
] as const)('microagent %s cannot listen', (command, what) => {
  it('on a port something else holds', () => {
    expect(run(command, ['--listen', `127.0.0.1:${takenPort}`])).toEqual({
      code: 1,
      stderr: `error: cannot listen for ${what} on 127.0.0.1:${takenPort}: EADDRINUSE\n  fix: something else listens there: stop it, or choose another port (0 picks a free one) or socket path\n`,
    });
  });

  it('on an address this host does not have (only bound, nothing is sent)', () => {
    expect(run(command, ['--listen', '192.0.2.1:5353'])).toEqual({
      code: 1,
      stderr: `error: cannot listen for ${what} on 192.0.2.1:5353: EADDRNOTAVAIL\n  fix: listen on an address of this host, e.g. 127.0.0.1 (a name must resolve to one)\n`,
    });
  });

  it('on a socket in a directory that does not exist, after listening on TCP: it exits all the same', () => {
    const socket = join(dir, 'absent', 'x.sock');
    const r = run(command, ['--listen', '127.0.0.1:0', '--socket', socket]);
    expect(r.stderr).toMatch(new RegExp(`^error: cannot listen for ${what} on ${socket}: E[A-Z]+\\n  fix: give a socket path in an existing directory this user may write to\\n$`));
    expect(r.code).toBe(1);
  });
});

describe('reachableBeyondHost: the CLIs warn when the proxy or resolver answers other machines', () => {
  it.each([
    ['127.0.0.1', false],
    ['127.8.9.10', false],
    ['::1', false],
    ['[::1]', false],
    ['::ffff:127.0.0.1', false],
    ['localhost', false],
    ['0.0.0.0', true],
    ['::', true],
    ['[::]', true],
    ['10.0.2.15', true],
    ['192.168.1.4', true],
    ['fd00::1', true],
    ['proxy.internal', true],
  ])('%s -> %s', (host, reachable) => {
    expect(reachableBeyondHost(host)).toBe(reachable);
  });
});
