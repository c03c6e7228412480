/**
 * Address classification: public, loopback, private, metadata, ... and whether it is internal.
 * Addresses that embed an IPv4 address (mapped, translated, compatible, NAT64, 6to4, Teredo) are
 * classified by the IPv4 address inside, so `::ffff:127.0.0.1` is as internal as `127.0.0.1`.
 * It must fail closed: anything that is not a strict literal, or lies outside every known range of
 * IPv6 global unicast, counts as internal.
 */
import { formatIp, formatIpv4, parseIp, parseIpv4, parseIpv6, type ParsedIp } from './address.js';

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

/** The first range of V6_RANGES holding `v6`; null outside them all. */
function v6RangeOf(v6: bigint): V6Range | null {
  const words = wordsOf(v6);
  for (const range of V6_RANGES) if (inV6Range(words, range)) return range;
  return null;
}

/**
 * The IPv4 addresses an IPv6 address carries (none for an IPv4 address or a plain IPv6 one), so a
 * deny written for `169.254.169.254` also holds for `::ffff:169.254.169.254` and `64:ff9b::a9fe:a9fe`.
 */
export function embeddedIpv4s(ip: ParsedIp): readonly number[] {
  if (ip.family === 4) return [];
  const range = v6RangeOf(ip.v6);
  return range !== null && EMBEDDINGS.has(range.class) ? embeddedV4(range.class as Embedding, ip.v6) : [];
}

function classOf(ip: ParsedIp): ClassOf {
  if (ip.family === 4) return { class: classifyV4(ip.v4) };
  const range = v6RangeOf(ip.v6);
  if (range !== null) {
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
