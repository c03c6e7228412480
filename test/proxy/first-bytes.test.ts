// What a CONNECT tunnel's first guest bytes may become, through the real proxy, policy engine and audit
// log, with real servers behind it: an SSLv2-format ClientHello (which a real OpenSSL server still
// answers) is refused on every port, and bytes that are not TLS are refused on a TLS port, so neither
// becomes an uninspected raw TCP splice. On other ports non-TLS bytes stay raw TCP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/index.js';
import { DEFAULT_LIMITS } from '../../src/proxy/limits.js';
import { connectTunnel, decisions, readUntil, startHttpOrigin, startTestProxy, testResolver } from './helpers.js';
import { sslv2ClientHello, startLegacyTlsServer, type LegacyTlsServer } from './legacy-tls.js';

const POLICY = `version: 1
mode: guarded
rules:
  - id: legacy
    action: allow
    hosts: [legacy.test]
  - id: marked
    action: allow
    hosts: [marked.test]
    tls: true
  - id: spliced
    action: passthrough
    hosts: [spliced.test]
    tls: true
  - id: no-admin
    action: deny
    hosts: [paths.test]
    paths: ["/admin/**"]
  - id: paths-host
    action: allow
    hosts: [paths.test]
`;
const resolver = testResolver({ 'legacy.test': ['127.0.0.1'], 'marked.test': ['127.0.0.1'], 'spliced.test': ['127.0.0.1'], 'paths.test': ['127.0.0.1'] });

let legacy: LegacyTlsServer;
let httpPort: number;
let httpRequests = 0;
let closeHttp: () => void;

beforeAll(async () => {
  legacy = await startLegacyTlsServer();
  const http = await startHttpOrigin();
  http.server.on('request', () => httpRequests++);
  httpPort = http.port;
  closeHttp = () => http.server.close();
});
afterAll(() => {
  legacy?.close();
  closeHttp?.();
});

/**
 * Opens a tunnel to `authority` through a fresh proxy (so its audit log holds this flow alone), sends
 * `bytes` first (after `silentMs`), and returns the first answer (or the close) and the records once
 * the tunnel closed.
 */
async function sendFirst(authority: string, bytes: Buffer | string, silentMs = 0): Promise<{ reply: { text: string; closed: boolean }; records: AuditRecord[] }> {
  // The production window: one case waits past it.
  const tp = await startTestProxy(POLICY, { resolver, limits: { serverFirstWaitMs: DEFAULT_LIMITS.serverFirstWaitMs } });
  try {
    const { socket, status } = await connectTunnel(tp.port, authority);
    expect(status).toBe(200);
    if (silentMs > 0) await new Promise((resolve) => setTimeout(resolve, silentMs));
    socket.write(bytes);
    const reply = await readUntil(socket, (text) => text.length > 0);
    socket.destroy();
    return { reply, records: await tp.records((rs) => rs.some((r) => r.event === 'egress.close')) };
  } finally {
    await tp.close();
  }
}

/** The refusal: the CONNECT's https allow, then an https bad_request deny; never a tcp decision. */
function expectRefused(records: AuditRecord[], error: string): void {
  expect(decisions(records).map((d) => [d.protocol, d.verdict, d.reason])).toEqual([
    ['https', 'allow', 'rule_allow'],
    ['https', 'deny', 'bad_request'],
  ]);
  expect(decisions(records)[1]?.signals).toEqual([]);
  expect(records.find((r) => r.event === 'egress.close')).toMatchObject({ reason: 'bad_request', decrypted: false, bytes_down: 0, error: expect.stringContaining(error) });
}

describe('an SSLv2-format ClientHello is refused on every port', () => {
  it.each([
    ['a non-TLS port', () => `legacy.test:${legacy.port}`],
    ['a port a rule marks tls: true', () => `marked.test:${legacy.port}`],
    ['port 443', () => 'legacy.test:443'],
  ])('%s: closed with a bad_request deny, nothing dialled', async (_, authority) => {
    const accepted = legacy.accepted();
    const { reply, records } = await sendFirst(authority(), sslv2ClientHello());
    // Spliced, the hello would meet the legacy server and come back as its ServerHello.
    expect(reply).toEqual({ text: '', closed: true });
    expect(legacy.accepted()).toBe(accepted);
    expectRefused(records, 'SSLv2');
  });

  it('after the server-first window on a non-TLS port too: the raw upstream it opened is closed unused', async () => {
    // Silent past serverFirstWaitMs: the flow is decided as tcp and the legacy server dialled; TLS
    // servers never greet, so the guest's hello meets the peek, not the splice.
    const { reply, records } = await sendFirst(`legacy.test:${legacy.port}`, sslv2ClientHello(), 800);
    expect(reply).toEqual({ text: '', closed: true });
    expect(decisions(records).map((d) => [d.protocol, d.verdict, d.reason])).toEqual([
      ['https', 'allow', 'rule_allow'],
      ['tcp', 'allow', 'rule_allow'],
      ['https', 'deny', 'bad_request'],
    ]);
    expect(records.find((r) => r.event === 'egress.close')).toMatchObject({ reason: 'bad_request', bytes_down: 0, error: expect.stringContaining('SSLv2') });
  });
});

describe('bytes that are not TLS on a TLS port are refused', () => {
  const request = 'GET /echo HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n';

  it.each([
    ['a port a rule marks tls: true', () => `marked.test:${httpPort}`],
    ['port 443', () => 'legacy.test:443'],
    // A passthrough tunnel dials before its 200; the refusal closes that upstream unused.
    ['a passthrough rule\'s tls: true port', () => `spliced.test:${httpPort}`],
  ])('%s: closed with a bad_request deny, nothing reaches the origin', async (_, authority) => {
    const requests = httpRequests;
    const { reply, records } = await sendFirst(authority(), request);
    // Spliced, the plain request would reach the HTTP origin, past every method and path rule.
    expect(reply).toEqual({ text: '', closed: true });
    expect(httpRequests).toBe(requests);
    expectRefused(records, 'not TLS');
  });

  it('raw TCP to a destination a path rule covers is denied: a splice could not check the path', async () => {
    const requests = httpRequests;
    const { reply, records } = await sendFirst(`paths.test:${httpPort}`, 'GET /admin/users HTTP/1.1\r\nHost: paths.test\r\nConnection: close\r\n\r\n');
    expect(reply.text.startsWith('HTTP/1.1 200')).toBe(false);
    expect(httpRequests).toBe(requests);
    expect(decisions(records).map((d) => [d.protocol, d.verdict, d.reason, d.rule])).toEqual([
      ['https', 'allow', 'rule_allow', 'paths-host'],
      ['tcp', 'deny', 'rule_deny', 'no-admin'],
    ]);
  });

  it('the same bytes on a non-TLS port are still raw TCP, decided as tcp', async () => {
    const { reply, records } = await sendFirst(`legacy.test:${httpPort}`, request);
    expect(reply.text.startsWith('HTTP/1.1 200')).toBe(true);
    expect(decisions(records).map((d) => [d.protocol, d.verdict])).toEqual([
      ['https', 'allow'],
      ['tcp', 'allow'],
    ]);
  });
});
