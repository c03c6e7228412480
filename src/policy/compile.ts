/**
 * The compiled matcher: indexes from destination to candidate rules, built once per policy.
 * Exact names live in a Map, `*.x` / `.x` patterns in a label-suffix trie, `a.*.x` globs at the trie
 * node of their literal suffix grouped by label count, CIDRs in per-prefix-length tables. A lookup
 * costs a few Map probes however many rules there are; it must never scan the rule list.
 * Candidates are encoded as `index * 4 + how` (EXACT, CIDR bits) so sorting keeps file order.
 */
import type { ParsedIp } from './address.js';
import type { PolicyRule } from './policy.js';
import type { Action, HeaderInjection, Protocol } from './types.js';

export const BY_HOST = 0;
/** Matched by an exact host pattern: may name an internal destination. */
export const BY_EXACT = 1;
/** Matched by a CIDR containing the address: may name an internal destination. */
export const BY_CIDR = 2;

interface Glob {
  readonly rule: number;
  /** Full pattern, leftmost label first; null is a one-label wildcard. */
  readonly labels: readonly (string | null)[];
}

interface TrieNode {
  readonly children: Map<string, TrieNode>;
  /** Rules matching names strictly below this node (`*.x` and `.x`). */
  readonly below: number[];
  /** Rules matching this node's name itself (`.x`). */
  readonly self: number[];
  /** Globs whose literal suffix ends here, by the label count they match. */
  readonly globs: Map<number, Glob[]>;
}

export const PROTOCOL_BITS: Readonly<Record<Protocol, number>> = { http: 1, https: 2, tcp: 4, dns: 8 };

export interface CompiledRule {
  readonly index: number;
  readonly id: string;
  readonly action: Action;
  /** Flattened inclusive ranges [lo0, hi0, lo1, hi1, ...]; null matches any port. */
  readonly ports: Int32Array | null;
  /** Bit set of PROTOCOL_BITS; 0 matches any protocol. */
  readonly protocols: number;
  readonly methods: ReadonlySet<string> | null;
  readonly paths: readonly RegExp[] | null;
  /** The rule has method or path conditions: it can only be fully decided per request. */
  readonly requestConditions: boolean;
  readonly tls: boolean;
  readonly inject: readonly HeaderInjection[];
}

interface PrefixTables<K> {
  /** Prefix lengths present, longest first. */
  readonly lengths: number[];
  readonly tables: Map<K, number[]>[];
}

export interface Matcher {
  readonly rules: readonly CompiledRule[];
  readonly exact: ReadonlyMap<string, readonly number[]>;
  readonly anyHost: readonly number[];
  readonly trie: TrieNode;
  readonly v4: PrefixTables<number>;
  readonly v6: PrefixTables<bigint>;
}

function newNode(): TrieNode {
  return { children: new Map(), below: [], self: [], globs: new Map() };
}

function nodeFor(root: TrieNode, suffixLabels: readonly string[]): TrieNode {
  let node = root;
  for (let i = suffixLabels.length - 1; i >= 0; i--) {
    const label = suffixLabels[i] as string;
    let next = node.children.get(label);
    if (next === undefined) {
      next = newNode();
      node.children.set(label, next);
    }
    node = next;
  }
  return node;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else if (list[list.length - 1] !== value) list.push(value);
}

function prefixKey4(v4: number, bits: number): number {
  return bits === 0 ? 0 : v4 >>> (32 - bits);
}
function prefixKey6(v6: bigint, bits: number): bigint {
  return v6 >> BigInt(128 - bits);
}

function addPrefix<K>(tables: PrefixTables<K>, bits: number, key: K, rule: number): void {
  let at = tables.lengths.indexOf(bits);
  if (at === -1) {
    tables.lengths.push(bits);
    tables.tables.push(new Map());
    at = tables.lengths.length - 1;
  }
  push(tables.tables[at] as Map<K, number[]>, key, rule);
}

function sortLongestFirst<K>(tables: PrefixTables<K>): PrefixTables<K> {
  const order = tables.lengths.map((bits, i) => ({ bits, table: tables.tables[i] as Map<K, number[]> }));
  order.sort((a, b) => b.bits - a.bits);
  return { lengths: order.map((o) => o.bits), tables: order.map((o) => o.table) };
}

function compileRule(rule: PolicyRule): CompiledRule {
  return {
    index: rule.index,
    id: rule.id,
    action: rule.action,
    ports: rule.ports === null ? null : Int32Array.from(rule.ports.flat()),
    protocols: rule.protocols?.reduce((bits, p) => bits | PROTOCOL_BITS[p], 0) ?? 0,
    methods: rule.methods === null ? null : new Set(rule.methods),
    paths: rule.paths?.map((p) => p.regex) ?? null,
    requestConditions: rule.methods !== null || rule.paths !== null,
    tls: rule.tls,
    inject: rule.inject,
  };
}

export function compileMatcher(rules: readonly PolicyRule[]): Matcher {
  const exact = new Map<string, number[]>();
  const anyHost: number[] = [];
  const trie = newNode();
  const v4: PrefixTables<number> = { lengths: [], tables: [] };
  const v6: PrefixTables<bigint> = { lengths: [], tables: [] };
  for (const rule of rules) {
    const index = rule.index;
    for (const pattern of rule.hosts ?? []) {
      switch (pattern.kind) {
        case 'any':
          if (anyHost[anyHost.length - 1] !== index) anyHost.push(index);
          break;
        case 'exact':
          push(exact, pattern.name, index);
          break;
        case 'subdomains':
          nodeFor(trie, pattern.suffix.split('.')).below.push(index);
          break;
        case 'apex': {
          const node = nodeFor(trie, pattern.suffix.split('.'));
          node.below.push(index);
          node.self.push(index);
          break;
        }
        case 'glob': {
          const lastWildcard = pattern.labels.lastIndexOf(null);
          const suffix = pattern.labels.slice(lastWildcard + 1) as string[];
          push(nodeFor(trie, suffix).globs, pattern.labels.length, { rule: index, labels: pattern.labels });
          break;
        }
        default: {
          const unreachable: never = pattern;
          throw new Error(`unhandled host pattern ${String(unreachable)}`);
        }
      }
    }
    for (const cidr of rule.cidrs ?? []) {
      if (cidr.ip.family === 4) addPrefix(v4, cidr.bits, prefixKey4(cidr.ip.v4, cidr.bits), index);
      else addPrefix(v6, cidr.bits, prefixKey6(cidr.ip.v6, cidr.bits), index);
    }
  }
  return { rules: rules.map(compileRule), exact, anyHost, trie, v4: sortLongestFirst(v4), v6: sortLongestFirst(v6) };
}

function addAll(out: number[], rules: readonly number[], how: number): void {
  for (let i = 0; i < rules.length; i++) out.push((rules[i] as number) * 4 + how);
}

function globMatches(glob: Glob, labels: readonly string[]): boolean {
  for (let i = 0; i < glob.labels.length; i++) {
    const want = glob.labels[i];
    if (want !== null && want !== labels[i]) return false;
  }
  return true;
}

/** Rules whose host patterns match `name` (already normalised), appended as encoded candidates. */
export function hostCandidates(matcher: Matcher, name: string, out: number[]): void {
  const exact = matcher.exact.get(name);
  if (exact !== undefined) addAll(out, exact, BY_EXACT);
  addAll(out, matcher.anyHost, BY_HOST);
  let labels: string[] | null = null;
  let node: TrieNode | undefined = matcher.trie;
  // Walk labels right to left without splitting: most names leave the trie after a label or two.
  for (let end = name.length; node !== undefined; ) {
    const atName = end === -1;
    if (node !== matcher.trie) addAll(out, atName ? node.self : node.below, BY_HOST);
    if (node.globs.size > 0) {
      labels ??= name.split('.');
      const globs = node.globs.get(labels.length);
      if (globs !== undefined) for (const glob of globs) if (globMatches(glob, labels)) out.push(glob.rule * 4 + BY_HOST);
    }
    if (atName) break;
    const dot = name.lastIndexOf('.', end - 1);
    node = node.children.get(name.slice(dot + 1, end));
    end = dot;
  }
}

/** Rules with a CIDR containing `ip`, appended as encoded candidates. */
export function addressCandidates(matcher: Matcher, ip: ParsedIp, out: number[]): void {
  if (ip.family === 4) {
    const { lengths, tables } = matcher.v4;
    for (let i = 0; i < lengths.length; i++) {
      const rules = (tables[i] as Map<number, number[]>).get(prefixKey4(ip.v4, lengths[i] as number));
      if (rules !== undefined) addAll(out, rules, BY_CIDR);
    }
    return;
  }
  const { lengths, tables } = matcher.v6;
  for (let i = 0; i < lengths.length; i++) {
    const rules = (tables[i] as Map<bigint, number[]>).get(prefixKey6(ip.v6, lengths[i] as number));
    if (rules !== undefined) addAll(out, rules, BY_CIDR);
  }
}

export function portMatches(ports: Int32Array | null, port: number): boolean {
  if (ports === null) return true;
  for (let i = 0; i < ports.length; i += 2) if (port >= (ports[i] as number) && port <= (ports[i + 1] as number)) return true;
  return false;
}
