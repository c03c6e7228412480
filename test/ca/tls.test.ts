// Leaf certificates verified the way clients will verify them: real TLS handshakes from Node and
// curl against the CA certificate only, and openssl's reading of the CA and leaf extensions.
import { writeFile } from 'node:fs/promises';
import { connect as http2Connect, createSecureServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { checkServerIdentity, connect, type PeerCertificate } from 'node:tls';
import { Agent, request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCa, loadCa, type CertificateAuthority } from '../../src/ca/index.js';
import { opensslCa, run, startTlsOrigin, tempDir, type TlsOrigin } from './helpers.js';

let ca: CertificateAuthority;
let dir: string;
const origins: TlsOrigin[] = [];

beforeEach(async () => {
  dir = join(await tempDir(), 'ca');
  ca = await createCa({ dir, workspace: 'tls-test' });
});
afterEach(async () => {
  ca.close();
  await Promise.all(origins.splice(0).map((o) => o.close()));
});

async function origin(options: Parameters<typeof startTlsOrigin>[0]): Promise<number> {
  const o = await startTlsOrigin(options);
  origins.push(o);
  return o.port;
}

/** Handshakes with Node's TLS client trusting only `caPem`; resolves with the verified peer certificate. */
function nodeHandshake(port: number, servername: string | undefined, caPem: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca: caPem, ...(servername === undefined ? {} : { servername }) }, () => {
      const peer = socket.getPeerCertificate();
      socket.destroy();
      resolve(peer);
    });
    socket.on('error', reject);
  });
}

/** The leaf the origin serves for `servername`, as PEM, via openssl s_client. */
async function servedLeafPem(port: number, servername: string): Promise<string> {
  const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername], { input: '' });
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0];
  if (pem === undefined) throw new Error(`openssl s_client printed no certificate: ${r.stderr}`);
  return pem + '\n';
}

describe('leaf certificates in real handshakes', () => {
  it('Node verifies a DNS leaf served through sniCallback against the CA alone', async () => {
    const port = await origin({ SNICallback: ca.sniCallback() });
    const peer = await nodeHandshake(port, 'api.example.test', ca.certPem);
    expect(peer.subjectaltname).toBe('DNS:api.example.test');
    expect(peer.issuer.CN).toBe('microagent CA tls-test');
  });

  it('Node rejects the leaf when it trusts a different CA', async () => {
    const other = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'other' });
    const port = await origin({ SNICallback: ca.sniCallback() });
    await expect(nodeHandshake(port, 'api.example.test', other.certPem)).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
    other.close();
  });

  it('Node rejects a leaf minted for another name (hostname check uses the SAN)', async () => {
    const port = await origin({ defaultContext: await ca.secureContextFor('other.example.test') });
    await expect(nodeHandshake(port, 'api.example.test', ca.certPem)).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('curl verifies a DNS leaf with --cacert and --resolve', async () => {
    const caPath = join(dir, 'ca.pem');
    const port = await origin({ SNICallback: ca.sniCallback() });
    const r = await run('curl', ['-sS', '--cacert', caPath, '--resolve', `api.example.test:${port}:127.0.0.1`, `https://api.example.test:${port}/`]);
    expect(r).toMatchObject({ code: 0, stdout: 'origin ok' });
  });

  it('undici fetches through a DNS leaf, trusting only the CA', async () => {
    const port = await origin({ SNICallback: ca.sniCallback() });
    const toLoopback = (_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) =>
      opts.all === true ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4);
    const agent = new Agent({ connect: { ca: ca.certPem, lookup: toLoopback as never } });
    try {
      const res = await request(`https://api.example.test:${port}/`, { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe('origin ok');
    } finally {
      await agent.close();
    }
  });

  it('an http2 secure server negotiates h2 with contexts from sniCallback', async () => {
    const server = createSecureServer({ SNICallback: ca.sniCallback(), allowHTTP1: true }, (req, res) => res.end(`h2 ok ${req.httpVersion}`));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const session = http2Connect(`https://127.0.0.1:${port}`, { ca: ca.certPem, servername: 'api.example.test' });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const stream = session.request({ ':path': '/', ':authority': `api.example.test:${port}` });
        let text = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => (text += chunk));
        stream.on('end', () => resolve(text));
        stream.on('error', reject);
        session.on('error', reject);
      });
      expect(body).toBe('h2 ok 2.0');
      expect(session.alpnProtocol).toBe('h2');
    } finally {
      session.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('curl fails verification without the CA (the leaf is not trusted by accident)', async () => {
    const port = await origin({ SNICallback: ca.sniCallback() });
    const empty = join(await tempDir(), 'empty.pem');
    const other = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'other' });
    await writeFile(empty, other.certPem);
    const r = await run('curl', ['-sS', '--cacert', empty, '--resolve', `api.example.test:${port}:127.0.0.1`, `https://api.example.test:${port}/`]);
    expect(r.code).toBe(60);
    other.close();
  });

  it('curl verifies an IPv4 leaf (SAN iPAddress) for https://127.0.0.1', async () => {
    const port = await origin({ defaultContext: await ca.secureContextFor('127.0.0.1') });
    const r = await run('curl', ['-sS', '--cacert', join(dir, 'ca.pem'), `https://127.0.0.1:${port}/`]);
    expect(r).toMatchObject({ code: 0, stdout: 'origin ok' });
  });

  it('Node verifies an IPv6 leaf by its iPAddress SAN', async () => {
    const port = await origin({ defaultContext: await ca.secureContextFor('::1') });
    // The origin listens on 127.0.0.1; checkServerIdentity is what matters: it must accept ::1.
    const peer = await new Promise<PeerCertificate>((resolve, reject) => {
      const checkAsIpv6 = (_host: string, cert: PeerCertificate) => checkServerIdentity('::1', cert);
      const socket = connect({ host: '127.0.0.1', port, ca: ca.certPem, checkServerIdentity: checkAsIpv6 }, () => {
        resolve(socket.getPeerCertificate());
        socket.destroy();
      });
      socket.on('error', reject);
    });
    expect(peer.subjectaltname).toBe('IP Address:0:0:0:0:0:0:0:1');
  });

  it('an sniCallback with an authorisation check fails the handshake for names it did not authorise', async () => {
    const port = await origin({ SNICallback: ca.sniCallback((name) => name === 'allowed.example.test') });
    await expect(nodeHandshake(port, 'allowed.example.test', ca.certPem)).resolves.toMatchObject({ subjectaltname: 'DNS:allowed.example.test' });
    await expect(nodeHandshake(port, 'denied.example.test', ca.certPem)).rejects.toThrow();
    expect(ca.stats().minted).toBe(1);
  });

  it('an SNI that is not a normalised name fails the handshake and mints nothing', async () => {
    const port = await origin({ SNICallback: ca.sniCallback() });
    await expect(nodeHandshake(port, 'API.Example.test', ca.certPem)).rejects.toThrow();
    expect(ca.stats().minted).toBe(0);
  });
});

describe('what openssl reads in the certificates', () => {
  it('the CA: CA:TRUE pathlen 0 critical, keyCertSign+cRLSign critical, SKI, ECDSA P-256, workspace in subject', async () => {
    const r = await run('openssl', ['x509', '-in', join(dir, 'ca.pem'), '-noout', '-text']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Subject: CN ?= ?microagent CA tls-test, O ?= ?microagent/);
    expect(r.stdout).toMatch(/Issuer: CN ?= ?microagent CA tls-test, O ?= ?microagent/);
    expect(r.stdout).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(r.stdout).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(r.stdout).toMatch(/X509v3 Subject Key Identifier:\s+([0-9A-F]{2}:){19}[0-9A-F]{2}/);
    expect(r.stdout).toContain('ASN1 OID: prime256v1');
    expect(r.stdout).toContain('Signature Algorithm: ecdsa-with-SHA256');
  });

  it('a leaf: serverAuth EKU, SAN, CA:FALSE, AKI = CA SKI, 7 days backdated 1h, 128-bit random serial, verifies', async () => {
    const port = await origin({ SNICallback: ca.sniCallback() });
    const before = Date.now();
    const leafPath = join(dir, '..', 'leaf.pem');
    await writeFile(leafPath, await servedLeafPem(port, 'api.example.test'));
    const text = (await run('openssl', ['x509', '-in', leafPath, '-noout', '-text'])).stdout;
    expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication\n/);
    expect(text).toMatch(/X509v3 Subject Alternative Name:\s+DNS:api\.example\.test\n/);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
    const caText = (await run('openssl', ['x509', '-in', join(dir, 'ca.pem'), '-noout', '-text'])).stdout;
    const ski = /X509v3 Subject Key Identifier:\s+(\S+)/.exec(caText)?.[1];
    expect(ski).toBeDefined();
    expect(text).toContain(ski);
    const dates = (await run('openssl', ['x509', '-in', leafPath, '-noout', '-startdate', '-enddate', '-serial'])).stdout;
    const notBefore = Date.parse(/notBefore=(.+)/.exec(dates)?.[1] ?? '');
    const notAfter = Date.parse(/notAfter=(.+)/.exec(dates)?.[1] ?? '');
    expect(before - notBefore).toBeGreaterThanOrEqual(3_600_000 - 2_000);
    expect(before - notBefore).toBeLessThan(3_600_000 + 60_000);
    expect(Math.round((notAfter - before) / 3_600_000)).toBe(7 * 24);
    expect(/serial=([0-9A-F]+)/.exec(dates)?.[1]).toMatch(/^[0-9A-F]{32}$/);
    const verify = await run('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), '-purpose', 'sslserver', leafPath]);
    expect(verify).toMatchObject({ code: 0, stdout: `${leafPath}: OK\n` });
  });

  it('a name longer than 64 characters gets an empty subject and a critical SAN, and still verifies', async () => {
    const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.example.test`;
    const port = await origin({ SNICallback: ca.sniCallback() });
    const leafPath = join(dir, '..', 'long.pem');
    await writeFile(leafPath, await servedLeafPem(port, long));
    const text = (await run('openssl', ['x509', '-in', leafPath, '-noout', '-text'])).stdout;
    expect(text).toMatch(/Subject: *\n/);
    expect(text).toContain(`X509v3 Subject Alternative Name: critical\n                DNS:${long}`);
    expect(await run('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), '-purpose', 'sslserver', leafPath])).toMatchObject({ code: 0 });
    await expect(nodeHandshake(port, long, ca.certPem)).resolves.toMatchObject({ subjectaltname: `DNS:${long}` });
  });

  it('a leaf never outlives its CA', async () => {
    const shortLived = await createCa({ dir: join(await tempDir(), 'ca'), workspace: 'short', validityDays: 2 });
    const port = await origin({ SNICallback: shortLived.sniCallback() });
    const peer = await nodeHandshake(port, 'api.example.test', shortLived.certPem);
    expect(Date.parse(peer.valid_to)).toBe(shortLived.notAfter.getTime());
    shortLived.close();
  });

  it('each CA instance has its own leaf key, distinct from the CA key', async () => {
    const second = await loadCa({ dir });
    const portA = await origin({ SNICallback: ca.sniCallback() });
    const portB = await origin({ SNICallback: second.sniCallback() });
    const a = join(dir, '..', 'a.pem');
    const b = join(dir, '..', 'b.pem');
    await writeFile(a, await servedLeafPem(portA, 'same.example.test'));
    await writeFile(b, await servedLeafPem(portB, 'same.example.test'));
    const pub = async (p: string) => (await run('openssl', ['x509', '-in', p, '-noout', '-pubkey'])).stdout;
    expect(await pub(a)).toMatch(/BEGIN PUBLIC KEY/);
    expect(await pub(a)).not.toBe(await pub(b));
    second.close();
  });

  it('two leaves for one CA share the leaf key but get distinct serials', async () => {
    const port = await origin({ SNICallback: ca.sniCallback() });
    const a = join(dir, '..', 'a.pem');
    const b = join(dir, '..', 'b.pem');
    await writeFile(a, await servedLeafPem(port, 'a.example.test'));
    await writeFile(b, await servedLeafPem(port, 'b.example.test'));
    const pub = async (p: string) => (await run('openssl', ['x509', '-in', p, '-noout', '-pubkey'])).stdout;
    const serial = async (p: string) => (await run('openssl', ['x509', '-in', p, '-noout', '-serial'])).stdout;
    expect(await pub(a)).toBe(await pub(b));
    expect(await pub(a)).not.toBe(await pub(join(dir, 'ca.pem')));
    expect(await serial(a)).not.toBe(await serial(b));
  });
});

describe('a CA certificate written by another encoder', () => {
  it('loads one made by openssl (PrintableString names, its own key identifier) and its leaves chain to it', async () => {
    const legacy = join(await tempDir(), 'ca');
    await opensslCa(legacy, '/CN=microagent CA legacy/O=microagent', [
      'basicConstraints=critical,CA:TRUE,pathlen:0',
      'keyUsage=critical,keyCertSign,cRLSign',
      // Not the SHA-1 of the key: leaves must copy the CA's identifier, not recompute one.
      'subjectKeyIdentifier=01:02:03:04:05:06:07:08',
    ]);
    const loaded = await loadCa({ dir: legacy });
    expect(loaded).toMatchObject({ workspace: 'legacy', subject: 'CN=microagent CA legacy, O=microagent' });
    const port = await origin({ SNICallback: loaded.sniCallback() });
    const peer = await nodeHandshake(port, 'api.example.test', loaded.certPem);
    expect(peer.subjectaltname).toBe('DNS:api.example.test');
    const leafPath = join(legacy, '..', 'leaf.pem');
    await writeFile(leafPath, await servedLeafPem(port, 'api.example.test'));
    const text = (await run('openssl', ['x509', '-in', leafPath, '-noout', '-text'])).stdout;
    expect(text).toMatch(/Authority Key Identifier:\s*\n\s*(keyid:)?01:02:03:04:05:06:07:08/);
    expect((await run('openssl', ['verify', '-CAfile', join(legacy, 'ca.pem'), leafPath])).stdout).toContain(': OK');
    loaded.close();
  });
});
