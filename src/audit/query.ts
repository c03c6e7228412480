/**
 * Filtering and summarising audit records for `audit query` and `audit summary`. Filters compile once
 * (globs to anchored regexps, times to epoch ms) and then test each record; reading never verifies
 * the chain (verify.ts does). Never writes.
 */
import { MicroagentError } from '../errors.js';
import { SIGNALS, type Signal } from '../policy/reasons.js';
import type { Verdict } from '../policy/types.js';
import { readAuditRecords } from './read.js';
import type { AuditRecord } from './record.js';

export interface AuditQuery {
  readonly verdict?: Verdict;
  /** Glob (`*`, `?`), case-insensitive, over the record's destination (see recordHost). */
  readonly host?: string;
  readonly rule?: string;
  /** Records that raised this signal (decisions, closes, DNS answers), e.g. `rebinding`. */
  readonly signal?: Signal;
  /** Event name or glob, e.g. `egress.*`. */
  readonly event?: string;
  /** Inclusive bounds: a Date, an RFC 3339 time, or a duration back from now (`15m`, `2h`, `7d`). */
  readonly since?: Date | string;
  readonly until?: Date | string;
}

type Fields = Readonly<Record<string, unknown>>;

/** What a record is about: the host (or address) for egress, the name for DNS, the target for mediation. */
export function recordHost(r: AuditRecord): string | null {
  const f = r as unknown as Fields;
  const value = f['host'] ?? f['ip'] ?? f['name'] ?? f['target'] ?? f['peer'];
  return typeof value === 'string' ? value : null;
}

export function recordVerdict(r: AuditRecord): string | null {
  const v = (r as unknown as Fields)['verdict'];
  return typeof v === 'string' ? v : null;
}

export function recordRule(r: AuditRecord): string | null {
  const v = (r as unknown as Fields)['rule'];
  return typeof v === 'string' ? v : null;
}

export function recordSignals(r: AuditRecord): readonly string[] {
  const v = (r as unknown as Fields)['signals'];
  return Array.isArray(v) ? (v as string[]) : [];
}

/** The signal named, checked against the closed vocabulary; throws `audit.bad_query` for any other word. */
export function parseSignal(value: string): Signal {
  if (value in SIGNALS) return value as Signal;
  throw new MicroagentError('invalid', `"${value}" is not a signal`, {
    code: 'audit.bad_query',
    remediation: `Use one of: ${Object.keys(SIGNALS).join(', ')} (docs/audit.md#signals).`,
  });
}

export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

const DURATION = /^(\d+)(s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

const DATE = /^(\d{4}-\d{2}-\d{2})$/;
const DATE_TIME = /^(\d{4}-\d{2}-\d{2})[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$/;
const DAY_MS = 86_400_000;

/**
 * Epoch ms for a time bound; throws `audit.bad_query` for anything unreadable. A date is a whole UTC
 * day: from its first millisecond as `since`, to its last as `until` (bounds are inclusive). A time
 * must carry its offset (`Z`, `+02:00`), as RFC 3339 says: without one it would be read in whatever
 * zone this host is in.
 */
export function parseTimeBound(value: Date | string, bound: 'since' | 'until', now = Date.now()): number {
  if (value instanceof Date) return value.getTime();
  const d = DURATION.exec(value);
  if (d !== null) return now - Number(d[1]) * (UNIT_MS[d[2] as string] as number);
  const day = DATE.exec(value);
  const time = day === null ? DATE_TIME.exec(value) : null;
  if (time !== null && time[2] === undefined) {
    throw badTime(`"${value}" has no time zone offset`, 'Add Z for UTC, or the offset of its zone: 2026-01-31T12:00:00Z, 2026-01-31T13:00:00+01:00.');
  }
  const dayText = (day ?? time)?.[1];
  const ms = dayText === undefined ? NaN : Date.parse(value);
  // Date.parse rolls 2026-02-30 over into March: a day that does not exist is refused.
  if (dayText === undefined || Number.isNaN(ms) || new Date(Date.parse(dayText)).toISOString().slice(0, 10) !== dayText) {
    throw badTime(`"${value}" is not a time`, 'Give an RFC 3339 time (2026-01-31T12:00:00Z), a date (2026-01-31) or a duration back from now (15m, 2h, 7d).');
  }
  return day !== null && bound === 'until' ? ms + DAY_MS - 1 : ms;
}

function badTime(message: string, remediation: string): MicroagentError {
  return new MicroagentError('invalid', message, { code: 'audit.bad_query', remediation });
}

export function compileQuery(q: AuditQuery): (r: AuditRecord) => boolean {
  const host = q.host === undefined ? null : globToRegExp(q.host);
  const event = q.event === undefined ? null : globToRegExp(q.event);
  const since = q.since === undefined ? null : parseTimeBound(q.since, 'since');
  const until = q.until === undefined ? null : parseTimeBound(q.until, 'until');
  return (r) => {
    if (q.verdict !== undefined && recordVerdict(r) !== q.verdict) return false;
    if (q.rule !== undefined && recordRule(r) !== q.rule) return false;
    if (q.signal !== undefined && !recordSignals(r).includes(q.signal)) return false;
    if (event !== null && !event.test(r.event)) return false;
    if (host !== null) {
      const h = recordHost(r);
      if (h === null || !host.test(h)) return false;
    }
    if (since !== null || until !== null) {
      const ts = Date.parse(r.ts);
      if (since !== null && ts < since) return false;
      if (until !== null && ts > until) return false;
    }
    return true;
  };
}

export async function queryAuditLog(path: string, q: AuditQuery = {}): Promise<AuditRecord[]> {
  const matches = compileQuery(q);
  const out: AuditRecord[] = [];
  for await (const r of readAuditRecords(path)) if (matches(r)) out.push(r);
  return out;
}

export interface AuditSummary {
  readonly records: number;
  readonly firstTs: string | null;
  readonly lastTs: string | null;
  readonly byVerdict: Readonly<Record<string, number>>;
  readonly byEvent: Readonly<Record<string, number>>;
  /** Hosts with the most `deny` verdicts, most first (at most 10). */
  readonly topDeniedHosts: readonly { readonly host: string; readonly count: number }[];
  /** How often each signal was raised, most first: the notable events (rebinding, smuggling, a guest rejecting the CA). */
  readonly bySignal: Readonly<Record<string, number>>;
  /** How often each rule decided, most first. */
  readonly ruleHits: readonly { readonly rule: string; readonly count: number }[];
  /** Rule ids of the given policy that decided nothing in this log (only with policyRuleIds). */
  readonly neverFired?: readonly string[];
}

const TOP_HOSTS = 10;

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function ranked(map: Map<string, number>): [string, number][] {
  return [...map].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
}

export async function summarizeAuditLog(
  path: string,
  options: { readonly policyRuleIds?: readonly string[] } = {},
): Promise<AuditSummary> {
  const byVerdict = new Map<string, number>();
  const byEvent = new Map<string, number>();
  const denied = new Map<string, number>();
  const rules = new Map<string, number>();
  const signals = new Map<string, number>();
  let records = 0;
  let firstTs: string | null = null;
  let lastTs: string | null = null;
  for await (const r of readAuditRecords(path)) {
    records++;
    firstTs ??= r.ts;
    lastTs = r.ts;
    bump(byEvent, r.event);
    const verdict = recordVerdict(r);
    if (verdict !== null) bump(byVerdict, verdict);
    if (verdict === 'deny') bump(denied, recordHost(r) ?? '(none)');
    const rule = recordRule(r);
    if (rule !== null) bump(rules, rule);
    for (const signal of recordSignals(r)) bump(signals, signal);
  }
  const summary: AuditSummary = {
    records,
    firstTs,
    lastTs,
    byVerdict: Object.fromEntries(byVerdict),
    byEvent: Object.fromEntries(ranked(byEvent)),
    bySignal: Object.fromEntries(ranked(signals)),
    topDeniedHosts: ranked(denied).slice(0, TOP_HOSTS).map(([host, count]) => ({ host, count })),
    ruleHits: ranked(rules).map(([rule, count]) => ({ rule, count })),
  };
  if (options.policyRuleIds === undefined) return summary;
  return { ...summary, neverFired: options.policyRuleIds.filter((id) => !rules.has(id)) };
}
