/** Public API of the egress proxy. */
export { startEgressProxy, secretsFromEnv } from './server.js';
export type { EgressProxy, EgressProxyOptions, ProxyStats } from './server.js';
export type { InterceptCa } from './runtime.js';
export { DEFAULT_LIMITS as DEFAULT_PROXY_LIMITS, type ProxyLimits } from './limits.js';
export { createSystemResolver } from './system-resolver.js';
export { reachableBeyondHost } from './listen.js';
export type { HostResolver } from './resolver.js';
export { parseClientHello, type ClientHelloPeek } from './client-hello.js';
export { parseAuthority, parseAbsoluteUrl, type Destination } from './destination.js';
export { REASON_HEADER } from './answers.js';
