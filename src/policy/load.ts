/**
 * Policy files: YAML text in, a compiled Policy out, or one `policy.invalid` error listing every
 * problem with file:line:col and a fix. Validation is the whole job here: unknown keys, empty values,
 * bad globs, CIDRs, ports and contradictory rules (a passthrough with paths) are all refused, because a
 * silently ignored line in a security policy is a hole nobody sees.
 */
import { isMap, type Node, type Pair } from 'yaml';
import { parseTestCases } from './cases.js';
import { bad, ok, parseCidr, parseHostPattern, parsePort, type Checked } from './patterns.js';
import { buildPolicy, type Policy, type PolicyRule, type PolicySource } from './policy.js';
import { readPolicyFile } from './read.js';
import { parseHeaderName, parseHeaderTemplate, parseMethod, parsePathGlob } from './request.js';
import { MODES, type Action, type HeaderInjection, type Protocol } from './types.js';
import {
  checkPlainValue,
  mapEntries,
  oneOf,
  policyInvalid,
  readYaml,
  scalarString,
  scalarValue,
  seqItems,
  type Entry,
  type YamlSource,
} from './yaml-source.js';

const TOP_KEYS = ['version', 'mode', 'report_only', 'rules', 'tests'] as const;
const RULE_KEYS = ['id', 'description', 'action', 'hosts', 'cidrs', 'ports', 'protocols', 'methods', 'paths', 'tls', 'headers'] as const;
const ACTIONS: readonly Action[] = ['allow', 'deny', 'passthrough', 'inject'];
const PROTOCOLS: readonly Protocol[] = ['http', 'https', 'tcp', 'dns'];

/** Each item of a list through a validator; null (with issues reported) if any item fails. */
function listOf<T>(src: YamlSource, entry: Entry | undefined, what: string, emptyFix: string, check: (node: Node) => Checked<T> | null): T[] | null {
  if (entry === undefined) return null;
  const items = seqItems(src, entry, what, emptyFix);
  if (items === null) return null;
  const values: T[] = [];
  for (const item of items) {
    const checked = check(item);
    if (checked === null) continue;
    if (checked.ok) values.push(checked.value);
    else src.report(item, checked.problem, checked.fix);
  }
  return values.length === items.length ? values : null;
}

function stringItem<T>(src: YamlSource, what: string, parse: (text: string) => Checked<T>) {
  return (node: Node): Checked<T> | null => {
    const text = scalarString(src, node, what, `write each ${what} as a string`);
    return text === null ? null : parse(text);
  };
}

function parseRule(src: YamlSource, node: Node, index: number, seenIds: Map<string, number>): PolicyRule | null {
  const before = src.issues.length;
  const entries = mapEntries(src, node, `rule #${index + 1}`, RULE_KEYS);
  if (entries === null) return null;
  const idEntry = entries.get('id');
  const actionEntry = entries.get('action');
  if (idEntry === undefined) src.report(node, `rule #${index + 1} has no id`, 'add "id: a-short-name" (letters, digits, ".", "_", "-")');
  if (actionEntry === undefined) src.report(node, `rule #${index + 1} has no action`, `add "action: ${ACTIONS.join(' | ')}"`);
  const id = idEntry?.value ? scalarString(src, idEntry.value, 'id', 'write id: a-short-name') : null;
  if (id !== null && idEntry?.value) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) src.report(idEntry.value, `rule id "${id}" has characters other than letters, digits, ".", "_", "-"`, 'rename it, e.g. github-api');
    else if (seenIds.has(id)) src.report(idEntry.value, `rule id "${id}" is already used by rule #${(seenIds.get(id) as number) + 1}`, 'give every rule a unique id');
    else seenIds.set(id, index);
  }
  const action = actionEntry?.value ? oneOf(src, actionEntry.value, 'action', ACTIONS) : null;
  const descriptionNode = entries.get('description')?.value;
  const description = descriptionNode ? scalarString(src, descriptionNode, 'description', 'write the description as text') : null;
  const hosts = listOf(src, entries.get('hosts'), 'hosts', 'remove "hosts" or list at least one name', stringItem(src, 'host', parseHostPattern));
  const cidrs = listOf(src, entries.get('cidrs'), 'cidrs', 'remove "cidrs" or list at least one network', stringItem(src, 'cidr', parseCidr));
  const ports = listOf(src, entries.get('ports'), 'ports', 'remove "ports" to match every port', (n) => parsePort(scalarValue(n)));
  // Case-insensitive, like methods: HTTPS is https.
  const protocols = listOf(src, entries.get('protocols'), 'protocols', 'remove "protocols" to match every protocol', (n): Checked<Protocol> => {
    const value = scalarValue(n);
    const protocol = PROTOCOLS.find((p) => typeof value === 'string' && p === value.toLowerCase());
    return protocol !== undefined ? ok(protocol) : bad(`protocol ${JSON.stringify(value)} is not one of ${PROTOCOLS.join(', ')}`, `write one of ${PROTOCOLS.join(', ')}`);
  });
  const methods = listOf(src, entries.get('methods'), 'methods', 'remove "methods" to match every method', stringItem(src, 'method', parseMethod));
  const paths = listOf(src, entries.get('paths'), 'paths', 'remove "paths" to match every path', stringItem(src, 'path', parsePathGlob));
  const tlsEntry = entries.get('tls');
  if (tlsEntry?.value && typeof scalarValue(tlsEntry.value) !== 'boolean') src.report(tlsEntry.value, 'tls must be true or false', 'write tls: true');
  const headersEntry = entries.get('headers');
  const inject = headersEntry === undefined ? [] : parseInject(src, headersEntry);

  const where = actionEntry?.value ?? node;
  // Only when nothing else is wrong: a misspelt "host:" already explains the missing destination.
  if (!entries.has('hosts') && !entries.has('cidrs') && src.issues.length === before) {
    src.report(node, `rule ${id ?? `#${index + 1}`} names no destination`, 'add hosts: [...] and/or cidrs: [...]; use hosts: ["*"] to match every host name');
  }
  if (action === 'inject' && headersEntry === undefined) src.report(where, `inject rule ${id ?? ''} has no headers`, 'add headers: {Authorization: "Bearer ${secret:NAME}"}');
  if (action !== null && action !== 'inject' && headersEntry !== undefined) src.report(headersEntry.key, `headers only apply to inject rules, this one is ${action}`, 'set action: inject or remove headers');
  if (action === 'passthrough' && (methods !== null || paths !== null)) {
    src.report(where, 'a passthrough rule is never decrypted, so methods and paths cannot be checked', 'use action: allow to filter requests, or remove methods/paths');
  }
  if (protocols !== null && (methods !== null || paths !== null) && !protocols.some((p) => p === 'http' || p === 'https')) {
    src.report(entries.get('protocols')?.value, 'methods and paths only apply to http and https', 'add http or https to protocols, or remove methods/paths');
  }
  if (src.issues.length > before || id === null || action === null) return null;
  return {
    id,
    index,
    action,
    description,
    hosts,
    cidrs,
    ports,
    protocols,
    methods: methods === null ? null : [...new Set(methods)],
    paths,
    tls: tlsEntry?.value ? scalarValue(tlsEntry.value) === true : false,
    inject,
    position: src.position(node),
  };
}

/** `headers:` of an inject rule: header name -> template with ${secret:NAME} references. */
function parseInject(src: YamlSource, entry: Entry): HeaderInjection[] {
  const node = entry.value;
  if (!isMap(node) || node.items.length === 0) {
    src.report(node ?? entry.key, 'headers must be a non-empty mapping', 'write headers: {Authorization: "Bearer ${secret:NAME}"}');
    return [];
  }
  const injections: HeaderInjection[] = [];
  const seen = new Set<string>();
  for (const pair of node.items as Pair<Node, Node | null>[]) {
    const name = scalarString(src, pair.key, 'a header name', 'write a header name such as Authorization');
    if (name === null || !checkPlainValue(src, pair.value, `header ${name}`, pair.key)) continue;
    const header = parseHeaderName(name);
    if (!header.ok) {
      src.report(pair.key, header.problem, header.fix);
      continue;
    }
    if (seen.has(name.toLowerCase())) {
      src.report(pair.key, `header ${name} is listed twice`, 'keep one entry per header');
      continue;
    }
    seen.add(name.toLowerCase());
    const template = scalarString(src, pair.value, `header ${name}`, 'write the value as a string');
    if (template === null) continue;
    const injection = parseHeaderTemplate(name, template);
    if (injection.ok) injections.push(injection.value);
    else src.report(pair.value, injection.problem, injection.fix);
  }
  return injections;
}

function parseSource(text: string, file: string): PolicySource {
  const src = readYaml(text, file);
  if (src.root === null && src.issues.length === 0) src.report(null, 'the policy file is empty', 'start it with "version: 1" and a rules: list');
  const top = src.root === null ? null : mapEntries(src, src.root, 'the policy', TOP_KEYS);
  let mode: (typeof MODES)[number] = 'guarded';
  let reportOnly = false;
  const rules: PolicyRule[] = [];
  let tests: PolicySource['tests'] = [];
  if (top !== null) {
    const version = top.get('version');
    if (version === undefined) src.report(src.root, 'the policy has no version', 'add "version: 1" as the first line');
    else if (version.value && scalarValue(version.value) !== 1) {
      const value = scalarValue(version.value);
      src.report(version.value, typeof value === 'string' ? `version must be the number 1, not the string "${value}"` : `unsupported policy version ${String(value)}`, 'write version: 1 (no quotes)');
    }
    const modeEntry = top.get('mode');
    if (modeEntry?.value) mode = oneOf(src, modeEntry.value, 'mode', MODES) ?? mode;
    const reportEntry = top.get('report_only');
    if (reportEntry?.value) {
      const value = scalarValue(reportEntry.value);
      if (typeof value === 'boolean') reportOnly = value;
      else src.report(reportEntry.value, 'report_only must be true or false', 'write report_only: false');
    }
    const rulesEntry = top.get('rules');
    const ruleNodes = rulesEntry === undefined ? [] : (seqItems(src, rulesEntry, 'rules', 'list at least one rule or remove "rules"') ?? []);
    const seenIds = new Map<string, number>();
    ruleNodes.forEach((node, index) => {
      const rule = parseRule(src, node, index, seenIds);
      if (rule !== null) rules.push(rule);
    });
    const testsEntry = top.get('tests');
    if (testsEntry !== undefined) tests = parseTestCases(src, testsEntry);
  }
  if (src.issues.length > 0) throw policyInvalid(file, src.issues);
  return { version: 1, file, mode, reportOnly, rules, tests };
}

/** Parses, validates and compiles policy text; `file` is used in positions and errors. */
export function parsePolicy(text: string, file: string): Policy {
  return buildPolicy(parseSource(text, file));
}

export async function loadPolicy(path: string): Promise<Policy> {
  return parsePolicy((await readPolicyFile(path)).toString('utf8'), path);
}
