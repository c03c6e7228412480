/**
 * Validation of the names a leaf certificate may be minted for: a DNS host name or an IP literal,
 * already normalised by the caller (the proxy mints only for names the policy allowed).
 * This is a last line of defence, not a normaliser: it rejects anything that is not already in
 * canonical form rather than repairing it, and it never turns a name into a file path.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { MicroagentError } from '../errors.js';

export type LeafName =
  | { readonly kind: 'dns'; readonly name: string }
  | { readonly kind: 'ip'; readonly name: string };

const MAX_DNS_NAME = 253;
const MAX_LABEL = 63;
// Lowercase LDH labels; '_' is tolerated because real service names (e.g. _dmarc) carry it.
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

function invalidName(name: string, why: string): MicroagentError {
  // Truncated so a hostile name cannot flood logs or error output.
  const shown = JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}...` : name);
  return new MicroagentError('invalid', `cannot mint a certificate for ${shown}: ${why}`, {
    code: 'ca.invalid_name',
    remediation:
      'pass a normalised host name (lowercase, no trailing dot, punycode) or a canonical IP literal, as produced by normalizeHost/parseIpLiteral',
  });
}

/** Classifies a name for a leaf's subjectAltName, or throws `invalid` (code ca.invalid_name). */
export function parseLeafName(name: string): LeafName {
  if (typeof name !== 'string' || name.length === 0) throw invalidName(String(name), 'the name is empty');
  if (name.length > MAX_DNS_NAME) throw invalidName(name, `longer than ${MAX_DNS_NAME} characters`);
  if (isIPv4(name)) return { kind: 'ip', name };
  if (name.includes(':')) {
    // Zone ids (fe80::1%eth0) name an interface, not a host: no certificate can carry them.
    if (!isIPv6(name) || name.includes('%')) throw invalidName(name, 'not a valid IP literal');
    // Spellings of one address differ (RFC 5952 writes ::ffff:1.2.3.4, WHATWG ::ffff:102:304); the
    // SAN carries octets either way, so only the caller's lowercase normalisation is required.
    if (name !== name.toLowerCase()) throw invalidName(name, 'IPv6 literal not lowercased (normalise it first)');
    return { kind: 'ip', name };
  }
  if (name.includes('*')) throw invalidName(name, 'wildcards are never minted');
  if (name.endsWith('.')) throw invalidName(name, 'trailing dot (normalise the name first)');
  const labels = name.split('.');
  for (const label of labels) {
    if (label.length === 0) throw invalidName(name, 'empty label');
    if (label.length > MAX_LABEL) throw invalidName(name, `label longer than ${MAX_LABEL} characters`);
    if (!LABEL.test(label)) {
      throw invalidName(name, 'only lowercase letters, digits, "-" and "_" are allowed in a label (use punycode for IDNs)');
    }
  }
  // A name whose last label is a number is an IPv4 spelling to URL parsers (127.1, 0x7f.0.0.1).
  if (/^(?:0x[0-9a-f]*|[0-9]+)$/.test(labels[labels.length - 1] ?? '')) {
    throw invalidName(name, 'looks like an IP address in non-canonical spelling');
  }
  return { kind: 'dns', name };
}
