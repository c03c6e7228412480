/** `microagent audit ...` commands: verify, query, tail, summarise and recover a workspace's audit log. */
import { loadCheckpointVerifier } from '../../audit/checkpoint.js';
import { parseSignal, parseTimeBound, queryAuditLog, recordHost, summarizeAuditLog, type AuditQuery, type AuditSummary } from '../../audit/query.js';
import type { AuditRecord } from '../../audit/record.js';
import { recoverAuditLog } from '../../audit/recover.js';
import { tailAuditLog } from '../../audit/tail.js';
import { verifyAuditLog, type VerifyResult } from '../../audit/verify.js';
import { parseCommandArgs, usageError, type Command } from '../command.js';
import { printable, table } from '../output.js';
import type { MicroagentError } from '../../errors.js';
import type { Signal } from '../../policy/reasons.js';

function onePath(command: Pick<Command, 'name' | 'usage'>, positionals: readonly string[]): string {
  const [path, ...extra] = positionals;
  if (path === undefined || extra.length > 0) {
    throw usageError(`${command.name}: give exactly one LOG path`, `usage: microagent ${command.name} ${command.usage}`);
  }
  return path;
}

function verifyText(path: string, r: VerifyResult): string {
  const lines: string[] = [];
  for (const rec of r.recoveries) {
    lines.push(`warning: ${rec.file}:${rec.line}: damaged tail (${rec.discardedBytes} bytes: ${printable(rec.problem)}) acknowledged by a recovery record`);
  }
  if (r.firstBad !== undefined) {
    const b = r.firstBad;
    lines.push(`FAILED ${b.file}:${b.line} (seq ${b.seq}): ${printable(b.problem)}`);
    lines.push(
      b.unsigned === true
        ? `  the hash chain holds through seq ${r.lastSeq} (${r.records} record(s)), but the signed checkpoints do not vouch for it from seq ${b.seq} on`
        : `  ${r.records} record(s) verified before it; last good seq ${r.lastSeq}, hash ${r.lastHash}`,
    );
    return lines.join('\n');
  }
  lines.push(`ok: ${r.records} record(s) in ${r.files.length} file(s) of ${path}; last seq ${r.lastSeq}, last hash ${r.lastHash}`);
  if (r.signed) {
    lines.push(`  ${r.checkpoints} signed checkpoint(s) valid` + (r.unsignedTail > 0 ? `; ${r.unsignedTail} record(s) after the last one are unsigned` : ''));
  } else {
    lines.push(`  chain only (${r.checkpoints} checkpoint(s) not checked): pass --key FILE to check signatures and detect truncation`);
  }
  return lines.join('\n');
}

const verify: Command = {
  name: 'audit verify',
  summary: 'Check the hash chain (and, with --key, the signed checkpoints) of an audit log; exit 1 naming the first bad record',
  usage: 'LOG [--key FILE] [--live]',
  async run(args) {
    const { values, positionals } = parseCommandArgs(verify, args, {
      key: { type: 'string' },
      live: { type: 'boolean', default: false },
    });
    const path = onePath(verify, positionals);
    const key = values.key === undefined ? undefined : await loadCheckpointVerifier(values.key);
    const result = await verifyAuditLog(path, { ...(key === undefined ? {} : { key }), allowUnsignedTail: values.live });
    return { result, human: verifyText(path, result), exitCode: result.ok ? 0 : 1 };
  },
};

const COLUMNS = ['seq', 'ts', 'event', 'verdict', 'destination', 'rule', 'reason'] as const;

function destination(r: AuditRecord): string {
  const port = (r as unknown as Record<string, unknown>)['port'];
  const host = recordHost(r) ?? '';
  if (typeof port !== 'number') return host;
  // An IPv6 literal in brackets, as in a URL: ::1:2222 would read as an address.
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A record's columns for people (table, CSV, tail lines): a guest chose the destination, so each is printable. */
function columns(r: AuditRecord): string[] {
  const f = r as unknown as Record<string, unknown>;
  const text = (v: unknown) => (v === undefined || v === null ? '' : String(v));
  return [String(r.seq), r.ts, r.event, text(f['verdict']), destination(r), text(f['rule']), text(f['reason'])].map(printable);
}

function csvCell(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

const VERDICTS = ['allow', 'deny', 'would_deny'] as const;

const query: Command = {
  name: 'audit query',
  summary: 'List audit records matching filters (table, --csv, or --json array)',
  usage: 'LOG [--verdict allow|deny|would_deny] [--host GLOB] [--rule ID] [--signal S] [--event E] [--since T] [--until T] [--csv]',
  async run(args) {
    const { values, positionals } = parseCommandArgs(query, args, {
      verdict: { type: 'string' },
      host: { type: 'string' },
      rule: { type: 'string' },
      signal: { type: 'string' },
      event: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      csv: { type: 'boolean', default: false },
    });
    const path = onePath(query, positionals);
    const verdict = values.verdict;
    if (verdict !== undefined && !(VERDICTS as readonly string[]).includes(verdict)) {
      throw usageError(`audit query: --verdict must be one of ${VERDICTS.join(', ')}`, `usage: microagent audit query ${query.usage}`);
    }
    for (const [bound, value] of [['since', values.since], ['until', values.until]] as const) {
      if (value === undefined) continue;
      try {
        parseTimeBound(value, bound);
      } catch (err) {
        throw usageError(`audit query: --${bound}: ${(err as Error).message}`, (err as MicroagentError).remediation);
      }
    }
    let signal: Signal | undefined;
    try {
      signal = values.signal === undefined ? undefined : parseSignal(values.signal);
    } catch (err) {
      throw usageError(`audit query: ${(err as Error).message}`, (err as MicroagentError).remediation);
    }
    const filters: AuditQuery = {
      ...(verdict === undefined ? {} : { verdict: verdict as (typeof VERDICTS)[number] }),
      ...(values.host === undefined ? {} : { host: values.host }),
      ...(values.rule === undefined ? {} : { rule: values.rule }),
      ...(signal === undefined ? {} : { signal }),
      ...(values.event === undefined ? {} : { event: values.event }),
      ...(values.since === undefined ? {} : { since: values.since }),
      ...(values.until === undefined ? {} : { until: values.until }),
    };
    const records = await queryAuditLog(path, filters);
    const rows = records.map(columns);
    const human = values.csv
      ? [COLUMNS.join(','), ...rows.map((r) => r.map(csvCell).join(','))].join('\n')
      : records.length === 0
        ? 'no matching records'
        : `${table(COLUMNS, rows)}\n${records.length} record(s)`;
    return { result: records, human };
  },
};

/** One line per record for people; scripts use --json and get the records' own JSON lines. */
function tailLine(r: AuditRecord): string {
  return columns(r).filter((c) => c !== '').join('  ');
}

const tail: Command = {
  name: 'audit tail',
  summary: 'Show the last records of an audit log; with -f keep following it across rotations until interrupted (--json -f: one record per line)',
  usage: 'LOG [-f] [-n N]',
  async run(args, ctx) {
    const { values, positionals } = parseCommandArgs(tail, args, {
      follow: { type: 'boolean', short: 'f', default: false },
      lines: { type: 'string', short: 'n', default: '10' },
    });
    const path = onePath(tail, positionals);
    const lines = Number(values.lines);
    if (!Number.isInteger(lines) || lines < 0) throw usageError('audit tail: -n must be a whole number', `usage: microagent audit tail ${tail.usage}`);
    if (!values.follow) {
      const records: AuditRecord[] = [];
      for await (const located of tailAuditLog(path, { lines })) records.push(located.record);
      return { result: records, human: records.map(tailLine).join('\n') };
    }
    // Following: stream as records arrive (the records' own JSON lines unless a person is reading).
    const stop = new AbortController();
    void ctx.interrupted.then(() => stop.abort());
    let count = 0;
    const onRestart = (why: 'truncated' | 'replaced') =>
      ctx.out.warn(`${path} was ${why === 'truncated' ? 'cut short' : 'replaced by a new log'}: following it again from its first record`);
    for await (const located of tailAuditLog(path, { lines, follow: true, signal: stop.signal, onRestart })) {
      count++;
      ctx.out.stream(ctx.out.mode === 'ux' ? tailLine(located.record) : located.text);
    }
    return { result: { records: count }, human: '' };
  },
};

function summaryText(s: AuditSummary): string {
  const counts = (o: Readonly<Record<string, number>>) =>
    Object.entries(o).map(([k, n]) => `  ${k}: ${n}`).join('\n') || '  (none)';
  const parts = [
    `${s.records} record(s)` + (s.firstTs === null ? '' : ` from ${s.firstTs} to ${s.lastTs}`),
    `by verdict:\n${counts(s.byVerdict)}`,
    `by event:\n${counts(s.byEvent)}`,
    `by signal:\n${counts(s.bySignal)}`,
    `top denied destinations:\n${s.topDeniedHosts.map((h) => `  ${printable(h.host)}: ${h.count}`).join('\n') || '  (none)'}`,
    `rule hits:\n${s.ruleHits.map((r) => `  ${printable(r.rule)}: ${r.count}`).join('\n') || '  (none)'}`,
  ];
  if (s.neverFired !== undefined) {
    parts.push(`rules that never fired:\n${s.neverFired.map((id) => `  ${id}`).join('\n') || '  (none: every rule decided something)'}`);
  }
  return parts.join('\n');
}

const summary: Command = {
  name: 'audit summary',
  summary: 'Count records by verdict and event, list the most denied destinations and, with --policy, rules that never fired',
  usage: 'LOG [--policy FILE]',
  async run(args) {
    const { values, positionals } = parseCommandArgs(summary, args, { policy: { type: 'string' } });
    const path = onePath(summary, positionals);
    let policyRuleIds: string[] | undefined;
    if (values.policy !== undefined) {
      // The policy parser (yaml) loads only here: this module also serves `egress` (query, tail), which never needs it.
      const { loadPolicy } = await import('../../policy/load.js');
      policyRuleIds = (await loadPolicy(values.policy)).rules.map((r) => r.id);
    }
    const result = await summarizeAuditLog(path, policyRuleIds === undefined ? {} : { policyRuleIds });
    return { result, human: summaryText(result) };
  },
};

const recover: Command = {
  name: 'audit recover',
  summary: 'Set aside a damaged tail (a crash or full disk mid-write) so the log can be written again: the damaged file is sealed as it is and a recovery record names it',
  usage: 'LOG [--workspace NAME]',
  async run(args) {
    const { values, positionals } = parseCommandArgs(recover, args, { workspace: { type: 'string' } });
    const path = onePath(recover, positionals);
    const result = await recoverAuditLog(path, values.workspace === undefined ? {} : { workspace: values.workspace });
    if (!result.recovered) {
      return { result, human: `nothing to recover: ${path} ends in an intact record${result.last === null ? '' : ` (seq ${result.last.seq})`}` };
    }
    const r = result.recovery;
    return {
      result,
      human:
        `recovered ${path}: ${result.damage}\n` +
        `  the damaged file is kept as ${r.file} (from line ${r.line}, ${r.discarded_bytes} bytes set aside); ` +
        `logging continues after seq ${r.seq - 1}, the recovery record is seq ${r.seq}`,
    };
  },
};

export const commands: readonly Command[] = [verify, query, tail, summary, recover];
