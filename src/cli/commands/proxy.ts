/**
 * `microagent proxy`: run the egress proxy for one workspace in the foreground until interrupted.
 * Parses arguments, opens the policy (watched), audit log and CA, prints where it listens and where
 * the CA certificate is, and shuts down cleanly with in-flight audit records flushed. No proxy logic.
 */
import { join } from 'node:path';
import { openAuditLog } from '../../audit/index.js';
import { loadOrCreateCa, type CertificateAuthority } from '../../ca/index.js';
import { MODES, openLivePolicy, type LivePolicy, type Mode } from '../../policy/index.js';
import { createSystemResolver, reachableBeyondHost, startEgressProxy } from '../../proxy/index.js';
import { parsePort } from '../../proxy/destination.js';
import { readExtraCaFile } from '../../tls-trust.js';
import { parseCommandArgs, usageError, type Command } from '../command.js';

const DEFAULT_LISTEN = '127.0.0.1:8080';

function parseListen(raw: string): { host: string; port: number } {
  const colon = raw.lastIndexOf(':');
  const host = colon < 0 ? '127.0.0.1' : raw.slice(0, colon).replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const portText = colon < 0 ? raw : raw.slice(colon + 1);
  const port = portText === '0' ? 0 : parsePort(portText);
  if (port === null) throw usageError(`proxy: --listen wants HOST:PORT, got "${raw}"`, 'e.g. --listen 127.0.0.1:8080 (port 0 picks a free one)');
  return { host, port };
}

const proxy: Command = {
  name: 'proxy',
  summary: 'Run the TLS-intercepting egress proxy for one workspace in the foreground until interrupted',
  usage:
    '--policy FILE [--mode guarded|strict|off] [--listen ADDR:PORT] [--socket PATH] [--ca-dir DIR] [--audit FILE] [--workspace NAME] [--upstream-ca FILE]... [--no-fsync]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(
      proxy,
      args,
      {
        policy: { type: 'string' },
        mode: { type: 'string' },
        listen: { type: 'string' },
        socket: { type: 'string' },
        'ca-dir': { type: 'string' },
        audit: { type: 'string' },
        workspace: { type: 'string', default: 'default' },
        'upstream-ca': { type: 'string', multiple: true },
        'no-fsync': { type: 'boolean', default: false },
      },
      false,
    );
    if (values.policy === undefined) throw usageError('proxy: --policy FILE is required', `usage: microagent proxy ${proxy.usage}`);
    const mode = values.mode;
    if (mode !== undefined && !(MODES as readonly string[]).includes(mode)) {
      throw usageError(`proxy: --mode must be one of ${MODES.join(', ')}, not "${mode}"`, 'e.g. --mode strict');
    }
    const listen = parseListen(values.listen ?? DEFAULT_LISTEN);
    const workspace = values.workspace;
    const caDir = values['ca-dir'] ?? join(ctx.stateDir, 'proxy-ca');
    const auditPath = values.audit ?? join(ctx.stateDir, 'proxy-audit.jsonl');
    const upstreamCa = await Promise.all((values['upstream-ca'] ?? []).map(readExtraCaFile));

    const policyFile = values.policy;
    const audit = await openAuditLog({ path: auditPath, workspace, fsync: !values['no-fsync'] });
    let live: LivePolicy | null = null;
    let ca: CertificateAuthority | null = null;
    try {
      live = openLivePolicy(policyFile, {
        ...(mode === undefined ? {} : { mode: mode as Mode }),
        audit,
        onReload: (p) => ctx.out.info(`proxy: policy reloaded (${p.hash})`),
        onInvalid: (error) => ctx.out.warn(`policy ${policyFile} is invalid; keeping the previous one: ${error.message}`),
      });
      const policy = live.current;
      // The CA certificate is on disk before we listen, so a guest can be given it at once.
      ca = await loadOrCreateCa({ dir: caDir, workspace });
      const running = await startEgressProxy({
        policy,
        audit,
        ca,
        resolver: createSystemResolver(),
        listen,
        ...(values.socket === undefined ? {} : { socketPath: values.socket }),
        workspace,
        upstreamCa,
      });
      const tcp = running.addresses.tcp;
      const where = [tcp === null ? null : `http://${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}`, running.addresses.socket].filter((x) => x !== null);
      ctx.out.info(`proxy: listening on ${where.join(' and ')}`);
      if (tcp !== null && reachableBeyondHost(tcp.host)) {
        ctx.out.warn(`proxy: ${tcp.host} is reachable from other machines: any client that connects gets egress under this policy, recorded as workspace "${workspace}"; listen on 127.0.0.1 or firewall the port`);
      }
      ctx.out.info(`proxy: CA certificate ${ca.certPath}`);
      if (tcp !== null) {
        // What a client (a container, a CI job) needs: the proxy, and the CA for the tools that read it
        // from the environment. Node's own fetch follows the proxy variables only from Node 24, when told to.
        const url = where[0] as string;
        ctx.out.info(`proxy: for clients: HTTPS_PROXY=${url} HTTP_PROXY=${url} SSL_CERT_FILE=${ca.certPath} CURL_CA_BUNDLE=${ca.certPath} NODE_EXTRA_CA_CERTS=${ca.certPath} NODE_USE_ENV_PROXY=1 REQUESTS_CA_BUNDLE=${ca.certPath}`);
      }
      ctx.out.info(`proxy: mode ${policy().mode}, policy ${policy().hash}, audit ${auditPath}; Ctrl-C to stop`);
      const signal = await ctx.interrupted;
      await running.close();
      const stats = running.stats();
      return {
        result: { stopped_by: signal, listen: tcp, socket: running.addresses.socket, ca_cert: ca.certPath, audit: auditPath, stats },
        // Denials count connections and requests alike (a refused CONNECT serves no request).
        human: `proxy: stopped (${signal}); ${stats.connections} client connection(s), ${stats.tunnels} tunnel(s), ${stats.requests} request(s) served, ${stats.denied} denial(s)`,
      };
    } finally {
      ca?.close();
      live?.close();
      await audit.close();
    }
  },
};

export const commands: readonly Command[] = [proxy];
