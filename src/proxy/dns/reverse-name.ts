/**
 * The address a reverse-lookup name stands for (`5.0.0.10.in-addr.arpa` -> 10.0.0.5), so the
 * resolver can judge a PTR question like a connection to that address: asked of the host's resolver,
 * a reverse lookup of an internal address would map the host's own network for the guest.
 * A partial name (a zone: `168.192.in-addr.arpa`) stands for the first address it covers. Pure.
 */
import { formatIpv6 } from '../../policy/address.js';

const V4_SUFFIX = '.in-addr.arpa';
const V6_SUFFIX = '.ip6.arpa';

/** The address `name` (lowercased, no trailing dot) reverses, or null when it is no reverse-lookup name. */
export function reverseLookupAddress(name: string): string | null {
  if (name.endsWith(V4_SUFFIX)) {
    const labels = name.slice(0, -V4_SUFFIX.length).split('.');
    if (labels.length > 4 || !labels.every((l) => /^(?:0|[1-9]\d{0,2})$/.test(l) && Number(l) <= 255)) return null;
    const octets = labels.reverse();
    while (octets.length < 4) octets.push('0');
    return octets.join('.');
  }
  if (name.endsWith(V6_SUFFIX)) {
    const nibbles = name.slice(0, -V6_SUFFIX.length).split('.');
    if (nibbles.length > 32 || !nibbles.every((n) => /^[0-9a-f]$/.test(n))) return null;
    const hex = nibbles.reverse().join('').padEnd(32, '0');
    return formatIpv6(BigInt(`0x${hex}`));
  }
  return null;
}
