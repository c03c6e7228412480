/**
 * What every certificate this CA writes shares: the v3 TBSCertificate frame, the ECDSA-SHA256
 * signature over it, and the few extensions (RFC 5280 4.2) the CA and its leaves carry, all
 * DER-encoded by hand (der.ts). It encodes only what its callers validated; it never parses a peer's
 * certificate and never sees policy.
 */
import { createHash, webcrypto } from 'node:crypto';
import { children, ecdsaSignatureToDer, pem, readElement, TAG, tlv } from './der.js';

const ECDSA_SHA256 = tlv(TAG.sequence, Buffer.from('06082a8648ce3d040302', 'hex'));
const VERSION_3 = tlv(TAG.explicit(0), tlv(TAG.integer, Buffer.from([2])));
const TRUE = tlv(TAG.boolean, Buffer.from([0xff]));
const CRITICAL = TRUE;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

export const OID = {
  commonName: Buffer.from('0603550403', 'hex'),
  organization: Buffer.from('060355040a', 'hex'),
  basicConstraints: Buffer.from('0603551d13', 'hex'),
  keyUsage: Buffer.from('0603551d0f', 'hex'),
  extKeyUsage: Buffer.from('0603551d25', 'hex'),
  subjectKeyIdentifier: Buffer.from('0603551d0e', 'hex'),
  authorityKeyIdentifier: Buffer.from('0603551d23', 'hex'),
  subjectAltName: Buffer.from('0603551d11', 'hex'),
} as const;

/** KeyUsage bits as masks of the BIT STRING's first byte (bit 0 is the most significant). */
export const KEY_USAGE = { digitalSignature: 0x80, keyCertSign: 0x04, cRLSign: 0x02 } as const;

export function extension(oid: Buffer, critical: boolean, value: Buffer): Buffer {
  return critical ? tlv(TAG.sequence, oid, CRITICAL, tlv(TAG.octetString, value)) : tlv(TAG.sequence, oid, tlv(TAG.octetString, value));
}

/** Critical, as CAs must mark it; `pathLength` only for a CA (a leaf's value is the empty SEQUENCE). */
export function basicConstraints(ca: { readonly pathLength: number } | null): Buffer {
  const value = ca === null ? tlv(TAG.sequence) : tlv(TAG.sequence, TRUE, tlv(TAG.integer, Buffer.from([ca.pathLength])));
  return extension(OID.basicConstraints, true, value);
}

/** Critical KeyUsage of up to the first eight bits; DER drops the trailing zero bits. */
export function keyUsage(mask: number): Buffer {
  let unused = 0;
  while (unused < 7 && (mask & (1 << unused)) === 0) unused++;
  return extension(OID.keyUsage, true, tlv(TAG.bitString, Buffer.from([unused, mask])));
}

export function serverAuthOnly(): Buffer {
  const serverAuth = tlv(TAG.oid, Buffer.from('2b06010505070301', 'hex')); // 1.3.6.1.5.5.7.3.1
  return extension(OID.extKeyUsage, false, tlv(TAG.sequence, serverAuth));
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits of a SubjectPublicKeyInfo. */
export function keyIdentifier(spki: Buffer): Buffer {
  const bits = children(readElement(spki))[1];
  if (bits?.tag !== TAG.bitString) throw new RangeError('SubjectPublicKeyInfo has no public key bits');
  return createHash('sha1').update(bits.value.subarray(1)).digest();
}

export function subjectKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.subjectKeyIdentifier, false, tlv(TAG.octetString, keyId));
}

export function authorityKeyIdentifier(keyId: Buffer): Buffer {
  return extension(OID.authorityKeyIdentifier, false, tlv(TAG.sequence, tlv(TAG.implicit(0), keyId)));
}

/** A Name of one attribute per RDN, each a UTF8String (RFC 5280's choice for new certificates). */
export function distinguishedName(attributes: readonly (readonly [oid: Buffer, value: string])[]): Buffer {
  return tlv(TAG.sequence, ...attributes.map(([oid, value]) => tlv(TAG.set, tlv(TAG.sequence, oid, tlv(TAG.utf8String, Buffer.from(value, 'utf8'))))));
}

export interface TbsFields {
  readonly serial: Buffer;
  readonly issuer: Buffer;
  readonly validity: Buffer;
  readonly subject: Buffer;
  readonly spki: Buffer;
  readonly extensions: readonly Buffer[];
}

/** Signs a v3 certificate with ECDSA P-256 / SHA-256 (WebCrypto, off the event loop) and returns its PEM. */
export async function signCertificate(fields: TbsFields, signingKey: webcrypto.CryptoKey): Promise<string> {
  const tbs = tlv(
    TAG.sequence,
    VERSION_3,
    tlv(TAG.integer, fields.serial),
    ECDSA_SHA256,
    fields.issuer,
    fields.validity,
    fields.subject,
    fields.spki,
    tlv(TAG.explicit(3), tlv(TAG.sequence, ...fields.extensions)),
  );
  const signature = new Uint8Array(await webcrypto.subtle.sign(SIGNING, signingKey, tbs));
  return pem('CERTIFICATE', tlv(TAG.sequence, tbs, ECDSA_SHA256, tlv(TAG.bitString, Buffer.from([0]), ecdsaSignatureToDer(signature))));
}
