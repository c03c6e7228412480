// The `microagent` entry point as users meet it first: help, version, and a mistyped command, through
// the built CLI (`npm run build` first).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/cli/main.js');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('microagent', () => {
  it.each([['version'], ['--version'], ['-V']])('%s prints the package version', (arg) => {
    expect(run(arg)).toMatchObject({ code: 0, stdout: `microagent ${VERSION}\n` });
  });

  it('--json version prints it as an object', () => {
    expect(JSON.parse(run('--json', 'version').stdout)).toEqual({ version: VERSION });
  });

  it('help lists every command, version included', () => {
    const r = run('help');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}microagent run \[IMAGE\]/m);
    expect(r.stdout).toMatch(/^ {2}microagent version$/m);
  });

  it('an unknown command exits 2, naming it and how to list the commands', () => {
    const r = run('frobnicate');
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('error: unknown command "frobnicate"\n  fix: run "microagent help" to list the commands\n');
  });

  it.each([
    ['strat', 'start'],
    ['exce', 'exec'],
    ['polcy', 'policy'],
    ['--versoin', '--version'],
  ])('a mistyped command %s is answered with "did you mean %s"', (typed, meant) => {
    const r = run(typed);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^error: unknown command "${typed}"\n  fix: did you mean "${meant}"\\? run "microagent help"`));
  });

  it.each(['policy', 'audit', 'ca', 'mediation'])('%s alone exits 2, listing its commands', (group) => {
    const r = run(group);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^error: "${group}" needs one of its commands\n  fix: the ${group} commands are:\n  microagent ${group} \\w+`));
  });

  it.each([
    ['kernel', '--help'],
    ['kernel', '-h'],
    ['help', 'kernel'],
    ['kernel', 'help'],
  ])('%s %s prints the group\'s own commands and exits 0', (...args) => {
    const r = run(...args);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const commands = r.stdout.split('\n').filter((line) => line.startsWith('  microagent '));
    expect(commands).toEqual(['  microagent kernel install [--from PATH]', '  microagent kernel build [--source TARBALL] [--jobs N]', '  microagent kernel show']);
  });

  it.each([
    [['help', 'create'], 'usage: microagent create NAME'],
    [['help', 'delete'], 'usage: microagent delete NAME'],
    [['help', 'policy', 'check'], 'usage: microagent policy check FILE...'],
    [['-h', 'run'], 'usage: microagent run [IMAGE]'],
  ])('%j prints that command\'s usage and runs nothing', (args, usage) => {
    const state = mkdtempSync(join(tmpdir(), 'help-'));
    try {
      const r = run('--state-dir', state, ...args);
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(r.stdout.startsWith(usage)).toBe(true);
      expect(existsSync(join(state, 'workspaces', 'help'))).toBe(false);
    } finally {
      rmSync(state, { recursive: true, force: true });
    }
  });

  it('an invalid workspace name is a usage error (exit 2), like every other malformed argument', () => {
    const r = run('--state-dir', join(tmpdir(), 'no-such-state'), 'status', 'Bad_Name');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: invalid workspace name "Bad_Name"\n {2}fix: use 1-40 lowercase letters/);
  });

  it('-h and --help after "--" belong to the guest command, not to microagent', () => {
    for (const flag of ['-h', '--help']) {
      const r = run('--state-dir', join(tmpdir(), 'no-such-state'), 'exec', 'nosuch', '--', 'ls', flag, '/');
      expect(r.code, flag).toBe(1);
      expect(r.stderr, flag).toContain('no workspace named "nosuch"');
    }
  });

  it('a mistyped option gets a "did you mean"; one meant for the guest command is told to go after "--"', () => {
    const typo = run('proxy', '--polcy', 'p.yaml');
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/^error: proxy: unknown option "--polcy"\n {2}fix: did you mean "--policy"\? usage: microagent proxy --policy FILE/);
    const guestOption = run('run', 'ls', '-la');
    expect(guestOption.code).toBe(2);
    expect(guestOption.stderr).toMatch(/^error: run: unknown option "-l"\n {2}fix: to pass "-l" on as an argument, put it after "--"; usage: microagent run /);
  });

  it('a mistyped subcommand is named with its group', () => {
    const r = run('policy', 'chek');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: unknown command "policy chek"\n  fix: did you mean "policy check"\? the policy commands are:/);
  });

  it('docs/cli.md lists every command with the usage and summary help prints', () => {
    const doc = readFileSync(join(ROOT, 'docs/cli.md'), 'utf8');
    const block = /## Commands\n\n```\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';
    const help = run('help').stdout.split('\n').filter((line) => line.startsWith('  '));
    const documented = help.filter((line) => !/^ {2}microagent version$|^ {6}Print the version/.test(line));
    expect(block.trimEnd().split('\n').map((line) => line.trimEnd())).toEqual(documented.map((line) => line.trimEnd()));
  });
});

