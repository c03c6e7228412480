/**
 * Serves one HTTP request inside an allowed flow (decrypted HTTPS or plain HTTP): runs the pure
 * request step, appends its decision (and waits for it when forwarding: audit before dial), then
 * forwards or answers the deny. The same path handles HTTP/1.1 and HTTP/2 clients.
 */
import { denyAnswer } from './answers.js';
import type { CheckedTarget } from './checked-target.js';
import { describeDestination, type Destination } from './destination.js';
import { forwardRequest } from './forward.js';
import { requestFacts, sendDeny, type ClientRequest, type ClientResponse } from './http-facts.js';
import { decideRequest, pathOf, type RequestPlan } from './request-step.js';
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
  req: ClientRequest,
  path: string,
  answer: (deny: ReturnType<typeof denyAnswer>) => void,
): Promise<Extract<RequestPlan, { kind: 'forward' }> | null> {
  rt.counters.requests++;
  const policy = rt.policy();
  const plan = decideRequest({ ...flow, policy, secrets: rt.secrets }, requestFacts(req, path));
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
export function upstreamAuthority(flow: FlowContext, req: ClientRequest): string {
  const h2 = req.httpVersionMajor === 2 ? req.headers[':authority'] : undefined;
  const given = typeof h2 === 'string' ? h2 : req.headers.host;
  return given ?? describeDestination(flow.destination);
}

export async function serveRequest(rt: ProxyRuntime, flow: FlowContext, req: ClientRequest, res: ClientResponse, path: string): Promise<void> {
  const startedAt = Date.now();
  const plan = await admitRequest(rt, flow, req, path, (deny) => sendDeny(res, deny));
  if (plan === null) return;
  await forwardRequest(
    rt,
    {
      ...flow,
      policy: rt.policy(),
      method: req.method ?? 'GET',
      path,
      recordPath: pathOf(path),
      authority: upstreamAuthority(flow, req),
      inject: plan.inject,
      scanFor: plan.scanFor,
      startedAt,
    },
    req,
    res,
  );
}
