// `microagent policy check|test|explain` as users run them: the built CLI (`npm run build` first) on
// the shipped policies and on broken files, checking output and exit codes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { siblingCasesFile } from '../../src/policy/index.js';

const ROOT = join(import.meta.dirname, '../..');
const CLI = join(ROOT, 'dist/cli/main.js');
const GUARDED = 'policies/guarded.yaml';
const STRICT = 'policies/strict-coding-agent.yaml';
const tmp = mkdtempSync(join(tmpdir(), 'microagent-policy-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function write(name: string, text: string): string {
  const file = join(tmp, name);
  writeFileSync(file, text);
  return file;
}

describe('policy check', () => {
  it('accepts the shipped policies without warnings', () => {
    const r = run('policy', 'check', GUARDED, STRICT);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ok +policies\/guarded\.yaml \(10 rules, 3 tests, mode guarded, sha256:[0-9a-f]{64}\)$/m);
    expect(r.stdout).toMatch(/^ok +policies\/strict-coding-agent\.yaml .*mode strict/m);
    expect(r.stdout).not.toMatch(/warning/);
  });

  it('exits 1 and lists file:line:col with a fix for a broken file', () => {
    const r = run('policy', 'check', GUARDED, 'test/policy/testdata/unknown-rule-key.yaml');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^ok +policies\/guarded\.yaml/m);
    expect(r.stdout).toMatch(/^invalid +test\/policy\/testdata\/unknown-rule-key\.yaml$/m);
    expect(r.stdout).toContain('test/policy/testdata/unknown-rule-key.yaml:5:5: unknown key "host" in rule #1 (fix: did you mean "hosts"?)');
  });

  it('reports a missing file as an error of that file', () => {
    const r = run('policy', 'check', join(tmp, 'missing.yaml'));
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/cannot read policy .*missing\.yaml/);
  });

  it('prints warnings for suspicious rules but exits 0', () => {
    const file = write('broad.yaml', 'version: 1\nrules:\n  - id: all\n    action: allow\n    hosts: ["*"]\n');
    const r = run('policy', 'check', file);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${file}:3:5: warning: rule all allows every host name`);
  });

  it('--json gives the issues as data', () => {
    const r = run('--json', 'policy', 'check', 'test/policy/testdata/bad-cidr-prefix.yaml');
    expect(r.code).toBe(1);
    const result = JSON.parse(r.stdout);
    expect(result.ok).toBe(false);
    expect(result.files[0].errors[0]).toMatchObject({ line: 5, column: 13, problem: expect.stringMatching(/prefix length/) });
  });

  it('exits 2 without a file', () => {
    expect(run('policy', 'check').code).toBe(2);
  });
});

describe('policy test', () => {
  it.each([
    [GUARDED, 'policies/guarded.cases.yaml'],
    [STRICT, 'policies/strict-coding-agent.cases.yaml'],
  ])('%s passes its inline and file cases', (policy, cases) => {
    const r = run('policy', 'test', policy, '--cases', cases);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^RESULT +CASE +EXPECTED +GOT +AT$/m);
    expect(r.stdout).toMatch(/\d+ passed, 0 failed/);
    expect(r.stdout).not.toMatch(/^FAIL/m);
  });

  it('exits 1 and names the failing case', () => {
    const cases = write('wrong.cases.yaml', 'tests:\n  - name: metadata must be allowed (wrong on purpose)\n    target: http://169.254.169.254/\n    expect: allow\n');
    const r = run('policy', 'test', GUARDED, '--cases', cases);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAIL +metadata must be allowed/m);
    expect(r.stdout).toContain(`${cases}:2:5: metadata must be allowed (wrong on purpose): expected allow, got deny (rule_deny)`);
    expect(r.stdout).toMatch(/1 failed/);
  });

  it('exits 1 on an invalid cases file', () => {
    const cases = write('bad.cases.yaml', 'tests:\n  - target: https://a.example/\n    expect: perhaps\n');
    const r = run('policy', 'test', GUARDED, '--cases', cases);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${cases}:3:13: expect must be one of allow, deny, would_deny`);
  });

  it('exits 1 on an invalid policy', () => {
    const r = run('policy', 'test', 'test/policy/testdata/bad-action.yaml');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('bad-action.yaml:4:13: action must be one of');
  });

  it('runs the cases file kept next to the policy (X.cases.yaml) unless --cases names others', () => {
    const policy = write('mine.yaml', 'version: 1\nrules:\n  - {id: a, action: allow, hosts: [a.example]}\ntests:\n  - {target: https://a.example/, expect: allow}\n');
    const sibling = write('mine.cases.yaml', 'tests:\n  - {target: https://b.example/, expect: allow}\n  - {name: sibling case, target: https://a.example/x, expect: deny}\n');
    const r = run('policy', 'test', policy);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`${sibling}:3:5: sibling case: expected deny, got allow (rule_allow)`);
    expect(r.stdout).toMatch(new RegExp(`2 passed, 1 failed \\(policy sha256:[0-9a-f]{64}; inline tests and ${sibling.replace(/[.]/g, '\\.')} \\(found next to the policy\\)\\)`));
    expect(JSON.parse(run('policy', 'test', policy, '--json').stdout)).toMatchObject({ casesFiles: [sibling], passed: 2, failed: 1 });
    const other = write('other.cases.yaml', 'tests:\n  - {target: https://a.example/, expect: allow}\n');
    const named = run('policy', 'test', policy, '--cases', other);
    expect(named.code).toBe(0);
    expect(named.stdout).toMatch(/2 passed, 0 failed \(policy sha256:[0-9a-f]{64}; inline tests and \S+other\.cases\.yaml\)$/m);
    // A cases file given as the policy is not its own sibling.
    expect(siblingCasesFile(sibling)).toBeNull();
    expect(siblingCasesFile(policy)).toBe(sibling);
  });

  it('refuses a policy with no cases at all', () => {
    const file = write('nocases.yaml', 'version: 1\nrules:\n  - {id: a, action: allow, hosts: [a.example]}\n');
    const r = run('policy', 'test', file);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no test cases/);
  });
});

describe('policy explain', () => {
  it('shows verdict, deciding rule with position, matched rules and reason', () => {
    const r = run('policy', 'explain', STRICT, 'https://api.github.com/repos/o/r/pulls', '--method', 'POST');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^verdict +allow \(action inject\)$/m);
    expect(r.stdout).toMatch(/^reason +rule_allow: /m);
    expect(r.stdout).toMatch(/^rule +github-api \(inject, policies\/strict-coding-agent\.yaml:\d+:5\)$/m);
    expect(r.stdout).toMatch(/^inject +Authorization <- secrets GITHUB_TOKEN$/m);
  });

  it('takes the method before the target, as a request line has it', () => {
    const verdictOf = (...args: string[]) => JSON.parse(run('--json', 'policy', 'explain', STRICT, ...args).stdout).decision.verdict;
    expect(verdictOf('GET', 'https://api.github.com/user')).toBe('allow');
    expect(verdictOf('DELETE', 'https://api.github.com/user')).toBe('deny');
    expect(verdictOf('https://api.github.com/user', '--method', 'DELETE')).toBe('deny');
  });

  it('explains a deny by the mode default', () => {
    const r = run('policy', 'explain', STRICT, 'example.org:443');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^verdict +deny/m);
    expect(r.stdout).toMatch(/^reason +default_deny/m);
  });

  it('--mode overrides the policy mode', () => {
    const r = run('--json', 'policy', 'explain', STRICT, 'example.org:443', '--mode', 'guarded');
    const result = JSON.parse(r.stdout);
    expect(result.decision).toMatchObject({ verdict: 'allow', reason: 'unlisted', mode: 'guarded' });
  });

  it('explains an IP trick as invalid_target, and a bare internal IP as internal_address', () => {
    expect(JSON.parse(run('--json', 'policy', 'explain', GUARDED, 'http://127.1/').stdout).decision.reason).toBe('invalid_target');
    const internal = JSON.parse(run('--json', 'policy', 'explain', GUARDED, '10.1.2.3').stdout);
    expect(internal.decision).toMatchObject({ verdict: 'deny', reason: 'internal_address' });
    expect(internal.input).toMatchObject({ protocol: 'https', host: '10.1.2.3', port: 443 });
  });

  it('shows the input as decide() read it: host lowercased, punycode, no trailing dot, every path reading', () => {
    const r = run('policy', 'explain', STRICT, 'https://API.GitHub.COM./repos//../user?x=1');
    expect(r.stdout).toMatch(/^input +protocol=https host=API\.GitHub\.COM\. port=443 method=GET path=\/repos\/\/\.\.\/user\?x=1$/m);
    expect(r.stdout).toMatch(/^read as +host=api\.github\.com port=443 method=GET path=\/repos\/user \(also read as \/user\)$/m);
    const json = JSON.parse(run('--json', 'policy', 'explain', STRICT, 'https://bücher.example/%61b', '--ip', '::FFFF:1.2.3.4').stdout);
    expect(json.normalized).toEqual({ host: 'xn--bcher-kva.example', ip: '::ffff:1.2.3.4', port: 443, method: 'GET', paths: ['/ab'] });
  });

  it('lists every matched rule in file order', () => {
    const file = write('both.yaml', 'version: 1\nrules:\n  - {id: first, action: allow, hosts: [.example.com]}\n  - {id: second, action: deny, hosts: [bad.example.com]}\n');
    const result = JSON.parse(run('--json', 'policy', 'explain', file, 'bad.example.com:443').stdout);
    expect(result.decision).toMatchObject({ verdict: 'deny', rule: 'second', matched: ['first', 'second'] });
    expect(result.matched.map((m: { position: { line: number } }) => m.position.line)).toEqual([3, 4]);
  });

  it('usage errors exit 2', () => {
    expect(run('policy', 'explain', STRICT).code).toBe(2);
    expect(run('policy', 'explain', STRICT, 'a.example', '--mode', 'lax').code).toBe(2);
  });

  it('an unparseable target exits 1 with a fix', () => {
    const r = run('policy', 'explain', STRICT, 'ftp://a.example/');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/scheme "ftp" is not http or https/);
    expect(r.stderr).toMatch(/fix: write a URL/);
  });
});

describe('output to a reader that went away', () => {
  it('ends quietly, like a C tool on SIGPIPE, instead of a stack trace', async () => {
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [CLI, 'policy', 'check', GUARDED], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    // Our end of stdout closes before the CLI writes anything: its first write fails with EPIPE.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(code).toBe(0);
  });
});
