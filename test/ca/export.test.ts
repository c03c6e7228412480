// exportCa round trips: PEM and DER back to the same certificate; PKCS#12 read back by node-forge,
// by `openssl pkcs12` and by Node's own PFX loader, with and without the key.
import { X509Certificate } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import forge from 'node-forge';
import { beforeEach, describe, expect, it } from 'vitest';
import { createCa, exportCa, type CertificateAuthority } from '../../src/ca/index.js';
import { rejection, run, tempDir } from './helpers.js';

let ca: CertificateAuthority;
let dir: string;

beforeEach(async () => {
  dir = join(await tempDir(), 'ca');
  ca = await createCa({ dir, workspace: 'export-test' });
  ca.close();
});

const caDer = () => new X509Certificate(ca.certPem).raw;

/** Parses a PFX with node-forge and returns its certificate bags' DER and its key bags. */
function forgeParse(p12: Buffer, password: string) {
  const parsed = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(p12.toString('binary')), true, password);
  const certBags = parsed.getBags({ bagType: forge.pki.oids['certBag'] as string })[forge.pki.oids['certBag'] as string] ?? [];
  const keyBags = parsed.getBags({ bagType: forge.pki.oids['pkcs8ShroudedKeyBag'] as string })[forge.pki.oids['pkcs8ShroudedKeyBag'] as string] ?? [];
  // forge cannot model ECDSA certificates, so it hands back the raw ASN.1 of the bag's certificate.
  const certs = certBags.map((b) => Buffer.from(forge.asn1.toDer(b.asn1 as forge.asn1.Asn1).getBytes(), 'binary'));
  return { certs, keyBags, friendlyNames: certBags.map((b) => b.attributes['friendlyName']?.[0]) };
}

describe('exportCa', () => {
  it('pem is the certificate text', async () => {
    const pem = await exportCa(ca, 'pem');
    expect(pem.toString()).toBe(ca.certPem);
    expect(new X509Certificate(pem).fingerprint256).toBe(ca.fingerprint256);
  });

  it('der is the same certificate in binary', async () => {
    const der = await exportCa(ca, 'der');
    expect(der[0]).toBe(0x30);
    expect(new X509Certificate(der).fingerprint256).toBe(ca.fingerprint256);
    const out = join(dir, '..', 'ca.der');
    await writeFile(out, der);
    const r = await run('openssl', ['x509', '-inform', 'DER', '-in', out, '-noout', '-fingerprint', '-sha256']);
    expect(r.stdout.trim()).toBe(`sha256 Fingerprint=${ca.fingerprint256}`);
  });

  it('p12 without the key: node-forge and openssl read back exactly the CA certificate, no key', async () => {
    const p12 = await exportCa(ca, 'p12', { password: 's3cret' });
    const parsed = forgeParse(p12, 's3cret');
    expect(parsed.certs).toHaveLength(1);
    expect(parsed.certs[0]?.equals(caDer())).toBe(true);
    expect(parsed.keyBags).toHaveLength(0);
    expect(parsed.friendlyNames).toEqual(['microagent CA export-test']);
    const file = join(dir, '..', 'ca.p12');
    await writeFile(file, p12);
    const info = await run('openssl', ['pkcs12', '-info', '-in', file, '-nokeys', '-passin', 'pass:s3cret']);
    expect(info.code).toBe(0);
    expect(info.stderr).toContain('MAC: sha256');
    expect(info.stderr).not.toMatch(/Shrouded Keybag/);
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(info.stdout)?.[0];
    expect(new X509Certificate(pem ?? '').fingerprint256).toBe(ca.fingerprint256);
  });

  it('p12 with a wrong password fails the MAC check in forge and openssl', async () => {
    const p12 = await exportCa(ca, 'p12', { password: 'right' });
    expect(() => forgeParse(p12, 'wrong')).toThrow(/MAC/i);
    const file = join(dir, '..', 'ca.p12');
    await writeFile(file, p12);
    const r = await run('openssl', ['pkcs12', '-info', '-in', file, '-nokeys', '-passin', 'pass:wrong']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/mac verify/i);
  });

  it('p12 without a password has an empty one, which openssl accepts', async () => {
    const file = join(dir, '..', 'ca.p12');
    await writeFile(file, await exportCa(ca, 'p12'));
    const r = await run('openssl', ['pkcs12', '-info', '-in', file, '-nokeys', '-passin', 'pass:']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('subject=CN = microagent CA export-test');
  });

  it('p12 with includeKey carries the encrypted CA key, which openssl and Node decrypt to the same key', async () => {
    const p12 = await exportCa(ca, 'p12', { password: 'pw', includeKey: true });
    expect(forgeParse(p12, 'pw').certs[0]?.equals(caDer())).toBe(true);
    const file = join(dir, '..', 'ca.p12');
    await writeFile(file, p12);
    const info = await run('openssl', ['pkcs12', '-info', '-in', file, '-nodes', '-passin', 'pass:pw']);
    expect(info.code).toBe(0);
    expect(info.stderr).toContain('Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC');
    const keyFromP12 = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----\n/.exec(info.stdout)?.[0];
    expect(keyFromP12).toBe(await readFile(join(dir, 'ca.key.pem'), 'utf8'));
    // Node's PFX loader (OpenSSL PKCS12_parse) pairs key and certificate or throws.
    expect(() => createSecureContext({ pfx: p12, passphrase: 'pw' })).not.toThrow();
    expect(() => createSecureContext({ pfx: p12, passphrase: 'nope' })).toThrow();
  });

  it('refuses to put the key in a p12 without a password', async () => {
    expect(await rejection(() => exportCa(ca, 'p12', { includeKey: true }))).toMatchObject({ kind: 'invalid', code: 'ca.export_needs_password' });
  });

  it('refuses includeKey for pem and der', async () => {
    expect(await rejection(() => exportCa(ca, 'pem', { includeKey: true }))).toMatchObject({ kind: 'invalid', code: 'ca.export_key_format' });
    expect(await rejection(() => exportCa(ca, 'der', { includeKey: true }))).toMatchObject({ kind: 'invalid', code: 'ca.export_key_format' });
  });
});

describe('exportCa with includeKey re-checks the key file', () => {
  it('refuses when the key became world-readable after loading', async () => {
    await chmod(join(dir, 'ca.key.pem'), 0o644);
    expect(await rejection(() => exportCa(ca, 'p12', { password: 'pw', includeKey: true }))).toMatchObject({ kind: 'invalid', code: 'ca.key_permissions' });
    // The certificate alone is public and still exports.
    expect((await exportCa(ca, 'p12', { password: 'pw' })).length).toBeGreaterThan(0);
  });
});
