// Loading policies: one broken YAML per load error under testdata/, each asserting file:line:col and
// a remediation; the canonical hash; lint warnings; cases files.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isPolicyInvalidError, lintPolicy, loadPolicy, parseCasesFile, parsePolicy, type PolicyIssue } from '../../src/policy/index.js';

const testdata = (name: string) => join(import.meta.dirname, 'testdata', name);

async function issuesOf(file: string): Promise<PolicyIssue[]> {
  try {
    await loadPolicy(file);
  } catch (err) {
    if (!isPolicyInvalidError(err)) throw err;
    expect(err.kind).toBe('invalid');
    expect(err.code).toBe('policy.invalid');
    for (const issue of err.issues) expect(err.message).toContain(`${file}:${issue.line}:${issue.column}: ${issue.problem} (fix: ${issue.fix})`);
    return [...err.issues];
  }
  throw new Error(`${file} loaded but should be invalid`);
}

// [file, line, column, problem pattern, fix pattern]
const broken: [string, number, number, RegExp, RegExp][] = [
  ['unknown-rule-key.yaml', 5, 5, /unknown key "host" in rule #1/, /did you mean "hosts"/],
  ['unknown-top-key.yaml', 2, 1, /unknown key "rule" in the policy/, /did you mean "rules"/],
  ['empty-value.yaml', 5, 11, /"hosts" is empty/, /give "hosts" a value or remove the line/],
  ['empty-list.yaml', 6, 12, /ports is an empty list/, /remove "ports" to match every port/],
  ['partial-label-glob.yaml', 5, 13, /"api\*\.github\.com": "\*" must stand for a whole label/, /\*\.example\.com/],
  ['url-in-hosts.yaml', 5, 13, /"https:\/\/github\.com\/" is a URL, not a host name/, /write the host alone \("github\.com"\)/],
  ['port-in-hosts.yaml', 5, 13, /"api\.github\.com:443" carries a port/, /\("api\.github\.com"\) and the port under ports: \[443\]/],
  ['path-in-hosts.yaml', 5, 13, /"github\.com\/org\/\*" carries a path/, /paths: \["\/org\/\*"\]/],
  ['ip-in-hosts.yaml', 5, 13, /"10\.1\.2\.3" is an IP address, not a host name/, /cidrs: \[10\.1\.2\.3\]/],
  ['bad-cidr-prefix.yaml', 5, 13, /prefix length must be 0-32/, /10\.0\.0\.0\/24/],
  ['cidr-host-bits.yaml', 5, 13, /"192\.168\.1\.0\/16" has host bits set/, /write 192\.168\.0\.0\/16/],
  ['octal-cidr.yaml', 5, 13, /"010\.0\.0\.0" is not a strict IP address/, /without leading zeros/],
  ['port-out-of-range.yaml', 6, 18, /port 70000 is out of range/, /1-65535/],
  ['reversed-port-range.yaml', 6, 13, /the range is reversed/, /write "8000-8100"/],
  ['missing-version.yaml', 1, 1, /no version/, /version: 1/],
  ['wrong-version.yaml', 1, 10, /unsupported policy version 2/, /write version: 1/],
  ['bad-mode.yaml', 2, 7, /mode must be one of guarded, strict, off/, /mode: guarded/],
  ['bad-action.yaml', 4, 13, /action must be one of allow, deny, passthrough, inject/, /action: allow/],
  ['duplicate-id.yaml', 6, 9, /rule id "web" is already used by rule #1/, /unique id/],
  ['duplicate-key.yaml', 5, 5, /Map keys must be unique/, /keep one of the repeated keys/],
  ['syntax-error.yaml', 6, 1, /YAML syntax/, /correct the YAML syntax/],
  ['passthrough-with-paths.yaml', 4, 13, /passthrough rule is never decrypted/, /action: allow/],
  ['inject-without-headers.yaml', 4, 13, /inject rule api has no headers/, /\$\{secret:NAME\}/],
  ['bad-secret-reference.yaml', 7, 22, /"\$\{env:TOKEN\}" in Authorization is not a secret reference/, /\$\{secret:NAME\}/],
  ['no-destination.yaml', 3, 5, /rule web names no destination/, /hosts: \[\.\.\.\]/],
  ['alias.yaml', 8, 12, /uses a YAML alias/, /write the value out/],
  ['bad-path.yaml', 6, 13, /path "repos\/\*\*" does not start with "\/"/, /"\/repos\/\*\*"/],
  ['ambiguous-path.yaml', 7, 23, /path "\/v1\/\/admin" has an empty segment or a ";" parameter/, /single slashes and without ";"/],
  ['ambiguous-path.yaml', 7, 37, /path "\/v1;x\/\*\*" has an empty segment or a ";" parameter/, /single slashes/],
  ['bad-test-case.yaml', 8, 13, /expect must be one of allow, deny, would_deny/, /expect: allow/],
  ['empty-file.yaml', 1, 1, /the policy file is empty/, /version: 1/],
  ['multiple-documents.yaml', 4, 1, /more than one YAML document/, /remove the "---" line/],
  ['version-string.yaml', 1, 10, /version must be the number 1, not the string "1"/, /no quotes/],
];

describe('values that were mistyped are refused with the fix', () => {
  const problemsOf = (rule: string) => {
    try {
      parsePolicy(`version: 1\nrules:\n  - {id: r, action: allow, ${rule}}\n`, 'typo.yaml');
      return [];
    } catch (err) {
      if (!isPolicyInvalidError(err)) throw err;
      return err.issues.map((i) => `${i.problem} | ${i.fix}`);
    }
  };
  it.each([
    ['hosts: [" a.com"]', /" a\.com" has spaces around it \| write "a\.com"/],
    ['cidrs: ["10.0.0.0/8 "]', /has spaces around it \| write "10\.0\.0\.0\/8"/],
    ['hosts: [a.com], paths: [" /v1/**"]', /has spaces around it/],
    ['hosts: [a.com], methods: [" GET"]', /has spaces around it/],
    ['hosts: ["example.com.."]', /"example\.com\.\." has an empty label/],
    ['hosts: ["[::1]"]', /is an IP address, not a host name \| move it to the rule's cidrs: \[::1\]$/],
    ['hosts: [a.com], ports: [1.5]', /port 1\.5 is not a whole number/],
    ['hosts: [a.com], protocols: [ftp]', /protocol "ftp" is not one of http, https, tcp, dns \| write one of http, https, tcp, dns/],
    ['hosts: [a.com], paths: ["/x%3a"]', /escapes in upper case \(%3A\): "\/x%3A"/],
  ])('%s', (rule, expected) => {
    expect(problemsOf(rule).join('\n')).toMatch(expected);
  });

  it('protocols are case-insensitive, like methods', () => {
    expect(problemsOf('hosts: [a.com], protocols: [HTTPS, Tcp]')).toEqual([]);
  });

  it('YAML nested too deeply to read is said in words', () => {
    const deep = `version: 1\nrules: ${'['.repeat(5000)}${']'.repeat(5000)}\n`;
    try {
      parsePolicy(deep, 'deep.yaml');
      expect.unreachable();
    } catch (err) {
      if (!isPolicyInvalidError(err)) throw err;
      expect(err.issues[0]?.problem).toBe('the YAML nests too deeply to be read');
    }
  });
});

describe('broken policies name file, line, column and a fix', () => {
  it.each(broken)('%s -> %i:%i', async (name, line, column, problem, fix) => {
    const file = testdata(name);
    const issues = await issuesOf(file);
    const issue = issues.find((i) => problem.test(i.problem));
    expect(issue, JSON.stringify(issues)).toBeDefined();
    expect(issue).toMatchObject({ file, line, column });
    expect(issue?.fix).toMatch(fix);
  });

  it('collects every problem of a file in one error', async () => {
    const text = 'version: 1\nrules:\n  - id: a\n    action: alow\n    hosts: ["x*.com", 1.2.3.4]\n    ports: [0]\n';
    try {
      parsePolicy(text, 'many.yaml');
      expect.unreachable();
    } catch (err) {
      if (!isPolicyInvalidError(err)) throw err;
      expect(err.issues.map((i) => `${i.line}:${i.column}`)).toEqual(['4:13', '5:13', '5:23', '6:13']);
      expect(err.message.split('\n')[0]).toBe('policy many.yaml is invalid (4 problems):');
    }
  });

  it('a missing file is not_found, not invalid', async () => {
    await expect(loadPolicy(testdata('no-such-file.yaml'))).rejects.toMatchObject({ kind: 'not_found', code: 'policy.read' });
  });
});

describe('canonical hash', () => {
  const compact = 'version: 1\nmode: strict\nrules:\n  - {id: gh, action: allow, hosts: [API.GitHub.com.], ports: [443]}\n';
  const verbose = `# a comment
version: 1
mode: strict   # another
rules:

  - id: gh
    description: GitHub API, spelled differently
    hosts:
      - api.github.com
    ports:
      - "443"
    action: allow
`;

  it('ignores YAML formatting, comments, descriptions, key order and spelling of equivalent values', () => {
    const a = parsePolicy(compact, 'a.yaml');
    const b = parsePolicy(verbose, 'b.yaml');
    expect(a.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(b.hash).toBe(a.hash);
  });

  it('changes with anything that changes decisions', () => {
    const base = parsePolicy(compact, 'a.yaml').hash;
    expect(parsePolicy(compact.replace('443', '444'), 'a.yaml').hash).not.toBe(base);
    expect(parsePolicy(compact.replace('strict', 'guarded'), 'a.yaml').hash).not.toBe(base);
    expect(parsePolicy(compact.replace('allow', 'deny'), 'a.yaml').hash).not.toBe(base);
    expect(parsePolicy(compact + 'report_only: true\n', 'a.yaml').hash).not.toBe(base);
  });
});

describe('lint warnings', () => {
  const policy = parsePolicy(
    `version: 1
rules:
  - id: everything
    action: allow
    hosts: ["*"]
  - id: all-com
    action: allow
    hosts: ["*.com"]
  - id: all-v4
    action: allow
    cidrs: [0.0.0.0/0]
  - id: block-tracker
    action: deny
    hosts: [.tracker.example]
  - id: tracker-api
    action: allow
    hosts: [api.tracker.example]
  - id: github
    action: allow
    hosts: [.github.com]
  - id: github-api
    action: allow
    hosts: [api.github.com]
    ports: [443]
  - id: dns-cidr
    action: deny
    cidrs: [192.0.2.0/24]
    protocols: [dns]
  - id: every-tld
    action: allow
    hosts: ["github.*"]
`,
    'lint.yaml',
  );
  const warnings = lintPolicy(policy);
  const kinds = (rule: string) => warnings.filter((w) => w.rule === rule).map((w) => w.kind);

  it('flags dangerously broad allows', () => {
    expect(kinds('everything')).toContain('broad_allow');
    expect(kinds('all-com')).toContain('broad_allow');
    expect(kinds('all-v4')).toContain('broad_allow');
    expect(kinds('every-tld')).toContain('broad_allow');
    expect(kinds('github')).not.toContain('broad_allow');
  });

  it('names every broad pattern of a rule, not only the first', () => {
    const many = parsePolicy('version: 1\nrules:\n  - {id: wide, action: allow, hosts: [a.com, "x.*", "*.com"], cidrs: [0.0.0.0/0, "::/0"]}\n', 'wide.yaml');
    const [broad] = lintPolicy(many).filter((w) => w.kind === 'broad_allow');
    for (const part of ['"x.*"', '"*.com"', '0.0.0.0/0', '::/0']) expect(broad?.message).toContain(part);
  });

  it('flags an allow a deny always beats', () => {
    expect(kinds('tracker-api')).toEqual(['shadowed_by_deny']);
  });

  it('flags an allow an earlier allow always decides first', () => {
    expect(kinds('github-api')).toEqual(['never_decides']);
    const w = warnings.find((x) => x.rule === 'github-api');
    expect(w).toMatchObject({ file: 'lint.yaml', line: 21, column: 5 });
    expect(w?.message).toMatch(/rule everything \(line 3\)/);
  });

  it('flags a rule that can never match', () => {
    expect(kinds('dns-cidr')).toEqual(['never_matches']);
  });

  it('flags raw tcp allowed only on TLS ports, where a tunnel must carry TLS', () => {
    const tcp = (extra: string) => parsePolicy(`version: 1\nrules:\n  - id: ssh\n    action: passthrough\n    hosts: [ssh.forge.test]\n    protocols: [tcp]\n${extra}`, 'tcp.yaml');
    expect(lintPolicy(tcp('    ports: [443]\n'))).toMatchObject([{ rule: 'ssh', kind: 'tcp_on_tls_port', line: 3, message: expect.stringContaining('allows tcp only on TLS ports (443)') }]);
    expect(lintPolicy(tcp('    ports: [2222]\n    tls: true\n'))).toMatchObject([{ kind: 'tcp_on_tls_port', message: expect.stringContaining('(tls: true)') }]);
    expect(lintPolicy(tcp('    ports: [22]\n'))).toEqual([]);
    expect(lintPolicy(tcp('    ports: [22, 443]\n'))).toEqual([]);
    expect(lintPolicy(tcp(''))).toEqual([]);
  });

  it.each([
    ['guarded', 'guarded mode allows every public destination'],
    ['strict', 'it denies everything'],
  ])('flags a %s policy with no rules, naming the cases-file mistake', (mode, effect) => {
    const empty = parsePolicy(`version: 1\nmode: ${mode}\ntests:\n  - {target: https://a.example/, expect: allow}\n`, 'cases.yaml');
    expect(lintPolicy(empty)).toEqual([
      { file: 'cases.yaml', line: 1, column: 1, rule: '', kind: 'no_rules', message: `the policy has no rules, so ${effect}; if cases.yaml is a cases file, run "microagent policy test POLICY --cases cases.yaml"` },
    ]);
  });

  it('has nothing to say about the shipped policies', async () => {
    for (const file of ['guarded.yaml', 'strict-coding-agent.yaml']) {
      const shipped = await loadPolicy(join(import.meta.dirname, '../../policies', file));
      expect(lintPolicy(shipped)).toEqual([]);
    }
  });
});

describe('cases files', () => {
  it('parses a tests: list with positions', () => {
    const cases = parseCasesFile('version: 1\ntests:\n  - target: https://a.example/\n    expect: deny\n    rule: null\n', 'c.yaml');
    expect(cases).toHaveLength(1);
    expect(cases[0]).toMatchObject({ target: 'https://a.example/', expect: 'deny', rule: null, position: { file: 'c.yaml', line: 3, column: 5 } });
  });

  it('rejects an unknown key in a case, with its position', () => {
    expect(() => parseCasesFile('tests:\n  - target: a.example:443\n    expected: deny\n', 'c.yaml')).toThrow(/c\.yaml:3:5: unknown key "expected" in test #1 .*did you mean "expect"/s);
  });

  it('rejects an unparseable target', () => {
    expect(() => parseCasesFile('tests:\n  - target: ftp://a.example/\n    expect: deny\n', 'c.yaml')).toThrow(/c\.yaml:2:13: scheme "ftp" is not http or https/);
  });
});
