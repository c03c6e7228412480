/** `microagent dns ...` commands: run a workspace DNS resolver in the foreground. */
import { join } from 'node:path';
import { openAuditLog } from '../../audit/index.js';
import { MicroagentError } from '../../errors.js';
import { MODES, openLivePolicy, type LivePolicy, type Mode } from '../../policy/index.js';
import { createWorkspaceResolver, startDnsServer, type DnsServerAddresses, type WorkspaceResolver } from '../../proxy/dns/index.js';
import { splitHostPort } from '../../proxy/dns/upstream-address.js';
import { reachableBeyondHost } from '../../proxy/index.js';
import { parseCommandArgs, usageError, type Command } from '../command.js';

const dns: Command = {
  name: 'dns',
  summary: 'Run the filtering DNS resolver for one workspace in the foreground until interrupted',
  usage:
    '--policy FILE --listen ADDR:PORT [--socket PATH] [--upstream ADDR:PORT...] [--audit FILE] [--mode guarded|strict|off] [--workspace NAME]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(
      dns,
      args,
      {
        policy: { type: 'string' },
        listen: { type: 'string' },
        socket: { type: 'string' },
        upstream: { type: 'string', multiple: true },
        audit: { type: 'string' },
        mode: { type: 'string' },
        workspace: { type: 'string', default: 'default' },
      },
      false,
    );
    if (values.policy === undefined) throw usageError('dns: --policy FILE is required', `usage: microagent dns ${dns.usage}`);
    if (values.listen === undefined && values.socket === undefined) {
      throw usageError('dns: give --listen ADDR:PORT, --socket PATH or both', `usage: microagent dns ${dns.usage}`);
    }
    const mode = values.mode;
    if (mode !== undefined && !(MODES as readonly string[]).includes(mode)) {
      throw usageError(`dns: --mode must be one of ${MODES.join(', ')}, not "${mode}"`, 'e.g. --mode strict');
    }
    const listen = values.listen === undefined ? undefined : parseListen(values.listen);
    const workspace = values.workspace;
    // Beside the state's workspaces, as the proxy's is: a directory under workspaces/ would pass for a
    // workspace (and --workspace is a label for the records, never a path).
    const auditPath = values.audit ?? join(ctx.stateDir, 'dns-audit.jsonl');
    const audit = await openAuditLog({ path: auditPath, workspace });
    // Opened in order, closed in reverse whatever fails: a policy that cannot be read must not leave
    // the audit log's file open behind the error.
    let live: LivePolicy | null = null;
    let resolver: WorkspaceResolver | null = null;
    try {
      live = openLivePolicy(values.policy, {
        ...(mode === undefined ? {} : { mode: mode as Mode }),
        audit,
        onReload: (p) => ctx.out.info(`policy reloaded (${p.hash})`),
        onInvalid: (error) => ctx.out.warn(`policy ${values.policy} is invalid; keeping the previous one: ${error.message}`),
      });
      const policy = live.current;
      resolver = createWorkspaceResolver(values.upstream === undefined ? {} : { upstreams: values.upstream });
      const server = await startDnsServer({
        policy,
        audit,
        resolver,
        ...(listen === undefined ? {} : { listen }),
        ...(values.socket === undefined ? {} : { socketPath: values.socket }),
      });
      if (listen !== undefined && reachableBeyondHost(listen.host)) {
        ctx.out.warn(`dns: ${listen.host} is reachable from other machines: an open resolver answers anyone and can be abused to amplify attacks; listen on 127.0.0.1 or firewall the port`);
      }
      ctx.out.info(`dns: ${describe(server.addresses)}; upstreams ${resolver.upstreams.map((u) => `${u.host}:${u.port}`).join(', ')}`);
      ctx.out.info(`dns: mode ${policy().mode}, policy ${policy().hash}, audit ${auditPath}; Ctrl-C to stop`);
      const signal = await ctx.interrupted;
      await server.close();
      return {
        result: { stopped_by: signal, addresses: server.addresses, audit: auditPath },
        human: `dns: stopped (${signal})`,
      };
    } finally {
      resolver?.close();
      live?.close();
      await audit.close();
    }
  },
};

/** ADDR:PORT with the port required; 0 asks for any free port. */
function parseListen(raw: string): { host: string; port: number } {
  const split = splitHostPort(raw);
  if (split === null || split.port === null || split.port > 65535) {
    throw usageError(`dns: --listen "${raw}" is not ADDR:PORT`, 'e.g. --listen 127.0.0.1:5353 or --listen [::1]:5353 (port 0: any free port)');
  }
  return { host: split.host, port: split.port };
}

function describe(addresses: DnsServerAddresses): string {
  const parts: string[] = [];
  if (addresses.udp !== null) parts.push(`udp ${addresses.udp.address}:${addresses.udp.port}`);
  if (addresses.tcp !== null) parts.push(`tcp ${addresses.tcp.address}:${addresses.tcp.port}`);
  if (addresses.socketPath !== null) parts.push(`unix ${addresses.socketPath}`);
  if (parts.length === 0) throw new MicroagentError('internal', 'the DNS server reported no listener');
  return `listening on ${parts.join(', ')}`;
}

export const commands: readonly Command[] = [dns];
