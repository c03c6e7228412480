/**
 * `microagent mediation ...`: run a mediation broker in the foreground (`serve`) and probe a target
 * (`probe`). Argument parsing and rendering only; the broker is src/mediation. `serve` never runs
 * without an audit log: every guest connection it relays is recorded.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { openAuditLog } from '../../audit/index.js';
import { parseChannelDeclarations, parseMediationTarget, probeTarget, startBroker, type TargetProbeResult } from '../../mediation/index.js';
import { table } from '../output.js';
import { parseCommandArgs, usageError, type Command } from '../command.js';

const DEFAULT_PROBE_TIMEOUT_MS = 1000;

const serve: Command = {
  name: 'mediation serve',
  summary: 'Run a mediation broker in the foreground: one Unix socket per guest channel port, relayed to its target',
  usage: '--port N=TARGET... --socket-dir DIR [--audit FILE] [--workspace NAME] [--no-proxy-protocol]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(serve, args, {
      port: { type: 'string', multiple: true },
      'socket-dir': { type: 'string' },
      audit: { type: 'string' },
      workspace: { type: 'string' },
      'no-proxy-protocol': { type: 'boolean' },
    }, false);
    const specs = values.port ?? [];
    const socketDir = values['socket-dir'];
    if (specs.length === 0 || socketDir === undefined) {
      throw usageError('mediation serve needs at least one --port N=TARGET and a --socket-dir', `usage: microagent ${serve.name} ${serve.usage}`);
    }
    const channels = parseChannelDeclarations(specs, values['no-proxy-protocol'] === true ? { proxyProtocol: false } : {});
    const workspace = values.workspace ?? 'default';
    const runtimeId = randomUUID();
    const auditPath = values.audit ?? join(socketDir, 'audit.jsonl');
    const audit = await openAuditLog({ path: auditPath, workspace, runtimeId });
    const broker = await startBroker({ workspace, runtimeId, channels, socketDir, audit }).catch(async (err: unknown) => {
      await audit.close();
      throw err;
    });
    try {
      for (const channel of channels) {
        ctx.out.stream(`listening ${broker.socketPathFor(channel.port)} -> ${channel.targetText}${channel.proxyProtocol ? ' (PROXY v2)' : ''}`);
      }
      ctx.out.info(`audit log ${auditPath}; stop with Ctrl-C`);
      const readiness = await broker.mediationReady();
      for (const c of readiness.channels) {
        if (!c.ready) ctx.out.warn(`channel ${c.port} -> ${c.target} is not ready (${c.error ?? 'unknown'}); its connections are closed until it is`);
      }
      const signal = await ctx.interrupted;
      await broker.close();
      const stats = broker.stats();
      const result = {
        workspace,
        runtime_id: runtimeId,
        audit: auditPath,
        stopped_by: signal,
        ready_at_start: readiness.ready,
        channels: stats.channels.map((c, i) => {
          const probed = readiness.channels[i];
          return {
            port: c.port, target: c.target, socket: c.socketPath, accepted: c.accepted,
            denied_limit: c.deniedLimit, denied_unreachable: c.deniedUnreachable,
            bytes_up: c.bytesUp, bytes_down: c.bytesDown,
            ...(probed === undefined ? {} : { ready_at_start: probed.ready }),
          };
        }),
      };
      const human = table(
        ['PORT', 'TARGET', 'ACCEPTED', 'DENIED', 'BYTES UP', 'BYTES DOWN'],
        stats.channels.map((c) => [
          String(c.port), c.target, String(c.accepted), String(c.deniedLimit + c.deniedUnreachable), String(c.bytesUp), String(c.bytesDown),
        ]),
      );
      return { result, human: `stopped (${signal})\n${human}` };
    } finally {
      await broker.close();
      await audit.close();
    }
  },
};

const probe: Command = {
  name: 'mediation probe',
  summary: 'Connect to a mediation target now and report whether it is ready (exit 1 when not)',
  usage: 'TARGET [--timeout MS] [--proxy-protocol]',
  async run(args) {
    const { values, positionals } = parseCommandArgs(probe, args, {
      timeout: { type: 'string' },
      'proxy-protocol': { type: 'boolean' },
    });
    const usage = `usage: microagent ${probe.name} ${probe.usage}`;
    const [targetText, ...extra] = positionals;
    if (targetText === undefined || extra.length > 0) throw usageError('mediation probe takes exactly one TARGET', usage);
    const parsed = parseMediationTarget(targetText);
    if (!parsed.ok) throw usageError(`mediation probe: target ${parsed.problem}`, 'give HOST:PORT, [IPV6]:PORT or an absolute Unix socket path');
    const timeoutMs = values.timeout === undefined ? DEFAULT_PROBE_TIMEOUT_MS : Number(values.timeout);
    if (!/^\d+$/.test(values.timeout ?? '1') || timeoutMs < 1 || timeoutMs > 60_000) {
      throw usageError(`mediation probe: --timeout must be whole milliseconds from 1 to 60000, got "${values.timeout}"`, usage);
    }
    const probed = await probeTarget(parsed.target, timeoutMs, { proxyProtocol: values['proxy-protocol'] === true });
    const result = probeResult(targetText, probed);
    if (probed.ready) return { result, human: `ready: ${targetText} (observed ${probed.observedAt})` };
    const remediation = parsed.target.kind === 'unix'
      ? `start the service that listens on ${parsed.target.path}, or fix the channel's target`
      : `start the service on ${targetText} (check host and port), or fix the channel's target`;
    return {
      result: { ...result, remediation },
      human: `not ready: ${targetText}: ${probed.error ?? 'unknown error'}\n  fix: ${remediation}`,
      exitCode: 1,
    };
  },
};

/** CLI results use snake_case field names, like audit records. */
function probeResult(target: string, probed: TargetProbeResult): Record<string, unknown> {
  return { target, ready: probed.ready, observed_at: probed.observedAt, ...(probed.error === undefined ? {} : { error: probed.error }) };
}

export const commands: readonly Command[] = [serve, probe];
