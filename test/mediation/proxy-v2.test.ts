/**
 * The PROXY v2 codec: round trips, hand-built headers of every family, each declared error, and
 * fast-check properties: a header cut at every offset parses as need_more until complete, and any
 * byte string parses to the same result whole or fed in pieces.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeMediationHeader,
  encodeProxyV2,
  parseProxyV2,
  PROXY_V2_SIGNATURE,
  readMediationTlvs,
  type ProxyV2Parse,
} from '../../src/mediation/proxy-v2.js';

/** Feeds `input` in the given pieces as a receiver would, parsing the accumulated bytes after each. */
function parseInPieces(input: Buffer, cuts: readonly number[]): ProxyV2Parse {
  let result: ProxyV2Parse = { kind: 'need_more' };
  let previous = 0;
  for (const cut of [...cuts, input.length]) {
    if (cut < previous) continue;
    result = parseProxyV2(input.subarray(0, cut));
    if (result.kind !== 'need_more') return result;
    previous = cut;
  }
  return result;
}

function header(fixed: number[], payload: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(payload.length);
  return Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from(fixed), len, payload]);
}

describe('encode and parse', () => {
  it('round-trips the broker header and its TLVs', () => {
    const facts = { workspace: 'dev-box', runtimeId: 'rt-7f3a', port: 4294967295, conn: 'c0a8-1' };
    const bytes = encodeMediationHeader(facts);
    const parsed = parseProxyV2(Buffer.concat([bytes, Buffer.from('GET / HTTP/1.1\r\n')]));
    if (parsed.kind !== 'header') throw new Error(parsed.kind);
    expect(parsed.length).toBe(bytes.length);
    expect(parsed.header).toEqual({ command: 'proxy', family: 'unspec', transport: 'unspec' });
    expect(parsed.tlvs.map((t) => t.type)).toEqual([0x05, 0xe0, 0xe1, 0xe2]);
    expect(readMediationTlvs(parsed.tlvs)).toEqual(facts);
    // Byte 13 is version 2 / PROXY, byte 14 AF_UNSPEC/UNSPEC: what the docs promise receivers.
    expect([bytes[12], bytes[13]]).toEqual([0x21, 0x00]);
  });

  it('encodes LOCAL with no TLVs as the bare 16-byte header', () => {
    expect(encodeProxyV2('local', [])).toEqual(header([0x20, 0x00], Buffer.alloc(0)));
  });

  it('refuses TLVs that do not fit the 16-bit length', () => {
    expect(() => encodeProxyV2('proxy', [{ type: 0xe0, value: Buffer.alloc(0xffff) }])).toThrow(RangeError);
  });

  it('reads IPv4, IPv6 and Unix address blocks', () => {
    const v4 = Buffer.from([127, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb]);
    expect(parseProxyV2(header([0x21, 0x11], v4))).toMatchObject({
      kind: 'header',
      header: { family: 'inet', transport: 'stream', source: { address: '127.0.0.1', port: 8080 }, destination: { address: '10.0.0.2', port: 443 } },
      tlvs: [],
    });
    const v6 = Buffer.alloc(36);
    v6[15] = 1;
    v6.writeUInt16BE(53, 34);
    expect(parseProxyV2(header([0x21, 0x22], v6))).toMatchObject({
      header: { family: 'inet6', transport: 'dgram', source: { address: '0:0:0:0:0:0:0:1' }, destination: { port: 53 } },
    });
    const unix = Buffer.alloc(216);
    unix.write('/run/a.sock', 0);
    unix.write('/run/b.sock', 108);
    expect(parseProxyV2(header([0x20, 0x31], unix))).toMatchObject({
      header: { command: 'local', family: 'unix', source: { address: '/run/a.sock' }, destination: { address: '/run/b.sock' } },
    });
  });

  it.each([
    ['a PROXY v1 line', Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), 'bad_signature'],
    ['plain HTTP', Buffer.from('GET / HTTP/1.1\r\n'), 'bad_signature'],
    ['version 1 in the v2 framing', header([0x11, 0x00], Buffer.alloc(0)), 'bad_version'],
    ['command 2', header([0x22, 0x00], Buffer.alloc(0)), 'bad_command'],
    ['family 0x13', header([0x21, 0x13], Buffer.alloc(12)), 'bad_family'],
    ['family 0x01 (UNSPEC with STREAM)', header([0x21, 0x01], Buffer.alloc(0)), 'bad_family'],
    ['an IPv4 block cut short', header([0x21, 0x11], Buffer.alloc(8)), 'short_address'],
    ['a TLV running past the end', header([0x21, 0x00], Buffer.from([0xe0, 0x00, 0x05, 0x61])), 'bad_tlv'],
    ['a TLV header cut short', header([0x21, 0x00], Buffer.from([0xe0, 0x00])), 'bad_tlv'],
  ])('refuses %s', (_name, bytes, code) => {
    expect(parseProxyV2(bytes)).toMatchObject({ kind: 'error', code });
  });

  it('says need_more for an empty buffer and a prefix of the signature', () => {
    expect(parseProxyV2(Buffer.alloc(0))).toEqual({ kind: 'need_more' });
    expect(parseProxyV2(PROXY_V2_SIGNATURE.subarray(0, 5))).toEqual({ kind: 'need_more' });
  });

  it('readMediationTlvs refuses a header missing one of ours or with a malformed port', () => {
    const parsed = parseProxyV2(encodeProxyV2('proxy', [{ type: 0xe2, value: Buffer.alloc(3) }]));
    if (parsed.kind !== 'header') throw new Error(parsed.kind);
    expect(readMediationTlvs(parsed.tlvs)).toBeNull();
  });
});

const tlvArb = fc.record({ type: fc.integer({ min: 0, max: 255 }), value: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) });
const validHeaderArb = fc
  .tuple(fc.constantFrom<'local' | 'proxy'>('local', 'proxy'), fc.array(tlvArb, { maxLength: 8 }), fc.uint8Array({ maxLength: 64 }))
  .map(([command, tlvs, trailing]) => ({ bytes: encodeProxyV2(command, tlvs), command, tlvs, trailing: Buffer.from(trailing) }));

describe('properties', () => {
  it('a valid header cut at every offset is need_more until it is complete, then the same header', () => {
    fc.assert(
      fc.property(validHeaderArb, ({ bytes, command, tlvs, trailing }) => {
        const whole = Buffer.concat([bytes, trailing]);
        for (let cut = 0; cut < bytes.length; cut++) expect(parseProxyV2(whole.subarray(0, cut)).kind).toBe('need_more');
        const parsed = parseProxyV2(whole);
        expect(parsed).toEqual({ kind: 'header', header: { command, family: 'unspec', transport: 'unspec' }, tlvs, length: bytes.length });
      }),
    );
  });

  it('any bytes parse the same whole as fed in pieces, and only to a value, need_more or a declared error', () => {
    const inputArb = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      // Mostly-valid inputs reach the deeper checks: a valid header with bytes flipped or the tail cut.
      fc.tuple(validHeaderArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 })).map(([h, flips]) => {
        const b = Buffer.concat([h.bytes, h.trailing]);
        for (const [at, value] of flips) b[at % b.length] = value;
        return b;
      }),
    );
    fc.assert(
      fc.property(inputArb, fc.array(fc.nat({ max: 400 }), { maxLength: 6 }), (input, cuts) => {
        const whole = parseProxyV2(input);
        expect(['need_more', 'header', 'error']).toContain(whole.kind);
        if (whole.kind === 'error') {
          expect(['bad_signature', 'bad_version', 'bad_command', 'bad_family', 'short_address', 'bad_tlv']).toContain(whole.code);
        }
        expect(parseInPieces(input, [...cuts].sort((a, b) => a - b))).toEqual(whole);
        // Once decided, more bytes change nothing.
        if (whole.kind !== 'need_more') expect(parseProxyV2(Buffer.concat([input, Buffer.from([0, 1, 2])]))).toEqual(whole);
      }),
      { numRuns: 2000 },
    );
  });
});
