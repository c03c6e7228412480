/**
 * The sans-IO connection step: one flow's destination goes from "guest asked" to "dial this checked
 * address" or "deny with this answer". (state, event) in, (state, actions) out; the drivers (server.ts)
 * perform the actions. Invariants this step owns, each visible in its action order:
 * decide on the name before any lookup; decide every resolved address; audit the allow and wait for
 * it to be durable before the dial action appears; an audit failure denies (fail closed). A CONNECT
 * on a port no rule marks as TLS may carry raw TCP (SSH, a database), which only its first bytes show:
 * it opens as a tcp flow where tcp is allowed and https is not, or where a rule allows tcp and https is
 * merely unlisted (tunnel.ts then holds any TLS in it to the https decision).
 */
import { decisionFields, type DnsForwardEvent, type EgressDecisionEvent } from '../audit/index.js';
import { decide, type Decision, type Policy } from '../policy/index.js';
import { answerForDecision, decisionRecord, denyAnswer, proxyVerdict, type DenyAnswer } from './answers.js';
import { checkAddresses, type CheckedTarget } from './checked-target.js';
import { describeDestination, type Destination } from './destination.js';

export interface FlowRequest {
  readonly conn: string;
  /** https for a CONNECT (TLS expected inside), the URL's scheme for an absolute-form request, tcp for a tunnel opened as raw TCP. */
  readonly protocol: 'http' | 'https' | 'tcp';
  /** A CONNECT: asked as https, it may open as tcp on a non-TLS port (mayOpenAsTcp, opensAsTcp). */
  readonly tunnel: boolean;
  readonly destination: Destination;
  /** The audit sink reported itself healthy when the flow began; if not, nothing proceeds unawaited. */
  readonly auditHealthy: boolean;
}

export type ConnectionState =
  | { readonly phase: 'start' }
  | { readonly phase: 'resolving'; readonly request: FlowRequest }
  | { readonly phase: 'auditing'; readonly request: FlowRequest; readonly target: CheckedTarget; readonly decision: Decision }
  | { readonly phase: 'open'; readonly request: FlowRequest; readonly target: CheckedTarget; readonly decision: Decision }
  | { readonly phase: 'denied' };

export type ConnectionEvent =
  | { readonly type: 'open'; readonly request: FlowRequest }
  | { readonly type: 'invalid_target'; readonly conn: string; readonly protocol: 'http' | 'https'; readonly detail: string }
  | { readonly type: 'resolved'; readonly ips: readonly string[] }
  | { readonly type: 'resolve_failed'; readonly detail: string }
  | { readonly type: 'audited' }
  | { readonly type: 'audit_failed'; readonly detail: string };

export type ConnectionAction =
  /** `forward`: the record of each question the lookup sends upstream, durable before it leaves (qtype added). */
  | { readonly type: 'resolve'; readonly host: string; readonly forward: Omit<DnsForwardEvent, 'qtype'> }
  /** `wait`: the next event must be `audited`/`audit_failed` (allows wait for durability; denies do not). */
  | { readonly type: 'audit'; readonly record: EgressDecisionEvent; readonly wait: boolean }
  | { readonly type: 'dial'; readonly target: CheckedTarget; readonly decision: Decision; readonly protocol: FlowRequest['protocol'] }
  /**
   * Serve requests on an allowed flow (terminate TLS for a CONNECT; forward a plain request). No
   * upstream connection is made here: each request dials only after its own record is durable, and
   * the writer keeps records in order, so the flow's allow record (appended just before) is too.
   */
  | { readonly type: 'serve_requests'; readonly target: CheckedTarget; readonly decision: Decision; readonly protocol: FlowRequest['protocol'] }
  | { readonly type: 'deny'; readonly answer: DenyAnswer };

export interface StepResult {
  readonly state: ConnectionState;
  readonly actions: readonly ConnectionAction[];
}

const DENIED: ConnectionState = { phase: 'denied' };

function deny(record: EgressDecisionEvent, answer: DenyAnswer): StepResult {
  return { state: DENIED, actions: [{ type: 'audit', record, wait: false }, { type: 'deny', answer }] };
}

/** Whether a CONNECT decided so as https is asked about tcp too: only on a port no rule marks as TLS. */
function mayOpenAsTcp(request: FlowRequest, https: Decision): boolean {
  return request.tunnel && request.protocol === 'https' && !https.tls && (https.verdict === 'deny' || https.reason === 'unlisted');
}

/** It opens as tcp where https is denied, or merely unlisted while a rule allows tcp: that rule decides it. */
function opensAsTcp(https: Decision, tcp: Decision): boolean {
  return tcp.verdict === 'allow' && (https.verdict === 'deny' || tcp.reason === 'rule_allow');
}

function afterAddressCheck(policy: Policy, asked: FlowRequest, ips: readonly string[]): StepResult {
  let request = asked;
  let check = checkAddresses(policy, request.protocol, request.destination, ips);
  if (mayOpenAsTcp(request, check.decision)) {
    const asTcp = checkAddresses(policy, 'tcp', request.destination, ips);
    if (opensAsTcp(check.decision, asTcp.decision)) {
      request = { ...request, protocol: 'tcp' };
      check = asTcp;
    }
  }
  const facts = { conn: request.conn, protocol: request.protocol, destination: request.destination, decrypted: false };
  if (check.kind === 'denied') {
    return deny(
      decisionRecord({ ...facts, ip: check.ip, status: 403 }, check.decision),
      answerForDecision(check.decision, request.destination),
    );
  }
  const record = decisionRecord({ ...facts, ip: check.target.ip }, check.decision);
  if (dialsPerRequest(request, check.decision)) {
    return {
      state: { phase: 'open', request, target: check.target, decision: check.decision },
      actions: [{ type: 'audit', record, wait: false }, { type: 'serve_requests', target: check.target, decision: check.decision, protocol: request.protocol }],
    };
  }
  return {
    state: { phase: 'auditing', request, target: check.target, decision: check.decision },
    actions: [{ type: 'audit', record, wait: true }],
  };
}

/** Plain HTTP and intercepted CONNECTs dial only per request; tunnels that splice dial right away. */
function dialsPerRequest(request: FlowRequest, decision: Decision): boolean {
  if (!request.auditHealthy) return false;
  if (request.protocol === 'http') return true;
  return request.protocol === 'https' && decision.mode !== 'off' && decision.action !== 'passthrough';
}

/** The whole connection decision. `policy` is the snapshot taken when the flow began. */
export function stepConnection(policy: Policy, state: ConnectionState, event: ConnectionEvent): StepResult {
  switch (event.type) {
    case 'invalid_target': {
      if (state.phase !== 'start') return unexpected(state, event);
      const verdict = proxyVerdict(policy, 'invalid_target', []);
      return deny(
        decisionRecord({ conn: event.conn, protocol: event.protocol, destination: null, decrypted: false, status: 403 }, verdict),
        denyAnswer('invalid_target', `an invalid target (${event.detail})`),
      );
    }
    case 'open': {
      if (state.phase !== 'start') return unexpected(state, event);
      let { request } = event;
      const { destination } = request;
      if (destination.kind === 'ip') return afterAddressCheck(policy, request, [destination.ip]);
      // Decide on the name alone first: a denied name is never looked up.
      let decision = decide(policy, { protocol: request.protocol, host: destination.host, port: destination.port });
      if (mayOpenAsTcp(request, decision)) {
        const asTcp = decide(policy, { protocol: 'tcp', host: destination.host, port: destination.port });
        if (opensAsTcp(decision, asTcp)) {
          request = { ...request, protocol: 'tcp' };
          decision = asTcp;
        }
      }
      if (decision.verdict === 'deny') {
        return deny(
          decisionRecord({ conn: request.conn, protocol: request.protocol, destination: request.destination, decrypted: false, status: 403 }, decision),
          answerForDecision(decision, request.destination),
        );
      }
      const forward: Omit<DnsForwardEvent, 'qtype'> = { event: 'dns.forward', name: destination.host, transport: 'proxy', ...decisionFields(decision) };
      return { state: { phase: 'resolving', request }, actions: [{ type: 'resolve', host: destination.host, forward }] };
    }
    case 'resolved': {
      if (state.phase !== 'resolving') return unexpected(state, event);
      if (event.ips.length === 0) return resolveFailed(policy, state.request);
      return afterAddressCheck(policy, state.request, event.ips);
    }
    case 'resolve_failed': {
      if (state.phase !== 'resolving') return unexpected(state, event);
      return resolveFailed(policy, state.request);
    }
    case 'audited': {
      if (state.phase !== 'auditing') return unexpected(state, event);
      return {
        state: { phase: 'open', request: state.request, target: state.target, decision: state.decision },
        actions: [{ type: 'dial', target: state.target, decision: state.decision, protocol: state.request.protocol }],
      };
    }
    case 'audit_failed': {
      // While resolving: a question's dns.forward record failed, so that question was never sent.
      if (state.phase !== 'auditing' && state.phase !== 'resolving') return unexpected(state, event);
      // The audit log is down: nothing can be recorded, so nothing may pass.
      return { state: DENIED, actions: [{ type: 'deny', answer: denyAnswer('audit_unavailable', describeDestination(state.request.destination)) }] };
    }
    default: {
      const never: never = event;
      return never;
    }
  }
}

function resolveFailed(policy: Policy, request: FlowRequest): StepResult {
  const verdict = proxyVerdict(policy, 'resolve_failed', []);
  return deny(
    decisionRecord({ conn: request.conn, protocol: request.protocol, destination: request.destination, decrypted: false, status: 502 }, verdict),
    denyAnswer('resolve_failed', describeDestination(request.destination)),
  );
}

/** An event the state does not accept is a driver bug: deny rather than guess. */
function unexpected(state: ConnectionState, event: ConnectionEvent): StepResult {
  return {
    state: DENIED,
    actions: [{ type: 'deny', answer: denyAnswer('bad_request', `an out-of-order event (${event.type} in ${state.phase})`, { status: 500 }) }],
  };
}
