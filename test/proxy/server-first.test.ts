// Server-first protocols through CONNECT (SSH, SMTP, FTP, MySQL greet before the client speaks): a
// real greeting TCP server on loopback, the real proxy, policy engine and audit log. A silent guest on
// a non-TLS port must get the greeting once the flow is decided and recorded as tcp; a tcp deny, a TLS
// port and a late ClientHello must keep today's strictness.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createNetServer, type Server } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/index.js';
import { lintPolicy, parsePolicy } from '../../src/policy/index.js';
import { DEFAULT_LIMITS } from '../../src/proxy/limits.js';
import { connectTunnel, decisions, makeOriginCa, readUntil, startHttpsOrigin, startTestProxy, testResolver, type OriginCa, type TestProxy } from './helpers.js';

const GREETING = '220 ready\r\n';

/** Greets on accept, then echoes. `auditAtAccept` holds the audit log's text as each connection arrived. */
interface Greeter {
  readonly server: Server;
  readonly port: number;
  readonly auditAtAccept: string[];
}

async function startGreeter(auditPath: () => string, greeting: string | null = GREETING): Promise<Greeter> {
  const auditAtAccept: string[] = [];
  const server = createNetServer((socket) => {
    auditAtAccept.push(readFileSync(auditPath(), 'utf8'));
    socket.on('error', () => undefined);
    if (greeting !== null) socket.write(greeting);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('greeter has no TCP address');
  return { server, port: address.port, auditAtAccept };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens a tunnel through `proxy`, reads the server's greeting, sends `line` and reads its echo, then ends the guest's side. */
async function greetingRoundTrip(proxy: number, authority: string, line: string): Promise<void> {
  const { socket, status } = await connectTunnel(proxy, authority);
  expect(status).toBe(200);
  expect((await readUntil(socket, (t) => t === GREETING)).text).toBe(GREETING);
  socket.write(line);
  expect((await readUntil(socket, (t) => t === line)).text).toBe(line);
  socket.end();
}
const forPort = (port: number) => (r: AuditRecord) => 'port' in r && r.port === port;
const closeOf = (records: AuditRecord[], port: number) => records.find((r) => r.event === 'egress.close' && forPort(port)(r));

const ALLOW = `version: 1
mode: guarded
rules:
  - id: mail
    action: allow
    hosts: [mail.test]
  - id: origins
    action: allow
    hosts: [origin.test]
  - id: secure-mail
    action: allow
    hosts: [secure.mail.test]
    tls: true
`;
const DENY_TCP = `version: 1
mode: guarded
rules:
  - id: no-raw-mail
    action: deny
    hosts: [mail.test]
    protocols: [tcp]
  - id: mail
    action: allow
    hosts: [mail.test]
`;

const HTTPS_ONLY = `version: 1
mode: strict
rules:
  - id: origins-https
    action: allow
    hosts: [origin.test]
    protocols: [https]
`;

const resolver = testResolver({ 'mail.test': ['127.0.0.1'], 'secure.mail.test': ['127.0.0.1'], 'origin.test': ['127.0.0.1'] });
let ca: OriginCa;
let tp: TestProxy;
let denying: TestProxy;
let strictTls: TestProxy;
let httpsOnly: TestProxy;
let greeter: Greeter;
let denyGreeter: Greeter;
let tlsGreeter: Greeter;
let silentServer: Greeter;
let httpsPort: number;

beforeAll(async () => {
  ca = makeOriginCa();
  httpsPort = (await startHttpsOrigin(ca)).port;
  // The production defaults for the window and the headers timeout.
  tp = await startTestProxy(ALLOW, { resolver, originCa: ca, limits: { serverFirstWaitMs: DEFAULT_LIMITS.serverFirstWaitMs }, socketPath: join(ca.dir, 'proxy.sock') });
  denying = await startTestProxy(DENY_TCP, { resolver, limits: { headersTimeoutMs: 600, serverFirstWaitMs: 100 } });
  strictTls = await startTestProxy(ALLOW, { resolver, limits: { headersTimeoutMs: 600, serverFirstWaitMs: 100 } });
  httpsOnly = await startTestProxy(HTTPS_ONLY, { resolver, originCa: ca, limits: { serverFirstWaitMs: 100 } });
  greeter = await startGreeter(() => tp.auditPath);
  silentServer = await startGreeter(() => tp.auditPath, null);
  denyGreeter = await startGreeter(() => denying.auditPath);
  tlsGreeter = await startGreeter(() => strictTls.auditPath);
});
afterAll(async () => {
  await Promise.all([tp?.close(), denying?.close(), strictTls?.close(), httpsOnly?.close()]);
  for (const g of [greeter, silentServer, denyGreeter, tlsGreeter]) g?.server.close();
});

describe('a silent guest on a non-TLS port (server-first protocols)', () => {
  it('gets the greeting after a tcp allow recorded before the dial, then a round trip; the close has the bytes', async () => {
    await greetingRoundTrip(tp.port, `mail.test:${greeter.port}`, 'NOOP\r\n');

    const records = await tp.records((rs) => closeOf(rs, greeter.port) !== undefined);
    const tcp = decisions(records).filter((d) => forPort(greeter.port)(d) && d.protocol === 'tcp');
    expect(tcp).toHaveLength(1);
    expect(tcp[0]).toMatchObject({ verdict: 'allow', rule: 'mail', host: 'mail.test', ip: '127.0.0.1', decrypted: false });
    expect(closeOf(records, greeter.port)).toMatchObject({ conn: tcp[0]?.conn, decrypted: false, bytes_up: 6, bytes_down: GREETING.length + 6 });
    // Decide, record durably, then dial: the record was on disk when the server accepted.
    const atAccept = greeter.auditAtAccept.at(-1) ?? '';
    expect(atAccept).toContain(`"conn":"${tcp[0]?.conn}"`);
    expect(atAccept).toContain('"protocol":"tcp"');
  });

  it('where tcp is denied, a silent guest is never dialled and is cut at the headers timeout; non-TLS bytes get the tcp deny', async () => {
    const silent = await connectTunnel(denying.port, `mail.test:${denyGreeter.port}`);
    expect(silent.status).toBe(200);
    const { text, closed } = await readUntil(silent.socket, () => false);
    expect(closed).toBe(true);
    expect(text).toBe('');
    const talking = await connectTunnel(denying.port, `mail.test:${denyGreeter.port}`);
    talking.socket.write('EHLO guest\r\n');
    expect((await readUntil(talking.socket, () => false)).text).toBe('');
    expect(denyGreeter.auditAtAccept).toHaveLength(0);
    const records = await denying.records((rs) => decisions(rs).some((d) => d.protocol === 'tcp'));
    expect(decisions(records).filter((d) => forPort(denyGreeter.port)(d))).toEqual([
      expect.objectContaining({ protocol: 'https', verdict: 'allow', rule: 'mail' }),
      expect.objectContaining({ protocol: 'https', verdict: 'deny', reason: 'limit_exceeded', signals: ['slow_client'] }),
      expect.objectContaining({ protocol: 'https', verdict: 'allow', rule: 'mail' }),
      expect.objectContaining({ protocol: 'tcp', verdict: 'deny', rule: 'no-raw-mail', reason: 'rule_deny' }),
    ]);
  });

  it('a guest that speaks after the window to a server that waits for it still gets its round trip', async () => {
    const { socket, status } = await connectTunnel(tp.port, `mail.test:${silentServer.port}`);
    expect(status).toBe(200);
    await sleep(800);
    socket.write('HELLO\r\n');
    expect((await readUntil(socket, (t) => t === 'HELLO\r\n')).text).toBe('HELLO\r\n');
    socket.end();
    const records = await tp.records((rs) => closeOf(rs, silentServer.port) !== undefined);
    expect(decisions(records).filter((d) => forPort(silentServer.port)(d) && d.protocol === 'tcp')).toEqual([expect.objectContaining({ verdict: 'allow', rule: 'mail' })]);
    expect(closeOf(records, silentServer.port)).toMatchObject({ bytes_up: 7, bytes_down: 7 });
  });
});

describe('a guest that half-closes its tunnel (sends, then its FIN, as nc -N and socat do)', () => {
  // The guest's door is the Unix socket (the VM's forwards end there): it must keep a half-open
  // tunnel open as the TCP door does, or the answer to bytes sent with a FIN is lost.
  it.each([
    ['the TCP port', () => tp.port],
    ['the Unix socket', () => tp.proxy.addresses.socket as string],
  ])('through %s it still gets the greeting and the echo, then the close', async (_, door) => {
    const { socket, status } = await connectTunnel(door(), `mail.test:${greeter.port}`);
    expect(status).toBe(200);
    socket.end('EHLO guest\r\n');
    const { text, closed } = await readUntil(socket, () => false);
    expect(text).toBe(`${GREETING}EHLO guest\r\n`);
    expect(closed).toBe(true);
  });
});

describe('what the window must not change', () => {
  it('a guest that speaks first on a non-TLS port is raw TCP as before', async () => {
    const { socket, status } = await connectTunnel(tp.port, `mail.test:${greeter.port}`);
    expect(status).toBe(200);
    socket.write('EHLO guest\r\n');
    const expected = `${GREETING}EHLO guest\r\n`;
    expect((await readUntil(socket, (t) => t.length >= expected.length)).text).toBe(expected);
    socket.end();
  });

  it.each([
    ['port 443', () => 'mail.test:443'],
    ['a port a rule marks tls: true', () => `secure.mail.test:${tlsGreeter.port}`],
  ])('a silent guest on %s is still cut as slow_client, nothing dialled', async (_, authority) => {
    const target = authority();
    const port = Number(target.slice(target.lastIndexOf(':') + 1));
    const accepted = tlsGreeter.auditAtAccept.length;
    const { socket, status } = await connectTunnel(strictTls.port, target);
    expect(status).toBe(200);
    const { text, closed } = await readUntil(socket, () => false);
    expect(closed).toBe(true);
    expect(text).toBe('');
    expect(tlsGreeter.auditAtAccept).toHaveLength(accepted);
    const records = await strictTls.records((rs) => rs.some((r) => r.event === 'egress.close' && forPort(port)(r)));
    const mine = records.filter(forPort(port));
    expect(decisions(mine).some((d) => d.protocol === 'tcp')).toBe(false);
    expect(decisions(mine).find((d) => d.signals.includes('slow_client'))).toMatchObject({ protocol: 'https', verdict: 'deny', reason: 'limit_exceeded' });
    expect(closeOf(records, port)).toMatchObject({ reason: 'limit_exceeded', signals: ['slow_client'] });
  });

  it.each([
    ['tcp is allowed there (decided and dialled in vain, then closed)', () => tp],
    ['tcp is denied there (no window: it waits for the guest as on a TLS port)', () => httpsOnly],
  ])('a ClientHello sent after the window, before any greeting, is still intercepted when %s', async (_, proxy) => {
    const tp = proxy();
    const { socket, status } = await connectTunnel(tp.port, `origin.test:${httpsPort}`);
    expect(status).toBe(200);
    await sleep(800);
    // Only the proxy's CA is trusted: the handshake succeeds only if the proxy terminated TLS.
    const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem });
    tls.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      tls.once('secureConnect', resolve);
      tls.once('error', reject);
    });
    tls.write(`GET /echo HTTP/1.1\r\nHost: origin.test:${httpsPort}\r\nConnection: close\r\n\r\n`);
    const { text } = await readUntil(tls, () => false);
    expect(text.startsWith('HTTP/1.1 200')).toBe(true);
    expect(text).toContain('"label":"https-origin"');
    const records = await tp.records((rs) => closeOf(rs, httpsPort) !== undefined && rs.some((r) => r.event === 'egress.decision' && forPort(httpsPort)(r) && r.path === '/echo'));
    expect(records.some((r) => r.event === 'egress.close' && forPort(httpsPort)(r) && r.decrypted)).toBe(true);
  });
});

describe('a strict policy that allows raw tcp to one host (SSH to a forge)', () => {
  const sshPolicy = (protocols: string) => `version: 1
mode: strict
rules:
  - id: forge-ssh
    action: allow
    hosts: [mail.test]
    protocols: ${protocols}
`;
  let both: TestProxy;
  let tcpOnly: TestProxy;
  let forge: Greeter;
  let tcpOnlyForge: Greeter;
  beforeAll(async () => {
    both = await startTestProxy(sshPolicy('[https, tcp]'), { resolver, limits: { serverFirstWaitMs: 100 } });
    tcpOnly = await startTestProxy(sshPolicy('[tcp]'), { resolver, limits: { serverFirstWaitMs: 100 } });
    forge = await startGreeter(() => both.auditPath);
    tcpOnlyForge = await startGreeter(() => tcpOnly.auditPath);
  });
  afterAll(async () => {
    await Promise.all([both?.close(), tcpOnly?.close()]);
    forge?.server.close();
    tcpOnlyForge?.server.close();
  });

  it('protocols [https, tcp]: the CONNECT opens and the silent guest gets the greeting, decided as tcp by that rule', async () => {
    const { socket, status } = await connectTunnel(both.port, `mail.test:${forge.port}`);
    expect(status).toBe(200);
    expect((await readUntil(socket, (t) => t === GREETING)).text).toBe(GREETING);
    socket.end();
    const records = await both.records((rs) => closeOf(rs, forge.port) !== undefined);
    expect(decisions(records).filter((d) => d.protocol === 'tcp')).toMatchObject([{ verdict: 'allow', rule: 'forge-ssh' }]);
  });

  it('protocols [tcp] alone: https is denied, so the CONNECT opens as tcp; the greeting and a round trip pass, each step recorded as tcp before the dial', async () => {
    await greetingRoundTrip(tcpOnly.port, `mail.test:${tcpOnlyForge.port}`, 'SSH-2.0-guest\r\n');
    const records = await tcpOnly.records((rs) => closeOf(rs, tcpOnlyForge.port) !== undefined);
    const mine = decisions(records).filter(forPort(tcpOnlyForge.port));
    // The CONNECT's decision, then the flow's once the greeting showed raw TCP: both tcp, none https.
    expect(mine).toMatchObject([
      { protocol: 'tcp', verdict: 'allow', rule: 'forge-ssh', ip: '127.0.0.1' },
      { protocol: 'tcp', verdict: 'allow', rule: 'forge-ssh', ip: '127.0.0.1' },
    ]);
    expect(tcpOnlyForge.auditAtAccept.at(-1)).toContain(`"conn":"${mine[0]?.conn}"`);
    expect(lintPolicy(parsePolicy(sshPolicy('[tcp]'), 'ssh.yaml'))).toEqual([]);
  });

  it('protocols [tcp] alone: TLS in that tunnel is https, denied and recorded with its SNI; nothing is dialled', async () => {
    const accepted = tcpOnlyForge.auditAtAccept.length;
    const { socket, status } = await connectTunnel(tcpOnly.port, `mail.test:${tcpOnlyForge.port}`);
    expect(status).toBe(200);
    const tls = tlsConnect({ socket, servername: 'mail.test', ca: tcpOnly.caPem });
    const failed = await new Promise<string>((resolve) => {
      tls.once('secureConnect', () => resolve('handshake completed'));
      tls.once('error', (err) => resolve(err.message));
      tls.once('close', () => resolve('closed'));
    });
    expect(failed).not.toBe('handshake completed');
    const records = await tcpOnly.records((rs) => rs.some((r) => r.event === 'egress.decision' && r.protocol === 'https' && forPort(tcpOnlyForge.port)(r)));
    const https = decisions(records).filter((d) => forPort(tcpOnlyForge.port)(d) && d.protocol === 'https');
    // mail.test is 127.0.0.1 here: an internal address only a rule naming it for https could allow.
    expect(https).toMatchObject([{ verdict: 'deny', reason: 'internal_address', sni: 'mail.test', decrypted: false }]);
    expect(tcpOnlyForge.auditAtAccept).toHaveLength(accepted);
  });
});
