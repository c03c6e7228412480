// Address classification and strict IP parsing, table-driven by category with RFC references.
import { describe, expect, it } from 'vitest';
import { classifyAddress, isInternalAddress, normalizeHost, parseIpLiteral } from '../../src/policy/index.js';

type Row = [ip: string, cls: string, internal: boolean];

const categories: Record<string, Row[]> = {
  'loopback (RFC 1122, RFC 4291)': [
    ['127.0.0.1', 'loopback', true],
    ['127.255.255.254', 'loopback', true],
    ['::1', 'loopback', true],
  ],
  'private (RFC 1918) and its boundaries': [
    ['10.0.0.0', 'private', true],
    ['10.255.255.255', 'private', true],
    ['9.255.255.255', 'public', false], // just below 10/8
    ['11.0.0.0', 'public', false], // just above 10/8
    ['172.15.255.255', 'public', false], // just below 172.16/12
    ['172.16.0.0', 'private', true],
    ['172.31.255.255', 'private', true],
    ['172.32.0.0', 'public', false], // just above 172.16/12
    ['192.168.0.1', 'private', true],
    ['192.169.0.1', 'public', false],
  ],
  'CGNAT (RFC 6598) and its boundaries': [
    ['100.63.255.255', 'public', false], // just below 100.64/10
    ['100.64.0.0', 'cgnat', true],
    ['100.127.255.255', 'cgnat', true],
    ['100.128.0.0', 'public', false], // just above
  ],
  'link-local and cloud metadata': [
    ['169.254.0.1', 'link_local', true],
    ['169.254.169.254', 'metadata', true], // AWS/GCP/Azure/OCI IMDS
    ['fd00:ec2::254', 'metadata', true], // AWS IMDS over IPv6
    ['100.100.100.200', 'metadata', true], // Alibaba
    ['fe80::1', 'link_local', true],
  ],
  'unspecified, this network, broadcast, multicast, reserved': [
    ['0.0.0.0', 'unspecified', true],
    ['0.1.2.3', 'this_network', true],
    ['::', 'unspecified', true],
    ['255.255.255.255', 'broadcast', true],
    ['224.0.0.1', 'multicast', true],
    ['239.255.255.250', 'multicast', true],
    ['ff02::1', 'multicast', true],
    ['240.0.0.1', 'reserved', true],
    ['192.0.0.8', 'reserved', true],
    ['198.18.0.1', 'benchmarking', true], // RFC 2544
    ['100::1', 'reserved', true], // RFC 6666 discard
    ['4000::1', 'reserved', true], // outside 2000::/3
  ],
  'unique local (RFC 4193)': [
    ['fc00::1', 'unique_local', true],
    ['fdff:ffff::1', 'unique_local', true],
    ['fbff:ffff::1', 'reserved', true], // just below fc00::/7, outside 2000::/3
    ['fec0::1', 'private', true], // deprecated site-local
  ],
  'public and documentation': [
    ['8.8.8.8', 'public', false],
    ['1.1.1.1', 'public', false],
    ['2606:4700:4700::1111', 'public', false],
    ['192.0.2.1', 'documentation', false], // RFC 5737 TEST-NET-1
    ['203.0.113.9', 'documentation', false],
    ['2001:db8::1', 'documentation', false], // RFC 3849
  ],
  'IPv4 embedded in IPv6: classified by the IPv4 inside': [
    ['::ffff:127.0.0.1', 'loopback', true], // IPv4-mapped
    ['::ffff:7f00:1', 'loopback', true], // same, hex spelling
    ['::ffff:169.254.169.254', 'metadata', true],
    ['::ffff:10.0.0.1', 'private', true],
    ['::ffff:8.8.8.8', 'public', false],
    ['::ffff:0:127.0.0.1', 'loopback', true], // SIIT IPv4-translated
    ['::127.0.0.1', 'loopback', true], // deprecated IPv4-compatible
    ['::10.0.0.1', 'private', true],
    ['64:ff9b::127.0.0.1', 'loopback', true], // NAT64 (RFC 6052)
    ['64:ff9b::a9fe:a9fe', 'metadata', true], // NAT64 of 169.254.169.254
    ['64:ff9b::808:808', 'public', false], // NAT64 of 8.8.8.8
    ['64:ff9b:1::1', 'private', true], // RFC 8215 local-use NAT64
    ['2002:7f00:1::', 'loopback', true], // 6to4 of 127.0.0.1
    ['2002:c0a8:101::1', 'private', true], // 6to4 of 192.168.1.1
    ['2002:808:808::1', 'public', false], // 6to4 of 8.8.8.8
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'loopback', true], // Teredo, client ~0x80fffffe = 127.0.0.1
  ],
};

describe('classifyAddress', () => {
  for (const [category, rows] of Object.entries(categories)) {
    describe(category, () => {
      it.each(rows)('%s is %s (internal: %s)', (ip, cls, internal) => {
        const c = classifyAddress(ip);
        expect(c?.class).toBe(cls);
        expect(c?.internal).toBe(internal);
        expect(isInternalAddress(ip)).toBe(internal);
      });
    });
  }

  it('reports the IPv4 address it found inside an IPv6 one', () => {
    expect(classifyAddress('64:ff9b::a9fe:a9fe')?.embedded).toEqual({ via: 'nat64', ipv4: '169.254.169.254' });
    expect(classifyAddress('::ffff:127.0.0.1')?.embedded).toEqual({ via: 'ipv4_mapped', ipv4: '127.0.0.1' });
    expect(classifyAddress('127.0.0.1')?.embedded).toBeUndefined();
  });
});

// Spellings a URL parser or inet_aton would read as an address: none is an IP here, nor a host name.
const ipTricks: [spelling: string, meaning: string][] = [
  ['127.1', 'short form (inet_aton: 127.0.0.1)'],
  ['127.0.1', 'three-part form'],
  ['0x7f.0.0.1', 'hex octet'],
  ['0x7f000001', 'whole hex'],
  ['0177.0.0.1', 'octal octet'],
  ['017700000001', 'whole octal'],
  ['2130706433', 'whole decimal'],
  ['127.0.0.01', 'leading zero in the last octet'],
  ['010.0.0.1', 'leading zero in the first octet'],
  ['127.000.000.001', 'zero-padded octets'],
  ['256.0.0.1', 'octet out of range'],
  ['1.2.3.4.5', 'five parts'],
  ['1.2.3.', 'trailing dot, three parts'],
  ['0x7f.1', 'hex short form'],
  ['１２７.０.０.１', 'fullwidth digits (IDNA maps them to 127.0.0.1)'],
  ['fe80::1%eth0', 'IPv6 zone id'],
  ['[::1', 'unclosed bracket'],
  ['::1]', 'stray bracket'],
  ['1::2::3', 'two "::"'],
  ['1:2:3:4:5:6:7:8:9', 'nine groups'],
  ['12345::1', 'five hex digits'],
  ['1.2.3.4::', 'dotted IPv4 before "::"'],
  ['::ffff:127.1', 'short IPv4 inside IPv6'],
  ['::ffff:1.2.3.04', 'leading zero inside IPv6'],
  [':1::', 'single leading colon'],
  ['1::', 'valid (control row below)'],
];

describe('IP notation tricks', () => {
  it.each(ipTricks.filter(([s]) => s !== '1::'))('%s (%s) is neither an IP literal nor a host name', (spelling) => {
    expect(parseIpLiteral(spelling)).toBeNull();
    expect(normalizeHost(spelling)).toBeNull();
    // Fail closed: anything that is not a strict literal counts as internal.
    expect(isInternalAddress(spelling)).toBe(true);
    expect(classifyAddress(spelling)).toBeNull();
  });

  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['[::1]', '::1'],
    ['1::', '1::'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // RFC 5952: first longest run
    ['2001:0db8::0001', '2001:db8::1'],
    ['1:2:3:4:5:6:7:0', '1:2:3:4:5:6:7:0'], // a single zero group is not compressed
    ['::ffff:7f00:1', '::ffff:127.0.0.1'],
    ['::FFFF:127.0.0.1', '::ffff:127.0.0.1'],
    ['[64:ff9b::1.2.3.4]', '64:ff9b::102:304'],
  ])('%s has the canonical form %s', (raw, canonical) => {
    expect(parseIpLiteral(raw)).toBe(canonical);
    expect(parseIpLiteral(canonical)).toBe(canonical);
  });
});
