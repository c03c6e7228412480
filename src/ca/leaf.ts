/**
 * The leaf signer: everything leaves of one CA share (issuer, key, fixed extensions) is encoded
 * once; minting a host then only encodes serial, validity, names, and makes one WebCrypto ECDSA
 * signature, which runs off the event loop. Generic ASN.1 libraries cost a few ms per certificate
 * here, more than the signature, so the TBSCertificate is assembled from DER pieces (certificate.ts).
 * It signs any name it is handed: callers pass only validated names (names.ts), never policy.
 */
import { webcrypto } from 'node:crypto';
import {
  authorityKeyIdentifier,
  basicConstraints,
  extension,
  KEY_USAGE,
  keyIdentifier,
  keyUsage,
  OID,
  serverAuthOnly,
  signCertificate,
  subjectKeyIdentifier,
} from './certificate.js';
import { TAG, time, tlv } from './der.js';
import type { LeafName } from './names.js';
import { randomSerial, type CaCertificateFacts, type EcPrivateKey } from './x509.js';

export interface LeafValidity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Signs a leaf PEM for one CA and the instance's shared leaf key; safe to call concurrently. */
export type LeafSigner = (name: LeafName, validity: LeafValidity) => Promise<string>;

const MAX_COMMON_NAME = 64; // RFC 5280 ub-common-name

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
  return extension(OID.subjectAltName, critical, tlv(TAG.sequence, general));
}

function subjectFor(name: LeafName): Buffer {
  // Past 64 characters no CN is allowed; the subject is then empty and the SAN is marked critical.
  if (name.name.length > MAX_COMMON_NAME) return tlv(TAG.sequence);
  const cn = tlv(TAG.sequence, OID.commonName, tlv(TAG.utf8String, Buffer.from(name.name, 'utf8')));
  return tlv(TAG.sequence, tlv(TAG.set, cn));
}

export async function prepareLeafSigner(ca: CaCertificateFacts, caKey: EcPrivateKey, leafPublicKey: webcrypto.CryptoKey): Promise<LeafSigner> {
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', leafPublicKey));
  const sharedExtensions = [
    basicConstraints(null),
    keyUsage(KEY_USAGE.digitalSignature),
    serverAuthOnly(),
    subjectKeyIdentifier(keyIdentifier(spki)),
    authorityKeyIdentifier(ca.subjectKeyId ?? keyIdentifier(ca.spki)),
  ];
  return (name, validity) =>
    signCertificate(
      {
        serial: randomSerial(),
        issuer: ca.subjectDer,
        validity: tlv(TAG.sequence, time(validity.notBefore), time(validity.notAfter)),
        subject: subjectFor(name),
        spki,
        extensions: [...sharedExtensions, subjectAltName(name, name.name.length > MAX_COMMON_NAME)],
      },
      caKey,
    );
}
