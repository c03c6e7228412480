/**
 * Where an audit log's bytes live and how to read them line by line. A log named `audit.jsonl` is the
 * active file `audit.jsonl` plus sealed segments `audit.jsonl.000001`, `audit.jsonl.000002`, ...
 * (oldest first). A sealed segment is never renamed or written again, so readers and `tail -f` can
 * rely on names; only the active file grows. This file never writes.
 */
import { isUtf8 } from 'node:buffer';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MicroagentError } from '../errors.js';

const SEGMENT_DIGITS = 6;

export function segmentPath(base: string, n: number): string {
  return `${base}.${String(n).padStart(SEGMENT_DIGITS, '0')}`;
}

export interface LogFiles {
  /** Sealed segments, oldest first, then the active file when it exists. */
  readonly files: readonly string[];
  /** The highest sealed segment number (0 when none). */
  readonly lastSegment: number;
  readonly activeExists: boolean;
}

export async function listLogFiles(base: string): Promise<LogFiles> {
  const dir = dirname(base);
  const name = basename(base);
  const numbered: { n: number; file: string }[] = [];
  let activeExists = false;
  for (const entry of await readdir(dir)) {
    if (entry === name) {
      activeExists = true;
      continue;
    }
    if (!entry.startsWith(name + '.')) continue;
    const suffix = entry.slice(name.length + 1);
    // Only names the writer makes (audit.jsonl.000042): a backup such as audit.jsonl.1 is not a segment.
    const n = /^\d+$/.test(suffix) ? Number(suffix) : NaN;
    if (String(n).padStart(SEGMENT_DIGITS, '0') === suffix) numbered.push({ n, file: join(dir, entry) });
  }
  numbered.sort((a, b) => a.n - b.n);
  const files = numbered.map((s) => s.file);
  if (activeExists) files.push(base);
  return { files, lastSegment: numbered.at(-1)?.n ?? 0, activeExists };
}

/**
 * listLogFiles for the readers (verify, query, summary, tail): a directory that is missing or not a
 * directory, and a log with no file at all (unless `allowNone`: `tail -f` waits for a log about to be
 * created), is a not_found error naming the path; any other failure to list it is typed too.
 */
export async function findLogFiles(base: string, options: { allowNone?: boolean } = {}): Promise<LogFiles> {
  const remediation = 'Pass the path of the active log file (e.g. ~/.microagent/workspaces/NAME/audit.jsonl); sealed segments next to it are read too.';
  const found = await listLogFiles(base).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
    throw new MicroagentError('invalid', `cannot list the directory of audit log ${base}: ${err.code ?? err.message}`, {
      code: 'audit.unreadable',
      remediation: 'Check that this user may read the directory the log is in.',
      cause: err,
    });
  });
  if (found === null || (found.files.length === 0 && options.allowNone !== true)) {
    throw new MicroagentError('not_found', `no audit log at ${base}`, { code: 'audit.not_found', remediation });
  }
  if (found.activeExists && (await stat(base)).isDirectory()) {
    throw new MicroagentError('invalid', `${base} is a directory, not an audit log`, { code: 'audit.not_a_file', remediation });
  }
  return found;
}

export interface FileLine {
  readonly text: string;
  /** 1-based line number within its file. */
  readonly line: number;
  /** Byte offset of the line's first byte. */
  readonly offset: number;
  /** False for a final fragment with no newline: a torn write or one still in progress. */
  readonly terminated: boolean;
  /** Whether the line's bytes are UTF-8, as every written line is: `text` replaces bytes that are not. */
  readonly utf8: boolean;
}

/** The lines of one file, from byte `start` (a line start), with their positions. */
export async function* readFileLines(file: string, start = 0, firstLine = 1): AsyncGenerator<FileLine> {
  let carry: Buffer | null = null;
  let offset = start;
  let line = firstLine;
  for await (const chunk of createReadStream(file, { start, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const data: Buffer = carry === null ? chunk : Buffer.concat([carry, chunk]);
    let from = 0;
    for (let nl = data.indexOf(10, from); nl !== -1; nl = data.indexOf(10, from)) {
      yield { text: data.toString('utf8', from, nl), line: line++, offset, terminated: true, utf8: isUtf8(data.subarray(from, nl)) };
      offset += nl + 1 - from;
      from = nl + 1;
    }
    carry = from < data.length ? data.subarray(from) : null;
  }
  if (carry !== null) yield { text: carry.toString('utf8'), line, offset, terminated: false, utf8: isUtf8(carry) };
}

export async function fileSize(file: string): Promise<number> {
  return (await stat(file)).size;
}
