/**
 * DNS wire format for the workspace resolver, sans-IO: parse a client query from a Buffer into a
 * typed result, and build responses. Pure functions; no sockets, no policy.
 * The parser never throws on client input: it returns a query, a FORMERR/NOTIMP-able failure (when
 * the header id is readable) or `drop` (when nothing is). Responses echo the client's question bytes
 * exactly (0x20 case randomisation survives) and encode answers with dns-packet, uncompressed, so an
 * answer section cached once can follow any question.
 */
import dnsPacket, { type Answer } from 'dns-packet';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

const HEADER_LENGTH = 12;
/** Reused by parseQuery (synchronous, so never shared between two parses). */
const NAME_SCRATCH = Buffer.alloc(256);
const QR = 0x8000;
const OPCODE_MASK = 0x7800;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;
const TYPE_OPT = 41;
/** RFC 1035 section 4.2.1: the UDP ceiling without EDNS. */
export const CLASSIC_UDP_PAYLOAD = 512;
/** A stream message's length must fit its 2-byte prefix. */
export const MAX_STREAM_MESSAGE = 65535;
/** What we advertise and honour at most (the DNS flag day 2020 value, avoids IP fragmentation). */
export const MAX_UDP_PAYLOAD = 1232;

export interface ParsedQuery {
  readonly kind: 'query';
  readonly id: number;
  /** Lowercased, no trailing dot; '' for the root. Labels keep their bytes (latin1). */
  readonly name: string;
  /** False when a label holds bytes no hostname can (dots, spaces, control or 8-bit bytes). */
  readonly nameIsText: boolean;
  /** Length of the longest label, for the exfiltration guard. */
  readonly longestLabel: number;
  readonly qtype: number;
  readonly qclass: number;
  readonly recursionDesired: boolean;
  /** The question section exactly as received (name, type, class). */
  readonly questionBytes: Buffer;
  /** EDNS UDP payload size the client advertised, or null when it sent no OPT record. */
  readonly ednsPayload: number | null;
}

export interface UnparseableQuery {
  readonly kind: 'formerr' | 'notimp';
  readonly id: number;
  /** The raw header flags, so the error response can echo opcode and RD. */
  readonly flags: number;
  readonly detail: string;
}

export type QueryParse = ParsedQuery | UnparseableQuery | { readonly kind: 'drop'; readonly detail: string };

/** Reads a client query. Only opcode QUERY with exactly one question is served. */
export function parseQuery(buf: Buffer): QueryParse {
  if (buf.length < HEADER_LENGTH) return { kind: 'drop', detail: 'shorter than a DNS header' };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  // A response sent to us is never answered: answering could loop two resolvers into each other.
  if ((flags & QR) !== 0) return { kind: 'drop', detail: 'QR bit set (a response, not a query)' };
  const fail = (kind: 'formerr' | 'notimp', detail: string): UnparseableQuery => ({ kind, id, flags, detail });
  if ((flags & OPCODE_MASK) !== 0) return fail('notimp', `opcode ${(flags & OPCODE_MASK) >> 11} is not served`);
  const qdcount = buf.readUInt16BE(4);
  const ancount = buf.readUInt16BE(6);
  const nscount = buf.readUInt16BE(8);
  const arcount = buf.readUInt16BE(10);
  if (qdcount !== 1) return fail('formerr', `${qdcount} questions; exactly one is served`);
  if (ancount !== 0 || nscount !== 0) return fail('formerr', 'a query carries answer or authority records');

  // One pass over the name: validate, note the longest label, and build the lowercased dotted form
  // in a scratch buffer, so the hot path makes one string per query instead of one per label.
  let offset = HEADER_LENGTH;
  let nameLength = 0;
  let longestLabel = 0;
  let nameIsText = true;
  for (;;) {
    const length = buf[offset];
    if (length === undefined) return fail('formerr', 'question name runs past the packet');
    offset += 1;
    if (length === 0) break;
    if (length > 63) return fail('formerr', 'compressed or oversized label in the question');
    if (offset + length > buf.length) return fail('formerr', 'question label runs past the packet');
    if (nameLength + length + 1 > 255) return fail('formerr', 'question name longer than 255 bytes');
    if (nameLength > 0) NAME_SCRATCH[nameLength - 1] = 0x2e;
    for (let i = 0; i < length; i++) {
      const byte = buf[offset + i] as number;
      if (byte <= 0x20 || byte >= 0x7f || byte === 0x2e) nameIsText = false;
      NAME_SCRATCH[nameLength + i] = byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;
    }
    nameLength += length + 1;
    if (length > longestLabel) longestLabel = length;
    offset += length;
  }
  // A name no hostname could be (refused as such) is kept in presentation form, so its record shows the
  // labels as they came: a dot inside a label is not a label boundary, a byte is not a latin1 letter.
  const name = nameLength === 0 ? '' : nameIsText ? NAME_SCRATCH.toString('latin1', 0, nameLength - 1) : presentationName(NAME_SCRATCH, buf, HEADER_LENGTH);
  if (offset + 4 > buf.length) return fail('formerr', 'question type/class missing');
  const qtype = buf.readUInt16BE(offset);
  // Type 0 is reserved, and OPT (41) is a pseudo-record of the additional section, never a question.
  if (qtype === 0 || qtype === TYPE_OPT) return fail('formerr', `question type ${qtype} cannot be asked`);
  const qclass = buf.readUInt16BE(offset + 2);
  offset += 4;
  const questionBytes = buf.subarray(HEADER_LENGTH, offset);

  const edns = arcount === 0 ? null : readEdnsPayload(buf, offset, arcount);
  if (edns === 'malformed') return fail('formerr', 'malformed additional section');
  return {
    kind: 'query',
    id,
    name,
    nameIsText,
    longestLabel,
    qtype,
    qclass,
    recursionDesired: (flags & RD) !== 0,
    questionBytes,
    ednsPayload: edns,
  };
}

/** Walks the additional records for an OPT record; returns its payload size or null. */
function readEdnsPayload(buf: Buffer, start: number, count: number): number | null | 'malformed' {
  let offset = start;
  let payload: number | null = null;
  for (let i = 0; i < count; i++) {
    const afterName = skipName(buf, offset);
    if (afterName === null || afterName + 10 > buf.length) return 'malformed';
    const type = buf.readUInt16BE(afterName);
    const klass = buf.readUInt16BE(afterName + 2);
    const rdlength = buf.readUInt16BE(afterName + 8);
    offset = afterName + 10 + rdlength;
    if (offset > buf.length) return 'malformed';
    if (type === TYPE_OPT) {
      if (payload !== null) return 'malformed'; // RFC 6891 section 6.1.1: more than one OPT is FORMERR
      payload = Math.max(CLASSIC_UDP_PAYLOAD, Math.min(klass, MAX_UDP_PAYLOAD));
    }
  }
  return payload;
}

/** Offset just past a (possibly compressed) name, or null when it runs past the buffer. */
function skipName(buf: Buffer, start: number): number | null {
  let offset = start;
  for (;;) {
    const length = buf[offset];
    if (length === undefined) return null;
    if ((length & 0xc0) === 0xc0) return offset + 2 <= buf.length ? offset + 2 : null;
    if (length > 63) return null;
    offset += 1 + length;
    if (length === 0) return offset <= buf.length ? offset : null;
  }
}

const TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 35: 'NAPTR',
  43: 'DS', 46: 'RRSIG', 47: 'NSEC', 48: 'DNSKEY', 50: 'NSEC3', 52: 'TLSA', 64: 'SVCB', 65: 'HTTPS',
  99: 'SPF', 252: 'AXFR', 255: 'ANY', 257: 'CAA',
};

/** Type names for audit records and logs ('A', 'HTTPS', 'TYPE65534' as in RFC 3597). */
export function qtypeName(qtype: number): string {
  return TYPE_NAMES[qtype] ?? `TYPE${qtype}`;
}

/**
 * Records encoded once (uncompressed, so they can follow any question) with the offsets of their TTL
 * fields, so a cached answer is re-sent by copying bytes and patching TTLs, not re-encoding.
 */
export interface EncodedRecords {
  readonly bytes: Buffer;
  readonly count: number;
  readonly ttlOffsets: readonly number[];
}

export const NO_RECORDS: EncodedRecords = { bytes: Buffer.alloc(0), count: 0, ttlOffsets: [] };

export interface ResponseParts {
  readonly query: Pick<ParsedQuery, 'id' | 'questionBytes' | 'recursionDesired' | 'ednsPayload'>;
  readonly rcode: number;
  readonly answers: EncodedRecords;
  readonly authority?: EncodedRecords;
  /** Seconds written into every record's TTL field. */
  readonly ttl: number;
  /** UDP only: the largest datagram the client accepts. Longer responses go out empty with TC. */
  readonly maxLength?: number;
}

const OPT_RECORD = Buffer.from([0, 0, TYPE_OPT, MAX_UDP_PAYLOAD >> 8, MAX_UDP_PAYLOAD & 0xff, 0, 0, 0, 0, 0, 0]);

/** Builds a response: header, the client's question verbatim, answers, authority, and OPT if asked. */
export function buildResponse(parts: ResponseParts): Buffer {
  const { query, answers } = parts;
  const authority = parts.authority ?? NO_RECORDS;
  const withOpt = query.ednsPayload !== null;
  const length =
    HEADER_LENGTH + query.questionBytes.length + answers.bytes.length + authority.bytes.length + (withOpt ? OPT_RECORD.length : 0);
  if (parts.maxLength !== undefined && length > parts.maxLength) return buildTruncated(parts);
  const out = Buffer.allocUnsafe(length);
  writeHeader(out, query, parts.rcode, answers.count, authority.count, withOpt ? 1 : 0);
  let offset = HEADER_LENGTH;
  offset += query.questionBytes.copy(out, offset);
  offset = copyRecords(out, offset, answers, parts.ttl);
  offset = copyRecords(out, offset, authority, parts.ttl);
  if (withOpt) OPT_RECORD.copy(out, offset);
  return out;
}

function copyRecords(out: Buffer, offset: number, records: EncodedRecords, ttl: number): number {
  records.bytes.copy(out, offset);
  for (const ttlOffset of records.ttlOffsets) out.writeUInt32BE(ttl, offset + ttlOffset);
  return offset + records.bytes.length;
}

/** An empty response with TC set: the client retries over TCP (RFC 1035 section 4.2.1). */
function buildTruncated(parts: ResponseParts): Buffer {
  const out = buildResponse({ query: parts.query, rcode: parts.rcode, answers: NO_RECORDS, ttl: 0 });
  out.writeUInt16BE(out.readUInt16BE(2) | TC, 2);
  return out;
}

function writeHeader(
  out: Buffer,
  query: Pick<ParsedQuery, 'id' | 'recursionDesired'>,
  rcode: number,
  ancount: number,
  nscount: number,
  arcount: number,
): void {
  out.writeUInt16BE(query.id, 0);
  out.writeUInt16BE(QR | (query.recursionDesired ? RD : 0) | RA | (rcode & 0xf), 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(ancount, 6);
  out.writeUInt16BE(nscount, 8);
  out.writeUInt16BE(arcount, 10);
}

/** FORMERR/NOTIMP for a query we could not serve: header only, echoing id, opcode and RD. */
export function buildHeaderOnlyError(failure: UnparseableQuery): Buffer {
  const out = Buffer.alloc(HEADER_LENGTH);
  out.writeUInt16BE(failure.id, 0);
  const rcode = failure.kind === 'notimp' ? RCODE.NOTIMP : RCODE.FORMERR;
  out.writeUInt16BE(QR | (failure.flags & (OPCODE_MASK | RD)) | RA | rcode, 2);
  return out;
}

/** dns-packet's single-record codec, which its type declarations leave out. */
const answerCodec = (dnsPacket as unknown as {
  answer: { encode: ((a: Answer, buf: Buffer, offset: number) => Buffer) & { bytes: number }; encodingLength(a: Answer): number };
}).answer;

/** Encodes records back to back, uncompressed, noting where each TTL field is. */
export function encodeRecords(records: readonly Answer[]): EncodedRecords {
  if (records.length === 0) return NO_RECORDS;
  const length = records.reduce((sum, r) => sum + answerCodec.encodingLength(r), 0);
  const bytes = Buffer.alloc(length);
  const ttlOffsets: number[] = [];
  let offset = 0;
  for (const record of records) {
    answerCodec.encode(record, bytes, offset);
    // Uncompressed owner name, then type (2) and class (2): the TTL follows.
    ttlOffsets.push((skipName(bytes, offset) as number) + 4);
    offset += answerCodec.encode.bytes;
  }
  return { bytes, count: records.length, ttlOffsets };
}

/** A query packet for upstream forwarding (random id chosen by the caller), with EDNS. */
export function encodeUpstreamQuery(id: number, name: string, qtype: number): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: RD,
    // dns-packet resolves 'UNKNOWN_<n>' to type n for every n, known to it or not.
    questions: [{ name: name === '' ? '.' : name, type: `UNKNOWN_${qtype}` as dnsPacket.RecordType, class: 'IN' }],
    additionals: [
      { type: 'OPT', name: '.', udpPayloadSize: MAX_UDP_PAYLOAD, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] },
    ],
  });
}

/** Whether a record dns-packet decoded has type `qtype` (it names types it lacks 'UNKNOWN_<n>'). */
export function isTypeNumber(record: Answer, qtype: number): boolean {
  return record.type === TYPE_NAMES[qtype] || record.type === (`UNKNOWN_${qtype}` as string);
}

/**
 * RFC 1035 5.1 presentation form of the question name (lowercased in `lowered`, where each label sits
 * one byte after its length byte in the packet): `\.`, `\\` and `\DDD` escapes.
 */
function presentationName(lowered: Buffer, packet: Buffer, start: number): string {
  const labels: string[] = [];
  for (let at = 0; ; ) {
    const labelLength = packet[start + at] as number;
    if (labelLength === 0) break;
    let label = '';
    for (let i = 0; i < labelLength; i++) {
      const byte = lowered[at + i] as number;
      if (byte === 0x2e || byte === 0x5c) label += `\\${String.fromCharCode(byte)}`;
      else if (byte <= 0x20 || byte >= 0x7f) label += `\\${byte.toString().padStart(3, '0')}`;
      else label += String.fromCharCode(byte);
    }
    labels.push(label);
    at += labelLength + 1;
  }
  return labels.join('.');
}
