/**
 * Strict IP literals: parsing and canonical text. Only the canonical spellings are IP addresses here:
 * four dotted decimals without leading zeros, and RFC 4291 IPv6 text without zone ids. `127.1`,
 * `0x7f.0.0.1`, `017700000001` and `2130706433` are not addresses; other code must never "helpfully"
 * parse them, because the OS resolver would dial them. Classification lives in classify.ts.
 */

export type ParsedIp = { readonly family: 4; readonly v4: number } | { readonly family: 6; readonly v6: bigint };

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
  if (typeof raw !== 'string' || raw.length === 0) return null;
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
