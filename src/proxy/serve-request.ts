/**
 * Serves one HTTP request inside an allowed flow (decrypted HTTPS or plain HTTP): runs the pure
 * request step, appends its decision (and waits for it when forwarding: audit before dial), then
 * forwards or answers the deny. The same path handles HTTP/1.1 and HTTP/2 clients, parsed by node or
 * by the lean HTTP/1.1 connection (h1-serve.ts).
 */
import { decisionRecord, denyAnswer, proxyVerdict } from './answers.js';
import type { CheckedTarget } from './checked-target.js';
import { describeDestination, type Destination } from './destination.js';
import { forwardRequest, nodeGuestRequest, type GuestRequest } from './forward.js';
import { nodeReply, type GuestReply } from './guest-reply.js';
import { requestFacts, type ClientRequest, type ClientResponse } from './http-facts.js';
import { decideRequest, pathOf, type RequestFacts, type RequestPlan } from './request-step.js';
import type { ProxyRuntime } from './runtime.js';

export interface FlowContext {
  readonly conn: string;
  readonly protocol: 'http' | 'https';
  readonly destination: Destination;
  readonly target: CheckedTarget;
  readonly sni: string | null;
  readonly decrypted: boolean;
}

/** Decides the request and, when it is allowed, records it durably. Null: already answered. */
export async function admitRequest(
  rt: ProxyRuntime,
  flow: FlowContext,
  facts: RequestFacts,
  answer: (deny: ReturnType<typeof denyAnswer>) => void,
): Promise<Extract<RequestPlan, { kind: 'forward' }> | null> {
  rt.counters.requests++;
  const policy = rt.policy();
  const plan = decideRequest(
    { conn: flow.conn, policy, protocol: flow.protocol, destination: flow.destination, target: flow.target, sni: flow.sni, decrypted: flow.decrypted, secrets: rt.secrets, maxHeaderBytes: rt.limits.maxHeaderBytes },
    facts,
  );
  if (plan.kind === 'deny') {
    rt.counters.denied++;
    rt.appendInBackground(plan.record);
    answer(plan.answer);
    return null;
  }
  try {
    await rt.audit.append(plan.record);
  } catch {
    rt.counters.denied++;
    answer(denyAnswer('audit_unavailable', describeDestination(flow.destination)));
    return null;
  }
  return plan;
}

/** The authority to send upstream: the guest's (already bound to the destination) or the destination's own. */
export function upstreamAuthority(flow: FlowContext, facts: RequestFacts): string {
  return facts.authority ?? describeDestination(flow.destination);
}

/**
 * An absolute URL inside an intercepted flow that names another destination: recorded and answered
 * (identity_mismatch) without reaching the request step.
 */
export function refuseUnboundUrl(rt: ProxyRuntime, flow: FlowContext, method: string, reply: GuestReply): void {
  rt.counters.denied++;
  rt.appendInBackground(
    decisionRecord(
      { conn: flow.conn, protocol: flow.protocol, destination: flow.destination, ip: flow.target.ip, sni: flow.sni, decrypted: flow.decrypted, method, status: 403 },
      proxyVerdict(rt.policy(), 'identity_mismatch', ['identity_mismatch']),
    ),
  );
  reply.deny(denyAnswer('identity_mismatch', describeDestination(flow.destination), { signals: ['identity_mismatch'] }));
}

/**
 * Serves one request node parsed (HTTP/1 or HTTP/2). One sent with `Expect: 100-continue` (node hands
 * it over unanswered, as the servers listen for 'checkContinue') is told to continue only once it is
 * allowed: a denied upload is refused before its body is sent.
 */
export function serveRequest(rt: ProxyRuntime, flow: FlowContext, req: ClientRequest, res: ClientResponse, path: string): Promise<void> {
  const expectsContinue = req.headers.expect?.toLowerCase() === '100-continue';
  return serveExchange(rt, flow, requestFacts(req, path), nodeGuestRequest(req), nodeReply(res), expectsContinue ? () => res.writeContinue() : undefined);
}

/** Decides, records and forwards one request, answering through `reply`; `allowed` runs once it may go ahead. */
export async function serveExchange(rt: ProxyRuntime, flow: FlowContext, facts: RequestFacts, req: GuestRequest, reply: GuestReply, allowed?: () => void): Promise<void> {
  const startedAt = Date.now();
  const plan = await admitRequest(rt, flow, facts, (deny) => reply.deny(deny));
  if (plan === null) return;
  allowed?.();
  await forwardRequest(
    rt,
    {
      conn: flow.conn,
      policy: rt.policy(),
      protocol: flow.protocol,
      destination: flow.destination,
      target: flow.target,
      sni: flow.sni,
      decrypted: flow.decrypted,
      method: facts.method,
      path: facts.path,
      recordPath: pathOf(facts.path),
      authority: upstreamAuthority(flow, facts),
      inject: plan.inject,
      scanFor: plan.scanFor,
      startedAt,
    },
    req,
    reply,
  );
}
