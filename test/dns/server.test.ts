// The workspace DNS server end to end: dig and a node client over real UDP, TCP and a Unix socket,
// a test upstream we program, the real policy engine and the real audit log. Each case checks the
// answer and the audit record the answer waited for.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';
import { verifyAuditLog } from '../../src/audit/index.js';
import { addressesOf, dig, encodeQuery, queryStream, queryUdp, rcodeOf, sendUdp } from './helpers/client.js';
import { failingAt, GUARDED_POLICY, OFF_POLICY, STRICT_POLICY, startHarness, type Harness } from './helpers/harness.js';
import { a, aaaa, startTestUpstream, type TestUpstream } from './helpers/upstream.js';
import { connectTunnel, startTestProxy } from '../proxy/helpers.js';
import { holdSyncs, until } from '../audit/helpers.js';

let upstream: TestUpstream;
let h: Harness;

beforeAll(async () => {
  upstream = await startTestUpstream();
  h = await startHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address], resolver: { cache: { minTtl: 0 } } });
});
afterAll(async () => {
  await h.close();
  await upstream.close();
});
beforeEach(() => h.setPolicy(GUARDED_POLICY));

describe('policy at the name', () => {
  it('answers an allowed name (dig over UDP) and records the rule', async () => {
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    const result = await dig(h.port, 'web.test', 'A');
    expect(result.status).toBe('NOERROR');
    expect(result.answers).toEqual(['A 192.0.2.10']);
    expect(await h.lastRecord('web.test')).toMatchObject({
      event: 'dns.query', qtype: 'A', transport: 'udp', verdict: 'allow', rule: 'allow-web', reason: 'rule_allow',
      signals: [], mode: 'guarded', answers: 1, cached: false, rcode: 'NOERROR',
    });
    expect((await h.lastRecord('web.test')).policy_hash).toMatch(/^sha256:/);
  });

  it('guarded: resolves an unlisted public name and flags it', async () => {
    upstream.set('public.unlisted.test', 'A', [a('public.unlisted.test', '198.51.100.7')]);
    const reply = await queryUdp(h.port, 'public.unlisted.test', 'A');
    expect(addressesOf(reply)).toEqual(['198.51.100.7']);
    expect(await h.lastRecord('public.unlisted.test')).toMatchObject({ verdict: 'allow', rule: null, reason: 'unlisted', signals: ['unlisted'] });
  });

  it('strict: refuses an unlisted name without asking the upstream', async () => {
    h.setPolicy(STRICT_POLICY);
    upstream.set('strict.unlisted.test', 'A', [a('strict.unlisted.test', '198.51.100.8')]);
    const result = await dig(h.port, 'strict.unlisted.test', 'A');
    expect(result.status).toBe('REFUSED');
    expect(upstream.count('strict.unlisted.test')).toBe(0);
    expect(await h.lastRecord('strict.unlisted.test')).toMatchObject({ verdict: 'deny', reason: 'default_deny', mode: 'strict', rcode: 'REFUSED', answers: 0 });
  });

  it.each([
    ['guarded', GUARDED_POLICY],
    ['strict', STRICT_POLICY],
  ])('%s: refuses a denied name', async (mode, policy) => {
    h.setPolicy(policy);
    upstream.set('bad.test', 'A', [a('bad.test', '198.51.100.9')]);
    const reply = await queryUdp(h.port, 'bad.test', 'A');
    expect(rcodeOf(reply)).toBe('REFUSED');
    expect(upstream.count('bad.test')).toBe(0);
    expect(await h.lastRecord('bad.test')).toMatchObject({ verdict: 'deny', rule: 'deny-bad', reason: 'rule_deny', mode });
  });

  it('off: forwards everything as is, internal answers included', async () => {
    h.setPolicy(OFF_POLICY);
    upstream.set('off.test', 'A', [a('off.test', '10.9.9.9')]);
    const reply = await queryUdp(h.port, 'off.test', 'A');
    expect(addressesOf(reply)).toEqual(['10.9.9.9']);
    expect(await h.lastRecord('off.test')).toMatchObject({ mode: 'off', reason: 'mediation_off', answers: 1 });
  });
});

describe('answers', () => {
  it('strips internal addresses from an allowed name, keeping the public ones', async () => {
    upstream.set('mixed.allowed.test', 'A', [a('mixed.allowed.test', '192.0.2.20'), a('mixed.allowed.test', '10.0.0.20')]);
    upstream.set('inside.allowed.test', 'A', [a('inside.allowed.test', '169.254.169.254')]);
    upstream.set('inside.allowed.test', 'AAAA', [aaaa('inside.allowed.test', '::1')]);
    expect(addressesOf(await queryUdp(h.port, 'mixed.allowed.test', 'A'))).toEqual(['192.0.2.20']);
    const mixed = await h.lastRecord('mixed.allowed.test');
    expect(mixed).toMatchObject({ verdict: 'allow', answers: 1, rcode: 'NOERROR' });
    expect(mixed.signals).toEqual(expect.arrayContaining(['internal_address', 'answer_stripped']));

    // All stripped: NOERROR with no answers (NODATA), so clients do not fall back to another resolver.
    for (const type of ['A', 'AAAA'] as const) {
      const result = await dig(h.port, 'inside.allowed.test', type);
      expect(result.status).toBe('NOERROR');
      expect(result.answers).toEqual([]);
      expect(await h.lastRecord('inside.allowed.test', type)).toMatchObject({ answers: 0, rcode: 'NOERROR' });
    }
    expect(h.resolver.namesForAddress('10.0.0.20')).toEqual([]);
  });

  it('keeps an internal address a rule names exactly', async () => {
    upstream.set('intranet.test', 'A', [a('intranet.test', '10.0.0.9')]);
    expect(addressesOf(await queryUdp(h.port, 'intranet.test', 'A'))).toEqual(['10.0.0.9']);
    expect(await h.lastRecord('intranet.test')).toMatchObject({ rule: 'intranet', answers: 1, signals: ['internal_address'] });
  });

  it('flags rebinding: a name seen public that now resolves internal is stripped', async () => {
    upstream.set('rebind.test', 'A', [a('rebind.test', '192.0.2.30', 1)]);
    expect(addressesOf(await queryUdp(h.port, 'rebind.test', 'A'))).toEqual(['192.0.2.30']);
    upstream.set('rebind.test', 'A', [a('rebind.test', '127.0.0.1', 1)]);
    await new Promise((r) => setTimeout(r, 1100)); // the 1 s TTL runs out for real
    const reply = await queryUdp(h.port, 'rebind.test', 'A');
    expect(addressesOf(reply)).toEqual([]);
    const record = await h.lastRecord('rebind.test');
    expect(record.signals).toEqual(expect.arrayContaining(['unlisted', 'rebinding', 'answer_stripped', 'internal_address']));
    expect(record).toMatchObject({ cached: false, answers: 0 });
  });

  it('answers HTTPS and SVCB questions with empty NOERROR and strips them from other answers', async () => {
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    for (const type of ['HTTPS', 'SVCB']) {
      const result = await dig(h.port, 'web.test', type);
      expect(result.status).toBe('NOERROR');
      expect(result.answers).toEqual([]);
      expect(await h.lastRecord('web.test', type)).toMatchObject({ signals: ['https_record_stripped'], answers: 0 });
    }
    expect(upstream.count('web.test', 'UNKNOWN_65')).toBe(0);
    const https = { type: 'UNKNOWN_65', name: 'svc.allowed.test', ttl: 60, class: 'IN', data: Buffer.from([0, 1, 0]) } as unknown as dnsPacket.Answer;
    upstream.set('svc.allowed.test', 'ANY', [a('svc.allowed.test', '192.0.2.40'), https]);
    const any = await queryUdp(h.port, 'svc.allowed.test', 'ANY');
    expect(any.answers?.map((r) => r.type)).toEqual(['A']);
    expect((await h.lastRecord('svc.allowed.test', 'ANY')).signals).toContain('https_record_stripped');
  });

  it('refuses a reverse lookup of an internal address (dig -x) without asking the upstream; a public one is forwarded', async () => {
    // What `dig -x 10.0.0.5` asks.
    const refused = await dig(h.port, '5.0.0.10.in-addr.arpa', 'PTR');
    expect(refused.status).toBe('REFUSED');
    expect(upstream.count('5.0.0.10.in-addr.arpa')).toBe(0);
    expect(await h.lastRecord('5.0.0.10.in-addr.arpa', 'PTR')).toMatchObject({ verdict: 'deny', reason: 'internal_address', signals: ['internal_address'], rcode: 'REFUSED' });
    await dig(h.port, '7.2.0.192.in-addr.arpa', 'PTR');
    expect(upstream.count('7.2.0.192.in-addr.arpa')).toBe(1);
  });

  it('refuses DNS-over-HTTPS resolver names unless a rule allows them', async () => {
    upstream.set('dns.google', 'A', [a('dns.google', '192.0.2.88')]);
    upstream.set('dns.quad9.net', 'A', [a('dns.quad9.net', '192.0.2.99')]);
    expect((await dig(h.port, 'dns.google', 'A')).status).toBe('REFUSED');
    expect((await dig(h.port, 'foo.mozilla.cloudflare-dns.com', 'A')).status).toBe('REFUSED');
    expect(upstream.count('dns.google')).toBe(0);
    expect(await h.lastRecord('dns.google')).toMatchObject({ verdict: 'deny', reason: 'doh_denied', rcode: 'REFUSED' });
    expect(addressesOf(await queryUdp(h.port, 'dns.quad9.net', 'A'))).toEqual(['192.0.2.99']);
    expect(await h.lastRecord('dns.quad9.net')).toMatchObject({ verdict: 'allow', rule: 'allow-quad9' });
  });
});

describe('forwarding', () => {
  it('falls back to TCP when the upstream truncates, and truncates to the client past 512 bytes', async () => {
    upstream.set('tc.allowed.test', 'A', [a('tc.allowed.test', '192.0.2.50'), a('tc.allowed.test', '192.0.2.51')]);
    upstream.behave('tc.allowed.test', { kind: 'truncate_udp' });
    expect(addressesOf(await queryUdp(h.port, 'tc.allowed.test', 'A'))).toEqual(['192.0.2.50', '192.0.2.51']);
    expect(upstream.received.filter((q) => q.name === 'tc.allowed.test').map((q) => q.transport)).toEqual(['udp', 'tcp']);

    const many = Array.from({ length: 40 }, (_, i) => a('many.allowed.test', `192.0.2.${100 + i}`));
    upstream.set('many.allowed.test', 'A', many);
    const result = await dig(h.port, 'many.allowed.test', 'A', ['+noedns']);
    expect(result.answers).toHaveLength(40); // dig saw TC over UDP and asked again over TCP
    const records = (await h.records()).filter((r) => r.name === 'many.allowed.test');
    expect(records.map((r) => r.transport)).toEqual(['udp', 'tcp']);
  });

  it('answers SERVFAIL when the upstream does not answer', async () => {
    upstream.behave('silent.allowed.test', { kind: 'silent' });
    const result = await dig(h.port, 'silent.allowed.test', 'A');
    expect(result.status).toBe('SERVFAIL');
    expect(await h.lastRecord('silent.allowed.test')).toMatchObject({ verdict: 'allow', reason: 'upstream_unreachable', rcode: 'SERVFAIL', answers: 0 });
  });

  it('serves from cache until a 1 s TTL expires', async () => {
    upstream.set('ttl.allowed.test', 'A', [a('ttl.allowed.test', '192.0.2.60', 1)]);
    await queryUdp(h.port, 'ttl.allowed.test', 'A');
    await queryUdp(h.port, 'ttl.allowed.test', 'A');
    expect(upstream.count('ttl.allowed.test')).toBe(1);
    const cached = await h.lastRecord('ttl.allowed.test');
    expect(cached).toMatchObject({ cached: true, upstream_ms: null });
    await new Promise((r) => setTimeout(r, 1100));
    await queryUdp(h.port, 'ttl.allowed.test', 'A');
    expect(upstream.count('ttl.allowed.test')).toBe(2);
    expect(await h.lastRecord('ttl.allowed.test')).toMatchObject({ cached: false });
  });

  it('sends one upstream query for many identical concurrent questions', async () => {
    upstream.set('busy.allowed.test', 'A', [a('busy.allowed.test', '192.0.2.70')]);
    upstream.behave('busy.allowed.test', { kind: 'delay', ms: 150 });
    const replies = await Promise.all(Array.from({ length: 12 }, () => queryUdp(h.port, 'busy.allowed.test', 'A')));
    expect(replies.every((r) => addressesOf(r)[0] === '192.0.2.70')).toBe(true);
    expect(upstream.count('busy.allowed.test')).toBe(1);
    expect((await h.records()).filter((r) => r.name === 'busy.allowed.test')).toHaveLength(12);
  });
});

describe('a question that leaves the host is recorded first', () => {
  const forwardsOf = (text: string, name: string) =>
    text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r['event'] === 'dns.forward' && r['name'] === name);

  it('a miss is on disk as dns.forward before the upstream sees it; a cache hit and folded questions add none', async () => {
    const name = 'fwd.allowed.test';
    upstream.set(name, 'A', [a(name, '192.0.2.80', 60)]);
    upstream.behave(name, { kind: 'delay', ms: 100 });
    const onDiskAtArrival: string[] = [];
    upstream.onQuestion((q) => {
      if (q.name === name) onDiskAtArrival.push(readFileSync(h.auditPath, 'utf8'));
    });
    const replies = await Promise.all(Array.from({ length: 5 }, () => queryUdp(h.port, name, 'A')));
    expect(replies.every((r) => addressesOf(r)[0] === '192.0.2.80')).toBe(true);
    await queryUdp(h.port, name, 'A');
    expect(onDiskAtArrival).toHaveLength(1);
    expect(forwardsOf(onDiskAtArrival[0] as string, name)).toEqual([
      expect.objectContaining({ qtype: 'A', transport: 'udp', verdict: 'allow', rule: 'allow-web', reason: 'rule_allow' }),
    ]);
    expect(forwardsOf(readFileSync(h.auditPath, 'utf8'), name)).toHaveLength(1);
    expect((await h.records()).filter((r) => r.name === name)).toHaveLength(6);
  });

  it('with the disk sync held, an answer goes out once its record is written; a miss leaves only once dns.forward is synced', async () => {
    const [hit, miss] = ['held-hit.allowed.test', 'held-miss.allowed.test'];
    upstream.set(hit, 'A', [a(hit, '192.0.2.82', 60)]);
    upstream.set(miss, 'A', [a(miss, '192.0.2.83', 60)]);
    await queryUdp(h.port, hit, 'A');
    const syncs = holdSyncs();
    let releasing: NodeJS.Timeout | undefined;
    try {
      expect(addressesOf(await queryUdp(h.port, hit, 'A'))).toEqual(['192.0.2.82']);
      // The sync that covers its record has not even started, or is held.
      await until(() => syncs.held() === 1, 'the sync covering the answer\'s record');
      expect(readFileSync(h.auditPath, 'utf8')).toMatch(/"name":"held-hit.allowed.test".*"cached":true/);
      const answered = queryUdp(h.port, miss, 'A');
      await until(() => readFileSync(h.auditPath, 'utf8').includes(`"event":"dns.forward","name":"${miss}"`), 'the dns.forward record');
      await new Promise((r) => setTimeout(r, 50));
      expect(upstream.count(miss)).toBe(0);
      releasing = setInterval(() => syncs.release(), 5);
      expect(addressesOf(await answered)).toEqual(['192.0.2.83']);
      expect(upstream.count(miss)).toBe(1);
    } finally {
      clearInterval(releasing);
      syncs.release();
      syncs.restore();
    }
  });

  it('when the dns.forward record cannot be written, nothing is sent and the guest gets REFUSED', async () => {
    const failing = await startHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address], audit: failingAt('dns.forward') });
    try {
      upstream.set('unsent.allowed.test', 'A', [a('unsent.allowed.test', '192.0.2.81')]);
      const reply = await queryUdp(failing.port, 'unsent.allowed.test', 'A');
      expect(rcodeOf(reply)).toBe('REFUSED');
      expect(upstream.count('unsent.allowed.test')).toBe(0);
    } finally {
      await failing.close();
    }
  });
});

describe('transports', () => {
  it('answers several pipelined queries on one TCP connection', async () => {
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    upstream.set('tcp1.allowed.test', 'A', [a('tcp1.allowed.test', '192.0.2.81')]);
    const replies = await queryStream({ host: '127.0.0.1', port: h.port }, [
      encodeQuery('web.test', 'A', 1), encodeQuery('tcp1.allowed.test', 'A', 2), encodeQuery('bad.test', 'A', 3),
    ]);
    const byId = new Map(replies.map((r) => [r.id, r]));
    expect(addressesOf(byId.get(1) as dnsPacket.DecodedPacket)).toEqual(['192.0.2.10']);
    expect(addressesOf(byId.get(2) as dnsPacket.DecodedPacket)).toEqual(['192.0.2.81']);
    expect(rcodeOf(byId.get(3) as dnsPacket.DecodedPacket)).toBe('REFUSED');
    expect(await h.lastRecord('tcp1.allowed.test')).toMatchObject({ transport: 'tcp' });
    expect((await dig(h.port, 'web.test', 'A', ['+tcp'])).answers).toEqual(['A 192.0.2.10']);
  });

  it.each([
    ['TCP', () => ({ host: '127.0.0.1', port: h.port })],
    ['the Unix socket', () => ({ path: h.socketPath })],
  ])('over %s, a client that half-closes after its queries gets every answer', async (_, where) => {
    upstream.set('halfclose.allowed.test', 'A', [a('halfclose.allowed.test', '192.0.2.83')]);
    const replies = await queryStream(where(), [encodeQuery('halfclose.allowed.test', 'A', 1), encodeQuery('web.test', 'A', 2)], 3000, true);
    expect(replies.map((r) => r.id).sort()).toEqual([1, 2]);
    expect(addressesOf(replies.find((r) => r.id === 1) as dnsPacket.DecodedPacket)).toEqual(['192.0.2.83']);
  });

  it('serves length-prefixed DNS on the Unix socket', async () => {
    upstream.set('unix.allowed.test', 'A', [a('unix.allowed.test', '192.0.2.82')]);
    const [reply] = await queryStream({ path: h.socketPath }, [encodeQuery('unix.allowed.test', 'A', 77)]);
    expect(reply?.id).toBe(77);
    expect(addressesOf(reply as dnsPacket.DecodedPacket)).toEqual(['192.0.2.82']);
    expect(await h.lastRecord('unix.allowed.test')).toMatchObject({ transport: 'tcp', verdict: 'allow' });
  });
});

describe('malformed input', () => {
  it('answers FORMERR/NOTIMP when the id is readable, drops the rest, and keeps serving', async () => {
    const twoQuestions = dnsPacket.encode({ type: 'query', id: 4001, questions: [{ name: 'a.test', type: 'A' }, { name: 'b.test', type: 'A' }] });
    const formerr = dnsPacket.decode((await sendUdp(h.port, twoQuestions)) as Buffer);
    expect(formerr).toMatchObject({ id: 4001, rcode: 'FORMERR' });
    const update = encodeQuery('a.test', 'A', 4002);
    update.writeUInt16BE(5 << 11, 2);
    expect(dnsPacket.decode((await sendUdp(h.port, update)) as Buffer)).toMatchObject({ id: 4002, rcode: 'NOTIMP' });
    expect(await sendUdp(h.port, Buffer.from([1, 2, 3]), 300)).toBeNull();
    expect((await h.records()).filter((r) => r.reason === 'bad_request').length).toBeGreaterThanOrEqual(2);

    // Fuzz: random datagrams and every cut of a valid query, over real UDP.
    const valid = encodeQuery('fuzz.allowed.test', 'A', 4003);
    const inputs = [
      ...Array.from({ length: 150 }, () => randomBytes(Math.floor(Math.random() * 80))),
      ...Array.from({ length: valid.length }, (_, cut) => valid.subarray(0, cut)),
    ];
    const replies = await Promise.all(inputs.map((input) => sendUdp(h.port, input, 500)));
    replies.forEach((reply, i) => {
      if (reply === null) return;
      const input = inputs[i] as Buffer;
      expect(reply.readUInt16BE(0)).toBe(input.readUInt16BE(0)); // an answer always echoes the id
      expect(reply[2]! & 0x80).toBe(0x80);
    });
    upstream.set('alive.allowed.test', 'A', [a('alive.allowed.test', '192.0.2.90')]);
    expect(addressesOf(await queryUdp(h.port, 'alive.allowed.test', 'A'))).toEqual(['192.0.2.90']);
  });

  it('refuses other classes and zone transfers without forwarding', async () => {
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    expect((await dig(h.port, 'web.test', 'TXT', ['-c', 'CH'])).status).toBe('REFUSED');
    expect(await h.lastRecord('web.test', 'TXT')).toMatchObject({ verdict: 'deny', reason: 'bad_request', rcode: 'REFUSED' });
    const axfr = await queryStream({ host: '127.0.0.1', port: h.port }, [encodeQuery('web.test', 'AXFR', 5)]);
    expect(rcodeOf(axfr[0] as dnsPacket.DecodedPacket)).toBe('REFUSED');
    expect(upstream.count('web.test', 'AXFR')).toBe(0);
  });

  it('closes a TCP connection whose framing carries nothing parseable', async () => {
    await expect(queryStream({ host: '127.0.0.1', port: h.port }, [Buffer.from([1, 2, 3])], 2000)).rejects.toThrow(/connection closed after 0/);
    expect(addressesOf(await queryUdp(h.port, 'web.test', 'A'))).toEqual(['192.0.2.10']);
  });
});

describe('proxy integration', () => {
  it('remembers the names the workspace was given per address, and lookup() shares the cache', async () => {
    upstream.set('proxy.allowed.test', 'A', [a('proxy.allowed.test', '192.0.2.95', 300)]);
    upstream.set('proxy.allowed.test', 'AAAA', [aaaa('proxy.allowed.test', '2001:db8::95', 300)]);
    await queryUdp(h.port, 'proxy.allowed.test', 'A');
    expect(h.resolver.namesForAddress('192.0.2.95')).toEqual(['proxy.allowed.test']);
    expect(h.resolver.namesForAddress('2001:db8::95')).toEqual([]); // AAAA not asked by the guest yet
    expect(await h.resolver.lookup('proxy.allowed.test')).toEqual(['192.0.2.95', '2001:db8::95']);
    expect(upstream.count('proxy.allowed.test', 'A')).toBe(1);
    await queryUdp(h.port, 'proxy.allowed.test', 'AAAA');
    expect(h.resolver.namesForAddress('2001:DB8:0:0::95')).toEqual(['proxy.allowed.test']);
  });

  it("the proxy's own lookups record each question (transport proxy) before it leaves; a failed record sends nothing", async () => {
    const allow = 'version: 1\nmode: guarded\nrules:\n  - id: via-proxy\n    action: allow\n    hosts: ["*.allowed.test"]\n';
    const name = 'lookup.allowed.test';
    upstream.set(name, 'A', [a(name, '192.0.2.96', 300)]);
    const tp = await startTestProxy(allow, { resolver: h.resolver });
    const onDiskAtArrival = new Map<string, string>();
    upstream.onQuestion((q) => {
      if (q.name === name) onDiskAtArrival.set(q.type, readFileSync(tp.auditPath, 'utf8'));
    });
    try {
      (await connectTunnel(tp.port, `${name}:443`)).socket.destroy();
      expect([...onDiskAtArrival.keys()].sort()).toEqual(['A', 'AAAA']);
      for (const [qtype, text] of onDiskAtArrival) {
        const records = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(records.find((r) => r['event'] === 'dns.forward' && r['qtype'] === qtype)).toMatchObject({ name, transport: 'proxy', verdict: 'allow', rule: 'via-proxy' });
      }
    } finally {
      await tp.close();
    }

    // AAAA already cached, A's record fails: the CONNECT is refused too, not let through on the cached family.
    const halfCached = 'half.allowed.test';
    upstream.set(halfCached, 'AAAA', [aaaa(halfCached, '2001:db8::97', 300)]);
    await h.resolver.query(halfCached, 28);
    const refusing = await startTestProxy(allow, { resolver: h.resolver, audit: failingAt('dns.forward') });
    try {
      const { status, socket } = await connectTunnel(refusing.port, `${halfCached}:443`);
      socket.destroy();
      expect(status).toBe(503);
      expect(upstream.count(halfCached, 'A')).toBe(0);
    } finally {
      await refusing.close();
    }

    const unsent = 'unrecorded.allowed.test';
    const failing = await startTestProxy(allow, { resolver: h.resolver, audit: failingAt('dns.forward') });
    try {
      const { status, head, socket } = await connectTunnel(failing.port, `${unsent}:443`);
      socket.destroy();
      expect(status).toBe(503);
      expect(head.toLowerCase()).toContain('x-microagent-reason: audit_unavailable');
      expect(upstream.count(unsent)).toBe(0);
    } finally {
      await failing.close();
    }
  });

  it('the audit chain the server wrote verifies', async () => {
    const result = await verifyAuditLog(h.auditPath);
    expect(result).toMatchObject({ ok: true });
  });
});
