/**
 * Reads the records of a log across all its files, oldest first, for query, summary and tail. Reading
 * is not verifying: records are parsed, not checked (run verifyAuditLog for that). A final fragment
 * without a newline is skipped: it is a write in progress or a torn one, never an acknowledged record.
 */
import { MicroagentError } from '../errors.js';
import type { AuditRecord } from './record.js';
import { findLogFiles, readFileLines, type FileLine } from './segments.js';

export interface LocatedRecord {
  readonly record: AuditRecord;
  readonly file: string;
  readonly line: number;
  readonly text: string;
}

export function parseRecordLine(file: string, l: Pick<FileLine, 'text' | 'line'>): LocatedRecord {
  let record: unknown;
  try {
    record = JSON.parse(l.text);
  } catch {
    record = null;
  }
  if (typeof record !== 'object' || record === null || typeof (record as { event?: unknown }).event !== 'string') {
    throw new MicroagentError('invalid', `${file}:${l.line} is not an audit record`, {
      code: 'audit.unreadable',
      remediation: `Run "microagent audit verify" on the log: it names what is wrong with that line.`,
    });
  }
  return { record: record as AuditRecord, file, line: l.line, text: l.text };
}

/** Every record with where it was found. */
export async function* readLocatedRecords(path: string): AsyncGenerator<LocatedRecord> {
  const { files } = await findLogFiles(path);
  for (const file of files) {
    for await (const l of readFileLines(file)) {
      if (l.terminated) yield parseRecordLine(file, l);
    }
  }
}

export async function* readAuditRecords(path: string): AsyncGenerator<AuditRecord> {
  for await (const located of readLocatedRecords(path)) yield located.record;
}
