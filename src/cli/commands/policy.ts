/** `microagent policy check|test|explain`: thin wrappers over src/policy; no policy logic here. */
import { isMicroagentError, MicroagentError } from '../../errors.js';
import {
  explain,
  formatIssue,
  isPolicyInvalidError,
  lintPolicy,
  loadCasesFile,
  loadPolicy,
  MODES,
  runPolicyTests,
  siblingCasesFile,
  type Mode,
  type PolicyIssue,
  type Protocol,
} from '../../policy/index.js';
import { parseCommandArgs, usageError, type Command } from '../command.js';
import { table } from '../output.js';

const PROTOCOLS: readonly Protocol[] = ['http', 'https', 'tcp', 'dns'];

async function checkFile(file: string) {
  try {
    const policy = await loadPolicy(file);
    const warnings = lintPolicy(policy);
    return { file, ok: true, hash: policy.hash, mode: policy.mode, rules: policy.rules.length, tests: policy.tests.length, errors: [] as PolicyIssue[], warnings };
  } catch (err) {
    if (isPolicyInvalidError(err)) return { file, ok: false, errors: [...err.issues], warnings: [] };
    if (!isMicroagentError(err)) throw err;
    const issue: PolicyIssue = { file, line: 0, column: 0, problem: err.message, fix: err.remediation };
    return { file, ok: false, errors: [issue], warnings: [] };
  }
}

const check: Command = {
  name: 'policy check',
  summary: 'Validate policy files: errors with file:line:col and a fix (exit 1), warnings for suspicious rules',
  usage: 'FILE...',
  async run(args) {
    const { positionals } = parseCommandArgs(this, args, {});
    if (positionals.length === 0) throw usageError('policy check: no FILE given', `usage: microagent policy check ${this.usage}`);
    const files = [];
    for (const file of positionals) files.push(await checkFile(file));
    const lines: string[] = [];
    for (const f of files) {
      lines.push(f.ok ? `ok       ${f.file} (${f.rules} rules, ${f.tests} tests, mode ${f.mode}, ${f.hash})` : `invalid  ${f.file}`);
      for (const e of f.errors) lines.push(`  ${e.line === 0 ? `${e.file}: ${e.problem} (fix: ${e.fix})` : formatIssue(e)}`);
      for (const w of f.warnings) lines.push(`  ${w.file}:${w.line}:${w.column}: warning: ${w.message}`);
    }
    const failed = files.some((f) => !f.ok);
    return { result: { ok: !failed, files }, human: lines.join('\n'), exitCode: failed ? 1 : 0 };
  },
};

const test: Command = {
  name: 'policy test',
  summary: "Run a policy's test cases (inline tests:, and --cases files, by default FILE's sibling X.cases.yaml); exit 1 on any failure",
  usage: 'FILE [--cases CASES.yaml]...',
  async run(args, ctx) {
    const { positionals, values } = parseCommandArgs(this, args, { cases: { type: 'string', multiple: true } });
    const [file, ...extra] = positionals;
    if (file === undefined || extra.length > 0) throw usageError('policy test: give exactly one policy FILE', `usage: microagent policy test ${this.usage}`);
    const policy = await loadPolicy(file);
    // Tested against no rules, a cases file given as the policy fails everything it expects allowed.
    for (const w of lintPolicy(policy)) if (w.kind === 'no_rules') ctx.out.warn(w.message);
    const cases = [...policy.tests];
    const sibling = values.cases === undefined ? siblingCasesFile(file) : null;
    const casesFiles = values.cases ?? (sibling === null ? [] : [sibling]);
    for (const casesFile of casesFiles) cases.push(...(await loadCasesFile(casesFile)));
    if (cases.length === 0) {
      throw new MicroagentError('invalid', `no test cases for ${file}`, {
        code: 'policy.no_tests',
        remediation: 'add a tests: list to the policy or pass --cases CASES.yaml',
      });
    }
    const results = runPolicyTests(policy, cases);
    const failed = results.filter((r) => !r.pass);
    const rows = results.map((r) => [
      r.pass ? 'pass' : 'FAIL',
      r.case.name,
      r.case.expect + (r.case.rule === undefined ? '' : ` (${r.case.rule ?? 'no rule'})`),
      r.decision === null ? '-' : `${r.decision.verdict} (${r.decision.rule ?? 'no rule'}, ${r.decision.reason})`,
      `${r.case.position.file}:${r.case.position.line}`,
    ]);
    const details = failed.map((r) => `${r.case.position.file}:${r.case.position.line}:${r.case.position.column}: ${r.case.name}: ${r.failures.join('; ')}`);
    const from = casesFiles.length === 0 ? 'inline tests only' : `inline tests and ${casesFiles.join(', ')}${sibling === null ? '' : ' (found next to the policy)'}`;
    const summary = `${results.length - failed.length} passed, ${failed.length} failed (policy ${policy.hash}; ${from})`;
    const human = [table(['RESULT', 'CASE', 'EXPECTED', 'GOT', 'AT'], rows), '', ...details, summary].join('\n');
    const result = {
      file,
      hash: policy.hash,
      casesFiles,
      passed: results.length - failed.length,
      failed: failed.length,
      results: results.map((r) => ({ name: r.case.name, target: r.case.target, pass: r.pass, failures: r.failures, expect: r.case.expect, decision: r.decision, position: r.case.position })),
    };
    return { result, human, exitCode: failed.length > 0 ? 1 : 0 };
  },
};

const HTTP_METHOD = /^[A-Z]+$/;

const explainCommand: Command = {
  name: 'policy explain',
  summary: 'Show the verdict for TARGET (URL, host[:port] or IP): deciding rule, every matched rule, reason',
  usage: 'FILE [METHOD] TARGET [--method M] [--mode guarded|strict|off] [--protocol P] [--ip IP]',
  async run(args) {
    const { positionals, values } = parseCommandArgs(this, args, {
      method: { type: 'string' },
      mode: { type: 'string' },
      protocol: { type: 'string' },
      ip: { type: 'string' },
    });
    // `explain FILE GET https://...` is how a request line reads: the method is taken from there too.
    const spelledMethod = positionals.length === 3 && HTTP_METHOD.test(positionals[1] as string) && values.method === undefined;
    const [file, target, ...extra] = spelledMethod ? [positionals[0], positionals[2]] : positionals;
    if (file === undefined || target === undefined || extra.length > 0) {
      throw usageError('policy explain: give a policy FILE and one TARGET', `usage: microagent policy explain ${this.usage}`);
    }
    if (values.mode !== undefined && !(MODES as readonly string[]).includes(values.mode)) {
      throw usageError(`policy explain: unknown mode "${values.mode}"`, `use --mode ${MODES.join('|')}`);
    }
    if (values.protocol !== undefined && !(PROTOCOLS as readonly string[]).includes(values.protocol)) {
      throw usageError(`policy explain: unknown protocol "${values.protocol}"`, `use --protocol ${PROTOCOLS.join('|')}`);
    }
    const policy = await loadPolicy(file);
    const e = explain(policy, target, {
      method: spelledMethod ? positionals[1] : values.method,
      mode: values.mode as Mode | undefined,
      protocol: values.protocol as Protocol | undefined,
      ip: values.ip,
    });
    const at = (r: { id: string; action: string; position: { file: string; line: number; column: number } }) =>
      `${r.id} (${r.action}, ${r.position.file}:${r.position.line}:${r.position.column})`;
    const d = e.decision;
    const input = Object.entries(e.input).map(([k, v]) => `${k}=${String(v)}`).join(' ');
    const { paths, ...parts } = e.normalized;
    const readAs = [
      ...Object.entries(parts).map(([k, v]) => `${k}=${String(v)}`),
      ...(paths === undefined ? [] : [`path=${paths[0]}`, ...paths.slice(1).map((p) => `(also read as ${p})`)]),
    ].join(' ');
    const human = [
      `verdict   ${d.verdict} (action ${d.action})`,
      `reason    ${d.reason}: ${e.because}`,
      `rule      ${e.deciding === null ? '(none: mode default or address rule)' : at(e.deciding)}`,
      `matched   ${e.matched.length === 0 ? '(none)' : e.matched.map(at).join('\n          ')}`,
      `signals   ${d.signals.length === 0 ? '-' : d.signals.join(', ')}`,
      ...(d.inject.length === 0 ? [] : [`inject    ${d.inject.map((h) => `${h.header} <- secrets ${h.secrets.join(', ')}`).join('; ')}`]),
      `checks    ${d.requestCheck ? 'each request is decided separately (method/path rules)' : 'none per request'}; tls ${d.tls ? 'yes' : 'no'}`,
      `input     ${input}`,
      `read as   ${readAs || '(nothing readable: see reason)'}`,
      `policy    ${e.policy.file} mode ${e.policy.mode}${e.policy.reportOnly ? ' report-only' : ''} ${e.policy.hash}`,
    ].join('\n');
    return { result: e, human };
  },
};

export const commands: readonly Command[] = [check, test, explainCommand];
