/**
 * Validators for the destination conditions of a rule: host patterns, CIDRs and ports. Each turns one
 * YAML value into its normalised form or a problem with a fix; none of them sees YAML or positions.
 * They must never accept something ambiguous (a partial-label wildcard, an IP in `hosts`, a CIDR with
 * host bits set): a pattern that matches something other than what its author meant is a hole.
 */
import { formatIp, parseIp, type ParsedIp } from './address.js';
import { normalizeName } from './host.js';

export interface Problem {
  readonly problem: string;
  readonly fix: string;
}
export type Checked<T> = { readonly ok: true; readonly value: T } | ({ readonly ok: false } & Problem);

export const ok = <T>(value: T): Checked<T> => ({ ok: true, value });
export const bad = (problem: string, fix: string): Checked<never> => ({ ok: false, problem, fix });

/** Spaces around a value are a typing slip (`" a.com"` in quotes): refused, not silently trimmed. */
export function spaced(raw: string): Checked<never> | null {
  return raw.trim() === raw ? null : bad(`"${raw}" has spaces around it`, `write "${raw.trim()}"`);
}

/**
 * exact: that name only. subdomains (`*.x`): names below x at any depth, not x itself.
 * apex (`.x`): x and every name below it. glob (`ec2.*.x`): each `*` is exactly one label.
 * any (`*`): every host name (never an IP literal: those match `cidrs`).
 */
export type HostPattern =
  | { readonly kind: 'any' }
  | { readonly kind: 'exact'; readonly name: string }
  | { readonly kind: 'subdomains'; readonly suffix: string }
  | { readonly kind: 'apex'; readonly suffix: string }
  | { readonly kind: 'glob'; readonly labels: readonly (string | null)[] };

export function hostPatternText(p: HostPattern): string {
  switch (p.kind) {
    case 'any':
      return '*';
    case 'exact':
      return p.name;
    case 'subdomains':
      return `*.${p.suffix}`;
    case 'apex':
      return `.${p.suffix}`;
    case 'glob':
      return p.labels.map((l) => l ?? '*').join('.');
    default: {
      const unreachable: never = p;
      return unreachable;
    }
  }
}

// Stands in for `*` while the literal labels around it go through IDNA and DNS-name validation.
const WILDCARD_STAND_IN = 'microagent-wildcard-label';

/** A URL, a port or a path written into a host pattern: each has its own place in a rule. */
function misplacedPart(text: string): Checked<never> | null {
  const url = /^([a-z][a-z0-9+.-]*):\/\/([^/:]*)/i.exec(text);
  if (url !== null) return bad(`"${text}" is a URL, not a host name`, `write the host alone ("${url[2]}"); match paths with paths: and ports with ports:`);
  const port = /^([^/:]+):(\d+)$/.exec(text);
  if (port !== null) return bad(`"${text}" carries a port`, `write the host alone ("${port[1]}") and the port under ports: [${port[2]}]`);
  const slash = text.indexOf('/');
  if (slash > 0) return bad(`"${text}" carries a path`, `write the host alone ("${text.slice(0, slash)}") and match the path with paths: ["${text.slice(slash)}"]`);
  return null;
}

export function parseHostPattern(raw: string): Checked<HostPattern> {
  const text = raw;
  if (text.trim() === '') return bad('empty host pattern', 'remove the entry or write a host name such as api.github.com');
  const padded = spaced(text);
  if (padded !== null) return padded;
  if (text === '*') return ok({ kind: 'any' });
  const ip = parseIp(text) ?? parseIp(text.replace(/\.$/, ''));
  if (ip !== null) return bad(`"${text}" is an IP address, not a host name`, `move it to the rule's cidrs: [${formatIp(ip)}]`);
  if (text.includes('**')) return bad(`"${text}": "**" is not a host wildcard`, 'use "*.example.com" for subdomains at any depth');
  const misplaced = misplacedPart(text);
  if (misplaced !== null) return misplaced;
  let body = text;
  let lead: 'subdomains' | 'apex' | null = null;
  if (body.startsWith('*.')) {
    lead = 'subdomains';
    body = body.slice(2);
  } else if (body.startsWith('.')) {
    lead = 'apex';
    body = body.slice(1);
  }
  const labels = body.replace(/\.$/, '').split('.');
  // One trailing dot is the root (dropped); more, or ".." inside, is an empty label.
  if (labels.includes('')) return bad(`"${text}" has an empty label`, 'write the name with single dots, e.g. "api.example.com"');
  for (const label of labels) {
    if (label.includes('*') && label !== '*') {
      return bad(`"${text}": "*" must stand for a whole label`, 'write "*.example.com" for every subdomain, or list the exact names');
    }
  }
  const wildcards = labels.filter((l) => l === '*').length;
  if (wildcards > 0 && lead !== null) {
    return bad(`"${text}": a leading "${lead === 'apex' ? '.' : '*.'}" cannot be combined with other wildcards`, 'split it into separate patterns, each with one kind of wildcard');
  }
  const standIn = labels.map((l) => (l === '*' ? WILDCARD_STAND_IN : l)).join('.');
  const name = normalizeName(standIn);
  if (name === null) {
    return bad(`"${text}" is not a valid host name`, 'use letters, digits and hyphens in labels of at most 63 characters; numeric-only last labels are IP spellings, put IPs under cidrs');
  }
  if (lead !== null) return ok({ kind: lead, suffix: name });
  if (wildcards === 0) return ok({ kind: 'exact', name });
  if (labels.every((l) => l === '*')) {
    return bad(`"${text}" matches every name with ${labels.length} labels`, 'name at least one label, e.g. "ec2.*.amazonaws.com"');
  }
  return ok({ kind: 'glob', labels: name.split('.').map((l) => (l === WILDCARD_STAND_IN ? null : l)) });
}

export interface Cidr {
  readonly ip: ParsedIp;
  readonly bits: number;
  /** Canonical `network/bits`. */
  readonly text: string;
}

export function parseCidr(raw: string): Checked<Cidr> {
  const padded = spaced(raw);
  if (padded !== null) return padded;
  const text = raw;
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (ip === null) {
    return bad(`"${addrText}" is not a strict IP address`, 'write IPv4 as four decimal numbers without leading zeros (10.0.0.0) and IPv6 in RFC 4291 text, no zone');
  }
  const max = ip.family === 4 ? 32 : 128;
  const bitsText = slash === -1 ? String(max) : text.slice(slash + 1);
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(bitsText) || Number(bitsText) > max) {
    return bad(`"${text}": prefix length must be 0-${max}`, `write e.g. ${formatIp(ip)}/${ip.family === 4 ? 24 : 64}`);
  }
  const bits = Number(bitsText);
  const network = maskIp(ip, bits);
  const networkText = formatIp(network);
  if (formatIp(ip) !== networkText) {
    return bad(`"${text}" has host bits set`, `write ${networkText}/${bits}, or ${formatIp(ip)} alone for the single address`);
  }
  return ok({ ip: network, bits, text: `${networkText}/${bits}` });
}

export function maskIp(ip: ParsedIp, bits: number): ParsedIp {
  if (ip.family === 4) {
    const keep = bits === 0 ? 0 : 2 ** 32 - 2 ** (32 - bits);
    return { family: 4, v4: (ip.v4 & keep) >>> 0 };
  }
  const keep = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(128 - bits);
  return { family: 6, v6: ip.v6 & keep };
}

export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  if (cidr.ip.family !== ip.family) return false;
  const masked = maskIp(ip, cidr.bits);
  return masked.family === 4 && cidr.ip.family === 4
    ? masked.v4 === cidr.ip.v4
    : masked.family === 6 && cidr.ip.family === 6 && masked.v6 === cidr.ip.v6;
}

/** An inclusive port range; a single port is [p, p]. */
export type PortRange = readonly [number, number];

export function parsePort(raw: unknown): Checked<PortRange> {
  const fix = 'write a port 1-65535 or a range "8000-8100"';
  if (typeof raw === 'number') {
    if (!Number.isInteger(raw)) return bad(`port ${raw} is not a whole number`, fix);
    return raw >= 1 && raw <= 65535 ? ok([raw, raw]) : bad(`port ${raw} is out of range`, fix);
  }
  if (typeof raw !== 'string') return bad('a port must be a number or a "low-high" string', fix);
  const match = /^\s*([0-9]{1,5})\s*(?:-\s*([0-9]{1,5})\s*)?$/.exec(raw);
  if (match === null) return bad(`"${raw}" is not a port or port range`, fix);
  const low = Number(match[1]);
  const high = match[2] === undefined ? low : Number(match[2]);
  if (low < 1 || high > 65535) return bad(`"${raw}" is outside 1-65535`, fix);
  if (low > high) return bad(`"${raw}": the range is reversed`, `write "${high}-${low}"`);
  return ok([low, high]);
}
