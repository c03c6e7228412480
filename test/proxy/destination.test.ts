// Pure parsing of what the guest names: CONNECT authorities, absolute URLs, Host headers, SNI binding.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseAbsoluteUrl, parseAuthority } from '../../src/proxy/destination.js';
import { checkAuthorityHeader, checkSni, checkUrlDestination } from '../../src/proxy/identity.js';

describe('parseAuthority (CONNECT)', () => {
  it.each([
    ['origin.test:443', { kind: 'name', host: 'origin.test', port: 443 }],
    ['ORIGIN.Test.:8443', { kind: 'name', host: 'origin.test', port: 8443 }],
    ['127.0.0.1:80', { kind: 'ip', ip: '127.0.0.1', port: 80 }],
    ['[::1]:443', { kind: 'ip', ip: '::1', port: 443 }],
    ['[::ffff:127.0.0.1]:443', { kind: 'ip', ip: expect.any(String), port: 443 }],
    ['bücher.example:443', { kind: 'name', host: 'xn--bcher-kva.example', port: 443 }],
  ])('%s', (raw, destination) => {
    expect(parseAuthority(raw, null)).toEqual({ kind: 'ok', destination });
  });

  it.each([
    ['origin.test', 'no port on CONNECT'],
    ['origin.test:0', 'port 0'],
    ['origin.test:65536', 'port too large'],
    ['origin.test:+443', 'signed port'],
    ['origin.test:0443', 'leading zero'],
    ['origin.test: 443', 'space'],
    ['::1:443', 'bare IPv6'],
    ['[::1:443', 'unterminated bracket'],
    ['user@origin.test:443', 'user-info'],
    ['127.1:443', 'short IPv4'],
    ['0x7f.0.0.1:443', 'hex IPv4'],
    ['017700000001:443', 'octal IPv4'],
    ['2130706433:80', 'decimal IPv4'],
    ['[127.0.0.1]:443', 'IPv4 in brackets'],
    ['a..b:443', 'empty label'],
    [':443', 'empty host'],
  ])('rejects %s (%s)', (raw) => {
    expect(parseAuthority(raw, null).kind).toBe('invalid');
  });

  it('property: never throws, and an accepted authority round-trips through its canonical form', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (raw) => {
        const parsed = parseAuthority(raw, null);
        if (parsed.kind === 'ok') {
          const d = parsed.destination;
          const host = d.kind === 'name' ? d.host : d.ip.includes(':') ? `[${d.ip}]` : d.ip;
          expect(parseAuthority(`${host}:${d.port}`, null)).toEqual(parsed);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('parseAbsoluteUrl', () => {
  it('reads host, default port and path', () => {
    expect(parseAbsoluteUrl('http://Origin.Test/a/b?x=1')).toEqual({ kind: 'ok', destination: { kind: 'name', host: 'origin.test', port: 80 }, path: '/a/b?x=1' });
    expect(parseAbsoluteUrl('http://origin.test:8080')).toEqual({ kind: 'ok', destination: { kind: 'name', host: 'origin.test', port: 8080 }, path: '/' });
    expect(parseAbsoluteUrl('http://origin.test?q')).toMatchObject({ path: '/?q' });
    expect(parseAbsoluteUrl('https://origin.test/x', 'https')).toMatchObject({ destination: { port: 443 } });
  });
  it.each(['https://origin.test/', 'ftp://x/', 'http://user:pw@origin.test/', 'http://127.1/', 'http://[::1/', '/relative'])('rejects %s', (raw) => {
    expect(parseAbsoluteUrl(raw).kind).toBe('invalid');
  });
});

describe('identity binding', () => {
  const name = { kind: 'name', host: 'github.com', port: 443 } as const;
  const ip = { kind: 'ip', ip: '93.184.216.34', port: 443 } as const;
  it.each([
    ['github.com', 'same'],
    ['GitHub.COM.', 'same'],
    [null, 'same'],
    ['github.com.evil.test', 'mismatch'],
    ['evilgithub.com', 'mismatch'],
    ['api.github.com', 'mismatch'],
    ['93.184.216.34', 'mismatch'],
    // Go clients such as hey send host:port; it binds only with the bound port.
    ['github.com:443', 'same'],
    ['github.com:8443', 'mismatch'],
    ['evil.test:443', 'mismatch'],
  ])('SNI %s on a github.com CONNECT: %s', (sni, kind) => {
    expect(checkSni(name, sni).kind).toBe(kind);
  });
  it.each([
    [null, 'same'],
    ['github.com', 'mismatch'],
    ['github.com:443', 'mismatch'],
    // Not allowed by RFC 6066, but sent by some clients (hey: ip:port); it names the same destination.
    ['93.184.216.34', 'same'],
    ['93.184.216.34:443', 'same'],
    ['93.184.216.34:8443', 'mismatch'],
    ['93.184.216.35', 'mismatch'],
    ['93.184.216.35:443', 'mismatch'],
    ['1572395042', 'mismatch'],
  ])('SNI %s on an IP CONNECT: %s', (sni, kind) => {
    expect(checkSni(ip, sni).kind).toBe(kind);
  });
  it.each([
    ['github.com', 'same'],
    ['github.com:443', 'same'],
    ['GITHUB.com.:443', 'same'],
    [undefined, 'same'],
    ['github.com:8443', 'mismatch'],
    ['evil.test', 'mismatch'],
    ['github.com.evil.test', 'mismatch'],
    ['github.com@evil.test', 'mismatch'],
    ['127.0.0.1', 'mismatch'],
  ])('Host %s: %s', (host, kind) => {
    expect(checkAuthorityHeader(name, host, 'host').kind).toBe(kind);
  });
  it('absolute URLs must name the bound destination and port', () => {
    expect(checkUrlDestination(name, { kind: 'name', host: 'github.com', port: 443 }, 'https://github.com/').kind).toBe('same');
    expect(checkUrlDestination(name, { kind: 'name', host: 'github.com', port: 80 }, 'http://github.com/').kind).toBe('mismatch');
    expect(checkUrlDestination(name, { kind: 'name', host: 'evil.test', port: 443 }, 'https://evil.test/').kind).toBe('mismatch');
  });
});
