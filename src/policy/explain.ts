/**
 * `policy explain`: why a target gets its verdict. It runs the real decide() and only looks up the
 * rules decide() named, with their source positions; it must never re-implement matching.
 */
import { MicroagentError } from '../errors.js';
import { formatIp, parseIp } from './address.js';
import { decide } from './decide.js';
import { normalizeHost } from './host.js';
import { withMode, type Policy, type PolicyRule } from './policy.js';
import { REASONS } from './reasons.js';
import { normalizeMethod, pathReadings } from './request.js';
import { targetInput, type TargetOptions } from './target.js';
import type { Action, Decision, DecisionInput, Mode, SourcePosition } from './types.js';

export interface ExplainedRule {
  readonly id: string;
  readonly action: Action;
  readonly position: SourcePosition;
}

/** The input as decide() reads it; each part absent when it was not given or cannot be read strictly. */
export interface NormalizedInput {
  readonly host?: string;
  readonly ip?: string;
  readonly port?: number;
  readonly method?: string;
  /** Every reading of the path (the RFC 3986 one first): path rules must agree in all of them. */
  readonly paths?: readonly string[];
}

export interface Explanation {
  readonly target: string;
  readonly input: DecisionInput;
  readonly normalized: NormalizedInput;
  readonly decision: Decision;
  /** The human meaning of decision.reason. */
  readonly because: string;
  readonly deciding: ExplainedRule | null;
  readonly matched: readonly ExplainedRule[];
  readonly policy: { readonly file: string; readonly hash: string; readonly mode: Mode; readonly reportOnly: boolean };
}

function describe(rule: PolicyRule): ExplainedRule {
  return { id: rule.id, action: rule.action, position: rule.position };
}

export function explain(policy: Policy, target: string, options: TargetOptions & { readonly mode?: Mode | undefined } = {}): Explanation {
  const input = targetInput(target, options);
  if (!input.ok) {
    throw new MicroagentError('invalid', `cannot explain "${target}": ${input.problem}`, { code: 'policy.target', remediation: input.fix });
  }
  const effective = options.mode === undefined ? policy : withMode(policy, options.mode);
  const decision = decide(effective, input.value);
  const byId = new Map(policy.rules.map((r) => [r.id, r]));
  const lookup = (id: string) => describe(byId.get(id) as PolicyRule);
  return {
    target,
    input: input.value,
    normalized: normalizedInput(input.value),
    decision,
    because: REASONS[decision.reason],
    deciding: decision.rule === null ? null : lookup(decision.rule),
    matched: decision.matched.map(lookup),
    policy: { file: policy.file, hash: effective.hash, mode: effective.mode, reportOnly: policy.reportOnly },
  };
}

/** The same normalisation decide() applies, shown so a policy author sees what was matched. */
function normalizedInput(input: DecisionInput): NormalizedInput {
  const host = input.host === undefined ? null : normalizeHost(input.host);
  const ip = input.ip === undefined ? null : parseIp(input.ip);
  const method = input.method === undefined ? null : normalizeMethod(input.method);
  const paths = input.path === undefined ? null : pathReadings(input.path);
  return {
    ...(host === null ? {} : { host }),
    ...(ip === null ? {} : { ip: formatIp(ip) }),
    ...(input.port === undefined ? {} : { port: input.port }),
    ...(method === null ? {} : { method }),
    ...(paths === null ? {} : { paths }),
  };
}
