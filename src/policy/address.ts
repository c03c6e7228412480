/**
 * Strict IP literals and their classification (public, loopback, private, metadata, ...).
 * Only the canonical spellings are IP addresses here: four dotted decimals without leading zeros, and
 * RFC 4291 IPv6 text without zone ids. `127.1`, `0x7f.0.0.1`, `017700000001` and `2130706433` are not
 * addresses; other code must never "helpfully" parse them, because the OS resolver would dial them.
 * Addresses that embed an IPv4 address (mapped, NAT64, 6to4, Teredo, compatible) are classified by the
 * IPv4 address inside, so `::ffff:127.0.0.1` is as internal as `127.0.0.1`.
 */

export type ParsedIp = { readonly family: 4; readonly v4: number } | { readonly family: 6; readonly v6: bigint };

export type AddressClass =
  | 'public'
  | 'documentation'
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'metadata'
  | 'cgnat'
  | 'unique_local'
  | 'unspecified'
  | 'this_network'
  | 'multicast'
  | 'broadcast'
  | 'benchmarking'
  | 'reserved';

/** How an IPv6 address carries an IPv4 address; the classification is then the IPv4 one. */
export type Embedding = 'ipv4_mapped' | 'ipv4_translated' | 'ipv4_compatible' | 'nat64' | '6to4' | 'teredo';

export interface AddressClassification {
  readonly ip: string;
  readonly family: 4 | 6;
  readonly class: AddressClass;
  readonly internal: boolean;
  /** The IPv4 address inside an IPv6 one, when the class came from it. */
  readonly embedded?: { readonly via: Embedding; readonly ipv4: string };
}

/** Only these reach the public internet; documentation ranges are not internal to the host either. */
const NOT_INTERNAL: ReadonlySet<AddressClass> = new Set(['public', 'documentation']);

export function parseIpv4(text: string): number | null {
  let value = 0;
  let parts = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i === text.length ? 46 : text.charCodeAt(i);
    if (c === 46) {
      const len = i - start;
      if (len === 0 || len > 3 || parts === 4) return null;
      // A leading zero is how octal spellings (0177.0.0.1) sneak past; only "0" itself may start with 0.
      if (len > 1 && text.charCodeAt(start) === 48) return null;
      let octet = 0;
      for (let j = start; j < i; j++) octet = octet * 10 + (text.charCodeAt(j) - 48);
      if (octet > 255) return null;
      value = value * 256 + octet;
      parts++;
      start = i + 1;
    } else if (c < 48 || c > 57) {
      return null;
    }
  }
  return parts === 4 ? value : null;
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** RFC 4291 text to 16-bit groups: one "::" at most, 1-4 hex digits per group, dotted IPv4 last. */
function parseIpv6Groups(text: string): number[] | null {
  const length = text.length;
  if (length < 2 || length > 45) return null;
  const groups: number[] = [];
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === 58 /* : */) {
    if (text.charCodeAt(1) !== 58) return null;
    gap = 0;
    i = 2;
  }
  while (i < length) {
    const start = i;
    let value = 0;
    let digit: number;
    while (i < length && i - start < 5 && (digit = hexDigit(text.charCodeAt(i))) !== -1) {
      value = value * 16 + digit;
      i++;
    }
    if (i < length && text.charCodeAt(i) === 46 /* . */) {
      // The dotted IPv4 form is only allowed as the textually last part (`::ffff:1.2.3.4`).
      const v4 = parseIpv4(text.slice(start));
      if (v4 === null || groups.length > 6) return null;
      groups.push(Math.floor(v4 / 65536), v4 % 65536);
      i = length;
      break;
    }
    if (i === start || i - start > 4) return null;
    groups.push(value);
    if (i === length) break;
    if (text.charCodeAt(i) !== 58) return null;
    i++;
    if (i < length && text.charCodeAt(i) === 58) {
      if (gap !== -1) return null;
      gap = groups.length;
      i++;
    } else if (i === length) {
      return null; // a single trailing ":"
    }
  }
  if (gap === -1) return groups.length === 8 ? groups : null;
  if (groups.length > 7) return null;
  groups.splice(gap, 0, ...new Array<number>(8 - groups.length).fill(0));
  return groups;
}

export function parseIpv6(text: string): bigint | null {
  const groups = parseIpv6Groups(text);
  if (groups === null) return null;
  let value = 0n;
  for (let k = 0; k < 8; k += 2) value = (value << 32n) | BigInt((groups[k] as number) * 65536 + (groups[k + 1] as number));
  return value;
}

/** Parses a strict literal, brackets allowed around IPv6 (`[::1]`). */
export function parseIp(raw: string): ParsedIp | null {
  if (raw.length === 0) return null;
  if (raw.charCodeAt(0) === 91 /* [ */) {
    if (raw.charCodeAt(raw.length - 1) !== 93 /* ] */) return null;
    const v6 = parseIpv6(raw.slice(1, -1));
    return v6 === null ? null : { family: 6, v6 };
  }
  if (raw.includes(':')) {
    const v6 = parseIpv6(raw);
    return v6 === null ? null : { family: 6, v6 };
  }
  const v4 = parseIpv4(raw);
  return v4 === null ? null : { family: 4, v4 };
}

export function formatIpv4(v4: number): string {
  return `${(v4 >>> 24) & 255}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
}

/** RFC 5952 text: lowercase, longest zero run compressed, IPv4-mapped in dotted form. */
export function formatIpv6(v6: bigint): string {
  if (v6 >> 32n === 0xffffn) return `::ffff:${formatIpv4(Number(v6 & 0xffffffffn))}`;
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((v6 >> shift) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatIp(ip: ParsedIp): string {
  return ip.family === 4 ? formatIpv4(ip.v4) : formatIpv6(ip.v6);
}

/** The canonical text of a strict IP literal (brackets allowed around IPv6), or null. */
export function parseIpLiteral(raw: string): string | null {
  const ip = parseIp(raw);
  return ip === null ? null : formatIp(ip);
}

interface V4Range {
  readonly network: number;
  readonly bits: number;
  readonly class: AddressClass;
}
interface V6Range {
  /** The network as four 32-bit words, most significant first. */
  readonly words: readonly number[];
  readonly bits: number;
  readonly class: AddressClass | Embedding;
}

function v4Range(cidr: string, cls: AddressClass): V4Range {
  const [addr, bits] = cidr.split('/') as [string, string];
  return { network: parseIpv4(addr) as number, bits: Number(bits), class: cls };
}
function v6Range(cidr: string, cls: AddressClass | Embedding): V6Range {
  const [addr, bits] = cidr.split('/') as [string, string];
  return { words: wordsOf(parseIpv6(addr) as bigint), bits: Number(bits), class: cls };
}

function wordsOf(v6: bigint): number[] {
  return [Number(v6 >> 96n), Number((v6 >> 64n) & 0xffffffffn), Number((v6 >> 32n) & 0xffffffffn), Number(v6 & 0xffffffffn)];
}

function inV6Range(words: readonly number[], range: V6Range): boolean {
  for (let k = 0, remaining = range.bits; remaining > 0; k++, remaining -= 32) {
    const shift = remaining >= 32 ? 0 : 32 - remaining;
    if ((words[k] as number) >>> shift !== (range.words[k] as number) >>> shift) return false;
  }
  return true;
}

// First match wins, so more specific ranges come first.
const V4_RANGES: readonly V4Range[] = [
  v4Range('169.254.169.254/32', 'metadata'), // AWS, GCP, Azure, OCI instance metadata
  v4Range('100.100.100.200/32', 'metadata'), // Alibaba Cloud instance metadata
  v4Range('0.0.0.0/32', 'unspecified'),
  v4Range('255.255.255.255/32', 'broadcast'),
  v4Range('0.0.0.0/8', 'this_network'), // RFC 1122
  v4Range('10.0.0.0/8', 'private'), // RFC 1918
  v4Range('172.16.0.0/12', 'private'),
  v4Range('192.168.0.0/16', 'private'),
  v4Range('127.0.0.0/8', 'loopback'),
  v4Range('169.254.0.0/16', 'link_local'), // RFC 3927
  v4Range('100.64.0.0/10', 'cgnat'), // RFC 6598
  v4Range('192.0.0.0/24', 'reserved'), // RFC 6890 IETF protocol assignments
  v4Range('192.0.2.0/24', 'documentation'), // RFC 5737
  v4Range('198.51.100.0/24', 'documentation'),
  v4Range('203.0.113.0/24', 'documentation'),
  v4Range('198.18.0.0/15', 'benchmarking'), // RFC 2544
  v4Range('192.88.99.0/24', 'reserved'), // deprecated 6to4 relay anycast (RFC 7526)
  v4Range('224.0.0.0/4', 'multicast'),
  v4Range('240.0.0.0/4', 'reserved'),
];

const V6_RANGES: readonly V6Range[] = [
  v6Range('::/128', 'unspecified'),
  v6Range('::1/128', 'loopback'),
  v6Range('fd00:ec2::254/128', 'metadata'), // AWS IMDS over IPv6
  v6Range('::ffff:0:0/96', 'ipv4_mapped'),
  v6Range('::ffff:0:0:0/96', 'ipv4_translated'), // RFC 2765 SIIT
  v6Range('::/96', 'ipv4_compatible'), // deprecated, still routed by some stacks
  v6Range('64:ff9b::/96', 'nat64'), // RFC 6052
  v6Range('64:ff9b:1::/48', 'private'), // RFC 8215 local-use NAT64
  v6Range('100::/64', 'reserved'), // RFC 6666 discard
  v6Range('2001::/32', 'teredo'), // RFC 4380
  v6Range('2001:db8::/32', 'documentation'), // RFC 3849
  v6Range('2002::/16', '6to4'), // RFC 3056
  v6Range('2001::/23', 'reserved'), // RFC 2928 IETF protocol assignments
  v6Range('3fff::/20', 'documentation'), // RFC 9637
  v6Range('fc00::/7', 'unique_local'), // RFC 4193
  v6Range('fe80::/10', 'link_local'),
  v6Range('fec0::/10', 'private'), // deprecated site-local
  v6Range('ff00::/8', 'multicast'),
  v6Range('2000::/3', 'public'),
];

function classifyV4(v4: number): AddressClass {
  for (const range of V4_RANGES) {
    // Every range here is at least a /4, so the shift is always below 32.
    const shift = 32 - range.bits;
    if (v4 >>> shift === range.network >>> shift) return range.class;
  }
  return 'public';
}

function embeddedV4(via: Embedding, v6: bigint): number[] {
  switch (via) {
    case 'ipv4_mapped':
    case 'ipv4_translated':
    case 'ipv4_compatible':
    case 'nat64':
      return [Number(v6 & 0xffffffffn)];
    case '6to4':
      return [Number((v6 >> 80n) & 0xffffffffn)];
    case 'teredo':
      // Server address, then the client's public address (stored bit-inverted).
      return [Number((v6 >> 64n) & 0xffffffffn), Number(~v6 & 0xffffffffn)];
    default: {
      const unreachable: never = via;
      return unreachable;
    }
  }
}

const EMBEDDINGS: ReadonlySet<string> = new Set<Embedding>([
  'ipv4_mapped',
  'ipv4_translated',
  'ipv4_compatible',
  'nat64',
  '6to4',
  'teredo',
]);

interface ClassOf {
  readonly class: AddressClass;
  readonly embedded?: { readonly via: Embedding; readonly ipv4: number };
}

function classOf(ip: ParsedIp): ClassOf {
  if (ip.family === 4) return { class: classifyV4(ip.v4) };
  const words = wordsOf(ip.v6);
  for (const range of V6_RANGES) {
    if (!inV6Range(words, range)) continue;
    if (!EMBEDDINGS.has(range.class)) return { class: range.class as AddressClass };
    const via = range.class as Embedding;
    const inner = embeddedV4(via, ip.v6);
    // The most internal of the embedded addresses decides (Teredo carries two).
    const ipv4 = inner.find((v4) => !NOT_INTERNAL.has(classifyV4(v4))) ?? (inner[inner.length - 1] as number);
    return { class: classifyV4(ipv4), embedded: { via, ipv4 } };
  }
  // Outside 2000::/3 and every assigned special range: not globally routable.
  return { class: 'reserved' };
}

/** Classifies a strict IP literal; null when `ip` is not one. */
export function classifyAddress(ip: string): AddressClassification | null {
  const parsed = parseIp(ip);
  if (parsed === null) return null;
  const found = classOf(parsed);
  const classification = { ip: formatIp(parsed), family: parsed.family, class: found.class, internal: !NOT_INTERNAL.has(found.class) };
  if (found.embedded === undefined) return classification;
  return { ...classification, embedded: { via: found.embedded.via, ipv4: formatIpv4(found.embedded.ipv4) } };
}

/** True for every address that is not public; also true for anything that is not a strict literal. */
export function isInternalAddress(ip: string): boolean {
  const parsed = parseIp(ip);
  return parsed === null ? true : isInternalParsed(parsed);
}

export function isInternalParsed(ip: ParsedIp): boolean {
  return !NOT_INTERNAL.has(ip.family === 4 ? classifyV4(ip.v4) : classOf(ip).class);
}
