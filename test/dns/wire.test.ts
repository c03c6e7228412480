// The sans-IO parts of the resolver: query parsing (never throws, only declared results), TCP framing
// (whole input = any split), response building, the exfiltration guard and the expiring cache.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { buildHeaderOnlyError, buildResponse, encodeRecords, parseQuery, qtypeName } from '../../src/proxy/dns/wire.js';
import { frame, splitFrames } from '../../src/proxy/dns/framing.js';
import { createExfiltrationGuard, DEFAULT_EXFILTRATION_LIMITS, registeredDomain } from '../../src/proxy/dns/guard.js';
import { createExpiringCache } from '../../src/proxy/dns/cache.js';
import { isDohResolverName } from '../../src/proxy/dns/doh.js';
import { nameserversFromResolvConf } from '../../src/proxy/dns/resolvconf.js';
import { parseUpstream } from '../../src/proxy/dns/upstream-address.js';
import { encodeQuery } from './helpers/client.js';

const KINDS = ['query', 'formerr', 'notimp', 'drop'];

describe('parseQuery', () => {
  it('reads id, lowercased name, type, RD and the verbatim question', () => {
    const q = parseQuery(encodeQuery('WwW.Example.COM', 'AAAA', 4242));
    expect(q).toMatchObject({ kind: 'query', id: 4242, name: 'www.example.com', qtype: 28, recursionDesired: true, ednsPayload: null });
    if (q.kind !== 'query') throw new Error('unreachable');
    expect(q.questionBytes.toString('latin1')).toContain('WwW');
  });

  it('reads the EDNS payload size, clamped to 512..1232', () => {
    const packet = dnsPacket.encode({
      type: 'query', id: 1, questions: [{ name: 'a.test', type: 'A' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }],
    });
    expect(parseQuery(packet)).toMatchObject({ kind: 'query', ednsPayload: 1232 });
  });

  it.each([
    ['two questions', dnsPacket.encode({ type: 'query', id: 7, questions: [{ name: 'a.test', type: 'A' }, { name: 'b.test', type: 'A' }] }), 'formerr'],
    ['no question', dnsPacket.encode({ type: 'query', id: 7, questions: [] }), 'formerr'],
    ['opcode UPDATE', (() => { const b = encodeQuery('a.test', 'A', 7); b.writeUInt16BE(5 << 11, 2); return b; })(), 'notimp'],
    ['a response', dnsPacket.encode({ type: 'response', id: 7, questions: [{ name: 'a.test', type: 'A' }] }), 'drop'],
    ['11 bytes', Buffer.alloc(11), 'drop'],
    ['question type 0', dnsPacket.encode({ type: 'query', id: 7, questions: [{ name: 'a.test', type: 'UNKNOWN_0' as 'A' }] }), 'formerr'],
    ['question type OPT', dnsPacket.encode({ type: 'query', id: 7, questions: [{ name: 'a.test', type: 'OPT' }] }), 'formerr'],
  ])('%s -> %s', (_label, packet, kind) => {
    const q = parseQuery(packet);
    expect(q.kind).toBe(kind);
    if (q.kind === 'formerr' || q.kind === 'notimp') expect(q.id).toBe(7);
  });

  it('marks names with dots or control bytes inside a label as not text, and keeps them in presentation form', () => {
    const packet = encodeQuery('x.test', 'A', 1);
    packet[13] = 0x2e; // the 'x' label now holds a dot
    expect(parseQuery(packet)).toMatchObject({ kind: 'query', nameIsText: false, name: '\\..test' });
    // One label "A.b" (not two), a byte 0xe9, a backslash and ESC: each as the label held it.
    const labels = [Buffer.from('A.b'), Buffer.from([0xe9, 0x5c, 0x1b]), Buffer.from('test')];
    const name = Buffer.concat([...labels.flatMap((l) => [Buffer.from([l.length]), l]), Buffer.from([0])]);
    const raw = Buffer.concat([encodeQuery('x', 'A', 2).subarray(0, 12), name, Buffer.from([0, 1, 0, 1])]);
    expect(parseQuery(raw)).toMatchObject({ kind: 'query', nameIsText: false, name: 'a\\.b.\\233\\\\\\027.test' });
  });

  it('returns only declared results for any truncation or corruption of a valid query (property)', () => {
    const valid = encodeQuery('some.name.example', 'A', 99);
    fc.assert(
      fc.property(fc.nat(valid.length), fc.uint8Array({ maxLength: 40 }), (cut, tail) => {
        const input = Buffer.concat([valid.subarray(0, cut), Buffer.from(tail)]);
        expect(KINDS).toContain(parseQuery(input).kind);
      }),
      { numRuns: 2000 },
    );
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => void expect(KINDS).toContain(parseQuery(Buffer.from(bytes)).kind)), {
      numRuns: 2000,
    });
  });
});

describe('responses', () => {
  it('echo the question, carry the answers and decode cleanly', () => {
    const q = parseQuery(encodeQuery('Mixed.Case.test', 'A', 31));
    if (q.kind !== 'query') throw new Error('unreachable');
    const answers = encodeRecords([{ type: 'A', name: 'mixed.case.test', ttl: 99, class: 'IN', data: '192.0.2.1' }]);
    const out = dnsPacket.decode(buildResponse({ query: q, rcode: 0, answers, ttl: 17 }));
    expect(out).toMatchObject({ id: 31, type: 'response', flag_rd: true, flag_ra: true });
    expect(out.questions?.[0]?.name).toBe('Mixed.Case.test');
    expect(out.answers?.[0]).toMatchObject({ data: '192.0.2.1', ttl: 17 });
  });

  it('go out empty with TC when longer than the UDP limit', () => {
    const q = parseQuery(encodeQuery('big.test', 'A', 5));
    if (q.kind !== 'query') throw new Error('unreachable');
    const many = Array.from({ length: 40 }, (_, i) => ({ type: 'A' as const, name: 'big.test', ttl: 1, class: 'IN' as const, data: `192.0.2.${i}` }));
    const out = dnsPacket.decode(buildResponse({ query: q, rcode: 0, answers: encodeRecords(many), ttl: 1, maxLength: 512 }));
    expect(out.flag_tc).toBe(true);
    expect(out.answers).toHaveLength(0);
  });

  it('header-only errors echo id and carry FORMERR/NOTIMP', () => {
    const out = dnsPacket.decode(buildHeaderOnlyError({ kind: 'notimp', id: 9, flags: 5 << 11, detail: '' }));
    expect(out).toMatchObject({ id: 9, rcode: 'NOTIMP', opcode: 'UPDATE' });
  });

  it('names types for audit records', () => {
    expect([qtypeName(1), qtypeName(65), qtypeName(64), qtypeName(65534)]).toEqual(['A', 'HTTPS', 'SVCB', 'TYPE65534']);
  });
});

describe('splitFrames', () => {
  it('yields the same messages for any split of the stream (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 5 }), (payloads, cuts) => {
        const stream = Buffer.concat(payloads.map((p) => frame(Buffer.from(p))));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((x, y) => x - y);
        let pending: Buffer = Buffer.alloc(0);
        const got: string[] = [];
        let last = 0;
        for (const point of [...points, stream.length]) {
          const split = splitFrames(Buffer.concat([pending, stream.subarray(last, point)]));
          pending = split.rest;
          got.push(...split.messages.map((m) => m.toString('hex')));
          last = point;
        }
        expect(got).toEqual(payloads.map((p) => Buffer.from(p).toString('hex')));
        expect(pending.length).toBe(0);
      }),
    );
  });
});

describe('exfiltration guard', () => {
  it('trips on long labels and long names', () => {
    const guard = createExfiltrationGuard(DEFAULT_EXFILTRATION_LIMITS, () => 0);
    const long = 'a'.repeat(41);
    expect(guard.admit(`${long}.evil.test`, 41, true)).toBe('label_length');
    const labels = Array.from({ length: 9 }, () => 'b'.repeat(20));
    expect(guard.admit(labels.join('.'), 20, true)).toBe('name_length');
    expect(guard.admit('ok.test', 4, true)).toBeNull();
  });

  it('skips the length limits when told (a name a rule allows), never the rate limits', () => {
    const guard = createExfiltrationGuard({ ...DEFAULT_EXFILTRATION_LIMITS, queriesPerSecond: 1, burst: 1 }, () => 0);
    const bucket = `${'a'.repeat(60)}.s3.amazonaws.com`;
    expect(guard.admit(bucket, 60, false)).toBeNull();
    expect(guard.admit(bucket, 60, false)).toBe('query_rate');
  });

  it('limits the query rate with a token bucket that refills', () => {
    let now = 0;
    const guard = createExfiltrationGuard({ ...DEFAULT_EXFILTRATION_LIMITS, queriesPerSecond: 10, burst: 5 }, () => now);
    const results = Array.from({ length: 6 }, () => guard.admit('same.test', 4, true));
    expect(results.slice(0, 5)).toEqual([null, null, null, null, null]);
    expect(results[5]).toBe('query_rate');
    now += 500; // five tokens back
    expect(guard.admit('same.test', 4, true)).toBeNull();
  });

  it('limits distinct names per registered domain and per workspace, per second', () => {
    let now = 0;
    const guard = createExfiltrationGuard({ ...DEFAULT_EXFILTRATION_LIMITS, distinctNamesPerSecond: 5, distinctNamesPerDomainPerSecond: 3 }, () => now);
    const ask = (name: string) => guard.admit(name, 4, true);
    expect([ask('a.x.test'), ask('b.x.test'), ask('c.x.test'), ask('d.x.test')]).toEqual([null, null, null, 'distinct_names_domain']);
    expect(ask('a.x.test')).toBeNull(); // repeats are not new names
    expect([ask('a.y.test'), ask('b.y.test'), ask('a.z.test')]).toEqual([null, null, 'distinct_names']);
    now += 1000;
    expect(ask('d.x.test')).toBeNull();
  });

  it.each([
    ['a.b.example.com', 'example.com'],
    ['x.example.co.uk', 'example.co.uk'],
    ['example.co.uk', 'example.co.uk'],
    ['co.uk', 'co.uk'],
    ['a.example.de', 'example.de'],
    ['test', 'test'],
  ])('registeredDomain(%s) = %s', (labels, domain) => expect(registeredDomain(labels)).toBe(domain));
});

describe('expiring cache', () => {
  it('expires by time and evicts the least recently used past the cap', () => {
    let now = 0;
    const cache = createExpiringCache<number>(2, () => now);
    cache.set('a', 1, 1000);
    cache.set('b', 2, 5000);
    expect(cache.get('a')?.value).toBe(1); // a is now more recent than b
    cache.set('c', 3, 5000);
    expect([cache.get('a')?.value, cache.get('b')?.value, cache.get('c')?.value]).toEqual([1, undefined, 3]);
    now = 1000;
    expect(cache.get('a')).toBeUndefined();
  });
});

describe('names and addresses', () => {
  it.each([
    ['dns.google', true], ['x.dns.google', true], ['cloudflare-dns.com', true], ['mozilla.cloudflare-dns.com', true],
    ['dns.quad9.net', true], ['google.com', false], ['notdns.google', false], ['quad9.net', false],
  ])('isDohResolverName(%s) = %s', (name, listed) => expect(isDohResolverName(name)).toBe(listed));

  it('reads nameservers from resolv.conf text', () => {
    expect(nameserversFromResolvConf('# c\nnameserver 10.0.0.2\nsearch x\nnameserver ::1\nnameserver fe80::1%eth0\n')).toEqual([
      '10.0.0.2:53', '[::1]:53',
    ]);
  });

  it.each([
    ['127.0.0.1:5353', { host: '127.0.0.1', port: 5353 }],
    ['127.0.0.1', { host: '127.0.0.1', port: 53 }],
    ['[::1]:54', { host: '::1', port: 54 }],
    ['::1', { host: '::1', port: 53 }],
  ])('parseUpstream(%s)', (raw, expected) => expect(parseUpstream(raw)).toEqual(expected));

  it.each(['127.0.0.1:99999', '127.0.0.1:0', 'resolver.example', 'resolver.example:53', '[resolver]:53', ''])('rejects the upstream %j: an IP address and a port', (raw) => {
    expect(() => parseUpstream(raw)).toThrow(`upstream resolver "${raw}" is not an IP address with an optional port`);
  });
});
