// ClientHello peek: real hellos captured from node:tls, cut at every offset and fuzzed with fast-check;
// the SSLv2-format hello built by hand and shown to be one a real OpenSSL server answers.
import { once } from 'node:events';
import { createServer, connect as connectTcp, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import { describe, expect, it, beforeAll } from 'vitest';
import fc from 'fast-check';
import { parseClientHello, CLIENT_HELLO_ERRORS, MAX_CLIENT_HELLO_BYTES } from '../../src/proxy/client-hello.js';
import { sslv2ClientHello, startLegacyTlsServer } from './legacy-tls.js';

/** The first bytes a real TLS client sends, captured by a server that never answers. */
async function captureHello(options: { servername?: string; ALPNProtocols?: string[] }): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const got = new Promise<Buffer>((resolve) => {
    server.once('connection', (socket) => {
      let data = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (parseClientHello(data).kind !== 'need_more') {
          resolve(data);
          socket.destroy();
        }
      });
    });
  });
  const client = connect({ host: '127.0.0.1', port, ...options });
  client.on('error', () => undefined);
  const hello = await got;
  client.destroy();
  server.close();
  return hello;
}

let withSni: Buffer;
let withoutSni: Buffer;

beforeAll(async () => {
  withSni = await captureHello({ servername: 'origin.test', ALPNProtocols: ['h2', 'http/1.1'] });
  withoutSni = await captureHello({});
});

describe('parseClientHello', () => {
  it('reads SNI and ALPN from a real ClientHello', () => {
    expect(parseClientHello(withSni)).toEqual({ kind: 'client_hello', sni: 'origin.test', alpn: ['h2', 'http/1.1'] });
  });

  it('reports no SNI when the client sent none', () => {
    expect(parseClientHello(withoutSni)).toEqual({ kind: 'client_hello', sni: null, alpn: [] });
  });

  it('asks for more at every cut of a valid hello', () => {
    for (let cut = 0; cut < withSni.length; cut++) {
      expect(parseClientHello(withSni.subarray(0, cut)).kind).toBe('need_more');
    }
  });

  it('gives the same answer when a valid hello is split across TLS records', () => {
    const body = withSni.subarray(5);
    const split = 40;
    const record = (part: Buffer) => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, part.length >> 8, part.length & 0xff]), part]);
    const twoRecords = Buffer.concat([record(body.subarray(0, split)), record(body.subarray(split))]);
    expect(parseClientHello(twoRecords)).toEqual(parseClientHello(withSni));
  });

  it('refuses plain HTTP and other record types', () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n'))).toEqual({ kind: 'error', error: 'not_tls' });
    expect(parseClientHello(Buffer.from([0x17, 0x03, 0x03, 0, 1, 0]))).toEqual({ kind: 'error', error: 'not_tls' });
    const serverHello = Buffer.from(withSni);
    serverHello[5] = 0x02;
    expect(parseClientHello(serverHello)).toEqual({ kind: 'error', error: 'not_client_hello' });
  });

  it('refuses a hello claiming to be larger than the cap', () => {
    const huge = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00]);
    expect(MAX_CLIENT_HELLO_BYTES).toBeLessThan(0x10000);
    expect(parseClientHello(huge)).toEqual({ kind: 'error', error: 'too_large' });
  });

  it('property: any prefix plus random bytes gives need_more, the same hello, or a declared error', () => {
    const full = parseClientHello(withSni);
    fc.assert(
      fc.property(fc.nat(withSni.length), fc.uint8Array({ maxLength: 64 }), (cut, tail) => {
        const input = Buffer.concat([withSni.subarray(0, cut), Buffer.from(tail)]);
        const result = parseClientHello(input);
        if (cut === withSni.length) expect(result).toEqual(full);
        else if (result.kind === 'error') expect(CLIENT_HELLO_ERRORS).toContain(result.error);
        else expect(['need_more', 'client_hello']).toContain(result.kind);
      }),
      { numRuns: 2000 },
    );
  });

  it('property: single-byte corruption never throws and keeps to the declared results', () => {
    fc.assert(
      fc.property(fc.nat(withSni.length - 1), fc.integer({ min: 0, max: 255 }), (at, value) => {
        const input = Buffer.from(withSni);
        input[at] = value;
        const result = parseClientHello(input);
        expect(['need_more', 'client_hello', 'error']).toContain(result.kind);
      }),
      { numRuns: 3000 },
    );
  });

  it('property: arbitrary bytes after a TLS record header never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const input = Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), Buffer.from(bytes)]);
        expect(['need_more', 'client_hello', 'error']).toContain(parseClientHello(input).kind);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('an SSLv2-format ClientHello (RFC 5246 E.2)', () => {
  it('is a hello a real OpenSSL server answers with a TLS 1.2 ServerHello', async () => {
    const legacy = await startLegacyTlsServer();
    try {
      const client = connectTcp({ host: '127.0.0.1', port: legacy.port });
      client.on('error', () => undefined);
      client.write(sslv2ClientHello());
      const [reply] = (await once(client, 'data')) as [Buffer];
      client.destroy();
      // Handshake record, TLS 1.2, first message ServerHello (2) choosing version 3.3.
      expect([reply[0], reply[1], reply[2], reply[5], reply[9], reply[10]]).toEqual([0x16, 0x03, 0x03, 0x02, 0x03, 0x03]);
    } finally {
      legacy.close();
    }
  });

  it.each([
    ['3.1 (TLS 1.0)', 0x0301],
    ['3.2 (TLS 1.1)', 0x0302],
    ['3.3 (TLS 1.2)', 0x0303],
    ['3.4 (OpenSSL caps it at TLS 1.2)', 0x0304],
  ])('is sslv2_hello, never not_tls (offered version %s)', (_, version) => {
    expect(parseClientHello(sslv2ClientHello(version))).toEqual({ kind: 'error', error: 'sslv2_hello' });
  });

  it('asks for more until the version byte, then names it at every longer cut', () => {
    const hello = sslv2ClientHello();
    for (let cut = 0; cut <= hello.length; cut++) {
      expect(parseClientHello(hello.subarray(0, cut))).toEqual(cut < 4 ? { kind: 'need_more' } : { kind: 'error', error: 'sslv2_hello' });
    }
  });

  it('leaves other high-bit bytes not_tls: another SSLv2 message type, SSL 2.0 itself', () => {
    const otherMessage = sslv2ClientHello();
    otherMessage[2] = 0x02;
    expect(parseClientHello(otherMessage)).toEqual({ kind: 'error', error: 'not_tls' });
    expect(parseClientHello(otherMessage.subarray(0, 3))).toEqual({ kind: 'error', error: 'not_tls' });
    // OpenSSL refuses an SSLv2 hello whose version is not 3.x, so it stays raw on a non-TLS port.
    expect(parseClientHello(sslv2ClientHello(0x0002))).toEqual({ kind: 'error', error: 'not_tls' });
  });
});
