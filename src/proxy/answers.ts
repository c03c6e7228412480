/**
 * What the proxy tells the guest and the audit log about one decision: the typed deny answer
 * (status, `X-Microagent-Reason`, a one-line body naming the rule or reason) and the
 * `egress.decision` record. Pure builders; never include a secret value or a raw guest byte string
 * beyond the parsed host/path fields the record defines.
 */
import { decisionFields, type EgressDecisionEvent } from '../audit/index.js';
import type { Decision, Policy, Reason, Signal, Verdict } from '../policy/index.js';
import { REASONS } from '../policy/reasons.js';
import { describeDestination, destinationHost, type Destination } from './destination.js';

export const REASON_HEADER = 'x-microagent-reason';

export interface DenyAnswer {
  readonly status: number;
  readonly reason: Reason;
  readonly signals: readonly Signal[];
  readonly rule: string | null;
  /** One line, no trailing newline. */
  readonly message: string;
}

/** HTTP status for a reason the proxy refuses with. */
export function statusFor(reason: Reason): number {
  switch (reason) {
    case 'bad_request':
      return 400;
    case 'audit_unavailable':
      return 503;
    case 'limit_exceeded':
      return 429;
    case 'resolve_failed':
    case 'upstream_unreachable':
    case 'upstream_cert_invalid':
    case 'upstream_bad_response':
    case 'secret_echo':
    case 'unscannable_response':
    case 'secret_unavailable':
    case 'target_unreachable':
      return 502;
    default:
      return 403;
  }
}

export function denyAnswer(
  reason: Reason,
  target: string,
  options: { rule?: string | null; signals?: readonly Signal[]; status?: number } = {},
): DenyAnswer {
  const rule = options.rule ?? null;
  const why = rule === null ? `(${reason})` : `by rule "${rule}" (${reason})`;
  return {
    status: options.status ?? statusFor(reason),
    reason,
    signals: options.signals ?? [],
    rule,
    // The reason's meaning too: an agent reading the body can say why, and what would allow it.
    message: `microagent: denied ${why} for ${target}: ${REASONS[reason]}`,
  };
}

export function answerForDecision(decision: Decision, destination: Destination | null): DenyAnswer {
  return denyAnswer(decision.reason, destination === null ? 'an unparsable target' : describeDestination(destination), {
    rule: decision.rule,
    signals: decision.signals,
  });
}

/** Optional facts may be given as undefined: the record then leaves them out. */
export interface RecordFacts {
  readonly conn: string;
  readonly protocol: 'http' | 'https' | 'tcp';
  readonly destination: Destination | null;
  readonly ip?: string | null | undefined;
  readonly sni?: string | null | undefined;
  readonly method?: string | undefined;
  readonly path?: string | undefined;
  readonly decrypted: boolean;
  readonly status?: number | undefined;
  readonly secretNames?: readonly string[] | undefined;
}

/** Fields of a decision the proxy made itself (identity mismatch, smuggling, limits) under `policy`. */
export function proxyVerdict(
  policy: Policy,
  reason: Reason,
  signals: readonly Signal[],
  verdict: Verdict = 'deny',
): Pick<Decision, 'verdict' | 'rule' | 'reason' | 'signals' | 'mode' | 'policyHash'> {
  return { verdict, rule: null, reason, signals, mode: policy.mode, policyHash: policy.hash };
}

export function decisionRecord(
  facts: RecordFacts,
  decision: Pick<Decision, 'verdict' | 'rule' | 'reason' | 'signals' | 'mode' | 'policyHash'>,
): EgressDecisionEvent {
  const record: {
    -readonly [K in keyof EgressDecisionEvent]: EgressDecisionEvent[K];
  } = {
    event: 'egress.decision',
    conn: facts.conn,
    protocol: facts.protocol,
    host: facts.destination === null ? null : destinationHost(facts.destination),
    port: facts.destination?.port ?? 0,
    ip: facts.ip ?? (facts.destination?.kind === 'ip' ? facts.destination.ip : null),
    decrypted: facts.decrypted,
    ...decisionFields(decision),
  };
  if (facts.sni !== undefined) record.sni = facts.sni;
  if (facts.method !== undefined) record.method = facts.method;
  if (facts.path !== undefined) record.path = facts.path;
  if (facts.status !== undefined) record.status = facts.status;
  if (facts.secretNames !== undefined && facts.secretNames.length > 0) record.secret_names = facts.secretNames;
  return record;
}
