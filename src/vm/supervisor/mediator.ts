/**
 * One workspace's egress mediator, host side: audit log, live policy, CA, resolver, egress proxy, DNS
 * server, mediation broker and published-port forwarders, started in that order (the audit log first,
 * so nothing can decide before it can record) and severed together by quarantine. Knows nothing of QEMU:
 * it exposes Unix sockets and loopback ports for the VM layer to point the guest at.
 */
import { openAuditLog, type AuditLog } from '../../audit/index.js';
import { loadOrCreateCa, type CertificateAuthority } from '../../ca/index.js';
import { MicroagentError } from '../../errors.js';
import { startBroker, validateChannels, type BrokerStats, type MediationBroker, type MediationReadiness } from '../../mediation/index.js';
import { openLivePolicy, type LivePolicy } from '../../policy/index.js';
import { startEgressProxy, type EgressProxy, type ProxyStats } from '../../proxy/index.js';
import { createWorkspaceResolver, startDnsServer, type DnsServer } from '../../proxy/dns/index.js';
import type { WorkspaceManifest, WorkspacePaths } from '../workspace/store.js';
import { startPublishedPorts, type PortBackend, type PublishedPorts } from './published-ports.js';
import type { MediatorSockets } from './sockets.js';
import { makeDirs } from '../../make-dirs.js';

/**
 * TLS contexts the CA keeps for intercepted hosts. Each holds an OpenSSL SSL_CTX, about 32 KiB, so
 * with the CA's default of 1,000 the supervisor grew by ~29 MiB over 1,000 distinct hosts; with 256
 * it levels off at ~17 MiB (malloc keeps part of what evicted contexts freed). A host evicted past
 * that is minted again in ~1.5 ms.
 */
const CA_CACHE_SIZE = 256;

export interface Mediator {
  readonly audit: AuditLog;
  readonly ca: CertificateAuthority;
  readonly policy: LivePolicy;
  readonly sockets: MediatorSockets;
  mediationReady(): Promise<MediationReadiness | null>;
  /** Counters of the egress proxy (null without one, or once severed) and the mediation broker (null without channels). */
  stats(): { readonly egress: ProxyStats | null; readonly mediation: BrokerStats | null };
  /** Quarantine: closes proxy, resolver, published ports and every mediation channel at once. */
  sever(): Promise<void>;
  readonly severed: boolean;
  close(): Promise<void>;
}

export async function startMediator(
  manifest: WorkspaceManifest,
  paths: WorkspacePaths,
  sockets: MediatorSockets,
  runtimeId: string,
  portBackends: readonly PortBackend[],
): Promise<Mediator> {
  const { config } = manifest;
  makeDirs(sockets.mediationDir, 0o700);
  const audit = await openAuditLog({ path: paths.audit, workspace: manifest.name, workspaceId: manifest.id, runtimeId });
  const opened: { close(): Promise<void> | void }[] = [];
  try {
    const policy = openLivePolicy(paths.policy, { mode: config.egress, audit });
    opened.push(policy);
    const ca = await loadOrCreateCa({ dir: paths.ca, workspace: manifest.name, cacheSize: CA_CACHE_SIZE });
    const resolver = createWorkspaceResolver(config.dnsUpstreams.length > 0 ? { upstreams: config.dnsUpstreams } : {});
    opened.push(resolver);
    let proxy: EgressProxy | null = null;
    let dns: DnsServer | null = null;
    if (config.network === 'user' && config.egress !== 'off') {
      proxy = await startEgressProxy({
        policy: policy.current,
        audit,
        ca,
        resolver,
        socketPath: sockets.proxySocket,
        workspace: manifest.name,
        upstreamCa: config.upstreamCa,
      });
      opened.push(proxy);
      dns = await startDnsServer({ policy: policy.current, audit, resolver, socketPath: sockets.dnsSocket });
      opened.push(dns);
    }
    const channels = validateChannels(config.mediation);
    let broker: MediationBroker | null = null;
    if (channels.length > 0) {
      broker = await startBroker({ workspace: manifest.name, runtimeId, channels, socketDir: sockets.mediationDir, audit });
      opened.push(broker);
    }
    const published: PublishedPorts = await startPublishedPorts(config.publish, portBackends, audit);
    opened.push(published);

    let severed = false;
    return {
      audit,
      ca,
      policy,
      sockets,
      mediationReady: async () => (broker === null ? null : broker.mediationReady()),
      stats: () => ({ egress: proxy === null || severed ? null : proxy.stats(), mediation: broker?.stats() ?? null }),
      get severed() {
        return severed;
      },
      async sever() {
        severed = true;
        await Promise.all([proxy?.close(), dns?.close(), broker?.sever(), published.close()]);
      },
      async close() {
        for (const r of opened.reverse()) await r.close();
        await ca.close();
        await audit.close();
      },
    };
  } catch (err) {
    for (const r of opened.reverse()) await Promise.resolve(r.close()).catch(() => undefined);
    await audit.close().catch(() => undefined);
    throw err instanceof MicroagentError ? err : new MicroagentError('internal', `could not start the mediator: ${(err as Error).message}`, { cause: err });
  }
}
