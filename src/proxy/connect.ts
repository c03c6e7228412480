/**
 * The CONNECT driver: parse the authority (pure), decide the flow (name, then every resolved address,
 * audited before anything is dialled), answer 403/502/503 on the CONNECT itself when denied (never a
 * hang), else 200 and hand the socket to the tunnel. For splice-only flows (passthrough, mode off)
 * the upstream is dialled before the 200 so an unreachable one still gets a 502.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { decisionRecord, denyAnswer, proxyVerdict } from './answers.js';
import { describeDestination, destinationHost, parseAuthority } from './destination.js';
import { decideFlow } from './flow.js';
import { rawDeny } from './http-facts.js';
import { checkAuthorityHeader } from './identity.js';
import { closeRecord, type ProxyRuntime } from './runtime.js';
import { connected } from './splice.js';
import { runTunnel, type InterceptHandoff } from './tunnel.js';
import { dialTcp } from './upstream.js';

export async function handleConnect(rt: ProxyRuntime, handoff: InterceptHandoff, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const conn = rt.nextConn();
  const startedAt = Date.now();
  socket.on('error', () => undefined);
  const parsed = parseAuthority(req.url ?? '', null);
  const destination = parsed.kind === 'ok' ? parsed.destination : null;
  const refuseEarly = (reason: 'limit_exceeded' | 'identity_mismatch', signals: readonly ('identity_mismatch')[] = []) => {
    const answer = denyAnswer(reason, destination === null ? 'an invalid target' : describeDestination(destination), { signals });
    rt.counters.denied++;
    rt.appendInBackground(decisionRecord({ conn, protocol: 'https', destination, decrypted: false, status: answer.status }, proxyVerdict(rt.policy(), reason, signals)));
    socket.end(rawDeny(answer));
  };
  if (rt.counters.activeTunnels >= rt.limits.maxTunnels || rt.overBudget()) {
    refuseEarly('limit_exceeded');
    return;
  }
  if (destination !== null && checkAuthorityHeader(destination, req.headers.host, 'host').kind === 'mismatch') {
    refuseEarly('identity_mismatch', ['identity_mismatch']);
    return;
  }
  const outcome = await decideFlow(
    rt,
    parsed.kind === 'ok'
      ? { type: 'open', request: { conn, protocol: 'https', tunnel: true, destination: parsed.destination, auditHealthy: rt.audit.healthy } }
      : { type: 'invalid_target', conn, protocol: 'https', detail: parsed.detail },
  );
  if (outcome.kind === 'denied' || destination === null) {
    if (outcome.kind === 'denied') socket.end(rawDeny(outcome.answer));
    else socket.destroy();
    return;
  }
  const { target, decision, protocol, recorded } = outcome;
  rt.counters.activeTunnels++;
  rt.counters.tunnels++;
  let upstream: Socket | null = null;
  if (decision.mode === 'off' || decision.action === 'passthrough') {
    try {
      upstream = await connected(dialTcp(target, rt.limits.connectTimeoutMs));
    } catch (err) {
      rt.counters.activeTunnels--;
      const answer = denyAnswer('upstream_unreachable', describeDestination(destination));
      socket.end(rawDeny(answer));
      rt.appendInBackground(closeRecord({ conn, destination, ip: target.ip, decrypted: false, status: answer.status, bytesUp: 0, bytesDown: 0, startedAt, reason: 'upstream_unreachable', error: (err as Error).message }));
      return;
    }
  }
  // A tunnel to be intercepted needs a leaf for the CONNECT host, the name the policy allowed and the
  // only one its SNI may carry: minted now, it is ready when the ClientHello arrives (a new host's mint
  // takes milliseconds). The intercept takes it from the CA's cache or its mint in flight.
  if (protocol === 'https' && decision.mode !== 'off' && decision.action !== 'passthrough') rt.ca.secureContextFor(destinationHost(destination)).catch(() => undefined);
  socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  await runTunnel(rt, { conn, socket, head, destination, target, decision, openedAs: protocol === 'tcp' ? 'tcp' : 'https', recorded, startedAt, upstream }, handoff);
}
