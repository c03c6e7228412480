/**
 * A pure peek at a TLS ClientHello: reads the SNI host name and the ALPN list from the first bytes a
 * client sends, so the proxy can bind the name to the CONNECT and choose passthrough before any TLS
 * stack sees the bytes. It never consumes, decrypts or copies the input and never throws: every input
 * gives `need_more`, a `client_hello`, or one of the declared errors. It must never call `not_tls`
 * anything a TLS server would take as a ClientHello: `not_tls` bytes may be spliced uninspected.
 */

export const CLIENT_HELLO_ERRORS = ['not_tls', 'sslv2_hello', 'not_client_hello', 'malformed', 'too_large'] as const;
export type ClientHelloError = (typeof CLIENT_HELLO_ERRORS)[number];

export type ClientHelloPeek =
  | { readonly kind: 'need_more' }
  | { readonly kind: 'client_hello'; readonly sni: string | null; readonly alpn: readonly string[] }
  | { readonly kind: 'error'; readonly error: ClientHelloError };

/** A ClientHello larger than this is refused (real ones, post-quantum key shares included, are < 4 KiB). */
export const MAX_CLIENT_HELLO_BYTES = 32 * 1024;

const RECORD_HANDSHAKE = 0x16;
const SSL2_HEADER_BIT = 0x80;
const SSL2_CLIENT_HELLO = 0x01;
const SSL3_MAJOR = 0x03;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
const NEED_MORE: ClientHelloPeek = { kind: 'need_more' };

function fail(error: ClientHelloError): ClientHelloPeek {
  return { kind: 'error', error };
}

/**
 * Reassembles the handshake bytes carried by consecutive handshake records (a ClientHello may be split
 * across records), stopping once the first handshake message is complete. Returns those bytes or an error.
 */
function handshakeBytes(buf: Buffer): Buffer | ClientHelloError {
  if (buf.length >= 1 && buf[0] !== RECORD_HANDSHAKE) return 'not_tls';
  if (buf.length >= 2 && buf[1] !== 0x03) return 'not_tls';
  const parts: Buffer[] = [];
  let have = 0;
  let offset = 0;
  while (offset + 5 <= buf.length) {
    if (buf[offset] !== RECORD_HANDSHAKE || buf[offset + 1] !== 0x03) return 'malformed';
    const length = buf.readUInt16BE(offset + 3);
    if (length === 0) return 'malformed';
    const part = buf.subarray(offset + 5, Math.min(offset + 5 + length, buf.length));
    parts.push(part);
    have += part.length;
    offset += 5 + length;
    if (have >= 4) {
      const joined = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
      if (have >= 4 + joined.readUIntBE(1, 3)) return joined;
    }
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/**
 * The SSLv2-format ("backward-compatible") ClientHello of RFC 5246 E.2: a 2-byte record header with the
 * high bit set, CLIENT-HELLO (1), then a 3.x version. OpenSSL servers still negotiate TLS 1.0-1.2 from
 * it (the same test as its record layer, plus its version check), and it carries no extensions, so no
 * SNI to bind: it is recognised so that it is refused, never spliced as not TLS.
 */
function sslv2Hello(buf: Buffer): 'sslv2_hello' | 'need_more' | 'not_tls' {
  if (buf.length >= 3 && buf[2] !== SSL2_CLIENT_HELLO) return 'not_tls';
  if (buf.length >= 4 && buf[3] !== SSL3_MAJOR) return 'not_tls';
  return buf.length >= 4 ? 'sslv2_hello' : 'need_more';
}

export function parseClientHello(buf: Buffer): ClientHelloPeek {
  if (buf.length >= 1 && ((buf[0] as number) & SSL2_HEADER_BIT) !== 0) {
    const legacy = sslv2Hello(buf);
    return legacy === 'need_more' ? NEED_MORE : fail(legacy);
  }
  const handshake = handshakeBytes(buf);
  if (typeof handshake === 'string') return fail(handshake);
  if (handshake.length < 4) return buf.length > MAX_CLIENT_HELLO_BYTES ? fail('too_large') : NEED_MORE;
  if (handshake[0] !== HANDSHAKE_CLIENT_HELLO) return fail('not_client_hello');
  const bodyLength = handshake.readUIntBE(1, 3);
  if (bodyLength + 4 > MAX_CLIENT_HELLO_BYTES) return fail('too_large');
  if (handshake.length < 4 + bodyLength) return NEED_MORE;
  return parseBody(handshake.subarray(4, 4 + bodyLength));
}

/** A cursor over the ClientHello body; every read is bounds-checked and returns null past the end. */
function reader(body: Buffer) {
  let pos = 0;
  return {
    get pos() {
      return pos;
    },
    skip(n: number): boolean {
      if (pos + n > body.length) return false;
      pos += n;
      return true;
    },
    u8(): number | null {
      if (pos + 1 > body.length) return null;
      return body[pos++] as number;
    },
    u16(): number | null {
      if (pos + 2 > body.length) return null;
      const v = body.readUInt16BE(pos);
      pos += 2;
      return v;
    },
    bytes(n: number): Buffer | null {
      if (pos + n > body.length) return null;
      const out = body.subarray(pos, pos + n);
      pos += n;
      return out;
    },
  };
}

function parseBody(body: Buffer): ClientHelloPeek {
  const r = reader(body);
  if (!r.skip(2 + 32)) return fail('malformed'); // legacy_version + random
  const sessionIdLength = r.u8();
  if (sessionIdLength === null || sessionIdLength > 32 || !r.skip(sessionIdLength)) return fail('malformed');
  const suitesLength = r.u16();
  if (suitesLength === null || suitesLength < 2 || suitesLength % 2 !== 0 || !r.skip(suitesLength)) {
    return fail('malformed');
  }
  const compressionLength = r.u8();
  if (compressionLength === null || compressionLength < 1 || !r.skip(compressionLength)) return fail('malformed');
  if (r.pos === body.length) return { kind: 'client_hello', sni: null, alpn: [] };
  const extensionsLength = r.u16();
  if (extensionsLength === null || r.pos + extensionsLength !== body.length) return fail('malformed');
  let sni: string | null = null;
  let alpn: string[] = [];
  const seen = new Set<number>();
  while (r.pos < body.length) {
    const type = r.u16();
    const length = r.u16();
    if (type === null || length === null) return fail('malformed');
    const data = r.bytes(length);
    if (data === null || seen.has(type)) return fail('malformed');
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const name = parseServerName(data);
      if (name === undefined) return fail('malformed');
      sni = name;
    } else if (type === EXT_ALPN) {
      const protocols = parseAlpn(data);
      if (protocols === null) return fail('malformed');
      alpn = protocols;
    }
  }
  return { kind: 'client_hello', sni, alpn };
}

/** RFC 6066 server_name: one host_name entry of printable ASCII; undefined when malformed. */
function parseServerName(data: Buffer): string | null | undefined {
  if (data.length === 0) return null;
  const r = reader(data);
  const listLength = r.u16();
  if (listLength === null || listLength + 2 !== data.length) return undefined;
  let name: string | null = null;
  while (r.pos < data.length) {
    const nameType = r.u8();
    const length = r.u16();
    if (nameType === null || length === null) return undefined;
    const bytes = r.bytes(length);
    if (bytes === null || length === 0) return undefined;
    if (nameType !== 0) continue;
    if (name !== null) return undefined; // two host names: ambiguous, refuse
    for (const byte of bytes) if (byte < 0x21 || byte > 0x7e) return undefined;
    name = bytes.toString('latin1');
  }
  return name;
}

function parseAlpn(data: Buffer): string[] | null {
  const r = reader(data);
  const listLength = r.u16();
  if (listLength === null || listLength + 2 !== data.length || listLength === 0) return null;
  const protocols: string[] = [];
  while (r.pos < data.length) {
    const length = r.u8();
    if (length === null || length === 0) return null;
    const bytes = r.bytes(length);
    if (bytes === null) return null;
    protocols.push(bytes.toString('latin1'));
  }
  return protocols;
}
