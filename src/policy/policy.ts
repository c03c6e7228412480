/**
 * The Policy value: parsed, normalised rules plus the compiled matcher and the canonical hash.
 * A Policy is immutable; changing the mode (withMode) or reloading the file builds a new one.
 * The hash covers exactly what changes decisions (version, mode, report_only, rules), in a canonical
 * JSON form, so reformatting the YAML or editing comments and descriptions never changes it.
 */
import { createHash } from 'node:crypto';
import { compileMatcher, type Matcher } from './compile.js';
import { hostPatternText, type Cidr, type HostPattern, type PortRange } from './patterns.js';
import type { PathGlob } from './request.js';
import type { Action, HeaderInjection, Mode, Protocol, SourcePosition, Verdict } from './types.js';
import type { Reason } from './reasons.js';

export interface PolicyRule {
  readonly id: string;
  /** Position in file order; lower wins among allow-type rules. */
  readonly index: number;
  readonly action: Action;
  readonly description: string | null;
  /** null: the condition is absent (matches anything). Never an empty list. */
  readonly hosts: readonly HostPattern[] | null;
  readonly cidrs: readonly Cidr[] | null;
  readonly ports: readonly PortRange[] | null;
  readonly protocols: readonly Protocol[] | null;
  readonly methods: readonly string[] | null;
  readonly paths: readonly PathGlob[] | null;
  readonly tls: boolean;
  readonly inject: readonly HeaderInjection[];
  readonly position: SourcePosition;
}

/** An expectation written in a policy's `tests:` list or a cases file. */
export interface PolicyTestCase {
  readonly name: string;
  readonly target: string;
  readonly method: string | null;
  readonly protocol: Protocol | null;
  readonly ip: string | null;
  readonly mode: Mode | null;
  readonly expect: Verdict;
  /** undefined: not checked; null: no rule may decide (a mode default or address rule). */
  readonly rule: string | null | undefined;
  readonly reason: Reason | null;
  readonly position: SourcePosition;
}

export interface PolicySource {
  readonly version: 1;
  readonly file: string;
  readonly mode: Mode;
  readonly reportOnly: boolean;
  readonly rules: readonly PolicyRule[];
  readonly tests: readonly PolicyTestCase[];
}

export interface Policy extends PolicySource {
  /** `sha256:<hex>` of the canonical form. */
  readonly hash: string;
  readonly matcher: Matcher;
}

function canonicalRule(rule: PolicyRule): unknown {
  return {
    id: rule.id,
    action: rule.action,
    hosts: rule.hosts?.map(hostPatternText) ?? null,
    cidrs: rule.cidrs?.map((c) => c.text) ?? null,
    ports: rule.ports,
    protocols: rule.protocols,
    methods: rule.methods,
    paths: rule.paths?.map((p) => p.text) ?? null,
    tls: rule.tls,
    headers: rule.inject.map((h) => ({ header: h.header, template: h.template })),
  };
}

/** JSON with object keys sorted at every level: one byte sequence per meaning. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function policyHash(source: PolicySource): string {
  const canonical = canonicalJson({
    version: source.version,
    mode: source.mode,
    report_only: source.reportOnly,
    rules: source.rules.map(canonicalRule),
  });
  return 'sha256:' + createHash('sha256').update(canonical).digest('hex');
}

/** Compiles once; every decision afterwards only reads the result. */
export function buildPolicy(source: PolicySource): Policy {
  return Object.freeze({ ...source, hash: policyHash(source), matcher: compileMatcher(source.rules) });
}

/** The same rules under another mode (e.g. a workspace started with --mode strict); new hash. */
export function withMode(policy: Policy, mode: Mode): Policy {
  if (policy.mode === mode) return policy;
  const source: PolicySource = { ...policy, mode };
  return Object.freeze({ ...policy, mode, hash: policyHash(source) });
}
