/**
 * decide(): the one place a verdict is made. Pure and synchronous; it reads the compiled matcher and
 * the input, nothing else, so proxy, resolver, broker and `policy explain` all get the same answer.
 * Precedence: a matching deny beats every allow; internal destinations are denied unless an allow-type
 * rule names them exactly (exact host or containing CIDR); then the first allow/passthrough/inject rule
 * in file order; then the mode default. It must never resolve names, read secrets or throw on input:
 * anything it cannot parse strictly is denied as invalid_target.
 */
import { parseIp, type ParsedIp } from './address.js';
import { embeddedIpv4s, isInternalParsed } from './classify.js';
import { addressCandidates, BY_CIDR, BY_EXACT, hostCandidates, portMatches, PROTOCOL_BITS, type CompiledRule } from './compile.js';
import { analyzeHost, isLocalhostName } from './host.js';
import type { Policy } from './policy.js';
import type { Reason, Signal } from './reasons.js';
import { normalizeMethod, pathReadings } from './request.js';
import type { Action, Decision, DecisionInput, Protocol } from './types.js';

const NONE: readonly never[] = Object.freeze([]);
const UNLISTED: readonly Signal[] = Object.freeze(['unlisted']);
const INTERNAL: readonly Signal[] = Object.freeze(['internal_address']);
const MEDIATION_OFF: readonly Signal[] = Object.freeze(['mediation_off']);

const DEFAULT_PORT: Readonly<Record<Protocol, number | undefined>> = { http: 80, https: 443, tcp: undefined, dns: 53 };

type Applies = 'no' | 'match' | 'request';

/** Whether a rule whose destination matched also matches protocol, port and the request. */
function ruleApplies(rule: CompiledRule, protocolBit: number, port: number, method: string | null, path: readonly string[] | null): Applies {
  if (protocolBit === PROTOCOL_BITS.dns) {
    // A name must resolve for any allowed connection to it; only whole-host denies block the name.
    if (rule.action !== 'deny') return 'match';
    const dnsDeny = rule.ports === null && !rule.requestConditions && (rule.protocols === 0 || (rule.protocols & protocolBit) !== 0);
    return dnsDeny ? 'match' : 'no';
  }
  if (rule.protocols !== 0 && (rule.protocols & protocolBit) === 0) return 'no';
  if (!portMatches(rule.ports, port)) return 'no';
  if (!rule.requestConditions) return 'match';
  // Raw TCP carries no requests to check: methods and paths can never allow it, and a deny that
  // depends on them denies it (plain HTTP spliced through a tunnel would pass every path rule).
  if (protocolBit === PROTOCOL_BITS.tcp) return rule.action === 'deny' ? 'match' : 'no';
  if (method === null || path === null) return 'request';
  if (rule.methods !== null && !rule.methods.has(method)) return 'no';
  if (rule.paths !== null && !pathsMatch(rule.paths, rule.action === 'deny', path)) return 'no';
  return 'match';
}

/** A deny matches a path if any reading matches it; an allow only if every reading does (fail closed both ways). */
function pathsMatch(paths: readonly RegExp[], deny: boolean, readings: readonly string[]): boolean {
  for (const reading of readings) if (paths.some((re) => re.test(reading)) === deny) return deny;
  return !deny;
}

function decision(policy: Policy, verdict: 'allow' | 'deny', action: Action, rule: CompiledRule | null, reason: Reason, signals: readonly Signal[], matched: readonly string[], requestCheck: boolean, tls: boolean): Decision {
  if (verdict === 'deny' && policy.reportOnly && reason !== 'invalid_target') {
    return {
      verdict: 'would_deny',
      action: 'allow',
      rule: rule?.id ?? null,
      reason,
      signals: [...signals, 'would_deny'],
      matched,
      mode: policy.mode,
      policyHash: policy.hash,
      inject: NONE,
      requestCheck: false,
      tls,
    };
  }
  return {
    verdict,
    action,
    rule: rule?.id ?? null,
    reason,
    signals,
    matched,
    mode: policy.mode,
    policyHash: policy.hash,
    inject: action === 'inject' && rule !== null ? rule.inject : NONE,
    requestCheck: verdict === 'allow' && action !== 'passthrough' && requestCheck,
    tls,
  };
}

function invalidTarget(policy: Policy): Decision {
  return decision(policy, 'deny', 'deny', null, 'invalid_target', NONE, NONE, false, false);
}

function sameIp(a: ParsedIp, b: ParsedIp): boolean {
  return a.family === 4 ? b.family === 4 && a.v4 === b.v4 : b.family === 6 && a.v6 === b.v6;
}

/** The input, strictly parsed and normalised once; null when any part of it is invalid. */
interface Target {
  readonly name: string | null;
  readonly ip: ParsedIp | null;
  readonly port: number;
  readonly method: string | null;
  readonly path: readonly string[] | null;
}

function parseTarget(input: DecisionInput, port: number | undefined): Target | null {
  let name: string | null = null;
  let ip: ParsedIp | null = null;
  if (input.host !== undefined) {
    if (typeof input.host !== 'string') return null;
    const host = analyzeHost(input.host);
    if (host === null) return null;
    if (host.kind === 'name') name = host.name;
    else ip = host.ip;
  }
  if (input.ip !== undefined) {
    if (typeof input.ip !== 'string') return null;
    const dialled = parseIp(input.ip);
    // A literal host and a different dialled address is a confused caller; never guess which one counts.
    if (dialled === null || (ip !== null && !sameIp(ip, dialled))) return null;
    ip = dialled;
  }
  if ((name === null && ip === null) || port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  if (input.method === undefined && input.path === undefined) return { name, ip, port, method: null, path: null };
  if (typeof input.method !== 'string' || typeof input.path !== 'string' || (input.protocol !== 'http' && input.protocol !== 'https')) return null;
  const method = normalizeMethod(input.method);
  const path = pathReadings(input.path);
  return method === null || path === null ? null : { name, ip, port, method, path };
}

export function decide(policy: Policy, input: DecisionInput): Decision {
  // Callers from plain JavaScript can pass anything; only own keys of the table are protocols.
  const protocolBit = typeof input.protocol === 'string' && Object.hasOwn(PROTOCOL_BITS, input.protocol) ? PROTOCOL_BITS[input.protocol] : undefined;
  if (protocolBit === undefined) return invalidTarget(policy);
  const defaultedPort = input.port ?? DEFAULT_PORT[input.protocol];
  if (policy.mode === 'off') {
    return decision(policy, 'allow', 'passthrough', null, 'mediation_off', MEDIATION_OFF, NONE, false, defaultedPort === 443);
  }
  const target = parseTarget(input, defaultedPort);
  if (target === null) return invalidTarget(policy);
  const { name, ip, port, method, path } = target;

  const matcher = policy.matcher;
  const candidates: number[] = [];
  if (name !== null) hostCandidates(matcher, name, candidates);
  if (ip !== null) addressCandidates(matcher, ip, candidates);
  if (candidates.length > 1) candidates.sort((a, b) => a - b);

  const matched: string[] = [];
  let deny: CompiledRule | null = null;
  let allow: CompiledRule | null = null;
  let explicitAllow: CompiledRule | null = null;
  let requestCheck = false;
  let tls = port === 443 && protocolBit !== PROTOCOL_BITS.dns;
  for (let i = 0; i < candidates.length; ) {
    const index = (candidates[i] as number) >>> 2;
    let how = 0;
    for (; i < candidates.length && (candidates[i] as number) >>> 2 === index; i++) how |= (candidates[i] as number) & 3;
    const rule = matcher.rules[index] as CompiledRule;
    const applies = ruleApplies(rule, protocolBit, port, method, path);
    if (applies === 'no') continue;
    if (applies === 'request') requestCheck = true;
    if (rule.action === 'deny') {
      if (applies === 'request') continue;
      deny ??= rule;
    } else {
      allow ??= rule;
      if ((how & (BY_EXACT | BY_CIDR)) !== 0) explicitAllow ??= rule;
    }
    matched.push(rule.id);
    if (rule.tls && protocolBit !== PROTOCOL_BITS.dns) tls = true;
  }

  if (deny === null && ip !== null) {
    // The IPv4 address inside an IPv6 one is the same host: denies written for it hold (allows are not widened).
    for (const v4 of embeddedIpv4s(ip)) {
      const inner: number[] = [];
      addressCandidates(matcher, { family: 4, v4 }, inner);
      inner.sort((a, b) => a - b);
      for (const candidate of inner) {
        const rule = matcher.rules[candidate >>> 2] as CompiledRule;
        if (rule.action !== 'deny') continue;
        const applies = ruleApplies(rule, protocolBit, port, method, path);
        if (applies === 'request') requestCheck = true;
        if (applies !== 'match') continue;
        if (deny === null || rule.index < deny.index) deny = rule;
        break;
      }
    }
    if (deny !== null) matched.push(deny.id);
  }
  if (deny !== null) return decision(policy, 'deny', 'deny', deny, 'rule_deny', NONE, matched, false, tls);
  const internal = (name !== null && isLocalhostName(name)) || (ip !== null && isInternalParsed(ip));
  if (internal) {
    if (explicitAllow === null) return decision(policy, 'deny', 'deny', null, 'internal_address', INTERNAL, matched, false, tls);
    return decision(policy, 'allow', explicitAllow.action, explicitAllow, 'rule_allow', INTERNAL, matched, requestCheck, tls);
  }
  if (allow !== null) return decision(policy, 'allow', allow.action, allow, 'rule_allow', NONE, matched, requestCheck, tls);
  if (policy.mode === 'strict') return decision(policy, 'deny', 'deny', null, 'default_deny', NONE, matched, false, tls);
  return decision(policy, 'allow', 'allow', null, 'unlisted', UNLISTED, matched, requestCheck, tls);
}
