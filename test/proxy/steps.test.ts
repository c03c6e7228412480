// The pure connection and request steps, scenario by scenario, with the real policy engine.
import { describe, expect, it } from 'vitest';
import { parsePolicy, type Policy } from '../../src/policy/index.js';
import { checkAddresses, isCheckedTarget } from '../../src/proxy/checked-target.js';
import type { Destination } from '../../src/proxy/destination.js';
import { decideRequest, type RequestFacts } from '../../src/proxy/request-step.js';
import { actionTypes, assertAuditBeforeDial, playbook } from './playbook.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: block-metadata
    action: deny
    cidrs: [169.254.169.254]
  - id: block-evil
    action: deny
    hosts: [evil.test]
  - id: no-delete
    action: deny
    hosts: [api.example.com]
    methods: [DELETE]
  - id: api
    action: inject
    hosts: [api.example.com]
    headers:
      Authorization: "Bearer \${secret:API_TOKEN}"
  - id: own-doh
    action: allow
    hosts: [dns.google]
`;
const policy: Policy = parsePolicy(POLICY, 'steps.yaml');
const strict: Policy = parsePolicy('version: 1\nmode: strict\nrules:\n  - id: only\n    action: allow\n    hosts: [allowed.example]\n', 'strict.yaml');

const name = (host: string, port = 443): Destination => ({ kind: 'name', host, port });
/** A CONNECT (https) or an absolute-form request (http). */
const open = (destination: Destination, protocol: 'http' | 'https' = 'https', auditHealthy = false) => ({ type: 'open' as const, request: { conn: 'c1', protocol, tunnel: protocol === 'https', destination, auditHealthy } });
const PUBLIC = '93.184.216.34';

describe('connection step (playbook)', () => {
  it('allowed name (splice flow or unhealthy sink): decide, resolve, audit (awaited), then dial the checked IP', () => {
    const { log } = playbook(policy, [
      // Each question the lookup sends is recorded first, with the name's decision.
      { send: open(name('example.com')), expect: [{ type: 'resolve', host: 'example.com', forward: { event: 'dns.forward', name: 'example.com', transport: 'proxy', verdict: 'allow', reason: 'unlisted' } }] },
      { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: true, record: { verdict: 'allow', reason: 'unlisted', ip: PUBLIC, host: 'example.com' } }] },
      { send: { type: 'audited' }, expect: [{ type: 'dial', target: { ip: PUBLIC, port: 443, servername: 'example.com' } }] },
    ]);
    assertAuditBeforeDial(log);
    const dial = log.find((e) => e.dir === 'out' && e.action.type === 'dial');
    expect(dial?.dir === 'out' && dial.action.type === 'dial' && isCheckedTarget(dial.action.target)).toBe(true);
  });

  it('intercepted CONNECT: the allow is appended, TLS is terminated, and nothing is dialled yet', () => {
    const { log } = playbook(policy, [
      { send: open(name('example.com'), 'https', true), expect: [{ type: 'resolve', host: 'example.com' }] },
      { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: false, record: { verdict: 'allow', ip: PUBLIC } }, { type: 'serve_requests', target: { ip: PUBLIC } }] },
    ]);
    // Each request inside dials only after its own durable record (request step, serve-request.ts).
    expect(actionTypes(log)).not.toContain('dial');
  });

  it('plain HTTP flow: the same, requests dial after their own records', () => {
    playbook(policy, [
      { send: open(name('example.com', 80), 'http', true), expect: [{ type: 'resolve' }] },
      { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: false }, { type: 'serve_requests', target: { ip: PUBLIC, port: 80 } }] },
    ]);
  });

  it('an unhealthy audit sink makes even an intercepted CONNECT wait for durability', () => {
    playbook(policy, [
      { send: open(name('example.com'), 'https', false), expect: [{ type: 'resolve' }] },
      { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: true }] },
      { send: { type: 'audit_failed', detail: 'disk full' }, expect: [{ type: 'deny', answer: { status: 503, reason: 'audit_unavailable' } }] },
    ]);
  });

  it('a question whose record failed was never sent: 503 audit_unavailable, nothing resolved or dialled', () => {
    const { log } = playbook(policy, [
      { send: open(name('example.com')), expect: [{ type: 'resolve' }] },
      { send: { type: 'audit_failed', detail: 'disk full' }, expect: [{ type: 'deny', answer: { status: 503, reason: 'audit_unavailable' } }] },
    ]);
    expect(actionTypes(log)).not.toContain('dial');
  });

  it('denied name: never looked up, audited, 403 naming the rule', () => {
    const { log } = playbook(policy, [
      { send: open(name('evil.test')), expect: [{ type: 'audit', wait: false, record: { verdict: 'deny', rule: 'block-evil', reason: 'rule_deny', ip: null } }, { type: 'deny', answer: { status: 403, reason: 'rule_deny', message: 'microagent: denied by rule "block-evil" (rule_deny) for evil.test:443: a deny rule matched' } }] },
    ]);
    expect(actionTypes(log)).not.toContain('resolve');
    assertAuditBeforeDial(log);
  });

  it('metadata IP literal: judged on the IP alone, no lookup', () => {
    const { log } = playbook(policy, [
      { send: open({ kind: 'ip', ip: '169.254.169.254', port: 80 }, 'http'), expect: [{ type: 'audit', record: { rule: 'block-metadata', ip: '169.254.169.254' } }, { type: 'deny', answer: { message: 'microagent: denied by rule "block-metadata" (rule_deny) for 169.254.169.254:80: a deny rule matched' } }] },
    ]);
    expect(actionTypes(log)).not.toContain('resolve');
  });

  it('a name resolving to an internal address is denied after the lookup', () => {
    playbook(policy, [
      { send: open(name('sneaky.example')), expect: [{ type: 'resolve' }] },
      { send: { type: 'resolved', ips: ['10.0.0.5'] }, expect: [{ type: 'audit', record: { verdict: 'deny', reason: 'internal_address', ip: '10.0.0.5' } }, { type: 'deny', answer: { status: 403, reason: 'internal_address' } }] },
    ]);
  });

  it('public and internal answers together: denied and flagged as rebinding', () => {
    playbook(policy, [
      { send: open(name('rebind.example')), expect: [{ type: 'resolve' }] },
      { send: { type: 'resolved', ips: [PUBLIC, '127.0.0.1'] }, expect: [{ type: 'audit', record: { verdict: 'deny', ip: '127.0.0.1', signals: expect.arrayContaining(['internal_address', 'rebinding']) } }, { type: 'deny' }] },
    ]);
  });

  it('audit failure fails closed: 503, no dial', () => {
    const { log } = playbook(policy, [
      { send: open(name('example.com')), expect: [{ type: 'resolve' }] },
      { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: true }] },
      { send: { type: 'audit_failed', detail: 'disk full' }, expect: [{ type: 'deny', answer: { status: 503, reason: 'audit_unavailable' } }] },
    ]);
    expect(actionTypes(log)).not.toContain('dial');
  });

  it('invalid target and failed lookups are answered, never hang', () => {
    playbook(policy, [{ send: { type: 'invalid_target', conn: 'c1', protocol: 'https', detail: 'bad port' }, expect: [{ type: 'audit', record: { reason: 'invalid_target', host: null } }, { type: 'deny', answer: { status: 403, reason: 'invalid_target' } }] }]);
    playbook(policy, [
      { send: open(name('nx.example')), expect: [{ type: 'resolve' }] },
      { send: { type: 'resolve_failed', detail: 'ENOTFOUND' }, expect: [{ type: 'audit', record: { reason: 'resolve_failed' } }, { type: 'deny', answer: { status: 502, reason: 'resolve_failed' } }] },
    ]);
  });

  it('strict mode: unlisted names are denied before any lookup', () => {
    const { log } = playbook(strict, [{ send: open(name('example.com')), expect: [{ type: 'audit', record: { reason: 'default_deny' } }, { type: 'deny', answer: { reason: 'default_deny' } }] }]);
    expect(actionTypes(log)).not.toContain('resolve');
  });

  describe('a CONNECT where https is denied and raw tcp allowed (SSH, a database)', () => {
    const rawOnly = parsePolicy(`version: 1
mode: strict
rules:
  - id: forge-ssh
    action: allow
    hosts: [forge.test]
    protocols: [tcp]
  - id: db
    action: allow
    cidrs: [10.0.0.7/32]
    ports: [5432]
    protocols: [tcp]
  - id: no-tcp-to-mail
    action: deny
    hosts: [mail.test]
    protocols: [tcp]
  - id: mail-https
    action: deny
    hosts: [mail.test]
    protocols: [https]
`, 'raw.yaml');

    it('on a non-TLS port it opens as a tcp flow: decided, resolved, recorded durably as tcp, then dialled', () => {
      const { log } = playbook(rawOnly, [
        { send: open(name('forge.test', 22), 'https', true), expect: [{ type: 'resolve', host: 'forge.test', forward: { verdict: 'allow', rule: 'forge-ssh' } }] },
        { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: true, record: { protocol: 'tcp', verdict: 'allow', rule: 'forge-ssh', ip: PUBLIC } }] },
        { send: { type: 'audited' }, expect: [{ type: 'dial', protocol: 'tcp', target: { ip: PUBLIC, port: 22 } }] },
      ]);
      assertAuditBeforeDial(log);
    });

    it('an IP literal allowed for tcp by its CIDR (internal, so only an explicit rule could) opens as tcp', () => {
      playbook(rawOnly, [
        { send: open({ kind: 'ip', ip: '10.0.0.7', port: 5432 }), expect: [{ type: 'audit', wait: true, record: { protocol: 'tcp', verdict: 'allow', rule: 'db' } }] },
        { send: { type: 'audited' }, expect: [{ type: 'dial', protocol: 'tcp' }] },
      ]);
    });

    it.each([
      ['on port 443 (a TLS port: never raw TCP)', name('forge.test', 443), 'default_deny', null],
      ['on the database port of another address', { kind: 'ip', ip: '10.0.0.8', port: 5432 } as Destination, 'internal_address', null],
      ['where tcp is denied too (the https deny is the one recorded)', name('mail.test', 25), 'rule_deny', 'mail-https'],
    ])('%s it stays denied as https, nothing resolved', (_, destination, reason, rule) => {
      const { log } = playbook(rawOnly, [
        { send: open(destination, 'https', true), expect: [{ type: 'audit', record: { protocol: 'https', verdict: 'deny', reason, rule } }, { type: 'deny', answer: { status: 403, reason } }] },
      ]);
      expect(actionTypes(log)).not.toContain('resolve');
    });

    it('guarded: where https is merely unlisted, a rule allowing tcp opens it (recorded by that rule, not as unlisted); with no such rule it stays https', () => {
      const guarded = parsePolicy('version: 1\nmode: guarded\nrules:\n  - id: forge-ssh\n    action: passthrough\n    hosts: [forge.test]\n    ports: [22]\n    protocols: [tcp]\n', 'guarded-raw.yaml');
      playbook(guarded, [
        { send: open(name('forge.test', 22), 'https', true), expect: [{ type: 'resolve', forward: { verdict: 'allow', rule: 'forge-ssh', reason: 'rule_allow' } }] },
        { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: true, record: { protocol: 'tcp', rule: 'forge-ssh', signals: [] } }] },
      ]);
      playbook(guarded, [
        { send: open(name('other.test', 22), 'https', true), expect: [{ type: 'resolve', forward: { verdict: 'allow', reason: 'unlisted' } }] },
        { send: { type: 'resolved', ips: [PUBLIC] }, expect: [{ type: 'audit', wait: false, record: { protocol: 'https', reason: 'unlisted' } }, { type: 'serve_requests', protocol: 'https' }] },
      ]);
    });

    it('an absolute-form request is no tunnel: http to a tcp-only host is denied', () => {
      playbook(rawOnly, [{ send: open(name('forge.test', 22), 'http', true), expect: [{ type: 'audit', record: { protocol: 'http', verdict: 'deny', reason: 'default_deny' } }, { type: 'deny' }] }]);
    });
  });

  it('an out-of-order event denies instead of guessing', () => {
    const { log } = playbook(policy, [{ send: { type: 'audited' }, expect: [{ type: 'deny' }] }]);
    expect(actionTypes(log)).not.toContain('dial');
  });
});

describe('request step', () => {
  const target = (() => {
    const check = checkAddresses(policy, 'https', name('api.example.com'), [PUBLIC]);
    if (check.kind !== 'allowed') throw new Error('fixture');
    return check.target;
  })();
  const ctx = (overrides: Partial<Parameters<typeof decideRequest>[0]> = {}) => ({
    conn: 'c1',
    policy,
    protocol: 'https' as const,
    destination: name('api.example.com'),
    target,
    sni: 'api.example.com',
    decrypted: true,
    secrets: (n: string) => (n === 'API_TOKEN' ? 's3cr3t-value' : undefined),
    maxHeaderBytes: 32 * 1024,
    ...overrides,
  });
  const facts = (overrides: Partial<RequestFacts> = {}): RequestFacts => ({
    method: 'GET',
    path: '/v1/things?token=abc',
    authority: 'api.example.com',
    authorityField: 'host',
    contentLengthCount: 0,
    hasTransferEncoding: false,
    contentType: undefined,
    accept: undefined,
    ...overrides,
  });

  it('injects the secret, records only its name, and asks for the echo scan', () => {
    const plan = decideRequest(ctx(), facts());
    expect(plan).toMatchObject({ kind: 'forward', inject: [{ header: 'Authorization', value: 'Bearer s3cr3t-value' }], scanFor: ['s3cr3t-value'] });
    expect(plan.record).toMatchObject({ secret_names: ['API_TOKEN'], path: '/v1/things', signals: expect.arrayContaining(['secret_injected']) });
    expect(JSON.stringify(plan.record)).not.toContain('s3cr3t');
  });
  it('never injects into a flow that is not TLS-verified', () => {
    const plan = decideRequest(ctx({ decrypted: false, protocol: 'http' }), facts());
    expect(plan).toMatchObject({ kind: 'forward', inject: [], scanFor: [] });
  });
  it('a missing secret refuses the request', () => {
    expect(decideRequest(ctx({ secrets: () => undefined }), facts())).toMatchObject({ kind: 'deny', answer: { reason: 'secret_unavailable' } });
  });
  it('method rules decide at request stage', () => {
    expect(decideRequest(ctx(), facts({ method: 'DELETE' }))).toMatchObject({ kind: 'deny', answer: { status: 403, rule: 'no-delete' }, record: { method: 'DELETE', verdict: 'deny' } });
  });
  it('CL+TE and duplicate CL are smuggling', () => {
    expect(decideRequest(ctx(), facts({ contentLengthCount: 1, hasTransferEncoding: true }))).toMatchObject({ kind: 'deny', answer: { status: 400, reason: 'bad_request', signals: ['smuggling'] } });
    expect(decideRequest(ctx(), facts({ contentLengthCount: 2 }))).toMatchObject({ kind: 'deny', answer: { status: 400, reason: 'bad_request' } });
  });
  it('an HTTP/2 header list over the limit is refused 431, recorded with the request', () => {
    const over = decideRequest(ctx({ maxHeaderBytes: 1000 }), facts({ headerListBytes: 1001 }));
    expect(over).toMatchObject({ kind: 'deny', answer: { status: 431, reason: 'limit_exceeded' }, record: { status: 431, method: 'GET', path: '/v1/things', decrypted: true, verdict: 'deny' } });
    expect(decideRequest(ctx({ maxHeaderBytes: 1000 }), facts({ headerListBytes: 1000 })).kind).toBe('forward');
  });
  it('Host naming another destination is an identity mismatch', () => {
    expect(decideRequest(ctx(), facts({ authority: 'other.example' }))).toMatchObject({ kind: 'deny', record: { reason: 'identity_mismatch', signals: ['identity_mismatch'] } });
  });
  it('DNS-over-HTTPS is denied unless a rule names the host', () => {
    const doh = (c: Partial<RequestFacts>, host = 'unlisted.example') => decideRequest(ctx({ destination: name(host) }), facts({ authority: host, ...c }));
    expect(doh({ contentType: 'application/dns-message', method: 'POST' })).toMatchObject({ kind: 'deny', answer: { reason: 'doh_denied' } });
    expect(doh({ accept: 'application/dns-message' })).toMatchObject({ kind: 'deny', answer: { reason: 'doh_denied' } });
    expect(doh({ path: '/dns-query?dns=AAAB' })).toMatchObject({ kind: 'deny', answer: { reason: 'doh_denied' } });
    expect(doh({}, 'cloudflare-dns.com')).toMatchObject({ kind: 'deny', answer: { reason: 'doh_denied' } });
    expect(doh({ path: '/dns-query' }, 'dns.google')).toMatchObject({ kind: 'forward' });
    // A host a rule names explicitly may carry DoH-looking requests.
    expect(doh({ accept: 'application/dns-message' }, 'api.example.com')).toMatchObject({ kind: 'forward' });
  });
});
