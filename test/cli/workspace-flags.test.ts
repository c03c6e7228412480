// Bad workspace flags on run, create and exec: an error naming the flag and the form (exit 2 for a
// malformed flag, 1 for a declaration that parses but cannot be used), before any workspace,
// supervisor or VM is touched (the state directory stays empty).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const CLI = join(import.meta.dirname, '../../dist/cli/main.js');

describe.each([
  ['run', []],
  ['create', ['w']],
  ['exec', ['w']],
] as const)('microagent %s', (verb, before) => {
  const cases: [string[], RegExp, number?][] = [
    [['-e', 'NOVALUE'], /^error: -e "NOVALUE" is not valid\n {2}fix: use KEY=VALUE with a name of letters, digits and _, e\.g\. -e DEBUG=1\n$/],
    [['-e', '=x'], /^error: -e "=x" is not valid\n/],
    [['-e', '1A=x'], /^error: -e "1A=x" is not valid\n/],
    // Past ~49 days the guest's 32-bit millisecond field would wrap (4294968 s became a 704 ms timeout).
    ...(verb === 'create'
      ? []
      : (['0', 'soon', 'Infinity', '4294968'].map((t) => [['--timeout', t], new RegExp(`^error: --timeout "${t}" is not valid\n {2}fix: use a number of seconds from 0\\.001 to 4294967, e\\.g\\. --timeout 60\n$`)]) as [string[], RegExp][])),
    ...(verb === 'exec'
      ? []
      : [
          [['--memory', '5'], /^error: --memory "5" is not valid\n {2}fix: use at least 64M\n$/] as [string[], RegExp],
          [['--cpus', '0'], /^error: --cpus "0" is not valid\n/] as [string[], RegExp],
          [['-p', '80'], /^error: -p "80" is not valid\n/] as [string[], RegExp],
          [['--network', 'bridge'], /^error: --network must be user or isolated, not "bridge"\n/] as [string[], RegExp],
          [['--network', 'isolated', '-p', '8080:80'], /^error: -p publishes a guest port over the network device, and --network isolated gives the guest none\n {2}fix: drop -p, or use --network user/] as [string[], RegExp],
          [['--mediation', '70000=127.0.0.1:8080'], /^error: mediation channel 70000: a workspace's guest reaches channels at 127\.0\.0\.1:PORT, so the port must be at most 65535\n/] as [string[], RegExp],
          [['--mediation', '7000=nowhere'], /^error: mediation channel 7000: field target: "nowhere" is neither host:port nor an absolute Unix socket path\n/, 1] as [string[], RegExp, number],
          [['--dns-upstream', 'resolver.example'], /^error: upstream resolver "resolver.example" is not an IP address with an optional port\n/, 1] as [string[], RegExp, number],
        ]),
  ];
  it.each(cases)('%j is refused, and nothing is created', (flags, message, code = 2) => {
    const state = mkdtempSync(join(tmpdir(), 'ma-flags-'));
    const r = spawnSync(process.execPath, [CLI, '--state-dir', state, verb, ...before, ...flags, '--', 'true'], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toMatch(message);
    expect(r.status).toBe(code);
    expect(readdirSync(state).filter((f) => f !== 'policy-checks')).toEqual([]);
  });
});
