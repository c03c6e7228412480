// decide(): host normalisation, wildcard semantics, precedence, internal addresses, modes, report-only,
// and the connection/request stage split. Each case asserts the reason (and rule), not just allow/deny.
import { describe, expect, it } from 'vitest';
import { decide, normalizeHost, parsePolicy, withMode, type DecisionInput } from '../../src/policy/index.js';

const policyText = (mode: string, rules: string, extra = '') => `version: 1\nmode: ${mode}\n${extra}rules:\n${rules}`;

const wildcards = parsePolicy(
  policyText(
    'strict',
    `
  - id: exact
    action: allow
    hosts: [api.github.com]
  - id: subdomains
    action: allow
    hosts: ["*.pythonhosted.org"]
  - id: apex
    action: allow
    hosts: [.example.com]
  - id: infix
    action: allow
    hosts: ["ec2.*.amazonaws.com"]
  - id: idn
    action: allow
    hosts: [bücher.example]
`,
  ),
  'wildcards.yaml',
);

const https = (host: string): DecisionInput => ({ protocol: 'https', host, port: 443 });

describe('host normalisation', () => {
  it.each([
    ['API.GitHub.COM', 'api.github.com'],
    ['api.github.com.', 'api.github.com'],
    ['Bücher.Example', 'xn--bcher-kva.example'],
    ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
    ['under_score.example', 'under_score.example'],
  ])('%s -> %s', (raw, normal) => {
    expect(normalizeHost(raw)).toBe(normal);
  });

  it.each(['', 'a..b', '-lead.example', 'trail-.example', 'sp ace.example', 'a/b.example', 'x'.repeat(64) + '.example', 'host.123', 'host.0x1f', 'user@host.example'])(
    '%j is not a host',
    (raw) => {
      expect(normalizeHost(raw)).toBeNull();
      expect(decide(wildcards, https(raw)).reason).toBe('invalid_target');
    },
  );

  it('decides a name the same in any case, with a trailing dot, and in its Unicode or punycode form', () => {
    for (const host of ['API.GITHUB.COM', 'api.github.com.', 'Api.GitHub.Com.']) expect(decide(wildcards, https(host)).rule).toBe('exact');
    expect(decide(wildcards, https('BÜCHER.example')).rule).toBe('idn');
    expect(decide(wildcards, https('xn--bcher-kva.example')).rule).toBe('idn');
  });
});

describe('wildcard semantics', () => {
  it.each([
    ['api.github.com', 'exact'],
    ['github.com', null],
    ['x.api.github.com', null],
    ['files.pythonhosted.org', 'subdomains'],
    ['a.b.c.pythonhosted.org', 'subdomains'], // any depth
    ['pythonhosted.org', null], // "*.x" excludes the apex
    ['example.com', 'apex'], // ".x" includes the apex
    ['deep.sub.example.com', 'apex'],
    ['ec2.us-east-1.amazonaws.com', 'infix'],
    ['ec2.amazonaws.com', null], // "*" is exactly one label
    ['ec2.a.b.amazonaws.com', null],
    ['s3.us-east-1.amazonaws.com', null],
    // Suffix confusion.
    ['api.github.com.evil.test', null],
    ['evilapi.github.com', null],
    ['evilexample.com', null],
    ['example.com.evil.test', null],
    ['pythonhosted.org.evil.test', null],
    ['notpythonhosted.org', null],
  ])('%s -> %s', (host, rule) => {
    const d = decide(wildcards, https(host));
    expect(d.rule).toBe(rule);
    expect(d.reason).toBe(rule === null ? 'default_deny' : 'rule_allow');
  });
});

const precedence = parsePolicy(
  policyText(
    'guarded',
    `
  - id: allow-all-github
    action: allow
    hosts: [.github.com]
  - id: deny-gist
    action: deny
    hosts: [gist.github.com]
  - id: passthrough-bank
    action: passthrough
    hosts: [bank.example]
  - id: allow-bank-later
    action: allow
    hosts: [bank.example]
  - id: lab-net
    action: allow
    cidrs: [10.20.0.0/16]
  - id: lab-name
    action: allow
    hosts: [db.lab.internal]
  - id: lab-wildcard
    action: allow
    hosts: ["*.corp.example"]
  - id: custom-tls
    action: allow
    hosts: [tls.example]
    ports: [8443]
    tls: true
  - id: token
    action: inject
    hosts: [api.service.example]
    headers:
      Authorization: "Bearer \${secret:SERVICE_TOKEN}"
      X-Extra: "\${secret:A}-\${secret:B}"
`,
  ),
  'precedence.yaml',
);

describe('precedence', () => {
  it('a matching deny beats an earlier allow', () => {
    const d = decide(precedence, https('gist.github.com'));
    expect(d).toMatchObject({ verdict: 'deny', action: 'deny', rule: 'deny-gist', reason: 'rule_deny' });
    expect(d.matched).toEqual(['allow-all-github', 'deny-gist']);
  });

  it('the first allow-type rule in file order wins and every match is listed', () => {
    const d = decide(precedence, https('bank.example'));
    expect(d).toMatchObject({ verdict: 'allow', action: 'passthrough', rule: 'passthrough-bank', reason: 'rule_allow' });
    expect(d.matched).toEqual(['passthrough-bank', 'allow-bank-later']);
  });

  it('no rule: guarded allows a public destination and flags it', () => {
    const d = decide(precedence, { protocol: 'https', host: 'example.org', ip: '93.184.215.14', port: 443 });
    expect(d).toMatchObject({ verdict: 'allow', rule: null, reason: 'unlisted', signals: ['unlisted'] });
  });

  it('no rule: strict denies by default', () => {
    expect(decide(withMode(precedence, 'strict'), https('example.org'))).toMatchObject({ verdict: 'deny', reason: 'default_deny', rule: null });
  });

  it('inject lists the headers and secret names, never values', () => {
    const d = decide(precedence, { protocol: 'https', host: 'api.service.example', port: 443, method: 'GET', path: '/' });
    expect(d.action).toBe('inject');
    expect(d.inject).toEqual([
      { header: 'Authorization', template: 'Bearer ${secret:SERVICE_TOKEN}', secrets: ['SERVICE_TOKEN'] },
      { header: 'X-Extra', template: '${secret:A}-${secret:B}', secrets: ['A', 'B'] },
    ]);
  });

  it('tls is set for 443 and for ports of a matching tls: true rule', () => {
    expect(decide(precedence, https('github.com')).tls).toBe(true);
    expect(decide(precedence, { protocol: 'tcp', host: 'tls.example', port: 8443 }).tls).toBe(true);
    expect(decide(precedence, { protocol: 'tcp', host: 'other.example', port: 8443 }).tls).toBe(false);
    expect(decide(precedence, { protocol: 'http', host: 'github.com', port: 80 }).tls).toBe(false);
  });
});

describe('internal destinations', () => {
  it.each([
    ['127.0.0.1', undefined],
    ['10.0.0.1', undefined],
    ['169.254.169.254', undefined],
    ['fd00:ec2::254', undefined],
    ['::ffff:127.0.0.1', undefined],
    ['64:ff9b::7f00:1', undefined],
    ['100.64.0.1', undefined],
    ['0.0.0.0', undefined],
    ['::', undefined],
    ['[::1]', undefined],
    ['localhost', undefined],
    ['app.localhost', undefined],
    ['rebind.example', '192.168.0.10'],
  ])('%s (ip %s) is denied as internal_address without a rule naming it', (host, ip) => {
    const input: DecisionInput = ip === undefined ? https(host) : { ...https(host), ip };
    const d = decide(precedence, input);
    expect(d).toMatchObject({ verdict: 'deny', reason: 'internal_address', rule: null, signals: ['internal_address'] });
  });

  it('a CIDR containing the address allows it, flagged', () => {
    const d = decide(precedence, { protocol: 'tcp', ip: '10.20.3.4', port: 5432 });
    expect(d).toMatchObject({ verdict: 'allow', rule: 'lab-net', reason: 'rule_allow', signals: ['internal_address'] });
  });

  it('an exact host pattern allows its internal address; a wildcard does not', () => {
    expect(decide(precedence, { protocol: 'tcp', host: 'db.lab.internal', ip: '10.9.9.9', port: 5432 })).toMatchObject({ verdict: 'allow', rule: 'lab-name' });
    const wildcard = decide(precedence, { protocol: 'tcp', host: 'db.corp.example', ip: '10.9.9.9', port: 5432 });
    expect(wildcard).toMatchObject({ verdict: 'deny', reason: 'internal_address', rule: null });
    expect(wildcard.matched).toEqual(['lab-wildcard']);
  });

  it('the same host on a public address is allowed by the wildcard', () => {
    expect(decide(precedence, { protocol: 'tcp', host: 'db.corp.example', ip: '8.8.4.4', port: 5432 }).rule).toBe('lab-wildcard');
  });

  it('a literal host and a different dialled address are refused', () => {
    expect(decide(precedence, { protocol: 'tcp', host: '8.8.8.8', ip: '8.8.4.4', port: 53 }).reason).toBe('invalid_target');
    expect(decide(precedence, { protocol: 'tcp', host: '[::ffff:8.8.8.8]', ip: '::ffff:8.8.8.8', port: 53 }).verdict).toBe('allow');
  });
});

describe('IPv4 denies hold for the IPv6 spellings that carry the address', () => {
  const embedding = parsePolicy(
    policyText(
      'guarded',
      `
  - id: metadata
    action: deny
    cidrs: [169.254.169.254, 203.0.113.0/24]
  - id: admin-only
    action: deny
    cidrs: [198.51.100.7]
    paths: [/admin/**]
  - id: any-v6
    action: allow
    cidrs: ["::/0"]
  - id: api
    action: allow
    hosts: [api.example.com]
`,
    ),
    'embedding.yaml',
  );

  it.each([
    ['mapped', '::ffff:169.254.169.254'],
    ['mapped, hex', '::ffff:a9fe:a9fe'],
    ['translated', '::ffff:0:a9fe:a9fe'],
    ['compatible', '::a9fe:a9fe'],
    ['NAT64', '64:ff9b::a9fe:a9fe'],
    ['6to4', '2002:a9fe:a9fe::1'],
    ['Teredo server', '2001:0:a9fe:a9fe::1'],
    ['mapped, public range', '::ffff:203.0.113.9'],
    ['NAT64, public range', '64:ff9b::cb00:7109'],
  ])('%s %s is denied by the IPv4 rule, over an IPv6 allow and an exact name', (_, ip) => {
    expect(decide(embedding, { protocol: 'https', host: `[${ip}]`, port: 443 })).toMatchObject({ verdict: 'deny', rule: 'metadata', reason: 'rule_deny' });
    const named = decide(embedding, { protocol: 'https', host: 'api.example.com', ip, port: 443 });
    expect(named).toMatchObject({ verdict: 'deny', rule: 'metadata', reason: 'rule_deny' });
    expect(named.matched).toContain('metadata');
  });

  it('the plain IPv4 addresses and an unrelated IPv6 address are decided as before', () => {
    expect(decide(embedding, { protocol: 'https', host: '169.254.169.254', port: 443 })).toMatchObject({ verdict: 'deny', rule: 'metadata' });
    expect(decide(embedding, { protocol: 'https', host: '[2606:4700::1111]', port: 443 })).toMatchObject({ verdict: 'allow', rule: 'any-v6' });
    expect(decide(embedding, { protocol: 'https', host: 'api.example.com', ip: '::ffff:8.8.8.8', port: 443 })).toMatchObject({ verdict: 'allow', rule: 'any-v6' });
  });

  it('a path-scoped IPv4 deny applies per request to the mapped address', () => {
    const connection = decide(embedding, { protocol: 'https', host: 'api.example.com', ip: '::ffff:198.51.100.7', port: 443 });
    expect(connection).toMatchObject({ verdict: 'allow', requestCheck: true });
    const request = { protocol: 'https', host: 'api.example.com', ip: '::ffff:198.51.100.7', port: 443, method: 'GET' } as const;
    expect(decide(embedding, { ...request, path: '/admin/users' })).toMatchObject({ verdict: 'deny', rule: 'admin-only' });
    expect(decide(embedding, { ...request, path: '/v1/users' })).toMatchObject({ verdict: 'allow' });
  });

  it('an IPv4 allow does not reach the IPv6 spelling (allows are not widened)', () => {
    const lab = parsePolicy(policyText('strict', '  - id: lab\n    action: allow\n    cidrs: [10.0.0.0/8]\n'), 'lab.yaml');
    expect(decide(lab, { protocol: 'tcp', ip: '10.1.2.3', port: 22 })).toMatchObject({ verdict: 'allow', rule: 'lab' });
    expect(decide(lab, { protocol: 'tcp', ip: '::ffff:10.1.2.3', port: 22 })).toMatchObject({ verdict: 'deny', reason: 'internal_address' });
  });
});

describe('modes and report-only', () => {
  it('mode off allows everything without checking, flagged mediation_off', () => {
    const off = withMode(precedence, 'off');
    const d = decide(off, https('127.0.0.1'));
    expect(d).toMatchObject({ verdict: 'allow', reason: 'mediation_off', signals: ['mediation_off'], rule: null, mode: 'off' });
    expect(off.hash).not.toBe(precedence.hash);
    expect(d.policyHash).toBe(off.hash);
  });

  it('withMode keeps rules and changes only the mode and hash', () => {
    const strict = withMode(precedence, 'strict');
    expect(strict.rules).toBe(precedence.rules);
    expect(strict.mode).toBe('strict');
    expect(withMode(strict, 'guarded').hash).toBe(precedence.hash);
  });

  const reportOnly = parsePolicy(
    policyText('strict', `  - id: no-evil\n    action: deny\n    hosts: [evil.example]\n`, 'report_only: true\n'),
    'report.yaml',
  );

  it.each([
    ['evil.example', undefined, 'rule_deny', 'no-evil'],
    ['unlisted.example', undefined, 'default_deny', null],
    ['rebind.example', '10.0.0.1', 'internal_address', null],
  ])('report-only turns a deny of %s into would_deny (%s)', (host, ip, reason, rule) => {
    const d = decide(reportOnly, ip === undefined ? https(host) : { ...https(host), ip });
    expect(d).toMatchObject({ verdict: 'would_deny', action: 'allow', reason, rule });
    expect(d.signals).toContain('would_deny');
  });

  it('report-only never lets an unparseable target through', () => {
    expect(decide(reportOnly, https('127.1'))).toMatchObject({ verdict: 'deny', reason: 'invalid_target' });
  });
});

describe('connection stage and request stage', () => {
  const staged = parsePolicy(
    policyText(
      'strict',
      `
  - id: no-admin
    action: deny
    hosts: [api.example.com]
    paths: ["/admin/**"]
  - id: read-repos
    action: allow
    hosts: [api.example.com]
    methods: [GET]
    paths: ["/repos/**", "/v1/*.json"]
  - id: whole-host
    action: allow
    hosts: [cdn.example.com]
`,
    ),
    'staged.yaml',
  );
  const req = (method: string, path: string): DecisionInput => ({ protocol: 'https', host: 'api.example.com', port: 443, method, path });

  it('a connection that path rules could allow is allowed with requestCheck', () => {
    const d = decide(staged, https('api.example.com'));
    expect(d).toMatchObject({ verdict: 'allow', rule: 'read-repos', requestCheck: true });
    expect(d.matched).toEqual(['read-repos']); // the path deny does not deny the connection
  });

  it('a host without request conditions needs no per-request check', () => {
    expect(decide(staged, https('cdn.example.com'))).toMatchObject({ verdict: 'allow', requestCheck: false });
  });

  it.each([
    ['GET', '/repos/a/b', 'allow', 'read-repos', 'rule_allow'],
    ['get', '/repos', 'allow', 'read-repos', 'rule_allow'],
    ['GET', '/repos/a?token=1', 'allow', 'read-repos', 'rule_allow'],
    ['GET', '/v1/list.json', 'allow', 'read-repos', 'rule_allow'],
    ['GET', '/v1/a/list.json', 'deny', null, 'default_deny'], // "*" stays within a segment
    ['POST', '/repos/a', 'deny', null, 'default_deny'],
    ['GET', '/admin/users', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/repos/../admin/users', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/%61dmin/users', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/repos/%2e%2e/admin', 'deny', 'no-admin', 'rule_deny'],
    // An encoded slash or backslash is judged in both readings (kept in its segment, or read as "/").
    ['GET', '/repos%2f..%2fadmin', 'deny', 'no-admin', 'rule_deny'], // "/admin" when decoded
    ['GET', '/admin%2Fusers', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/admin%5cusers', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/repos/a%2Fb', 'allow', 'read-repos', 'rule_allow'], // allowed in both readings
    ['GET', '/repos/a%5Cb', 'allow', 'read-repos', 'rule_allow'],
    ['GET', '/v1/a%2Flist.json', 'deny', null, 'default_deny'], // one segment kept, two decoded: not both
    ['GET', '/v1/%2e%2e%2Fadmin.json', 'deny', null, 'default_deny'],
    // Empty segments are read as RFC 3986 keeps them and as merged (nginx); ";" parameters as kept and
    // as dropped from each segment (Tomcat, Spring). A deny in any reading denies; an allow needs all.
    ['GET', '/repos//../admin/x', 'deny', 'no-admin', 'rule_deny'], // RFC: /repos/admin/x; merged: /admin/x
    ['GET', '//admin/x', 'deny', 'no-admin', 'rule_deny'], // merged: /admin/x
    ['GET', '/repos/..;/admin/x', 'deny', 'no-admin', 'rule_deny'], // parameters dropped: /admin/x
    ['GET', '/admin;x=1/users', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/repos/%2e%2e;/admin', 'deny', 'no-admin', 'rule_deny'],
    ['GET', '/repos//a', 'allow', 'read-repos', 'rule_allow'], // /repos//a and /repos/a: both allowed
    ['GET', '/repos/a;v=1', 'allow', 'read-repos', 'rule_allow'],
    ['GET', '/v1//list.json', 'deny', null, 'default_deny'], // "/v1//list.json" is not "/v1/*.json": not both
    ['GET', '/repos//../other', 'deny', null, 'default_deny'], // RFC: /repos/other, merged: /other
    ['GET', '/repos/..;/other', 'deny', null, 'default_deny'], // RFC: /repos/..;/other, dropped: /other
    ['GET', '/repos/a?next=//admin;x', 'allow', 'read-repos', 'rule_allow'], // the query is not the path
    ['GET', '/repos/%00', 'deny', null, 'invalid_target'],
    ['GET', '/repos/%zz', 'deny', null, 'invalid_target'],
    ['GET', '\\repos', 'deny', null, 'invalid_target'],
    ['G ET', '/repos', 'deny', null, 'invalid_target'],
  ])('%s %s -> %s by %s (%s)', (method, path, verdict, rule, reason) => {
    expect(decide(staged, req(method, path))).toMatchObject({ verdict, rule, reason, requestCheck: false });
  });

  it('raw TCP carries no requests: a rule with methods or paths never allows it, and one that denies denies it', () => {
    const tcp = (host: string) => decide(staged, { protocol: 'tcp', host, port: 8080 });
    // read-repos allows GET /repos/** only: a splice would carry any method to any path.
    expect(tcp('api.example.com')).toMatchObject({ verdict: 'deny', rule: 'no-admin', reason: 'rule_deny' });
    const strictOnly = parsePolicy(policyText('strict', '  - id: readonly\n    action: allow\n    hosts: [api.example.com]\n    methods: [GET]\n'), 'readonly.yaml');
    expect(decide(strictOnly, { protocol: 'tcp', host: 'api.example.com', port: 8080 })).toMatchObject({ verdict: 'deny', reason: 'default_deny' });
    expect(decide(strictOnly, { protocol: 'http', host: 'api.example.com', port: 8080 })).toMatchObject({ verdict: 'allow', requestCheck: true });
    expect(tcp('cdn.example.com')).toMatchObject({ verdict: 'allow', rule: 'whole-host' });
  });

  it('a path only a rule without paths judges may hold encoded slashes (npm scoped packages)', () => {
    const scoped = { protocol: 'https', host: 'cdn.example.com', port: 443, method: 'GET', path: '/@types%2fnode' } as const;
    expect(decide(staged, scoped)).toMatchObject({ verdict: 'allow', rule: 'whole-host', reason: 'rule_allow' });
  });

  it('a request stage needs both method and path, over http(s)', () => {
    expect(decide(staged, { protocol: 'https', host: 'api.example.com', port: 443, method: 'GET' }).reason).toBe('invalid_target');
    expect(decide(staged, { protocol: 'tcp', host: 'api.example.com', port: 443, method: 'GET', path: '/' }).reason).toBe('invalid_target');
  });

  it('DNS: a name resolves when any rule could allow a connection to it', () => {
    expect(decide(staged, { protocol: 'dns', host: 'api.example.com' })).toMatchObject({ verdict: 'allow', rule: 'read-repos', tls: false });
    expect(decide(staged, { protocol: 'dns', host: 'other.example' })).toMatchObject({ verdict: 'deny', reason: 'default_deny' });
  });
});

describe('ports and protocols', () => {
  const ported = parsePolicy(
    policyText(
      'strict',
      `
  - id: web
    action: allow
    hosts: [web.example]
    ports: [443, "8000-8100"]
    protocols: [https, http]
  - id: ssh
    action: passthrough
    hosts: [git.example]
    ports: [22]
    protocols: [tcp]
`,
    ),
    'ports.yaml',
  );
  it.each([
    [{ protocol: 'https', host: 'web.example', port: 443 }, 'web'],
    [{ protocol: 'http', host: 'web.example', port: 8000 }, 'web'],
    [{ protocol: 'http', host: 'web.example', port: 8100 }, 'web'],
    [{ protocol: 'http', host: 'web.example', port: 8101 }, null],
    [{ protocol: 'http', host: 'web.example', port: 80 }, null],
    [{ protocol: 'tcp', host: 'web.example', port: 443 }, null],
    [{ protocol: 'tcp', host: 'git.example', port: 22 }, 'ssh'],
    [{ protocol: 'https', host: 'git.example', port: 22 }, null],
  ] as [DecisionInput, string | null][])('%j -> %s', (input, rule) => {
    expect(decide(ported, input).rule).toBe(rule);
  });

  it.each([0, 65536, 1.5, -1])('port %s is an invalid target', (port) => {
    expect(decide(ported, { protocol: 'tcp', host: 'git.example', port }).reason).toBe('invalid_target');
  });

  it('a tcp target needs a port', () => {
    expect(decide(ported, { protocol: 'tcp', host: 'git.example' }).reason).toBe('invalid_target');
  });
});

describe('DNS questions', () => {
  const dns = parsePolicy(
    policyText(
      'guarded',
      `
  - id: block-name
    action: deny
    hosts: [blocked.example]
  - id: block-port
    action: deny
    hosts: [mail.example]
    ports: [25]
  - id: block-https-only
    action: deny
    hosts: [web.example]
    protocols: [https]
  - id: block-dns
    action: deny
    hosts: [tunnel.example]
    protocols: [dns]
  - id: lab
    action: allow
    hosts: [db.lab.example]
    ports: [5432]
`,
    ),
    'dns.yaml',
  );
  const q = (host: string, ip?: string): DecisionInput => (ip === undefined ? { protocol: 'dns', host } : { protocol: 'dns', host, ip });

  it.each([
    ['blocked.example', 'deny', 'block-name', 'rule_deny'],
    ['tunnel.example', 'deny', 'block-dns', 'rule_deny'],
    ['mail.example', 'allow', null, 'unlisted'], // a port-specific deny leaves the name resolvable
    ['web.example', 'allow', null, 'unlisted'], // so does a deny limited to https
    ['db.lab.example', 'allow', 'lab', 'rule_allow'], // an allow's ports do not stop the name resolving
  ])('%s -> %s by %s (%s)', (host, verdict, rule, reason) => {
    expect(decide(dns, q(host))).toMatchObject({ verdict, rule, reason, tls: false, requestCheck: false });
  });

  it('an answer pointing at an internal address is allowed only for a rule naming the exact host', () => {
    expect(decide(dns, q('db.lab.example', '10.1.1.1'))).toMatchObject({ verdict: 'allow', rule: 'lab', signals: ['internal_address'] });
    expect(decide(dns, q('other.example', '10.1.1.1'))).toMatchObject({ verdict: 'deny', reason: 'internal_address' });
    expect(decide(dns, q('other.example', '::ffff:10.1.1.1'))).toMatchObject({ verdict: 'deny', reason: 'internal_address' });
  });

  it('the same deny applies to connections on the port it names, and only there', () => {
    expect(decide(dns, { protocol: 'tcp', host: 'mail.example', port: 25 })).toMatchObject({ verdict: 'deny', rule: 'block-port' });
    expect(decide(dns, { protocol: 'tcp', host: 'mail.example', port: 587 })).toMatchObject({ verdict: 'allow', reason: 'unlisted' });
  });
});

describe('inputs from untrusted callers fail closed', () => {
  it.each([
    [{ protocol: 'https', port: 443 }],
    [{ protocol: 'https', host: '', port: 443 }],
    [{ protocol: 'https', host: 'a.example', ip: '127.1', port: 443 }],
    [{ protocol: 'https', ip: '10.0.0.1 ', port: 443 }],
    [{ protocol: 'gopher', host: 'a.example', port: 70 }],
    [{ protocol: 'constructor', host: 'a.example', port: 70 }],
    [{ protocol: 'https', host: 'a.example', port: '443' }],
    [{ protocol: 'https', host: 'a.example', port: 443, method: 'GET', path: 'relative' }],
    [{ protocol: 'https', host: 'a.example', port: 443, method: 'GET', path: '/a\u0000b' }],
    [{ protocol: 'https', host: 42, port: 443 }],
    [{ protocol: 'https', host: 'a.example', ip: ['8.8.8.8'], port: 443 }],
    [{ protocol: 'https', host: 'a.example', port: 443, method: null, path: '/' }],
    [{ protocol: 'https', host: 'a.example', port: 443, method: 'GET', path: { toString: () => '/' } }],
  ] as unknown as [DecisionInput][])('%j -> invalid_target', (input) => {
    expect(decide(precedence, input)).toMatchObject({ verdict: 'deny', reason: 'invalid_target', rule: null });
  });
});
