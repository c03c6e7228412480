/**
 * X.509 building blocks for the workspace CA: key pairs (WebCrypto ECDSA P-256, never pure JS),
 * serials, the self-signed CA certificate (leaves are in leaf.ts), and reading a CA certificate back.
 * Reading parses with node:crypto (OpenSSL) first, so the DER walk for the fields Node does not
 * expose only ever runs over a certificate OpenSSL accepted. Pure of file IO and of policy.
 */
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import {
  basicConstraints,
  distinguishedName,
  KEY_USAGE,
  keyIdentifier,
  keyUsage,
  OID,
  signCertificate,
  subjectKeyIdentifier,
} from './certificate.js';
import { children, parseTime, pem, readElement, TAG, tlv, time, type DerElement } from './der.js';

export type EcKeyPair = webcrypto.CryptoKeyPair;
export type EcPrivateKey = webcrypto.CryptoKey;

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
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
  return pem('PRIVATE KEY', new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', key)));
}

/** A positive, non-zero-leading 128-bit serial (RFC 5280 allows up to 20 octets; CAB BR wants 64+ random bits). */
export function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return bytes;
}

export interface CaCertificateParams {
  readonly keys: EcKeyPair;
  readonly workspace: string;
  readonly validityDays: number;
  readonly now: number;
}

/** The self-signed CA certificate, PEM. */
export async function createCaCertificate(p: CaCertificateParams): Promise<string> {
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', p.keys.publicKey));
  const name = distinguishedName([
    [OID.commonName, `${CA_SUBJECT_PREFIX}${p.workspace}`],
    [OID.organization, CA_ORGANIZATION],
  ]);
  return signCertificate(
    {
      serial: randomSerial(),
      issuer: name,
      validity: tlv(TAG.sequence, time(new Date(p.now - CA_BACKDATE_MS)), time(new Date(p.now + p.validityDays * DAY_MS))),
      subject: name,
      spki,
      extensions: [
        // pathLen 0: this CA signs leaves only, never another CA.
        basicConstraints({ pathLength: 0 }),
        keyUsage(KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign),
        subjectKeyIdentifier(keyIdentifier(spki)),
      ],
    },
    p.keys.privateKey,
  );
}

/** What the CA needs from its certificate, read once when it is loaded. */
export interface CaCertificateFacts {
  /** Re-encoded from the DER, so whatever else the file held never reaches a guest. */
  readonly pem: string;
  /** "CN=..., O=..." as shown to users. */
  readonly subject: string;
  /** The subject exactly as encoded, to be the leaves' issuer byte for byte. */
  readonly subjectDer: Buffer;
  /** The workspace named by a microagent subject CN, undefined for any other certificate. */
  readonly workspace: string | undefined;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Buffer;
  readonly subjectKeyId: Buffer | null;
  /** basicConstraints cA and keyUsage keyCertSign both set. */
  readonly isCa: boolean;
  /** SHA-256 of the DER certificate, colon-separated hex (as openssl and browsers show it). */
  readonly fingerprint256: string;
}

function commonNameOf(subject: DerElement): string | undefined {
  for (const rdn of children(subject)) {
    for (const attribute of children(rdn)) {
      const [oid, value] = children(attribute);
      const textual = value?.tag === TAG.utf8String || value?.tag === TAG.printableString;
      if (oid?.raw.equals(OID.commonName) === true && textual) return value.value.toString('utf8');
    }
  }
  return undefined;
}

/** extnID (hex of the whole OID element) to the DER inside extnValue. */
function extensionsOf(fields: readonly DerElement[]): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const wrapper = fields.find((f) => f.tag === TAG.explicit(3));
  const list = wrapper === undefined ? undefined : children(wrapper)[0];
  for (const ext of list === undefined ? [] : children(list)) {
    const parts = children(ext);
    const oid = parts[0];
    const value = parts[parts.length - 1];
    if (oid !== undefined && value?.tag === TAG.octetString) out.set(oid.raw.toString('hex'), value.value);
  }
  return out;
}

/** Parses a PEM certificate; throws (OpenSSL's or a RangeError) when it is not one. */
export function readCaCertificate(text: string): CaCertificateFacts {
  const native = new X509Certificate(text);
  const tbs = children(readElement(native.raw))[0];
  if (tbs === undefined) throw new RangeError('certificate has no TBSCertificate');
  const fields = children(tbs);
  const at = (i: number): DerElement => {
    const field = fields[(fields[0]?.tag === TAG.explicit(0) ? 1 : 0) + i];
    if (field === undefined) throw new RangeError('truncated TBSCertificate');
    return field;
  };
  const [notBefore, notAfter] = children(at(3));
  if (notBefore === undefined || notAfter === undefined) throw new RangeError('certificate has no validity');
  const subject = at(4);
  const extensions = extensionsOf(fields);
  const usage = extensions.get(OID.keyUsage.toString('hex'));
  const usageBits = usage === undefined ? 0 : (readElement(usage).value[1] ?? 0);
  const ski = extensions.get(OID.subjectKeyIdentifier.toString('hex'));
  const cn = commonNameOf(subject);
  return {
    pem: pem('CERTIFICATE', native.raw),
    subject: native.subject.split('\n').join(', '),
    subjectDer: subject.raw,
    workspace: cn?.startsWith(CA_SUBJECT_PREFIX) === true ? cn.slice(CA_SUBJECT_PREFIX.length) : undefined,
    notBefore: parseTime(notBefore),
    notAfter: parseTime(notAfter),
    spki: at(5).raw,
    subjectKeyId: ski === undefined ? null : readElement(ski).value,
    isCa: native.ca && (usageBits & KEY_USAGE.keyCertSign) !== 0,
    fingerprint256: native.fingerprint256,
  };
}
