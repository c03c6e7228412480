/**
 * `policy check` warnings: valid policies that are probably mistakes. No rules at all (often a cases
 * file checked as a policy), a rule that can never match, an allow for raw tcp that no tunnel reaches, an
 * allow that an earlier rule always beats, an allow a deny completely covers, and allows so broad they
 * defeat the policy (`*`, `*.com`, `github.*`, `0.0.0.0/0`). Coverage is checked conservatively: a warning is only
 * given when the covering rule provably matches everything the covered one does.
 */
import { addressCandidates, hostCandidates } from './compile.js';
import { maskIp, type Cidr, type HostPattern, type PortRange } from './patterns.js';
import type { Policy, PolicyRule } from './policy.js';
import type { SourcePosition } from './types.js';

export type LintKind = 'no_rules' | 'never_matches' | 'never_decides' | 'shadowed_by_deny' | 'broad_allow' | 'tcp_on_tls_port';

export interface LintWarning extends SourcePosition {
  readonly rule: string;
  readonly kind: LintKind;
  readonly message: string;
}

const under = (name: string, suffix: string): boolean => name.endsWith('.' + suffix);
const atOrUnder = (name: string, suffix: string): boolean => name === suffix || under(name, suffix);

function globText(p: HostPattern): string | null {
  return p.kind === 'glob' ? p.labels.map((l) => l ?? '*').join('.') : null;
}

function hostCovers(by: HostPattern, p: HostPattern): boolean {
  switch (by.kind) {
    case 'any':
      return true;
    case 'exact':
      return p.kind === 'exact' && p.name === by.name;
    case 'subdomains':
      return (p.kind === 'exact' && under(p.name, by.suffix)) || ((p.kind === 'subdomains' || p.kind === 'apex') && under(p.suffix, by.suffix)) || (p.kind === 'subdomains' && p.suffix === by.suffix);
    case 'apex':
      return (p.kind === 'exact' && atOrUnder(p.name, by.suffix)) || ((p.kind === 'subdomains' || p.kind === 'apex') && atOrUnder(p.suffix, by.suffix));
    case 'glob': {
      if (p.kind === 'glob') return globText(p) === globText(by);
      if (p.kind !== 'exact') return false;
      const labels = p.name.split('.');
      return labels.length === by.labels.length && by.labels.every((l, i) => l === null || l === labels[i]);
    }
    default: {
      const unreachable: never = by;
      return unreachable;
    }
  }
}

function cidrCovers(by: Cidr, c: Cidr): boolean {
  if (by.ip.family !== c.ip.family || by.bits > c.bits) return false;
  const masked = maskIp(c.ip, by.bits);
  return masked.family === 4 ? by.ip.family === 4 && masked.v4 === by.ip.v4 : by.ip.family === 6 && masked.v6 === by.ip.v6;
}

function listCovers<T>(by: readonly T[] | null, items: readonly T[] | null, covers: (a: T, b: T) => boolean): boolean {
  if (by === null) return true;
  if (items === null) return false;
  return items.every((item) => by.some((b) => covers(b, item)));
}

const portCovers = (a: PortRange, b: PortRange): boolean => a[0] <= b[0] && a[1] >= b[1];
const same = <T>(a: T, b: T): boolean => a === b;

/** True when every input `rule` matches, `by` matches too (conservatively). */
function covers(by: PolicyRule, rule: PolicyRule): boolean {
  const hostsOk = rule.hosts === null || (by.hosts !== null && listCovers(by.hosts, rule.hosts, hostCovers));
  const cidrsOk = rule.cidrs === null || (by.cidrs !== null && listCovers(by.cidrs, rule.cidrs, cidrCovers));
  return (
    hostsOk &&
    cidrsOk &&
    listCovers(by.ports, rule.ports, portCovers) &&
    listCovers(by.protocols, rule.protocols, same) &&
    listCovers(by.methods, rule.methods, same) &&
    listCovers(by.paths?.map((p) => p.text) ?? null, rule.paths?.map((p) => p.text) ?? null, same)
  );
}

/** Every pattern of the rule so broad it defeats the policy, each said in words. */
function broadPatterns(rule: PolicyRule): string[] {
  const found: string[] = [];
  for (const host of rule.hosts ?? []) {
    if (host.kind === 'any') found.push('allows every host name ("*")');
    else if ((host.kind === 'subdomains' || host.kind === 'apex') && !host.suffix.includes('.')) {
      found.push(`allows a whole top-level domain ("${host.kind === 'apex' ? '.' : '*.'}${host.suffix}")`);
    } else if (host.kind === 'glob' && host.labels.at(-1) === null) {
      found.push(`"${globText(host)}" matches that name under every top-level domain, most of them registered by someone else`);
    }
  }
  for (const cidr of rule.cidrs ?? []) {
    if (cidr.bits < (cidr.ip.family === 4 ? 8 : 16)) found.push(`allows a huge address range (${cidr.text})`);
  }
  return found;
}

function neverMatches(rule: PolicyRule): string | null {
  const protocols = rule.protocols;
  if (protocols === null || protocols.some((p) => p !== 'dns')) return null;
  if (rule.hosts === null) return 'it only names cidrs but only applies to dns, and DNS questions carry names, not addresses';
  if (rule.action === 'deny' && rule.ports !== null) return 'a deny with ports never applies to DNS questions (they have no destination port)';
  return null;
}

// A label no pattern names, standing in for "any name here" when probing the matcher.
const PROBE = 'microagent-lint-probe';

/**
 * Rules that might cover `rule`, from the compiled matcher instead of a scan of every rule: a rule
 * covering `rule` must match a name (or address) that `rule` matches, so probing one is enough to
 * find every candidate. covers() then decides.
 */
function coverCandidates(policy: Policy, rule: PolicyRule): PolicyRule[] {
  const out: number[] = [];
  const host = rule.hosts?.[0];
  const cidr = rule.cidrs?.[0];
  if (host !== undefined) {
    switch (host.kind) {
      case 'any':
        out.push(...policy.matcher.anyHost.map((i) => i * 4));
        break;
      case 'exact':
        hostCandidates(policy.matcher, host.name, out);
        break;
      case 'subdomains':
      case 'apex':
        hostCandidates(policy.matcher, `${PROBE}.${host.suffix}`, out);
        break;
      case 'glob':
        hostCandidates(policy.matcher, host.labels.map((l) => l ?? PROBE).join('.'), out);
        break;
      default: {
        const unreachable: never = host;
        return unreachable;
      }
    }
  } else if (cidr !== undefined) {
    addressCandidates(policy.matcher, cidr.ip, out);
  }
  const indices = [...new Set(out.map((c) => c >>> 2))].sort((a, b) => a - b);
  return indices.map((i) => policy.rules[i] as PolicyRule).filter((other) => other !== rule && covers(other, rule));
}

/** What a policy with no rules does in each mode. */
const NO_RULES_EFFECT = { guarded: 'guarded mode allows every public destination', strict: 'it denies everything', off: 'nothing is checked (mode off)' } as const;

export function lintPolicy(policy: Policy): LintWarning[] {
  const warnings: LintWarning[] = [];
  if (policy.rules.length === 0) {
    warnings.push({
      file: policy.file, line: 1, column: 1, rule: '', kind: 'no_rules',
      message: `the policy has no rules, so ${NO_RULES_EFFECT[policy.mode]}; ` +
        `if ${policy.file} is a cases file, run "microagent policy test POLICY --cases ${policy.file}"`,
    });
  }
  const warn = (rule: PolicyRule, kind: LintKind, message: string) =>
    warnings.push({ ...rule.position, rule: rule.id, kind, message: `rule ${rule.id} ${message}` });
  for (const rule of policy.rules) {
    const never = neverMatches(rule);
    if (never !== null) warn(rule, 'never_matches', `can never match: ${never}`);
    if (rule.action === 'deny') continue;
    // A CONNECT to a TLS port is TLS, intercepted or spliced on its SNI; raw TCP (SSH over 443) never passes there.
    if (rule.protocols !== null && rule.protocols.includes('tcp') && (rule.tls || (rule.ports !== null && rule.ports.every(([from, to]) => from === 443 && to === 443)))) {
      warn(rule, 'tcp_on_tls_port', `allows tcp only on TLS ports (${rule.tls ? 'tls: true' : '443'}): a tunnel there must carry TLS, so raw TCP (SSH over port 443, say) never passes; allow tcp on the service's own port`);
    }
    const broad = broadPatterns(rule);
    if (broad.length > 0) warn(rule, 'broad_allow', `${broad.join('; ')}; list the hosts the agent needs instead`);
    const covering = coverCandidates(policy, rule);
    const deny = covering.find((other) => other.action === 'deny' && other.methods === null && other.paths === null);
    if (deny !== undefined) {
      warn(rule, 'shadowed_by_deny', `is shadowed by deny rule ${deny.id} (line ${deny.position.line}): a matching deny always wins, so it can never allow`);
      continue;
    }
    const earlier = covering.find((other) => other.action !== 'deny' && other.index < rule.index);
    if (earlier !== undefined) {
      warn(rule, 'never_decides', `never decides: rule ${earlier.id} (line ${earlier.position.line}) matches everything it does and comes first`);
    }
  }
  return warnings;
}
