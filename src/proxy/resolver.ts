/**
 * The one name-resolution interface the egress proxy and the DNS resolver share, so the proxy's own
 * lookups go through the workspace resolver's upstreams and cache, and the proxy can recognise an
 * address the workspace learned from DNS. Implemented by src/proxy/dns (WorkspaceResolver).
 * Callers must decide on the name first: a denied name is never looked up.
 */
export interface HostResolver {
  /**
   * A and AAAA addresses for an already-normalised, already-allowed name (IPv4 first). Before a
   * question leaves the host, `beforeForward` runs with its type and must resolve first (the proxy
   * records the question durably there); its rejection rejects the lookup with nothing sent.
   */
  lookup(host: string, beforeForward?: (qtype: 'A' | 'AAAA') => Promise<void>): Promise<readonly string[]>;
  /** Names this workspace was told resolve to `ip` by its DNS resolver (unexpired answers only). */
  namesForAddress(ip: string): readonly string[];
}
