// An SSLv2-format ClientHello built by hand (RFC 5246 Appendix E.2, RFC 6101 Appendix E) and a real
// OpenSSL server (node:tls) that still negotiates TLS from one, so tests can show the bytes are a
// hello a server accepts, not a look-alike. `openssl s_client` (3.x) can no longer send this format.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';

/**
 * The hello a TLS 1.0-1.2 client sends in SSLv2 framing: 2-byte header (high bit set, 15-bit length),
 * msg_type 1, the TLS version it offers, then cipher-spec, session-id and challenge lengths and data.
 * Cipher specs are 3 bytes, a TLS suite being 0x00 and its 2-byte code. No extensions, so no SNI.
 */
export function sslv2ClientHello(version = 0x0303): Buffer {
  // TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_GCM_SHA256.
  const cipherSpecs = Buffer.from([0x00, 0xc0, 0x2f, 0x00, 0x00, 0x9c]);
  const challenge = randomBytes(32);
  const lengths = Buffer.alloc(6);
  lengths.writeUInt16BE(cipherSpecs.length, 0);
  lengths.writeUInt16BE(0, 2);
  lengths.writeUInt16BE(challenge.length, 4);
  const body = Buffer.concat([Buffer.from([0x01, version >> 8, version & 0xff]), lengths, cipherSpecs, challenge]);
  return Buffer.concat([Buffer.from([0x80 | (body.length >> 8), body.length & 0xff]), body]);
}

export interface LegacyTlsServer {
  readonly server: Server;
  readonly port: number;
  /** TCP connections accepted so far (a refused tunnel must not add one). */
  accepted(): number;
  close(): void;
}

/**
 * A TLS server with an RSA key at OpenSSL security level 0: an SSLv2-format hello offers no
 * signature_algorithms, so the SHA-1 default must be allowed, as on the legacy servers that accept it.
 */
export async function startLegacyTlsServer(): Promise<LegacyTlsServer> {
  const dir = mkdtempSync(join(tmpdir(), 'legacy-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '2', '-subj', '/CN=legacy.test'], { cwd: dir, stdio: 'pipe' });
  const server = createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')), ciphers: 'DEFAULT@SECLEVEL=0' });
  let accepted = 0;
  server.on('connection', () => accepted++);
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, accepted: () => accepted, close: () => server.close() };
}
