/**
 * The address a reverse-lookup name stands for (`5.0.0.10.in-addr.arpa` -> 10.0.0.5), so the
 * resolver can judge a PTR question like a connection to that address: asked of the host's resolver,
 * a reverse lookup of an internal address would map the host's own network for the guest.
 * A partial name (a zone: `168.192.in-addr.arpa`) stands for the first address it covers, and so
 * does any name below the labels that spell an address: `x.5.0.0.10`, `5.0-25.0.0.10` (RFC 2317
 * classless delegation) and `005.0.0.10` all lie in a zone of 10/8, whatever the host's DNS makes of
 * their other labels. Pure.
 */
import { formatIpv6 } from '../../policy/address.js';

const V4_SUFFIX = '.in-addr.arpa';
const V6_SUFFIX = '.ip6.arpa';

/** The address `name` (lowercased, no trailing dot) reverses, or null when it is no reverse-lookup name. */
export function reverseLookupAddress(name: string): string | null {
  if (name.endsWith(V4_SUFFIX)) {
    const octets = addressLabels(name.slice(0, -V4_SUFFIX.length), 4, (l) => /^(?:0|[1-9]\d{0,2})$/.test(l) && Number(l) <= 255);
    if (octets === null) return null;
    while (octets.length < 4) octets.push('0');
    return octets.join('.');
  }
  if (name.endsWith(V6_SUFFIX)) {
    const nibbles = addressLabels(name.slice(0, -V6_SUFFIX.length), 32, (n) => /^[0-9a-f]$/.test(n));
    if (nibbles === null) return null;
    return formatIpv6(BigInt(`0x${nibbles.join('').padEnd(32, '0')}`));
  }
  return null;
}

/** The labels next to the suffix that spell an address, most significant first (at most `max`); null when none do. */
function addressLabels(prefix: string, max: number, valid: (label: string) => boolean): string[] | null {
  const found: string[] = [];
  for (const label of prefix.split('.').reverse()) {
    if (found.length === max || !valid(label)) break;
    found.push(label);
  }
  return found.length === 0 ? null : found;
}
