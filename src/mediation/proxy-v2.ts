/**
 * PROXY protocol version 2 (haproxy's proxy-protocol.txt, section 2.2): a pure encoder for the header
 * the broker puts in front of every target connection, and a pure parser host services (and our tests)
 * use to read it. Sans-IO: Buffers in, values out; this file never touches a socket.
 *
 * The broker sends command PROXY with family/transport AF_UNSPEC/UNSPEC (byte 0x00) and no address
 * block: the guest end is a vsock port, which no PROXY family can express, and the spec lets a receiver
 * of a LOCAL command discard everything after the fixed header, TLVs included, whereas PROXY tells it to
 * read them. Our TLVs (docs/mediation.md) use the application range 0xE0-0xEF plus PP2_TYPE_UNIQUE_ID.
 */

export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const FIXED_LENGTH = 16;
const MAX_PAYLOAD = 0xffff;

export const PP2_TYPE_UNIQUE_ID = 0x05;
/** The workspace name, UTF-8. */
export const PP2_TYPE_MICROAGENT_WORKSPACE = 0xe0;
/** The workspace's runtime id (one per boot), UTF-8. */
export const PP2_TYPE_MICROAGENT_RUNTIME_ID = 0xe1;
/** The guest-side channel port, 4 bytes big-endian. */
export const PP2_TYPE_MICROAGENT_CHANNEL_PORT = 0xe2;
/** PP2_TYPE_UNIQUE_ID values may be at most 128 bytes. */
const MAX_UNIQUE_ID = 128;

export type ProxyV2Command = 'local' | 'proxy';
export type ProxyV2Family = 'unspec' | 'inet' | 'inet6' | 'unix';
export type ProxyV2Transport = 'unspec' | 'stream' | 'dgram';

export interface ProxyV2Endpoint {
  readonly address: string;
  /** Absent for AF_UNIX. */
  readonly port?: number;
}

export interface ProxyV2Header {
  readonly command: ProxyV2Command;
  readonly family: ProxyV2Family;
  readonly transport: ProxyV2Transport;
  /** Absent for AF_UNSPEC. */
  readonly source?: ProxyV2Endpoint;
  readonly destination?: ProxyV2Endpoint;
}

export interface ProxyV2Tlv {
  readonly type: number;
  readonly value: Buffer;
}

export type ProxyV2ErrorCode = 'bad_signature' | 'bad_version' | 'bad_command' | 'bad_family' | 'short_address' | 'bad_tlv';

export type ProxyV2Parse =
  | { readonly kind: 'need_more' }
  | { readonly kind: 'header'; readonly header: ProxyV2Header; readonly tlvs: readonly ProxyV2Tlv[]; readonly length: number }
  | { readonly kind: 'error'; readonly code: ProxyV2ErrorCode; readonly message: string };

const NEED_MORE: ProxyV2Parse = { kind: 'need_more' };

/** The family/transport bytes the spec allows; every other value must be rejected. */
const FAMILIES: ReadonlyMap<number, { family: ProxyV2Family; transport: ProxyV2Transport; addressLength: number }> = new Map([
  [0x00, { family: 'unspec', transport: 'unspec', addressLength: 0 }],
  [0x11, { family: 'inet', transport: 'stream', addressLength: 12 }],
  [0x12, { family: 'inet', transport: 'dgram', addressLength: 12 }],
  [0x21, { family: 'inet6', transport: 'stream', addressLength: 36 }],
  [0x22, { family: 'inet6', transport: 'dgram', addressLength: 36 }],
  [0x31, { family: 'unix', transport: 'stream', addressLength: 216 }],
  [0x32, { family: 'unix', transport: 'dgram', addressLength: 216 }],
]);

/**
 * Parses a PROXY v2 header at the start of `buf`. Returns `need_more` while `buf` is a valid prefix,
 * the header with its total `length` (the application's bytes start there), or the first error.
 * Feeding more bytes never changes a `header` or `error` result.
 */
export function parseProxyV2(buf: Buffer): ProxyV2Parse {
  const signatureBytes = Math.min(buf.length, PROXY_V2_SIGNATURE.length);
  if (buf.compare(PROXY_V2_SIGNATURE, 0, signatureBytes, 0, signatureBytes) !== 0) {
    return fail('bad_signature', 'the connection does not start with the PROXY v2 signature');
  }
  if (buf.length < 13) return NEED_MORE;
  const versionCommand = buf[12] as number;
  if (versionCommand >> 4 !== 2) return fail('bad_version', `PROXY protocol version ${versionCommand >> 4}, expected 2`);
  const commandBits = versionCommand & 0x0f;
  if (commandBits > 1) return fail('bad_command', `PROXY v2 command 0x${commandBits.toString(16)} is neither LOCAL nor PROXY`);
  if (buf.length < 14) return NEED_MORE;
  const familyByte = buf[13] as number;
  const family = FAMILIES.get(familyByte);
  if (family === undefined) return fail('bad_family', `PROXY v2 family/transport 0x${familyByte.toString(16).padStart(2, '0')} is not defined`);
  if (buf.length < FIXED_LENGTH) return NEED_MORE;
  const payloadLength = buf.readUInt16BE(14);
  if (payloadLength < family.addressLength) {
    return fail('short_address', `PROXY v2 length ${payloadLength} is shorter than the ${family.family} address block (${family.addressLength})`);
  }
  const length = FIXED_LENGTH + payloadLength;
  if (buf.length < length) return NEED_MORE;

  const addressStart = FIXED_LENGTH;
  const tlvs = parseTlvs(buf.subarray(addressStart + family.addressLength, length));
  if (tlvs === null) return fail('bad_tlv', 'a PROXY v2 TLV runs past the end of the header');
  const header: ProxyV2Header = {
    command: commandBits === 1 ? 'proxy' : 'local',
    family: family.family,
    transport: family.transport,
    ...readAddresses(family.family, buf.subarray(addressStart, addressStart + family.addressLength)),
  };
  return { kind: 'header', header, tlvs, length };
}

/** Encodes a header with AF_UNSPEC (no address block) and the given TLVs. */
export function encodeProxyV2(command: ProxyV2Command, tlvs: readonly ProxyV2Tlv[]): Buffer {
  const payloadLength = tlvs.reduce((sum, tlv) => sum + 3 + tlv.value.length, 0);
  if (payloadLength > MAX_PAYLOAD) throw new RangeError(`PROXY v2 TLVs take ${payloadLength} bytes, more than ${MAX_PAYLOAD}`);
  const out = Buffer.allocUnsafe(FIXED_LENGTH + payloadLength);
  PROXY_V2_SIGNATURE.copy(out, 0);
  out[12] = 0x20 | (command === 'proxy' ? 1 : 0);
  out[13] = 0x00;
  out.writeUInt16BE(payloadLength, 14);
  let at = FIXED_LENGTH;
  for (const tlv of tlvs) {
    if (!Number.isInteger(tlv.type) || tlv.type < 0 || tlv.type > 0xff) throw new RangeError(`PROXY v2 TLV type ${tlv.type} is not a byte`);
    out[at] = tlv.type;
    out.writeUInt16BE(tlv.value.length, at + 1);
    tlv.value.copy(out, at + 3);
    at += 3 + tlv.value.length;
  }
  return out;
}

/** What the broker tells the target about a connection. */
export interface MediationTlvs {
  readonly workspace: string;
  readonly runtimeId: string;
  readonly port: number;
  readonly conn: string;
}

/** The broker's header for one connection: PROXY, AF_UNSPEC, our TLVs. */
export function encodeMediationHeader(facts: MediationTlvs): Buffer {
  const conn = Buffer.from(facts.conn, 'utf8');
  if (conn.length > MAX_UNIQUE_ID) throw new RangeError(`connection id longer than ${MAX_UNIQUE_ID} bytes`);
  const port = Buffer.allocUnsafe(4);
  port.writeUInt32BE(facts.port, 0);
  return encodeProxyV2('proxy', [
    { type: PP2_TYPE_UNIQUE_ID, value: conn },
    { type: PP2_TYPE_MICROAGENT_WORKSPACE, value: Buffer.from(facts.workspace, 'utf8') },
    { type: PP2_TYPE_MICROAGENT_RUNTIME_ID, value: Buffer.from(facts.runtimeId, 'utf8') },
    { type: PP2_TYPE_MICROAGENT_CHANNEL_PORT, value: port },
  ]);
}

/** Reads the broker's TLVs back (for host services behind a channel); null when one is missing or malformed. */
export function readMediationTlvs(tlvs: readonly ProxyV2Tlv[]): MediationTlvs | null {
  const find = (type: number) => tlvs.find((t) => t.type === type)?.value;
  const conn = find(PP2_TYPE_UNIQUE_ID);
  const workspace = find(PP2_TYPE_MICROAGENT_WORKSPACE);
  const runtimeId = find(PP2_TYPE_MICROAGENT_RUNTIME_ID);
  const port = find(PP2_TYPE_MICROAGENT_CHANNEL_PORT);
  if (conn === undefined || workspace === undefined || runtimeId === undefined || port?.length !== 4) return null;
  return {
    workspace: workspace.toString('utf8'),
    runtimeId: runtimeId.toString('utf8'),
    port: port.readUInt32BE(0),
    conn: conn.toString('utf8'),
  };
}

function parseTlvs(block: Buffer): ProxyV2Tlv[] | null {
  const tlvs: ProxyV2Tlv[] = [];
  let at = 0;
  while (at < block.length) {
    if (block.length - at < 3) return null;
    const valueLength = block.readUInt16BE(at + 1);
    const end = at + 3 + valueLength;
    if (end > block.length) return null;
    tlvs.push({ type: block[at] as number, value: Buffer.from(block.subarray(at + 3, end)) });
    at = end;
  }
  return tlvs;
}

function readAddresses(family: ProxyV2Family, block: Buffer): { source?: ProxyV2Endpoint; destination?: ProxyV2Endpoint } {
  switch (family) {
    case 'unspec':
      return {};
    case 'inet':
      return {
        source: { address: ipv4(block.subarray(0, 4)), port: block.readUInt16BE(8) },
        destination: { address: ipv4(block.subarray(4, 8)), port: block.readUInt16BE(10) },
      };
    case 'inet6':
      return {
        source: { address: ipv6(block.subarray(0, 16)), port: block.readUInt16BE(32) },
        destination: { address: ipv6(block.subarray(16, 32)), port: block.readUInt16BE(34) },
      };
    case 'unix':
      return { source: { address: unixPath(block.subarray(0, 108)) }, destination: { address: unixPath(block.subarray(108, 216)) } };
    default:
      return unreachable(family);
  }
}

const ipv4 = (b: Buffer) => Array.from(b).join('.');
const ipv6 = (b: Buffer) => Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':');

function unixPath(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('utf8');
}

function fail(code: ProxyV2ErrorCode, message: string): ProxyV2Parse {
  return { kind: 'error', code, message };
}

function unreachable(value: never): never {
  throw new Error(`unexpected PROXY v2 family ${String(value)}`);
}
