/**
 * The few DER encodings the CA's certificates need (RFC 5280 / X.690), written by hand because
 * building each leaf through a generic ASN.1 library costs more than the signature itself, and
 * loading one (@peculiar/x509 and its schema stack) cost the supervisor ~200 ms and ~12 MB.
 * Pure functions over bytes; encoders only ever receive validated input and never parse guest data.
 */
export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  sequence: 0x30,
  set: 0x31,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  /** [n] EXPLICIT, constructed context-specific. */
  explicit: (n: number) => 0xa0 | n,
  /** [n] IMPLICIT, primitive context-specific (GeneralName dNSName is [2], iPAddress [7]). */
  implicit: (n: number) => 0x80 | n,
} as const;

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n >>>= 8) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One tag-length-value with the concatenation of `parts` as its value. */
export function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  const value = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(value.length), value]);
}

/** A DER INTEGER from unsigned big-endian bytes: leading zeros stripped, a 0x00 added if the top bit is set. */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  const pad = (trimmed[0] ?? 0) & 0x80 ? Buffer.from([0]) : Buffer.alloc(0);
  return tlv(TAG.integer, pad, trimmed);
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, always whole seconds in UTC. */
export function time(date: Date): Buffer {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z';
  const year = date.getUTCFullYear();
  return year < 2050 ? tlv(TAG.utcTime, Buffer.from(digits.slice(2), 'ascii')) : tlv(TAG.generalizedTime, Buffer.from(digits, 'ascii'));
}

/** The inverse of `time` for a certificate's validity: UTCTime or GeneralizedTime in UTC ("Z"), whole seconds. */
export function parseTime(element: DerElement): Date {
  const text = element.value.toString('ascii');
  const digits = element.tag === TAG.utcTime ? `${Number(text.slice(0, 2)) < 50 ? '20' : '19'}${text}` : text;
  const match = element.tag === TAG.utcTime || element.tag === TAG.generalizedTime ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(digits) : null;
  if (match === null) throw new RangeError(`unsupported certificate time ${JSON.stringify(text)}`);
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number) as [number, number, number, number, number, number];
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second));
}

/** WebCrypto's ECDSA signature (r || s, fixed width) as the DER Ecdsa-Sig-Value X.509 carries. */
export function ecdsaSignatureToDer(p1363: Uint8Array): Buffer {
  const half = p1363.length / 2;
  return tlv(TAG.sequence, unsignedInteger(p1363.subarray(0, half)), unsignedInteger(p1363.subarray(half)));
}

export interface DerElement {
  readonly tag: number;
  /** The whole element, header included. */
  readonly raw: Buffer;
  readonly value: Buffer;
}

/** Reads the element at `offset` of trusted DER (our own CA certificate); throws on truncation. */
export function readElement(buf: Buffer, offset = 0): DerElement {
  const tag = buf[offset];
  let length = buf[offset + 1];
  if (tag === undefined || length === undefined) throw new RangeError('truncated DER');
  let header = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (buf[offset + 2 + i] ?? 0);
    header += count;
  }
  if (offset + header + length > buf.length) throw new RangeError('truncated DER');
  return { tag, raw: buf.subarray(offset, offset + header + length), value: buf.subarray(offset + header, offset + header + length) };
}

/** The children of a constructed element. */
export function children(element: DerElement): DerElement[] {
  const out: DerElement[] = [];
  for (let offset = 0; offset < element.value.length; ) {
    const child = readElement(element.value, offset);
    out.push(child);
    offset += child.raw.length;
  }
  return out;
}

/** PEM armour with the 64-column lines RFC 7468 asks for. */
export function pem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.endsWith('\n') ? b64 : b64 + '\n'}-----END ${label}-----\n`;
}
