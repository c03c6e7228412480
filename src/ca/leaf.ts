/**
 * The leaf signer: everything leaves of one CA share (issuer, key, fixed extensions) is encoded
 * once; minting a host then only encodes serial, validity, names, and makes one WebCrypto ECDSA
 * signature, which runs off the event loop. Generic ASN.1 libraries cost a few ms per certificate
 * here, more than the signature, so the TBSCertificate is assembled from DER pieces (der.ts).
 * It signs any name it is handed: callers pass only validated names (names.ts), never policy.
 */
// reflect-metadata must be loaded before @peculiar/x509 evaluates.
import 'reflect-metadata';
import { webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { children, ecdsaSignatureToDer, pem, readElement, TAG, time, tlv } from './der.js';
import type { LeafName } from './names.js';
import { randomSerialHex, type EcPrivateKey } from './x509.js';

export interface LeafValidity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Signs a leaf PEM for one CA and the instance's shared leaf key; safe to call concurrently. */
export type LeafSigner = (name: LeafName, validity: LeafValidity) => Promise<string>;

const ECDSA_SHA256 = tlv(TAG.sequence, Buffer.from('06082a8648ce3d040302', 'hex'));
const VERSION_3 = tlv(TAG.explicit(0), tlv(TAG.integer, Buffer.from([2])));
const OID_COMMON_NAME = Buffer.from('0603550403', 'hex');
const OID_SUBJECT_ALT_NAME = Buffer.from('0603551d11', 'hex');
const CRITICAL = tlv(TAG.boolean, Buffer.from([0xff]));
const MAX_COMMON_NAME = 64; // RFC 5280 ub-common-name
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** The CA certificate's subject exactly as encoded, to be the leaves' issuer byte for byte. */
function subjectDer(caCertPem: string): Buffer {
  const tbs = children(readElement(new X509Certificate(caCertPem).raw))[0];
  if (tbs === undefined) throw new RangeError('CA certificate has no TBSCertificate');
  const fields = children(tbs);
  const subject = fields[fields[0]?.tag === TAG.explicit(0) ? 5 : 4];
  if (subject === undefined) throw new RangeError('CA certificate has no subject');
  return subject.raw;
}

/** Octets of a validated IP literal (names.ts: dotted-quad IPv4 or any IPv6 spelling without zone). */
export function ipOctets(ip: string): Buffer {
  if (!ip.includes(':')) return Buffer.from(ip.split('.').map(Number));
  // The WHATWG URL parser rewrites any IPv6 spelling (dotted tail included) to plain hex groups.
  const hexOnly = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  const [head = '', tail] = hexOnly.split('::');
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const words = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function subjectAltName(name: LeafName, critical: boolean): Buffer {
  const general =
    name.kind === 'dns' ? tlv(TAG.implicit(2), Buffer.from(name.name, 'ascii')) : tlv(TAG.implicit(7), ipOctets(name.name));
  const value = tlv(TAG.octetString, tlv(TAG.sequence, general));
  return critical ? tlv(TAG.sequence, OID_SUBJECT_ALT_NAME, CRITICAL, value) : tlv(TAG.sequence, OID_SUBJECT_ALT_NAME, value);
}

function subjectFor(name: LeafName): Buffer {
  // Past 64 characters no CN is allowed; the subject is then empty and the SAN is marked critical.
  if (name.name.length > MAX_COMMON_NAME) return tlv(TAG.sequence);
  const cn = tlv(TAG.sequence, OID_COMMON_NAME, tlv(TAG.utf8String, Buffer.from(name.name, 'utf8')));
  return tlv(TAG.sequence, tlv(TAG.set, cn));
}

export async function prepareLeafSigner(caCertPem: string, caKey: EcPrivateKey, leafPublicKey: webcrypto.CryptoKey): Promise<LeafSigner> {
  const caCert = new x509.X509Certificate(caCertPem);
  const caSki = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const sharedExtensions = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
    await x509.SubjectKeyIdentifierExtension.create(leafPublicKey),
    caSki === null ? await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey) : new x509.AuthorityKeyIdentifierExtension(caSki.keyId),
  ].map((ext) => Buffer.from(ext.rawData));
  const issuer = subjectDer(caCertPem);
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', leafPublicKey));

  return async (name, validity) => {
    const emptySubject = name.name.length > MAX_COMMON_NAME;
    const tbs = tlv(
      TAG.sequence,
      VERSION_3,
      tlv(TAG.integer, Buffer.from(randomSerialHex(), 'hex')), // positive, no leading zero byte
      ECDSA_SHA256,
      issuer,
      tlv(TAG.sequence, time(validity.notBefore), time(validity.notAfter)),
      subjectFor(name),
      spki,
      tlv(TAG.explicit(3), tlv(TAG.sequence, ...sharedExtensions, subjectAltName(name, emptySubject))),
    );
    const signature = new Uint8Array(await webcrypto.subtle.sign(SIGNING, caKey, tbs));
    const certificate = tlv(TAG.sequence, tbs, ECDSA_SHA256, tlv(TAG.bitString, Buffer.from([0]), ecdsaSignatureToDer(signature)));
    return pem('CERTIFICATE', certificate);
  };
}
