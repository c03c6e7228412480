// Minting and caching of secure contexts: one mint per name under concurrency, a bounded LRU,
// expiry before the leaf does, leaves clamped to the CA, name validation, and close().
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createCa, loadCa, parseLeafName } from '../../src/ca/index.js';
import { ecdsaSignatureToDer, time } from '../../src/ca/der.js';
import { ipOctets } from '../../src/ca/leaf.js';
import { normalizeHost, parseIpLiteral } from '../../src/policy/index.js';
import { rejection, tempDir } from './helpers.js';

const DAY = 86_400_000;

describe('secureContextFor', () => {
  it('mints once for concurrent first requests of one host and shares the result', async () => {
    const ca = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'w' });
    const contexts = await Promise.all(Array.from({ length: 50 }, () => ca.secureContextFor('api.example.test')));
    expect(new Set(contexts).size).toBe(1);
    expect(ca.stats()).toMatchObject({ minted: 1, coalesced: 49, cacheHits: 0, inFlight: 0, cacheSize: 1 });
    expect(await ca.secureContextFor('api.example.test')).toBe(contexts[0]);
    expect(ca.stats()).toMatchObject({ minted: 1, cacheHits: 1 });
    ca.close();
  });

  it('mints distinct hosts concurrently without one waiting for a cache slot of another', async () => {
    const ca = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'w' });
    const names = Array.from({ length: 20 }, (_, i) => `h${i}.example.test`);
    const contexts = await Promise.all(names.map((n) => ca.secureContextFor(n)));
    expect(new Set(contexts).size).toBe(20);
    expect(ca.stats()).toMatchObject({ minted: 20, cacheSize: 20 });
    ca.close();
  });

  it('evicts the least recently used context beyond the cap', async () => {
    const ca = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'w', cacheSize: 3 });
    const a = await ca.secureContextFor('a.test');
    await ca.secureContextFor('b.test');
    await ca.secureContextFor('c.test');
    expect(await ca.secureContextFor('a.test')).toBe(a); // a is now the most recent
    await ca.secureContextFor('d.test'); // evicts b
    expect(ca.stats()).toMatchObject({ minted: 4, cacheSize: 3, evictions: 1, cacheHits: 1 });
    expect(await ca.secureContextFor('a.test')).toBe(a);
    await ca.secureContextFor('b.test');
    expect(ca.stats()).toMatchObject({ minted: 5, evictions: 2 });
    ca.close();
  });

  it('re-mints a cached host a day before its 7-day leaf expires, not after', async () => {
    let now = Date.now();
    const ca = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'w', now: () => now });
    const first = await ca.secureContextFor('api.example.test');
    now += 5 * DAY;
    expect(await ca.secureContextFor('api.example.test')).toBe(first);
    now += 1.5 * DAY; // 6.5 days: inside the last day of the leaf
    expect(await ca.secureContextFor('api.example.test')).not.toBe(first);
    expect(ca.stats().minted).toBe(2);
    ca.close();
  });

  it('refuses to mint once the CA has expired, naming rotate as the fix', async () => {
    let now = Date.now();
    const dir = join(await tempDir(), 'ca');
    const ca = await createCa({ dir, workspace: 'w', validityDays: 2, now: () => now });
    now += 3 * DAY;
    const err = await rejection(() => ca.secureContextFor('api.example.test'));
    expect(err).toMatchObject({ kind: 'invalid', code: 'ca.expired' });
    expect(err.remediation).toContain('microagent ca rotate');
    // Concurrent waiters share the failure; nothing failed is cached or left in flight.
    const all = await Promise.allSettled([1, 2, 3].map(() => ca.secureContextFor('other.example.test')));
    expect(all.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(ca.stats()).toMatchObject({ minted: 0, cacheSize: 0, inFlight: 0, coalesced: 2 });
    ca.close();
  });

  it('rejects calls after close()', async () => {
    const ca = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'w' });
    await ca.secureContextFor('a.test');
    ca.close();
    expect(await rejection(() => ca.secureContextFor('a.test'))).toMatchObject({ kind: 'invalid', code: 'ca.closed' });
    expect(ca.stats().cacheSize).toBe(0);
  });

  it.each([
    ['', 'empty'],
    ['*.example.test', 'wildcard'],
    ['a.*.test', 'infix wildcard'],
    ['API.example.test', 'not lowercased'],
    ['example.test.', 'trailing dot'],
    ['a..b', 'empty label'],
    [`${'a'.repeat(64)}.test`, 'label too long'],
    [`${'a.'.repeat(127)}ab`, 'name too long'],
    ['-a.test', 'leading hyphen'],
    ['a-.test', 'trailing hyphen'],
    ['bücher.example', 'not punycode'],
    ['../../etc/passwd', 'path traversal'],
    ['a/b', 'slash'],
    ['a b', 'space'],
    ['a\u0000b', 'NUL'],
    ['127.1', 'short IPv4 spelling'],
    ['0x7f.0.0.1', 'hex IPv4 spelling'],
    ['1.2.3.04', 'octal-looking IPv4'],
    ['[::1]', 'bracketed IPv6'],
    ['fe80::1%eth0', 'zone id'],
    ['::FFFF:1.2.3.4', 'uppercase IPv6'],
  ])('rejects %j (%s) with invalid/ca.invalid_name and mints nothing', async (name) => {
    expect(() => parseLeafName(name)).toThrow(expect.objectContaining({ kind: 'invalid', code: 'ca.invalid_name' }));
  });

  it.each([
    ['api.example.test', 'dns'],
    ['localhost', 'dns'],
    ['xn--bcher-kva.example', 'dns'],
    ['_dmarc.example.test', 'dns'],
    ['a1-b2.c3', 'dns'],
    ['127.0.0.1', 'ip'],
    ['10.0.2.2', 'ip'],
    ['::1', 'ip'],
    ['2001:db8::1', 'ip'],
    ['::ffff:102:304', 'ip'],
    ['::ffff:1.2.3.4', 'ip'],
    ['0:0:0:0:0:0:0:1', 'ip'],
  ])('accepts %j as %s', (name, kind) => {
    expect(parseLeafName(name)).toEqual({ kind, name });
  });

  it('a rejected name reaches neither the cache nor the signer', async () => {
    const ca = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'w' });
    expect(await rejection(() => ca.secureContextFor('*.example.test'))).toMatchObject({ code: 'ca.invalid_name' });
    expect(ca.stats()).toMatchObject({ minted: 0, cacheSize: 0, inFlight: 0 });
    ca.close();
  });

  it('rejects a nonsensical cache size or leaf lifetime', async () => {
    const dir = join(await tempDir(), 'ca');
    (await createCa({ dir, workspace: 'w' })).close();
    expect(await rejection(() => loadCa({ dir, cacheSize: 0 }))).toMatchObject({ kind: 'invalid', code: 'ca.invalid_option' });
    expect(await rejection(() => loadCa({ dir, leafValidityDays: 0 }))).toMatchObject({ kind: 'invalid', code: 'ca.invalid_option' });
  });
});

describe('parseLeafName on arbitrary input', () => {
  const hostish = fc.stringMatching(/^[a-zA-Z0-9_.*:%\[\]\/ -]{0,80}$/);
  it('either accepts a strict LDH name or IP literal, or throws invalid/ca.invalid_name; nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(hostish, fc.string({ maxLength: 300 }), fc.domain(), fc.ipV4(), fc.ipV6()), (raw) => {
        let parsed: ReturnType<typeof parseLeafName>;
        try {
          parsed = parseLeafName(raw);
        } catch (err) {
          expect(err).toMatchObject({ kind: 'invalid', code: 'ca.invalid_name' });
          return;
        }
        expect(parsed.name).toBe(raw);
        if (parsed.kind === 'dns') expect(raw).toMatch(/^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$/);
        else expect(ipOctets(raw).length).toBe(raw.includes(':') ? 16 : 4);
      }),
      { numRuns: 3000 },
    );
  });

  it('accepts every lowercased domain and IP fast-check generates', () => {
    fc.assert(fc.property(fc.domain(), (d) => { expect(parseLeafName(d.toLowerCase()).kind).toBe('dns'); }), { numRuns: 500 });
    fc.assert(fc.property(fc.ipV4(), (ip) => { expect(parseLeafName(ip).kind).toBe('ip'); }), { numRuns: 500 });
    fc.assert(fc.property(fc.ipV6(), (ip) => { expect(parseLeafName(ip.toLowerCase()).kind).toBe('ip'); }), { numRuns: 500 });
  });
});

describe('leaf encoding details', () => {
  it.each([
    ['127.0.0.1', '7f000001'],
    ['::1', '00000000000000000000000000000001'],
    ['2001:db8::1', '20010db8000000000000000000000001'],
    ['::ffff:102:304', '00000000000000000000ffff01020304'],
    ['::ffff:1.2.3.4', '00000000000000000000ffff01020304'],
    ['64:ff9b::1.2.3.4', '0064ff9b000000000000000001020304'],
    ['0:0:0:0:0:0:0:1', '00000000000000000000000000000001'],
    ['fe80::', 'fe800000000000000000000000000000'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
  ])('ipOctets(%j) = %s', (ip, hex) => {
    expect(ipOctets(ip).toString('hex')).toBe(hex);
  });

  it('switches from UTCTime to GeneralizedTime in 2050 (RFC 5280 4.1.2.5)', () => {
    expect(time(new Date('2049-12-31T23:59:59.900Z')).toString('hex')).toBe('170d' + Buffer.from('491231235959Z').toString('hex'));
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('hex')).toBe('180f' + Buffer.from('20500101000000Z').toString('hex'));
  });

  it('encodes ECDSA r||s as a DER SEQUENCE of minimal positive INTEGERs', () => {
    const r = Buffer.alloc(32, 0);
    r[31] = 5;
    const s = Buffer.alloc(32, 0xff);
    expect(ecdsaSignatureToDer(Buffer.concat([r, s])).toString('hex')).toBe('3026' + '020105' + '022100' + 'ff'.repeat(32));
  });
});

describe('agreement with the policy normalisers the proxy uses', () => {
  it.each([
    'API.Example.TEST.', 'bücher.example', 'xn--bcher-kva.example', 'localhost', 'a-b.c_d.test', 'LOCALHOST',
  ])('normalizeHost(%j) is mintable', (raw) => {
    const host = normalizeHost(raw);
    expect(host).not.toBeNull();
    expect(parseLeafName(host as string)).toEqual({ kind: 'dns', name: host });
  });

  it.each([
    '127.0.0.1', '10.0.2.2', '::1', '[::1]', '2001:DB8::1', '::ffff:1.2.3.4', '2001:db8:0:0:1:0:0:1', '64:ff9b::1.2.3.4', '::', 'fe80::1:0:0:0',
  ])('parseIpLiteral(%j) is mintable with the same octets', (raw) => {
    const ip = parseIpLiteral(raw);
    expect(ip).not.toBeNull();
    expect(parseLeafName(ip as string)).toEqual({ kind: 'ip', name: ip });
    expect(ipOctets(ip as string).length).toBe(ip?.includes(':') ? 16 : 4);
  });
});
