/**
 * Reading policy YAML with positions: every value comes with the line and column it was written at,
 * and every problem is collected (not thrown one at a time) so a user fixes a file in one pass.
 * It must never accept what it does not understand: unknown keys, null values, aliases and custom
 * tags are all problems, each with a fix.
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair } from 'yaml';
import { MicroagentError } from '../errors.js';
import type { SourcePosition } from './types.js';

export interface PolicyIssue extends SourcePosition {
  readonly problem: string;
  readonly fix: string;
}

export interface YamlSource {
  readonly file: string;
  readonly issues: PolicyIssue[];
  readonly root: Node | null;
  position(node: Node | null | undefined): SourcePosition;
  report(node: Node | null | undefined, problem: string, fix: string): void;
}

export function readYaml(text: string, file: string): YamlSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, schema: 'core' });
  const issues: PolicyIssue[] = [];
  const at = (offset: number): SourcePosition => {
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col };
  };
  const position = (node: Node | null | undefined): SourcePosition => at(node?.range?.[0] ?? 0);
  for (const error of doc.errors) {
    if (error.code === 'MULTIPLE_DOCS') {
      issues.push({ ...at(error.pos[0]), problem: 'the file holds more than one YAML document', fix: 'keep one policy per file: remove the "---" line and what follows' });
      continue;
    }
    if (/Maximum call stack/.test(error.message)) {
      issues.push({ ...at(error.pos[0]), problem: 'the YAML nests too deeply to be read', fix: 'a policy needs a few levels at most: flatten the nested lists or maps' });
      continue;
    }
    const fix = error.code === 'DUPLICATE_KEY' ? 'keep one of the repeated keys' : 'correct the YAML syntax at this position';
    issues.push({ ...at(error.pos[0]), problem: `YAML syntax: ${error.message.split('\n')[0]}`, fix });
  }
  return {
    file,
    issues,
    root: doc.errors.length > 0 ? null : (doc.contents as Node | null),
    position,
    report: (node, problem, fix) => issues.push({ ...position(node), problem, fix }),
  };
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current.push(Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + cost));
    }
    previous = current;
  }
  return previous[b.length] as number;
}

function suggestKey(key: string, allowed: readonly string[]): string {
  const close = allowed.find((k) => editDistance(k, key.toLowerCase()) <= 2);
  return close === undefined ? `use one of: ${allowed.join(', ')}` : `did you mean "${close}"?`;
}

export interface Entry {
  readonly key: Node;
  readonly value: Node | null;
}

/** The entries of a mapping whose keys are all in `allowed`; unknown keys are reported. */
export function mapEntries(src: YamlSource, node: Node | null, what: string, allowed: readonly string[], nullable: readonly string[] = []): Map<string, Entry> | null {
  if (!isMap(node)) {
    src.report(node, `${what} must be a mapping (key: value lines)`, `write ${what} as "key: value" entries: ${allowed.join(', ')}`);
    return null;
  }
  const entries = new Map<string, Entry>();
  for (const pair of node.items as Pair<Node, Node | null>[]) {
    const key = pair.key;
    if (!isScalar(key) || typeof key.value !== 'string') {
      src.report(key, `${what} has a key that is not a plain word`, `use one of: ${allowed.join(', ')}`);
      continue;
    }
    if (!allowed.includes(key.value)) {
      src.report(key, `unknown key "${key.value}" in ${what}`, suggestKey(key.value, allowed));
      continue;
    }
    const isNull = pair.value === null || (isScalar(pair.value) && pair.value.value === null);
    if ((isNull && nullable.includes(key.value)) || checkPlainValue(src, pair.value, `"${key.value}"`, key)) {
      entries.set(key.value, { key, value: pair.value });
    }
  }
  return entries;
}

/** Null values, aliases and tags are rejected wherever a value may stand. */
export function checkPlainValue(src: YamlSource, value: Node | null, what: string, near: Node): value is Node {
  if (value === null || (isScalar(value) && value.value === null)) {
    src.report(value ?? near, `${what} is empty`, `give ${what} a value or remove the line`);
    return false;
  }
  if (isAlias(value)) {
    src.report(value, `${what} uses a YAML alias`, 'write the value out; anchors and aliases are not supported in policies');
    return false;
  }
  if (value.tag !== undefined && !value.tag.startsWith('tag:yaml.org,2002:')) {
    src.report(value, `${what} has a custom tag ${value.tag}`, 'remove the tag');
    return false;
  }
  return true;
}

/** The items of a non-empty sequence, each checked for null/alias; reports and returns null otherwise. */
export function seqItems(src: YamlSource, entry: Entry, what: string, emptyFix: string): Node[] | null {
  const node = entry.value;
  if (!isSeq(node)) {
    src.report(node ?? entry.key, `${what} must be a list`, `write ${what}: [value, ...] or one "- value" per line`);
    return null;
  }
  if (node.items.length === 0) {
    src.report(node, `${what} is an empty list`, emptyFix);
    return null;
  }
  const items: Node[] = [];
  node.items.forEach((item, i) => {
    if (checkPlainValue(src, item as Node | null, `${what}[${i}]`, node)) items.push(item as Node);
  });
  return items.length === node.items.length ? items : null;
}

export function scalarString(src: YamlSource, node: Node, what: string, fix: string): string | null {
  if (isScalar(node) && typeof node.value === 'string' && node.value.trim() !== '') return node.value;
  src.report(node, `${what} must be a non-empty string`, fix);
  return null;
}

export function scalarValue(node: Node): unknown {
  return isScalar(node) ? node.value : undefined;
}

export function oneOf<T extends string>(src: YamlSource, node: Node, what: string, allowed: readonly T[]): T | null {
  const value = scalarValue(node);
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  src.report(node, `${what} must be one of ${allowed.join(', ')}`, `write ${what}: ${allowed[0]}`);
  return null;
}

/** The one error a broken policy raises: every issue, each with file:line:col and a fix. */
export type PolicyInvalidError = MicroagentError & { readonly issues: readonly PolicyIssue[] };

export function formatIssue(issue: PolicyIssue): string {
  return `${issue.file}:${issue.line}:${issue.column}: ${issue.problem} (fix: ${issue.fix})`;
}

export function policyInvalid(file: string, unsorted: readonly PolicyIssue[], what = 'policy'): PolicyInvalidError {
  const issues = [...unsorted].sort((a, b) => a.line - b.line || a.column - b.column);
  const count = issues.length === 1 ? '1 problem' : `${issues.length} problems`;
  const message = `${what} ${file} is invalid (${count}):\n${issues.map((i) => '  ' + formatIssue(i)).join('\n')}`;
  const error = new MicroagentError('invalid', message, {
    code: 'policy.invalid',
    remediation: `fix each listed line, then run "microagent policy check ${file}"`,
  });
  return Object.assign(error, { issues });
}

export function isPolicyInvalidError(err: unknown): err is PolicyInvalidError {
  return err instanceof MicroagentError && err.code === 'policy.invalid' && Array.isArray((err as { issues?: unknown }).issues);
}
