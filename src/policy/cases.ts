/**
 * Policy test cases: expectations written next to the rules (`tests:`) or in a cases file, and the
 * runner behind `microagent policy test`. Each case goes through the real decide(), never a copy of
 * its logic, so a passing case is evidence about the engine the proxy runs.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Node } from 'yaml';
import { MicroagentError } from '../errors.js';
import { decide } from './decide.js';
import { withMode, type Policy, type PolicyTestCase } from './policy.js';
import { REASONS, type Reason } from './reasons.js';
import { targetInput } from './target.js';
import { MODES, type Decision, type Protocol, type Verdict } from './types.js';
import { mapEntries, oneOf, policyInvalid, readYaml, scalarString, seqItems, type Entry, type YamlSource } from './yaml-source.js';

const CASE_KEYS = ['name', 'target', 'method', 'protocol', 'ip', 'mode', 'expect', 'rule', 'reason'] as const;
const VERDICTS: readonly Verdict[] = ['allow', 'deny', 'would_deny'];
const PROTOCOLS: readonly Protocol[] = ['http', 'https', 'tcp', 'dns'];

function optionalString(src: YamlSource, entries: Map<string, Entry>, key: string): string | null {
  const node = entries.get(key)?.value;
  return node ? scalarString(src, node, key, `write ${key} as a string`) : null;
}

function parseCase(src: YamlSource, node: Node, index: number): PolicyTestCase | null {
  const before = src.issues.length;
  const entries = mapEntries(src, node, `test #${index + 1}`, CASE_KEYS, ['rule']);
  if (entries === null) return null;
  const target = optionalString(src, entries, 'target');
  if (!entries.has('target')) src.report(node, `test #${index + 1} has no target`, 'add target: https://host/path (or host:port, or an IP)');
  const expectNode = entries.get('expect')?.value;
  if (!expectNode) src.report(node, `test #${index + 1} has no expect`, 'add expect: allow | deny | would_deny');
  const expect = expectNode ? oneOf(src, expectNode, 'expect', VERDICTS) : null;
  const protocolNode = entries.get('protocol')?.value;
  const protocol = protocolNode ? oneOf(src, protocolNode, 'protocol', PROTOCOLS) : null;
  const modeNode = entries.get('mode')?.value;
  const mode = modeNode ? oneOf(src, modeNode, 'mode', MODES) : null;
  const reasonNode = entries.get('reason')?.value;
  const reason = reasonNode ? oneOf(src, reasonNode, 'reason', Object.keys(REASONS) as Reason[]) : null;
  const ruleEntry = entries.get('rule');
  const ruleNode = ruleEntry?.value;
  const isNullRule = ruleEntry !== undefined && (!ruleNode || (ruleNode as { value?: unknown }).value === null);
  const rule = ruleEntry === undefined ? undefined : isNullRule ? null : scalarString(src, ruleNode as Node, 'rule', 'write the id of the rule that must decide, or rule: null');
  const method = optionalString(src, entries, 'method');
  const ip = optionalString(src, entries, 'ip');
  if (target !== null) {
    const input = targetInput(target, { method: method ?? undefined, protocol: protocol ?? undefined });
    if (!input.ok) src.report(entries.get('target')?.value, input.problem, input.fix);
  }
  if (src.issues.length > before || target === null || expect === null) return null;
  const name = optionalString(src, entries, 'name') ?? `${method === null ? '' : method + ' '}${target}`;
  return { name, target, method, protocol, ip, mode, expect, rule, reason, position: src.position(node) };
}

/** The `tests:` list of a policy or a cases file; problems go to `src`. */
export function parseTestCases(src: YamlSource, entry: Entry): PolicyTestCase[] {
  const nodes = seqItems(src, entry, 'tests', 'list at least one case or remove "tests"') ?? [];
  const cases: PolicyTestCase[] = [];
  nodes.forEach((node, index) => {
    const parsed = parseCase(src, node, index);
    if (parsed !== null) cases.push(parsed);
  });
  return cases;
}

/** A cases file: `version: 1` (optional) and a `tests:` list. */
export function parseCasesFile(text: string, file: string): PolicyTestCase[] {
  const src = readYaml(text, file);
  if (src.root === null && src.issues.length === 0) src.report(null, 'the cases file is empty', 'add a tests: list');
  const top = src.root === null ? null : mapEntries(src, src.root, 'the cases file', ['version', 'tests']);
  const tests = top?.get('tests');
  if (top !== null && tests === undefined) src.report(src.root, 'the cases file has no tests', 'add a tests: list');
  const cases = tests === undefined ? [] : parseTestCases(src, tests);
  if (src.issues.length > 0) throw policyInvalid(file, src.issues, 'cases file');
  return cases;
}

/**
 * The cases file kept next to a policy by the shipped convention (`X.yaml` -> `X.cases.yaml`), or null.
 * Found without being named, so `policy test X.yaml` runs every case written for X, not only its inline ones.
 */
export function siblingCasesFile(policyFile: string): string | null {
  if (!/\.ya?ml$/.test(policyFile) || /\.cases\.ya?ml$/.test(policyFile)) return null;
  const sibling = policyFile.replace(/\.ya?ml$/, '.cases.yaml');
  return existsSync(sibling) ? sibling : null;
}

export async function loadCasesFile(path: string): Promise<PolicyTestCase[]> {
  const text = await readFile(path, 'utf8').catch((err: unknown) => {
    throw new MicroagentError('not_found', `cannot read cases file ${path}: ${(err as Error).message}`, {
      code: 'policy.read',
      remediation: 'check the --cases path',
      cause: err,
    });
  });
  return parseCasesFile(text, path);
}

export interface PolicyTestResult {
  readonly case: PolicyTestCase;
  readonly decision: Decision | null;
  readonly pass: boolean;
  /** Why it failed, one line per mismatch; empty when it passed. */
  readonly failures: readonly string[];
}

export function runPolicyTests(policy: Policy, cases: readonly PolicyTestCase[] = policy.tests): PolicyTestResult[] {
  return cases.map((testCase) => {
    const input = targetInput(testCase.target, {
      method: testCase.method ?? undefined,
      protocol: testCase.protocol ?? undefined,
      ip: testCase.ip ?? undefined,
    });
    if (!input.ok) return { case: testCase, decision: null, pass: false, failures: [input.problem] };
    const decision = decide(testCase.mode === null ? policy : withMode(policy, testCase.mode), input.value);
    const failures: string[] = [];
    if (decision.verdict !== testCase.expect) failures.push(`expected ${testCase.expect}, got ${decision.verdict} (${decision.reason})`);
    if (testCase.rule !== undefined && decision.rule !== testCase.rule) {
      failures.push(`expected rule ${testCase.rule ?? 'none'}, decided by ${decision.rule ?? 'none'}`);
    }
    if (testCase.reason !== null && decision.reason !== testCase.reason) failures.push(`expected reason ${testCase.reason}, got ${decision.reason}`);
    return { case: testCase, decision, pass: failures.length === 0, failures };
  });
}
