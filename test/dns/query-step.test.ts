// The resolver's decisions as pure steps (no sockets): what admitQuery does with each kind of
// question in each mode, and what filterAnswer keeps, strips and remembers. Real policy engine.
import { describe, expect, it } from 'vitest';
import type { Answer } from 'dns-packet';
import { parsePolicy } from '../../src/policy/index.js';
import { createExfiltrationGuard, DEFAULT_EXFILTRATION_LIMITS } from '../../src/proxy/dns/guard.js';
import { createAddressMemory, DEFAULT_MEMORY_LIMITS } from '../../src/proxy/dns/memory.js';
import { admitQuery, createNameDecider, filterAnswer } from '../../src/proxy/dns/query-step.js';
import { reverseLookupAddress } from '../../src/proxy/dns/reverse-name.js';
import { parseQuery, type ParsedQuery } from '../../src/proxy/dns/wire.js';
import { encodeQuery } from './helpers/client.js';
import { GUARDED_POLICY, OFF_POLICY, STRICT_POLICY } from './helpers/harness.js';

const policies = { guarded: parsePolicy(GUARDED_POLICY, 'g.yaml'), strict: parsePolicy(STRICT_POLICY, 's.yaml'), off: parsePolicy(OFF_POLICY, 'o.yaml') };

function question(name: string, type = 'A', klass?: 'CH'): ParsedQuery {
  const packet = encodeQuery(name, type);
  if (klass === 'CH') packet.writeUInt16BE(3, packet.length - 2);
  const parsed = parseQuery(packet);
  if (parsed.kind !== 'query') throw new Error(`not a query: ${name}`);
  return parsed;
}

function admit(mode: keyof typeof policies, q: ParsedQuery) {
  const decide = createNameDecider();
  return admitQuery(decide(policies[mode], q.name), createExfiltrationGuard(DEFAULT_EXFILTRATION_LIMITS), q);
}

describe('admitQuery', () => {
  it.each([
    ['guarded', 'web.test', 'A', 'forward', 0, 'rule_allow', []],
    ['guarded', 'other.example', 'A', 'forward', 0, 'unlisted', ['unlisted']],
    ['strict', 'other.example', 'A', 'answer_empty', 5, 'default_deny', []],
    ['guarded', 'bad.test', 'A', 'answer_empty', 5, 'rule_deny', []],
    ['strict', 'bad.test', 'A', 'answer_empty', 5, 'rule_deny', []],
    ['off', 'bad.test', 'A', 'forward', 0, 'mediation_off', ['mediation_off']],
    ['guarded', 'dns.google', 'A', 'answer_empty', 5, 'doh_denied', []],
    ['strict', 'dns.google', 'A', 'answer_empty', 5, 'default_deny', []],
    ['guarded', 'dns.quad9.net', 'A', 'forward', 0, 'rule_allow', []],
    ['guarded', 'web.test', 'UNKNOWN_65', 'answer_empty', 0, 'rule_allow', ['https_record_stripped']],
    ['guarded', 'web.test', 'UNKNOWN_64', 'answer_empty', 0, 'rule_allow', ['https_record_stripped']],
    ['guarded', 'web.test', 'AXFR', 'answer_empty', 5, 'bad_request', []],
    ['guarded', `${'x'.repeat(45)}.evil.example`, 'A', 'answer_empty', 5, 'rate_limited', ['exfiltration_guard']],
    ['guarded', `${'x'.repeat(60)}.allowed.test`, 'A', 'forward', 0, 'rule_allow', []], // a rule vouches for the domain
    ['strict', `${'x'.repeat(60)}.allowed.test`, 'A', 'forward', 0, 'rule_allow', []],
    // Reverse lookups are judged as the address they name: the host's network is not the guest's to map.
    ['guarded', '5.0.0.10.in-addr.arpa', 'PTR', 'answer_empty', 5, 'internal_address', ['internal_address']],
    ['guarded', '168.192.in-addr.arpa', 'SOA', 'answer_empty', 5, 'internal_address', ['internal_address']],
    ['guarded', `1.${'0.'.repeat(31)}ip6.arpa`, 'PTR', 'answer_empty', 5, 'internal_address', ['internal_address']],
    ['guarded', '8.8.8.8.in-addr.arpa', 'PTR', 'forward', 0, 'unlisted', ['unlisted']],
    ['guarded', 'x.5.0.0.10.in-addr.arpa', 'PTR', 'answer_empty', 5, 'internal_address', ['internal_address']],
    ['guarded', '5.0-25.0.0.10.in-addr.arpa', 'PTR', 'answer_empty', 5, 'internal_address', ['internal_address']],
    ['guarded', '005.0.0.10.in-addr.arpa', 'PTR', 'answer_empty', 5, 'internal_address', ['internal_address']],
    ['off', '5.0.0.10.in-addr.arpa', 'PTR', 'forward', 0, 'mediation_off', ['mediation_off']],
  ] as const)('%s %s %s -> %s rcode %i (%s)', (mode, name, type, kind, rcode, reason, signals) => {
    const admission = admit(mode, question(name, type));
    expect(admission.kind).toBe(kind);
    if (admission.kind === 'answer_empty') expect(admission.rcode).toBe(rcode);
    expect(admission.verdict.reason).toBe(reason);
    expect(admission.verdict.signals).toEqual(signals);
    expect(admission.verdict.mode).toBe(mode);
  });

  it('forwards a reverse lookup of an internal address a rule allows', () => {
    const lan = parsePolicy('version: 1\nmode: guarded\nrules:\n  - id: lan\n    action: allow\n    cidrs: [10.0.0.0/8]\n', 'lan.yaml');
    const admission = admitQuery(createNameDecider()(lan, '5.0.0.10.in-addr.arpa'), createExfiltrationGuard(DEFAULT_EXFILTRATION_LIMITS), question('5.0.0.10.in-addr.arpa', 'PTR'));
    expect(admission).toMatchObject({ kind: 'forward', verdict: { reason: 'rule_allow', rule: 'lan' } });
  });

  it.each([
    ['5.0.0.10.in-addr.arpa', '10.0.0.5'],
    ['168.192.in-addr.arpa', '192.168.0.0'],
    ['in-addr.arpa', null],
    // Labels below the ones that spell an address are in that address's zone, whatever they are.
    ['256.0.0.10.in-addr.arpa', '10.0.0.0'],
    ['05.0.0.10.in-addr.arpa', '10.0.0.0'],
    ['x.5.0.0.10.in-addr.arpa', '10.0.0.5'],
    ['5.0-25.0.0.10.in-addr.arpa', '10.0.0.0'], // RFC 2317 classless delegation
    ['1.2.3.4.5.in-addr.arpa', '5.4.3.2'],
    ['x.in-addr.arpa', null],
    [`1.${'0.'.repeat(31)}ip6.arpa`, '::1'],
    ['c.f.ip6.arpa', 'fc00::'],
    ['g.f.ip6.arpa', 'f000::'],
    ['g.ip6.arpa', null],
    ['example.com', null],
  ])('the reverse-lookup name %s stands for %s', (name, address) => {
    expect(reverseLookupAddress(name)).toBe(address);
  });

  it('refuses class CH and address-literal names', () => {
    expect(admit('guarded', question('web.test', 'TXT', 'CH'))).toMatchObject({ kind: 'answer_empty', verdict: { reason: 'bad_request' } });
    expect(admit('guarded', question('10.0.0.1'))).toMatchObject({ kind: 'answer_empty', verdict: { verdict: 'deny' } });
  });

  it('does not filter in mode off', () => {
    expect(admit('off', question('web.test'))).toMatchObject({ kind: 'forward', filter: false });
  });
});

describe('filterAnswer', () => {
  const record = (name: string, type: 'A' | 'AAAA', data: string): Answer => ({ type, name, ttl: 60, class: 'IN', data });
  // Matched by the wildcard "*.allowed.test": an exact host rule would allow its internal answers too.
  const verdict = admit('guarded', question('cdn.allowed.test')).verdict;

  it('keeps public addresses, strips internal ones, remembers what it gave', () => {
    const memory = createAddressMemory(DEFAULT_MEMORY_LIMITS);
    const upstream = {
      rcode: 0,
      answers: [record('cdn.allowed.test', 'A', '192.0.2.1'), record('cdn.allowed.test', 'A', '10.0.0.1'), record('cdn.allowed.test', 'AAAA', '::ffff:127.0.0.1')],
      authorities: [],
    };
    const filtered = filterAnswer(policies.guarded, memory, 'cdn.allowed.test', upstream, 60_000, verdict);
    expect(filtered.answers.map((r) => (r as { data: string }).data)).toEqual(['192.0.2.1']);
    expect(filtered.signals).toEqual(['internal_address', 'answer_stripped']);
    expect(memory.namesForAddress('192.0.2.1')).toEqual(['cdn.allowed.test']);
    expect(memory.namesForAddress('10.0.0.1')).toEqual([]);
    expect(memory.seenPublic('cdn.allowed.test')).toBe(true);

    const rebound = filterAnswer(
      policies.guarded, memory, 'cdn.allowed.test', { rcode: 0, answers: [record('cdn.allowed.test', 'A', '192.168.1.1')], authorities: [] }, 60_000, verdict,
    );
    expect(rebound.answers).toEqual([]);
    expect(rebound.signals).toEqual(['internal_address', 'answer_stripped', 'rebinding']);
  });

  it('keeps the records of the question and its CNAME chain, and strips records for other names', () => {
    const memory = createAddressMemory(DEFAULT_MEMORY_LIMITS);
    const cname = (name: string, target: string): Answer => ({ type: 'CNAME', name, ttl: 60, class: 'IN', data: target });
    const answers = [
      record('unrelated.test', 'A', '192.0.2.9'),
      cname('CDN.allowed.test.', 'edge.cdn.example'),
      record('edge.cdn.example', 'A', '192.0.2.1'),
      cname('other.example', 'elsewhere.example'),
      record('elsewhere.example', 'A', '192.0.2.2'),
    ];
    const filtered = filterAnswer(policies.guarded, memory, 'cdn.allowed.test', { rcode: 0, answers, authorities: [] }, 60_000, verdict);
    expect(filtered.answers.map((r) => `${r.name} ${r.type}`)).toEqual(['CDN.allowed.test. CNAME', 'edge.cdn.example A']);
    expect(filtered.signals).toEqual(['answer_stripped']);
    expect(memory.namesForAddress('192.0.2.9')).toEqual([]);
  });

  it('keeps an internal address a rule names', () => {
    const memory = createAddressMemory(DEFAULT_MEMORY_LIMITS);
    const intranet = admit('guarded', question('intranet.test')).verdict;
    const filtered = filterAnswer(policies.guarded, memory, 'intranet.test', { rcode: 0, answers: [record('intranet.test', 'A', '10.0.0.9')], authorities: [] }, 60_000, intranet);
    expect(filtered.answers).toHaveLength(1);
    expect(filtered.signals).toEqual(['internal_address']);
  });
});
