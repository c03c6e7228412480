/**
 * X.509 building blocks for the workspace CA: key pairs (WebCrypto ECDSA P-256, never pure JS),
 * serials, and the self-signed CA certificate (leaves are in leaf.ts).
 * Pure of file IO and of policy.
 */
import 'reflect-metadata';
import { webcrypto, randomBytes } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// @peculiar/x509 defaults to globalThis.crypto; pin Node's implementation so it never depends on
// whatever a caller may have installed globally.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type EcKeyPair = webcrypto.CryptoKeyPair;
export type EcPrivateKey = webcrypto.CryptoKey;

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** Backdating absorbs clock skew between host and guest (a guest booted from a snapshot may lag). */
export const CA_BACKDATE_MS = DAY_MS;
export const LEAF_BACKDATE_MS = HOUR_MS;
export const CA_SUBJECT_PREFIX = 'microagent CA ';
export const CA_ORGANIZATION = 'microagent';

export function generateEcKeyPair(extractable: boolean): Promise<EcKeyPair> {
  return webcrypto.subtle.generateKey(EC_P256, extractable, ['sign', 'verify']);
}

export async function importEcPrivateKey(pkcs8Der: Uint8Array): Promise<EcPrivateKey> {
  // Not extractable: once loaded, the CA key can sign but no code path can read it back out.
  return webcrypto.subtle.importKey('pkcs8', pkcs8Der, EC_P256, false, ['sign']);
}

export async function exportPkcs8Pem(key: EcPrivateKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** A positive, non-zero-leading 128-bit serial (RFC 5280 allows up to 20 octets; CAB BR wants 64+ random bits). */
export function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

export interface CaCertificateParams {
  readonly keys: EcKeyPair;
  readonly workspace: string;
  readonly validityDays: number;
  readonly now: number;
}

export async function createCaCertificate(p: CaCertificateParams): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: [{ CN: [`${CA_SUBJECT_PREFIX}${p.workspace}`] }, { O: [CA_ORGANIZATION] }],
    notBefore: new Date(p.now - CA_BACKDATE_MS),
    notAfter: new Date(p.now + p.validityDays * DAY_MS),
    keys: p.keys,
    signingAlgorithm: SIGNING,
    extensions: [
      // pathLen 0: this CA signs leaves only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(p.keys.publicKey),
    ],
  });
}

/** The workspace a CA certificate was made for, read back from its subject CN. */
export function workspaceOf(cert: x509.X509Certificate): string | undefined {
  const cn = cert.subjectName.getField('CN')[0];
  return cn?.startsWith(CA_SUBJECT_PREFIX) ? cn.slice(CA_SUBJECT_PREFIX.length) : undefined;
}

export function isCaCertificate(cert: x509.X509Certificate): boolean {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  return bc?.ca === true && ku !== null && (ku.usages & x509.KeyUsageFlags.keyCertSign) !== 0;
}
