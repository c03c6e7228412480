/**
 * The sans-IO request step: one HTTP request inside an allowed flow (decrypted HTTPS, or plain HTTP
 * after its connection step) becomes "forward with these extra headers" or "deny with this answer",
 * plus the decision record to append first. Order matters and is fixed here: framing (smuggling),
 * identity binding, policy at request stage, DNS-over-HTTPS, then secret injection. Secrets are
 * resolved only for a TLS-verified upstream and appear only in `inject` (never in the record).
 */
import type { EgressDecisionEvent } from '../audit/index.js';
import { decide, type Decision, type Policy } from '../policy/index.js';
import { answerForDecision, decisionRecord, denyAnswer, proxyVerdict, type DenyAnswer, type RecordFacts } from './answers.js';
import type { CheckedTarget } from './checked-target.js';
import { describeDestination, type Destination } from './destination.js';
import { isDohResolverName } from './dns/doh.js';
import { checkAuthorityHeader } from './identity.js';

/** The facts a driver copies out of node's parsed request (http1 or http2). */
export interface RequestFacts {
  readonly method: string;
  /** Path and query as sent (origin-form). */
  readonly path: string;
  /** Host header (HTTP/1) or :authority (HTTP/2); undefined when absent. */
  readonly authority: string | undefined;
  readonly authorityField: 'host' | 'authority';
  /** How many Content-Length header lines the request carried. */
  readonly contentLengthCount: number;
  readonly hasTransferEncoding: boolean;
  readonly contentType: string | undefined;
  readonly accept: string | undefined;
  /**
   * An HTTP/2 request's header list size as HTTP/2 counts it (names, values, 32 bytes per field): node's
   * HTTP/2 parser does not hold to our limit, where its HTTP/1 parser caps a head as it comes.
   */
  readonly headerListBytes?: number;
}

export interface RequestContext {
  readonly conn: string;
  readonly policy: Policy;
  readonly protocol: 'http' | 'https';
  readonly destination: Destination;
  readonly target: CheckedTarget;
  readonly sni: string | null;
  /** True inside an intercepted TLS connection. */
  readonly decrypted: boolean;
  /** Secret lookup; undefined means not configured on the host. */
  readonly secrets: (name: string) => string | undefined;
  /** The header limit (limits.maxHeaderBytes), held here for HTTP/2 header lists. */
  readonly maxHeaderBytes: number;
}

export interface Injection {
  readonly header: string;
  readonly value: string;
}

export type RequestPlan =
  | { readonly kind: 'deny'; readonly record: EgressDecisionEvent; readonly answer: DenyAnswer }
  | {
      readonly kind: 'forward';
      readonly record: EgressDecisionEvent;
      readonly decision: Decision;
      readonly inject: readonly Injection[];
      /** Values the response must not echo back (buffered and scanned when non-empty). */
      readonly scanFor: readonly string[];
    };

const DNS_MESSAGE = 'application/dns-message';

function isDohRequest(destination: Destination, facts: RequestFacts, pathOnly: string): boolean {
  if (destination.kind === 'name' && isDohResolverName(destination.host)) return true;
  if (facts.contentType !== undefined && facts.contentType.toLowerCase().startsWith(DNS_MESSAGE)) return true;
  if (facts.accept !== undefined && facts.accept.toLowerCase().includes(DNS_MESSAGE)) return true;
  return pathOnly === '/dns-query' || pathOnly.startsWith('/dns-query/');
}

/** The path without its query: what the policy matches and what the record keeps (queries may hold tokens). */
export function pathOf(path: string): string {
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}

/**
 * Whether an allow-type rule matches the destination by its name (not merely its address): only then
 * is a DoH-looking request "explicitly allowed". Asked only for DoH-looking requests, so it costs nothing
 * on the hot path.
 */
function ruleNamesHost(ctx: RequestContext, method: string, path: string): boolean {
  const input =
    ctx.destination.kind === 'name'
      ? { protocol: ctx.protocol, host: ctx.destination.host, port: ctx.destination.port, method, path }
      : { protocol: ctx.protocol, ip: ctx.destination.ip, port: ctx.destination.port, method, path };
  const byName = decide(ctx.policy, input);
  return byName.verdict !== 'deny' && byName.reason === 'rule_allow';
}

const SECRET_REF = /\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}/g;

export function decideRequest(ctx: RequestContext, facts: RequestFacts): RequestPlan {
  const path = pathOf(facts.path);
  // One fixed-shape facts object per record (no spreads: this runs for every request).
  const recordFacts = (status: number | undefined, secretNames: readonly string[] | undefined): RecordFacts => ({
    conn: ctx.conn,
    protocol: ctx.protocol,
    destination: ctx.destination,
    ip: ctx.target.ip,
    sni: ctx.decrypted ? ctx.sni : undefined,
    method: facts.method,
    path,
    decrypted: ctx.decrypted,
    status,
    secretNames,
  });
  const refuse = (reason: 'bad_request' | 'identity_mismatch' | 'doh_denied' | 'secret_unavailable' | 'limit_exceeded', signals: Decision['signals'], rule: string | null = null, status?: number): RequestPlan => {
    const answer = denyAnswer(reason, describeDestination(ctx.destination), { signals, rule, ...(status === undefined ? {} : { status }) });
    const verdict = { ...proxyVerdict(ctx.policy, reason, signals), rule };
    return { kind: 'deny', record: decisionRecord(recordFacts(answer.status, undefined), verdict), answer };
  };

  if (facts.headerListBytes !== undefined && facts.headerListBytes > ctx.maxHeaderBytes) return refuse('limit_exceeded', [], null, 431);
  if (facts.contentLengthCount > 1 || (facts.contentLengthCount > 0 && facts.hasTransferEncoding)) {
    return refuse('bad_request', ['smuggling']);
  }
  const identity = checkAuthorityHeader(ctx.destination, facts.authority, facts.authorityField);
  if (identity.kind === 'mismatch') return refuse('identity_mismatch', ['identity_mismatch']);

  const host = ctx.destination.kind === 'name' ? { host: ctx.destination.host } : {};
  const decision = decide(ctx.policy, {
    protocol: ctx.protocol,
    ...host,
    ip: ctx.target.ip,
    port: ctx.destination.port,
    method: facts.method,
    path,
  });
  if (decision.verdict === 'deny') {
    return { kind: 'deny', record: decisionRecord(recordFacts(403, undefined), decision), answer: answerForDecision(decision, ctx.destination) };
  }
  if (decision.mode !== 'off' && isDohRequest(ctx.destination, facts, path) && !ruleNamesHost(ctx, facts.method, path)) {
    return refuse('doh_denied', decision.signals);
  }

  // Secrets go only to a TLS-verified upstream (the dialer verifies before any request byte is sent).
  const inject: Injection[] = [];
  const scanFor: string[] = [];
  const names: string[] = [];
  if (ctx.decrypted) {
    for (const injection of decision.inject) {
      let missing: string | null = null;
      const value = injection.template.replace(SECRET_REF, (_, name: string) => {
        const secret = ctx.secrets(name);
        if (secret === undefined || secret === '') missing ??= name;
        if (!names.includes(name)) names.push(name);
        if (secret !== undefined && secret !== '' && !scanFor.includes(secret)) scanFor.push(secret);
        return secret ?? '';
      });
      if (missing !== null) return refuse('secret_unavailable', decision.signals, decision.rule);
      inject.push({ header: injection.header, value });
    }
  }
  const signals = names.length > 0 && !decision.signals.includes('secret_injected') ? [...decision.signals, 'secret_injected' as const] : decision.signals;
  const recorded = signals === decision.signals ? decision : { ...decision, signals };
  return {
    kind: 'forward',
    record: decisionRecord(recordFacts(undefined, names), recorded),
    decision: recorded,
    inject,
    scanFor,
  };
}
