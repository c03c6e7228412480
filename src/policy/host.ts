/**
 * Host normalisation: one spelling per destination, computed once per rule (at compile time) and once
 * per request. Lowercase, no trailing dot, IDNA to punycode, IP literals in canonical form.
 * It must never accept a spelling the OS or a URL parser would read as a different address: anything
 * whose last label is numeric (`127.1`, `0x7f.0.0.1`, `2130706433`, `1.2.3.04`) is neither an IP
 * address nor a host name, so it is rejected rather than guessed at.
 */
import { domainToASCII } from 'node:url';
import { formatIp, parseIp, type ParsedIp } from './address.js';

export type HostTarget =
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'ip'; readonly ip: ParsedIp; readonly text: string };

/** Letters, digits, hyphen and underscore labels of 1-63 bytes, 253 in all: what DNS can carry. */
function isDnsName(name: string): boolean {
  const length = name.length;
  if (length === 0 || length > 253) return false;
  let labelStart = 0;
  for (let i = 0; i <= length; i++) {
    const c = i === length ? 46 : name.charCodeAt(i);
    if (c === 46) {
      const labelLength = i - labelStart;
      if (labelLength === 0 || labelLength > 63) return false;
      if (name.charCodeAt(labelStart) === 45 || name.charCodeAt(i - 1) === 45) return false;
      labelStart = i + 1;
    } else if (!((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95)) {
      return false;
    }
  }
  return true;
}

/** WHATWG URL hosts ending in a numeric label are IPv4 spellings; we accept only the strict form. */
function endsInNumericLabel(name: string): boolean {
  let start = name.lastIndexOf('.') + 1;
  if (name.charCodeAt(start) === 48 && name.charCodeAt(start + 1) === 120) start += 2; // 0x
  for (let i = start; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 48 || c > 57) {
      if (start === name.lastIndexOf('.') + 1 || !((c >= 97 && c <= 102) || (c >= 65 && c <= 70))) return false;
    }
  }
  return true;
}

function needsIdna(name: string): boolean {
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) > 127) return true;
  return name.startsWith('xn--') || name.includes('.xn--');
}

/**
 * One pass over a plain ASCII name: the common case on the request path. Returns the normalised name,
 * null if it is certainly invalid, or undefined when the full path (IDNA, odd forms) must decide.
 */
function fastName(raw: string): string | null | undefined {
  let length = raw.length;
  if (length > 0 && raw.charCodeAt(length - 1) === 46) length--;
  if (length === 0 || length > 253) return null;
  let upper = false;
  let labelStart = 0;
  let lastLabelNumeric = true;
  for (let i = 0; i <= length; i++) {
    const c = i === length ? 46 : raw.charCodeAt(i);
    if (c === 46) {
      const labelLength = i - labelStart;
      if (labelLength === 0 || labelLength > 63) return null;
      if (raw.charCodeAt(labelStart) === 45 || raw.charCodeAt(i - 1) === 45) return null;
      // Punycode labels need IDNA validation.
      if (labelLength > 3 && raw.charCodeAt(labelStart + 2) === 45 && raw.charCodeAt(labelStart + 3) === 45) return undefined;
      labelStart = i + 1;
      if (i < length) lastLabelNumeric = true;
    } else if ((c >= 97 && c <= 122) || c === 45 || c === 95) {
      lastLabelNumeric = false;
    } else if (c >= 65 && c <= 90) {
      upper = true;
      lastLabelNumeric = false;
    } else if (c < 48 || c > 57) {
      return undefined;
    }
  }
  // Hex spellings (0x7f) end in letters, so they fall through to the full check below.
  if (lastLabelNumeric) return null;
  const name = length === raw.length ? raw : raw.slice(0, length);
  return upper ? name.toLowerCase() : name;
}

/** Normalises a host name that is not an IP literal; null when it is not a valid DNS name. */
export function normalizeName(raw: string): string | null {
  const fast = fastName(raw);
  if (fast !== undefined && (fast === null || !endsInNumericLabel(fast))) return fast;
  let name = raw.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (needsIdna(name)) {
    // domainToASCII would quietly turn `１２７.１` into 127.0.0.1: check the result like any input.
    name = domainToASCII(name);
    if (name.endsWith('.')) name = name.slice(0, -1);
  }
  if (!isDnsName(name) || endsInNumericLabel(name)) return null;
  return name;
}

/** Parses a request's host: an IP literal (brackets allowed for IPv6) or a DNS name. */
export function analyzeHost(raw: string): HostTarget | null {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 300) return null;
  const first = raw.charCodeAt(0);
  if (first === 91 /* [ */ || raw.includes(':') || (first >= 48 && first <= 57)) {
    const ip = parseIp(raw);
    if (ip !== null) return { kind: 'ip', ip, text: formatIp(ip) };
    if (first === 91 || raw.includes(':')) return null;
  }
  const name = normalizeName(raw);
  return name === null ? null : { kind: 'name', name };
}

/**
 * The canonical form of a host: lowercase punycode name without trailing dot, or canonical IP text
 * (IPv6 without brackets). Null for anything invalid, including non-canonical IPv4 spellings.
 */
export function normalizeHost(raw: string): string | null {
  const host = analyzeHost(raw);
  if (host === null) return null;
  return host.kind === 'name' ? host.name : host.text;
}

/** RFC 6761: `localhost` and its subdomains always mean this machine, resolved or not. */
export function isLocalhostName(name: string): boolean {
  return name === 'localhost' || name.endsWith('.localhost');
}
