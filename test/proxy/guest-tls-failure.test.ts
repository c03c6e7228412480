// A guest that does not trust the workspace CA: real clients (curl, openssl s_client, undici) reject
// the intercepted handshake, each in its own way, and the close record says so in words an operator
// can act on, instead of OpenSSL's internal text. Also: a handshake we cut, and the wording table.
import { execFile } from 'node:child_process';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import type { AuditRecord } from '../../src/audit/index.js';
import { GUEST_LEFT_HANDSHAKE, guestTlsFailure } from '../../src/proxy/guest-tls-failure.js';
import { connectTunnel, curl, readUntil, startOriginBehindProxy, type TestProxy } from './helpers.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: origins
    action: allow
    hosts: [origin.test]
`;
const IDLE_MS = 400;

let tp: TestProxy;
let origin: number;

beforeAll(async () => {
  ({ port: origin, tp } = await startOriginBehindProxy(POLICY, { limits: { idleTimeoutMs: IDLE_MS } }));
});

afterAll(async () => {
  await tp?.close();
});

/** The close record of the newest tunnel, once it is written. */
async function lastClose(): Promise<AuditRecord & { event: 'egress.close' }> {
  const records = await tp.records((rs) => rs.at(-1)?.event === 'egress.close');
  const close = records.at(-1);
  expect(close?.event).toBe('egress.close');
  return close as AuditRecord & { event: 'egress.close' };
}

describe('a guest that rejects the intercepted certificate', () => {
  it('curl (alert unknown_ca): the close record says the client does not trust the workspace CA', async () => {
    const got = await curl(['-x', tp.url, `https://origin.test:${origin}/`]);
    expect(got.code).toBe(60); // curl: peer certificate cannot be authenticated
    const close = await lastClose();
    expect(close).toMatchObject({ host: 'origin.test', decrypted: false, signals: ['client_rejected_ca'], bytes_down: expect.any(Number) });
    expect(close.error).toContain('rejected the certificate for origin.test (alert unknown_ca)');
    expect(close.error).toContain('does not trust the workspace CA');
    expect(close.error).not.toMatch(/\n|rec_layer|deps\/openssl/);
  });

  it('openssl s_client through the proxy, verifying: the same signal', async () => {
    const out = await new Promise<string>((resolve) => {
      const child = execFile('openssl', ['s_client', '-proxy', `127.0.0.1:${tp.port}`, '-connect', `origin.test:${origin}`, '-servername', 'origin.test', '-verify_return_error', '-brief'], { timeout: 20_000 }, (_err, stdout, stderr) => resolve(stdout + stderr));
      child.stdin?.end();
    });
    expect(out).toContain('unable to get local issuer certificate');
    const close = await lastClose();
    expect(close).toMatchObject({ decrypted: false, signals: ['client_rejected_ca'] });
  });

  it('undici (no alert: node checks the certificate after the handshake and hangs up): the close record says the guest left mid-handshake', async () => {
    const err = await undiciFetch(`https://origin.test:${origin}/`, { dispatcher: new ProxyAgent(tp.url) }).then(
      () => null,
      (e: Error & { cause?: { code?: string } }) => e,
    );
    expect(err?.cause?.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    const close = await lastClose();
    expect(close).toMatchObject({ decrypted: false, error: GUEST_LEFT_HANDSHAKE.error });
    expect(close.signals).toBeUndefined();
  });

  it('a client that trusts the CA: decrypted, no error', async () => {
    const got = await curl(['-x', tp.url, '--cacert', tp.caPath, `https://origin.test:${origin}/`]);
    expect(got.status).toBe(200);
    const close = await lastClose();
    expect(close).toMatchObject({ decrypted: true });
    expect(close.signals).toBeUndefined();
    expect(close.error).toBeUndefined();
  });
});

it('a guest that stops answering mid-handshake is cut at the idle timeout, and the record says we cut it', async () => {
  // A real ClientHello, captured from node's TLS client, then nothing more: the proxy's ServerHello goes unanswered.
  const hello = await new Promise<Buffer>((resolve) => {
    const sink = createNetServer((s) => s.once('data', (d: Buffer) => {
      resolve(d);
      s.destroy();
      sink.close();
    }));
    sink.listen(0, '127.0.0.1', () => tlsConnect({ port: (sink.address() as AddressInfo).port, host: '127.0.0.1', servername: 'origin.test' }).on('error', () => undefined));
  });
  const { socket, status } = await connectTunnel(tp.port, `origin.test:${origin}`);
  expect(status).toBe(200);
  socket.write(hello);
  const { closed } = await readUntil(socket, () => false);
  expect(closed).toBe(true);
  const close = await lastClose();
  expect(close).toMatchObject({ decrypted: false, signals: ['slow_client'], error: `the guest's TLS handshake did not finish within the idle timeout (${IDLE_MS} ms)` });
});

describe('guestTlsFailure wording', () => {
  const openssl = (code: string, reason: string) =>
    Object.assign(new Error(`809CC714B07F0000:error:0A000418:SSL routines:ssl3_read_bytes:${reason}:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 48\n`), { code, reason });

  it.each([
    ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'tlsv1 alert unknown ca', 'unknown_ca'],
    ['ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'sslv3 alert bad certificate', 'bad_certificate'],
    ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN', 'sslv3 alert certificate unknown', 'certificate_unknown'],
    ['ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE', 'sslv3 alert unsupported certificate', 'unsupported_certificate'],
  ])('%s is a rejection of the workspace CA', (code, reason, alert) => {
    const failure = guestTlsFailure(openssl(code, reason), 'api.example.com');
    expect(failure.signals).toEqual(['client_rejected_ca']);
    expect(failure.error).toContain(`certificate for api.example.com (alert ${alert})`);
  });

  it.each([
    ['another alert', openssl('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'tlsv1 alert protocol version'), 'TLS handshake with the guest failed: tlsv1 alert protocol version'],
    ['a reset', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'TLS handshake with the guest failed: read ECONNRESET'],
    ['a multi-line message', new Error('first line\nsecond line'), 'TLS handshake with the guest failed: first line'],
    ['no message', Object.assign(new Error(''), { code: 'ERR_SOMETHING' }), 'TLS handshake with the guest failed: ERR_SOMETHING'],
  ])('anything else is one line of what went wrong: %s', (_label, err, error) => {
    expect(guestTlsFailure(err, 'h')).toEqual({ error, signals: [] });
  });
});
