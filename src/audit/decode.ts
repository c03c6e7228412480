/**
 * Checks one written line on its own: it parses, carries a hash that matches its bytes, and is in
 * canonical form (re-encoding the parsed record gives the same bytes, so nothing was added, dropped,
 * reordered or re-spelt). Chain checks across lines live in verify.ts. Pure; never throws on bad input.
 */
import { isMicroagentError } from '../errors.js';
import { canonicalLine, encodeEventBody, encodeWorkspacePrefix, hashCanonical, unsealLine } from './encode.js';
import { REASONS, SIGNALS } from '../policy/reasons.js';
import { AUDIT_SCHEMA_VERSION, type AuditEvent, type AuditRecord } from './record.js';

export type DecodedLine =
  | { readonly kind: 'record'; readonly record: AuditRecord }
  | { readonly kind: 'bad'; readonly problem: string; readonly seq: number | null };

const RFC3339_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const HEX64 = /^[0-9a-f]{64}$/;

function bad(problem: string, seq: number | null = null): DecodedLine {
  return { kind: 'bad', problem, seq };
}

export function decodeLine(text: string): DecodedLine {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return bad('not valid JSON (a torn write or an edit)');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return bad('not a JSON object');
  const r = parsed as Record<string, unknown>;
  const seq = Number.isSafeInteger(r['seq']) && (r['seq'] as number) > 0 ? (r['seq'] as number) : null;
  if (r['v'] !== AUDIT_SCHEMA_VERSION) return bad(`unsupported schema version v=${JSON.stringify(r['v'])}`, seq);
  if (seq === null) return bad('seq is not a positive integer');
  const sealed = unsealLine(text);
  if (sealed === null) return bad('no "hash" member at the end of the line', seq);
  if (hashCanonical(sealed.canonical) !== sealed.hash) {
    return bad('hash does not match the record content (the record was edited)', seq);
  }
  const { ts, workspace, workspace_id: workspaceId, runtime_id: runtimeId, prev } = r;
  if (typeof ts !== 'string' || !RFC3339_MS_UTC.test(ts) || Number.isNaN(Date.parse(ts))) {
    return bad('ts is not an RFC 3339 UTC time with milliseconds', seq);
  }
  if (typeof workspace !== 'string') return bad('workspace is missing', seq);
  if (workspaceId !== undefined && typeof workspaceId !== 'string') return bad('workspace_id is not a string', seq);
  if (runtimeId !== undefined && typeof runtimeId !== 'string') return bad('runtime_id is not a string', seq);
  if (typeof prev !== 'string' || !HEX64.test(prev)) return bad('prev is not a 64-digit hex hash', seq);
  if (typeof r['event'] !== 'string') return bad('event is missing', seq);
  let canonical: string;
  try {
    const prefix = encodeWorkspacePrefix(workspace, workspaceId, runtimeId);
    canonical = canonicalLine(seq, ts, prefix, encodeEventBody(r as unknown as AuditEvent), prev);
  } catch (err) {
    return bad(isMicroagentError(err) ? err.message : String(err), seq);
  }
  if (canonical !== sealed.canonical) {
    return bad('not in canonical form (fields added, removed, reordered or re-encoded)', seq);
  }
  const outside = outsideVocabulary(r);
  if (outside !== null) return bad(outside, seq);
  return { kind: 'record', record: parsed as AuditRecord };
}

const VERDICTS: ReadonlySet<unknown> = new Set(['allow', 'deny', 'would_deny']);

/** Verdicts, reasons and signals come from closed vocabularies (docs/audit.md); a word outside them was not written by microagent. */
function outsideVocabulary(r: Record<string, unknown>): string | null {
  if ('verdict' in r && !VERDICTS.has(r['verdict'])) return `verdict ${JSON.stringify(r['verdict'])} is not allow, deny or would_deny`;
  const reason = r['reason'];
  if (reason !== undefined && reason !== null && !(typeof reason === 'string' && Object.hasOwn(REASONS, reason))) {
    return `reason ${JSON.stringify(reason)} is not in the reason vocabulary`;
  }
  const signals = r['signals'];
  if (signals !== undefined && !(Array.isArray(signals) && signals.every((s) => typeof s === 'string' && Object.hasOwn(SIGNALS, s)))) {
    return `signals ${JSON.stringify(signals)} hold a word outside the signal vocabulary`;
  }
  return null;
}
