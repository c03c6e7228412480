/**
 * What the workspace resolver does with one question, as pure steps over data: `admitQuery` decides
 * before anything is forwarded (policy, DoH names, HTTPS/SVCB, exfiltration guard), `filterAnswer`
 * decides on every address an upstream returned (internal addresses, rebinding) and strips HTTPS/SVCB
 * records. answer.ts runs them per message and server.ts moves the bytes.
 * Invariant: a name the policy does not allow in the current mode is never forwarded upstream.
 */
import type { Answer } from 'dns-packet';
import { decide, isInternalAddress, parseIpLiteral, type Decision, type Mode, type Policy } from '../../policy/index.js';
import type { Reason, Signal } from '../../policy/reasons.js';
import { isDohResolverName } from './doh.js';
import { reverseLookupAddress } from './reverse-name.js';
import type { ExfiltrationGuard } from './guard.js';
import type { AddressMemory } from './memory.js';
import type { UpstreamAnswer } from './resolver.js';
import { isTypeNumber, RCODE, type ParsedQuery } from './wire.js';

const TYPE_A = 1;
const TYPE_AAAA = 28;
const TYPE_SVCB = 64;
const TYPE_HTTPS = 65;
const TYPE_IXFR = 251;
const TYPE_AXFR = 252;
const CLASS_IN = 1;

/** The decision fields every dns.query audit record carries. */
export interface QueryVerdict {
  readonly verdict: Decision['verdict'];
  readonly rule: string | null;
  readonly reason: Reason;
  readonly signals: readonly Signal[];
  readonly mode: Mode;
  readonly policyHash: string;
}

export type Admission =
  /** Answer with `rcode` and no records, without forwarding. */
  | { readonly kind: 'answer_empty'; readonly rcode: number; readonly verdict: QueryVerdict }
  /** Forward upstream, then filter with `filterAnswer` unless `filter` is false (mode off). */
  | { readonly kind: 'forward'; readonly filter: boolean; readonly verdict: QueryVerdict };

function fromDecision(decision: Decision, overrides: Partial<QueryVerdict> = {}): QueryVerdict {
  return {
    verdict: decision.verdict,
    rule: decision.rule,
    reason: decision.reason,
    signals: decision.signals,
    mode: decision.mode,
    policyHash: decision.policyHash,
    ...overrides,
  };
}

/** The policy let the name through; the resolver refuses the question: its signals of an allow do not carry over. */
function refused(decision: Decision, reason: Reason, signals: readonly Signal[]): Admission {
  const kept = signals.filter((s) => s !== 'unlisted' && s !== 'would_deny');
  return { kind: 'answer_empty', rcode: RCODE.REFUSED, verdict: fromDecision(decision, { verdict: 'deny', rule: null, reason, signals: kept }) };
}

export type NameDecider = (policy: Policy, name: string) => Decision;

/**
 * decide() for question names, remembered per policy object: decide is pure, so the answer for a
 * name only changes when the policy does (a reload makes a new object and empties the memory).
 * Bounded: past `maxNames` it starts over rather than growing with guest-chosen names.
 */
export function createNameDecider(maxNames = 10_000): NameDecider {
  let remembered: Policy | null = null;
  const byName = new Map<string, Decision>();
  return (policy, name) => {
    if (policy !== remembered) {
      remembered = policy;
      byName.clear();
    }
    let decision = byName.get(name);
    if (decision === undefined) {
      // A reverse lookup is judged as the address it names too (reverse-name.ts).
      const reversed = reverseLookupAddress(name);
      decision = decide(policy, { protocol: 'dns', host: name, ...(reversed === null ? {} : { ip: reversed }) });
      if (byName.size >= maxNames) byName.clear();
      byName.set(name, decision);
    }
    return decision;
  };
}

/** Decides on a parsed question before anything leaves the host, given the policy's decision on its name. */
export function admitQuery(decision: Decision, guard: ExfiltrationGuard, query: ParsedQuery): Admission {
  if (decision.mode === 'off') return { kind: 'forward', filter: false, verdict: fromDecision(decision) };
  if (decision.verdict === 'deny') return { kind: 'answer_empty', rcode: RCODE.REFUSED, verdict: fromDecision(decision) };
  // A question whose name is an address literal (`A 10.0.0.1`) has no answer worth forwarding.
  if (!query.nameIsText || parseIpLiteral(query.name) !== null) {
    return refused(decision, 'invalid_target', decision.signals);
  }
  // Only Internet-class lookups are forwarded (upstream questions are always class IN), and never
  // zone transfers, whose multi-message answers the forwarder does not relay.
  if (query.qclass !== CLASS_IN || query.qtype === TYPE_AXFR || query.qtype === TYPE_IXFR) {
    return refused(decision, 'bad_request', decision.signals);
  }

  // A rule naming the name vouches for its domain: only unlisted names (guarded) get the length
  // limits, and only a rule naming a DoH resolver lets it through.
  const explicitlyAllowed = decision.rule !== null && decision.reason === 'rule_allow';
  const trip = guard.admit(query.name, query.longestLabel, !explicitlyAllowed);
  if (trip !== null) return refused(decision, 'rate_limited', [...decision.signals, 'exfiltration_guard']);

  if (!explicitlyAllowed && isDohResolverName(query.name)) return refused(decision, 'doh_denied', decision.signals);

  if (query.qtype === TYPE_HTTPS || query.qtype === TYPE_SVCB) {
    // HTTPS/SVCB carry ECH configs that would hide the real SNI from the proxy: answer NODATA.
    return {
      kind: 'answer_empty',
      rcode: RCODE.NOERROR,
      verdict: fromDecision(decision, { signals: [...decision.signals, 'https_record_stripped'] }),
    };
  }
  return { kind: 'forward', filter: true, verdict: fromDecision(decision) };
}

export interface FilteredAnswer {
  readonly answers: readonly Answer[];
  readonly signals: readonly Signal[];
}

/** The question's name and every name its CNAME records lead to: the owners an answer record may have. */
function answerOwners(name: string, answers: readonly Answer[]): Set<string> {
  const owners = new Set([name]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const record of answers) {
      if (record.type !== 'CNAME' || !owners.has(ownerName(record.name))) continue;
      const target = ownerName(String(record.data));
      if (!owners.has(target)) {
        owners.add(target);
        grew = true;
      }
    }
  }
  return owners;
}

function ownerName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/**
 * Removes records for names the question did not lead to (an upstream's extra records are not the
 * guest's to cache under its question), HTTPS/SVCB records, and A/AAAA records the policy denies for
 * this name (internal addresses no rule allows). Records what the workspace was given in `memory`: addresses for namesForAddress,
 * public answers for rebinding detection. A name seen public that now resolves internal is rebinding.
 */
export function filterAnswer(
  policy: Policy,
  memory: AddressMemory,
  name: string,
  upstream: UpstreamAnswer,
  ttlMs: number,
  verdict: QueryVerdict,
): FilteredAnswer {
  const signals = new Set<Signal>(verdict.signals);
  const kept: Answer[] = [];
  const wasPublic = memory.seenPublic(name);
  let sawPublic = false;
  const owners = answerOwners(name, upstream.answers);
  for (const record of upstream.answers) {
    if (!owners.has(ownerName(record.name))) {
      signals.add('answer_stripped');
      continue;
    }
    if (isTypeNumber(record, TYPE_HTTPS) || isTypeNumber(record, TYPE_SVCB)) {
      signals.add('https_record_stripped');
      continue;
    }
    if (!isTypeNumber(record, TYPE_A) && !isTypeNumber(record, TYPE_AAAA)) {
      kept.push(record);
      continue;
    }
    const ip = parseIpLiteral(String((record as { data: unknown }).data));
    if (ip === null) {
      signals.add('answer_stripped');
      continue;
    }
    const internal = isInternalAddress(ip);
    if (internal) {
      const decision = decide(policy, { protocol: 'dns', host: name, ip });
      signals.add('internal_address');
      if (decision.verdict === 'deny') {
        signals.add('answer_stripped');
        if (wasPublic) signals.add('rebinding');
        continue;
      }
    } else {
      sawPublic = true;
    }
    kept.push(record);
    memory.recordAddress(name, ip, ttlMs);
  }
  if (sawPublic) memory.recordPublic(name);
  return { answers: kept, signals: [...signals] };
}
