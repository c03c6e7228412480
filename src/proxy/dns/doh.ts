/**
 * Known DNS-over-HTTPS / DNS-over-TLS resolver names. A guest that reaches one of them can resolve
 * names around this resolver (and, with ECH, hide them), so their names are refused unless a policy
 * rule explicitly allows them. The list is documented in docs/dns.md; keep the two in step.
 * Matching covers the name and every name under it.
 */

export const DOH_RESOLVER_NAMES: readonly string[] = [
  'dns.google',
  'dns.google.com',
  'dns64.dns.google',
  'cloudflare-dns.com',
  'mozilla.cloudflare-dns.com',
  'one.one.one.one',
  '1dot1dot1dot1.cloudflare-dns.com',
  'dns.quad9.net',
  'dns9.quad9.net',
  'dns10.quad9.net',
  'dns11.quad9.net',
  'doh.opendns.com',
  'dns.opendns.com',
  'doh.familyshield.opendns.com',
  'dns.adguard.com',
  'dns.adguard-dns.com',
  'dns-unfiltered.adguard.com',
  'doh.cleanbrowsing.org',
  'dns.nextdns.io',
  'doh.dns.sb',
  'dns.sb',
  'doh.mullvad.net',
  'dns.mullvad.net',
  'dns.controld.com',
  'freedns.controld.com',
  'doh.xfinity.com',
  'dns.alidns.com',
  'doh.pub',
  'dns.twnic.tw',
  'doh.libredns.gr',
  'dns.switch.ch',
  'dns0.eu',
  'chrome.cloudflare-dns.com',
  'doh.ffmuc.net',
  'dns.digitale-gesellschaft.ch',
  'dohtrr.pi-dns.com',
  'resolver1.opendns.com',
];

const NAMES = new Set(DOH_RESOLVER_NAMES);

/** True for a listed resolver name or any name under one (lowercased, no trailing dot). */
export function isDohResolverName(name: string): boolean {
  for (let dot = -1; ; dot = name.indexOf('.', dot + 1)) {
    if (NAMES.has(name.slice(dot + 1))) return true;
    if (name.indexOf('.', dot + 1) === -1) return false;
  }
}
