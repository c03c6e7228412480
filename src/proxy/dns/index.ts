/** Public API of the workspace DNS resolver (docs/dns.md). */
export { startDnsServer, DEFAULT_DNS_SERVER_LIMITS } from './server.js';
export type { DnsServer, DnsServerAddresses, DnsServerLimits, DnsServerOptions } from './server.js';
export { createWorkspaceResolver, DEFAULT_CACHE_LIMITS } from './resolver.js';
export type { CacheLimits, ResolvedAnswer, UpstreamAnswer, WorkspaceResolver, WorkspaceResolverOptions } from './resolver.js';
export type { UdpPoolOptions } from './udp-pool.js';
export { DEFAULT_EXFILTRATION_LIMITS, registeredDomain } from './guard.js';
export type { ExfiltrationLimits } from './guard.js';
export { DOH_RESOLVER_NAMES, isDohResolverName } from './doh.js';
export { nameserversFromResolvConf } from './resolvconf.js';
