// The workspace resolver against a real upstream on 127.0.0.1: forwarding, TC -> TCP fallback,
// timeouts and retries, TTL cache with clamps, coalescing, lookup() and the address memory.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createWorkspaceResolver } from '../../src/proxy/dns/resolver.js';
import { a, aaaa, startTestUpstream, type TestUpstream } from './helpers/upstream.js';

let upstream: TestUpstream;
beforeEach(async () => {
  upstream = await startTestUpstream();
});
afterEach(async () => {
  await upstream.close();
});

describe('workspace resolver', () => {
  it('forwards with random ids and fresh source ports, and caches by TTL', async () => {
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    upstream.set('other.test', 'A', [a('other.test', '192.0.2.11', 300)]);
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0 });
    const first = await resolver.query('web.test', 1);
    expect(first).toMatchObject({ upstream: { rcode: 0 }, cached: false, ttl: 300 });
    expect(first.upstream.answers.map((r) => (r as { data: string }).data)).toEqual(['192.0.2.10']);
    const second = await resolver.query('web.test', 1);
    expect(second).toMatchObject({ cached: true, upstreamMs: null });
    expect(upstream.count('web.test')).toBe(1);
    await resolver.query('other.test', 1);
    expect(upstream.received.map((q) => q.transport)).toEqual(['udp', 'udp']);
  });

  it('spreads queries over pooled sockets and moves to new source ports as sockets retire', async () => {
    const names = Array.from({ length: 30 }, (_, i) => `n${i}.test`);
    const pooled = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0 });
    await Promise.all(names.map((name) => pooled.query(name, 1)));
    expect(new Set(upstream.received.map((q) => q.sourcePort)).size).toBeGreaterThan(1);
    pooled.close();

    upstream.received.length = 0;
    const rotating = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0, udpPool: { sockets: 1, queriesPerSocket: 2 } });
    for (const name of ['r1.test', 'r2.test', 'r3.test', 'r4.test']) await rotating.query(name, 1);
    const ports = upstream.received.map((q) => q.sourcePort);
    expect(ports[0]).toBe(ports[1]);
    expect(ports[2]).toBe(ports[3]);
    expect(ports[2]).not.toBe(ports[0]);
    rotating.close();
  });

  it('ignores replies with another id or another question', async () => {
    upstream.set('spoofed.test', 'A', [a('spoofed.test', '192.0.2.5')]);
    upstream.behave('spoofed.test', { kind: 'spoof_first', ip: '203.0.113.66' });
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0 });
    const answer = await resolver.query('spoofed.test', 1);
    expect(answer.upstream.answers.map((r) => (r as { data: string }).data)).toEqual(['192.0.2.5']);
  });

  it('retries over TCP when the UDP answer is truncated', async () => {
    upstream.set('big.test', 'A', [a('big.test', '192.0.2.20'), a('big.test', '192.0.2.21')]);
    upstream.behave('big.test', { kind: 'truncate_udp' });
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0 });
    const answer = await resolver.query('big.test', 1);
    expect(answer.upstream.answers).toHaveLength(2);
    expect(upstream.received.map((q) => q.transport)).toEqual(['udp', 'tcp']);
  });

  it('gives up after its retries when the upstream stays silent, then tries the next upstream', async () => {
    upstream.behave('slow.test', { kind: 'silent' });
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 200, retries: 1 });
    await expect(resolver.query('slow.test', 1)).rejects.toMatchObject({ kind: 'transient', code: 'dns.upstream_failed' });
    expect(upstream.count('slow.test')).toBe(2);

    const second = await startTestUpstream();
    second.set('slow.test', 'A', [a('slow.test', '192.0.2.30')]);
    try {
      const failover = createWorkspaceResolver({ upstreams: [upstream.address, second.address], timeoutMs: 200, retries: 1 });
      expect((await failover.query('slow.test', 1)).upstream.answers).toHaveLength(1);
    } finally {
      await second.close();
    }
  });

  it('takes a late answer to an earlier attempt: an upstream slower than one timeout but within all of them', async () => {
    upstream.set('late.test', 'A', [a('late.test', '192.0.2.31')]);
    upstream.behave('late.test', { kind: 'delay', ms: 300 });
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 200, retries: 1 });
    const answer = await resolver.query('late.test', 1);
    expect(answer.upstream.answers).toHaveLength(1);
    expect(upstream.count('late.test')).toBe(2);
  });

  it('folds identical concurrent questions into one upstream query', async () => {
    upstream.set('same.test', 'A', [a('same.test', '192.0.2.40')]);
    upstream.behave('same.test', { kind: 'delay', ms: 100 });
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 1000, retries: 0 });
    const answers = await Promise.all(Array.from({ length: 20 }, () => resolver.query('same.test', 1)));
    expect(answers.every((r) => r.upstream.answers.length === 1)).toBe(true);
    expect(upstream.count('same.test')).toBe(1);
  });

  it('expires cache entries after their (clamped) TTL', async () => {
    upstream.set('short.test', 'A', [a('short.test', '192.0.2.50', 1)]);
    upstream.set('long.test', 'A', [a('long.test', '192.0.2.51', 86400)]);
    upstream.set('top-bit.test', 'A', [a('top-bit.test', '192.0.2.52', 2 ** 31 + 5)]);
    let now = 1_000_000;
    const resolver = createWorkspaceResolver({
      upstreams: [upstream.address], timeoutMs: 500, retries: 0, cache: { minTtl: 2, maxTtl: 60 }, now: () => now,
    });
    expect((await resolver.query('short.test', 1)).ttl).toBe(2); // floor
    expect((await resolver.query('long.test', 1)).ttl).toBe(60); // ceiling
    expect((await resolver.query('top-bit.test', 1)).ttl).toBe(2); // RFC 2181: read as 0, then the floor
    now += 1500;
    expect(await resolver.query('short.test', 1)).toMatchObject({ cached: true, ttl: 1 });
    now += 600;
    expect(await resolver.query('short.test', 1)).toMatchObject({ cached: false });
    expect(upstream.count('short.test')).toBe(2);
    now += 59_000;
    expect(await resolver.query('long.test', 1)).toMatchObject({ cached: false });
  });

  it('caches negative answers by the SOA minimum', async () => {
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0 });
    const missing = await resolver.query('missing.test', 1);
    expect(missing).toMatchObject({ upstream: { rcode: 3 }, ttl: 5 });
    expect(missing.upstream.authorities).toHaveLength(1);
    expect(await resolver.query('missing.test', 1)).toMatchObject({ upstream: { rcode: 3 }, cached: true });
  });

  it('lookup() returns A then AAAA through the same cache, for the egress proxy', async () => {
    upstream.set('dual.test', 'A', [a('dual.test', '192.0.2.60')]);
    upstream.set('dual.test', 'AAAA', [aaaa('dual.test', '2001:db8::60')]);
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], timeoutMs: 500, retries: 0 });
    expect(await resolver.lookup('dual.test')).toEqual(['192.0.2.60', '2001:db8::60']);
    expect(await resolver.lookup('dual.test')).toEqual(['192.0.2.60', '2001:db8::60']);
    expect(upstream.count('dual.test')).toBe(2);
    expect(await resolver.lookup('missing.test')).toEqual([]);
  });

  it('remembers which names it gave for an address until they expire', () => {
    let now = 0;
    const resolver = createWorkspaceResolver({ upstreams: [upstream.address], now: () => now });
    resolver.memory.recordAddress('one.test', '192.0.2.70', 1000);
    resolver.memory.recordAddress('two.test', '192.0.2.70', 5000);
    expect(resolver.namesForAddress('192.0.2.70')).toEqual(['one.test', 'two.test']);
    now = 1000;
    expect(resolver.namesForAddress('192.0.2.70')).toEqual(['two.test']);
    now = 5000;
    expect(resolver.namesForAddress('192.0.2.70')).toEqual([]);
  });
});
