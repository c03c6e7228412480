/** Public API of the policy engine: load, decide, explain, lint, test and watch policies. */
export * from './types.js';
export * from './reasons.js';
export { parseIpLiteral } from './address.js';
export { classifyAddress, isInternalAddress, type AddressClass, type AddressClassification, type Embedding } from './classify.js';
export { normalizeHost } from './host.js';
export { parsePolicy, loadPolicy } from './load.js';
export { withMode, type Policy, type PolicyRule, type PolicyTestCase } from './policy.js';
export { decide } from './decide.js';
export { explain, type Explanation, type ExplainedRule } from './explain.js';
export { lintPolicy, type LintWarning, type LintKind } from './lint.js';
export { runPolicyTests, parseCasesFile, loadCasesFile, siblingCasesFile, type PolicyTestResult } from './cases.js';
export { targetInput, type TargetOptions } from './target.js';
export { watchPolicy, type PolicyWatch, type PolicyWatchHandlers } from './watch.js';
export { formatIssue, isPolicyInvalidError, type PolicyIssue, type PolicyInvalidError } from './yaml-source.js';
export { hostPatternText, type HostPattern, type Cidr, type PortRange } from './patterns.js';
export { openLivePolicy, type LivePolicy, type LivePolicyOptions } from './live.js';
