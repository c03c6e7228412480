/** Channel declarations: defaults, the CLI form, targets, and every refusal with its message. */
import { describe, expect, it } from 'vitest';
import { isMicroagentError } from '../../src/errors.js';
import { DEFAULT_LIMITS, parseChannelDeclarations, validateChannels } from '../../src/mediation/channels.js';
import { formatTarget, parseTarget } from '../../src/mediation/target.js';

function refusal(run: () => unknown): { message: string; kind: string; code: string; remediation: string } {
  try {
    run();
  } catch (err) {
    if (!isMicroagentError(err)) throw err;
    return { message: err.message, kind: err.kind, code: err.code, remediation: err.remediation };
  }
  throw new Error('expected a refusal');
}

describe('validateChannels', () => {
  it('applies the defaults: required, fail closed, PROXY protocol on, default limits', () => {
    expect(validateChannels([{ port: 5000, target: '127.0.0.1:8080' }])).toEqual([
      {
        port: 5000,
        target: { kind: 'tcp', host: '127.0.0.1', port: 8080 },
        targetText: '127.0.0.1:8080',
        required: true,
        failClosed: true,
        proxyProtocol: true,
        limits: DEFAULT_LIMITS,
      },
    ]);
  });

  it('keeps explicit settings and merges partial limits over the defaults', () => {
    const [channel] = validateChannels([
      { port: 1, target: '/run/ctl.sock', required: false, failClosed: false, proxyProtocol: false, limits: { maxConnections: 2 } },
    ]);
    expect(channel).toMatchObject({ required: false, failClosed: false, proxyProtocol: false, target: { kind: 'unix', path: '/run/ctl.sock' } });
    expect(channel?.limits).toEqual({ ...DEFAULT_LIMITS, maxConnections: 2 });
  });

  it('accepts several channels and the largest vsock port', () => {
    const channels = validateChannels([
      { port: 1, target: 'localhost:1' },
      { port: 2 ** 32 - 1, target: '[::1]:65535' },
      { port: 3, target: 'unix:8080' }, // a host named unix: no scheme prefix is followed by a bare port
    ]);
    expect(channels.map((c) => [c.port, c.targetText])).toEqual([[1, 'localhost:1'], [4294967295, '[::1]:65535'], [3, 'unix:8080']]);
  });

  it.each([
    ['required without failClosed', [{ port: 5, target: '127.0.0.1:1', failClosed: false }], /mediation channel 5: field failClosed: a required channel must fail closed/],
    ['port 0', [{ port: 0, target: '127.0.0.1:1' }], /mediation channel #1: field port: must be an integer from 1 to 4294967295.*got 0/],
    ['port past 32 bits', [{ port: 2 ** 32, target: '127.0.0.1:1' }], /field port: .*got 4294967296/],
    ['fractional port', [{ port: 1.5, target: '127.0.0.1:1' }], /field port/],
    ['port as text', [{ port: '5', target: '127.0.0.1:1' }], /field port: .*got "5"/],
    ['duplicate ports', [{ port: 7, target: '127.0.0.1:1' }, { port: 7, target: '/a.sock' }], /mediation channel 7: field port: declared twice \(entries 1 and 2\)/],
    ['relative socket path', [{ port: 1, target: 'run/x.sock' }], /mediation channel 1: field target: "run\/x.sock" is neither host:port nor an absolute Unix socket path/],
    ['missing target', [{ port: 1 }], /mediation channel 1: field target: must be HOST:PORT.*got nothing/],
    ['TCP port out of range', [{ port: 1, target: '127.0.0.1:65536' }], /needs a TCP port from 1 to 65535/],
    ['bare IPv6', [{ port: 1, target: '::1:80' }], /write an IPv6 target as \[address\]:port/],
    ['socat-style TCP prefix', [{ port: 1, target: 'tcp:127.0.0.1:80' }], /"tcp:127.0.0.1:80": drop the "tcp:" prefix/],
    ['socat-style Unix prefix', [{ port: 1, target: 'unix:/run/x.sock' }], /"unix:\/run\/x.sock": drop the "unix:" prefix/],
    ['URL', [{ port: 1, target: 'http://127.0.0.1:8080/' }], /is a URL: give the HOST:PORT its server listens on/],
    ['bad IPv6', [{ port: 1, target: '[::g]:80' }], /"::g" is not an IPv6 address/],
    ['IPv4 trick', [{ port: 1, target: '127.1:80' }], /"127.1" is not an IPv4 address or host name/],
    ['socket path too long', [{ port: 1, target: `/${'a'.repeat(120)}` }], /longer than 107 bytes/],
    ['unknown field', [{ port: 1, target: '/a.sock', failclosed: true }], /mediation channel 1: field failclosed: unknown field/],
    ['non-boolean flag', [{ port: 1, target: '/a.sock', proxyProtocol: 'yes' }], /field proxyProtocol: must be true or false, got "yes"/],
    ['unknown limit', [{ port: 1, target: '/a.sock', limits: { maxConns: 3 } }], /field limits.maxConns: unknown limit/],
    ['limit out of bounds', [{ port: 1, target: '/a.sock', limits: { idleTimeoutMs: 5 } }], /field limits.idleTimeoutMs: must be an integer from 100/],
    ['not a list', { port: 1, target: '/a.sock' }, /expected a list/],
    ['not an object', ['1=/a.sock'], /mediation channel #1: expected an object/],
  ])('refuses %s', (_name, input, message) => {
    const err = refusal(() => validateChannels(input));
    expect(err.kind).toBe('invalid');
    expect(err.code).toBe('mediation.invalid');
    expect(err.message).toMatch(message);
    expect(err.remediation).toMatch(/docs\/mediation.md/);
  });

  it('reports every problem at once', () => {
    const err = refusal(() =>
      validateChannels([
        { port: 0, target: 'nope' },
        { port: 3, target: '/ok.sock', failClosed: false },
      ]),
    );
    expect(err.message.split('\n')).toHaveLength(4);
  });
});

describe('parseChannelDeclarations (CLI form N=TARGET)', () => {
  it('parses TCP, IPv6 and Unix targets', () => {
    const channels = parseChannelDeclarations(['5000=127.0.0.1:8080', '5001=[::1]:9', '5002=/tmp/x.sock']);
    expect(channels.map((c) => [c.port, c.target])).toEqual([
      [5000, { kind: 'tcp', host: '127.0.0.1', port: 8080 }],
      [5001, { kind: 'tcp', host: '::1', port: 9 }],
      [5002, { kind: 'unix', path: '/tmp/x.sock' }],
    ]);
  });

  it('applies --no-proxy-protocol to every channel', () => {
    expect(parseChannelDeclarations(['1=/a.sock', '2=/b.sock'], { proxyProtocol: false }).map((c) => c.proxyProtocol)).toEqual([false, false]);
  });

  it.each([
    ['5000', /"5000": expected PORT=TARGET/],
    ['x=/a.sock', /"x=\/a.sock": expected PORT=TARGET/],
    ['-1=/a.sock', /expected PORT=TARGET/],
    ['0=/a.sock', /field port/],
    ['4294967296=/a.sock', /field port/],
    ['5=', /mediation channel 5: field target: is empty/],
    ['05000=127.0.0.1:80', /"05000=127.0.0.1:80": expected PORT=TARGET/], // no leading zeros, as target ports
  ])('refuses %s', (spec, message) => {
    expect(refusal(() => parseChannelDeclarations([spec])).message).toMatch(message);
  });

  it('refuses the same port twice', () => {
    expect(refusal(() => parseChannelDeclarations(['5=/a.sock', '5=/b.sock'])).message).toMatch(/declared twice/);
  });

  it('names a port declared twice even when an entry has another problem too', () => {
    const message = refusal(() => parseChannelDeclarations(['5000=127.1:80', '5000=/x'])).message;
    expect(message).toMatch(/127\.1/);
    expect(message).toMatch(/mediation channel 5000: field port: declared twice \(entries 1 and 2\)/);
  });
});

describe('targets', () => {
  it.each([
    ['127.0.0.1:80', '127.0.0.1:80'],
    ['LOCALHOST:80', 'localhost:80'],
    ['[0:0:0:0:0:0:0:1]:443', '[::1]:443'],
    ['[::ffff:127.0.0.1]:1', '[::ffff:7f00:1]:1'],
    ['/run/a b.sock', '/run/a b.sock'],
  ])('%s is canonically %s', (text, canonical) => {
    const parsed = parseTarget(text);
    if (!parsed.ok) throw new Error(parsed.problem);
    expect(formatTarget(parsed.target)).toBe(canonical);
  });

  it.each(['', ':80', 'host:', 'host:080', 'host:0', '[::1]', '[::1]80', '[fe80::1%eth0]:80', '/dir/', '0x7f.1:80', 'a..b:80', '-a.b:80'])(
    'refuses %j',
    (text) => {
      expect(parseTarget(text).ok).toBe(false);
    },
  );
});
