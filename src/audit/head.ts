/**
 * Finds where an existing log's chain ends, so a reopened writer continues it: the newest intact
 * record (seq, hash, ts) and any damage after it (a torn line from a crash mid-write, or an edited
 * last record). Reads only the tail of the newest non-empty file; full checking is verify.ts. Never writes.
 */
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { MicroagentError } from '../errors.js';
import { decodeLine } from './decode.js';
import type { AuditRecord } from './record.js';
import { listLogFiles, readFileLines } from './segments.js';

/** Records are far smaller; a tail with no intact record in this window is not a torn write. */
const TAIL_WINDOW_BYTES = 1 << 20;

export interface TailDamage {
  readonly file: string;
  /** Byte offset where the damage starts; everything from there to the end of `file` is suspect. */
  readonly offset: number;
  readonly size: number;
  readonly problem: string;
}

export interface ChainHead {
  /** The newest intact record, or null for a new (or entirely damaged) log. */
  readonly last: AuditRecord | null;
  readonly damage: TailDamage | null;
  readonly lastSegment: number;
  readonly activeExists: boolean;
}

interface FileTail {
  readonly last: AuditRecord | null;
  readonly damage: TailDamage | null;
}

async function scanFileTail(file: string): Promise<FileTail> {
  const handle = await open(file, 'r');
  try {
    const size = (await handle.stat()).size;
    if (size === 0) return { last: null, damage: null };
    const windowStart = Math.max(0, size - TAIL_WINDOW_BYTES);
    const buf = Buffer.alloc(size - windowStart);
    await handle.read(buf, 0, buf.length, windowStart);
    // Line starts inside the window; when the window begins mid-file its first fragment is partial.
    const starts: number[] = windowStart === 0 ? [0] : [];
    for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10, nl + 1)) starts.push(nl + 1);
    let damage: TailDamage | null = null;
    const tornFrom = starts.at(-1) ?? buf.length;
    if (tornFrom < buf.length) {
      damage = { file, offset: windowStart + tornFrom, size, problem: 'torn record: the last line has no newline' };
    }
    for (let i = starts.length - 2; i >= 0; i--) {
      const from = starts[i] as number;
      const to = (starts[i + 1] as number) - 1;
      const decoded = decodeLine(buf.toString('utf8', from, to));
      if (decoded.kind === 'record') return { last: decoded.record, damage };
      damage = { file, offset: windowStart + from, size, problem: decoded.problem };
    }
    if (windowStart > 0) {
      throw new MicroagentError('conflict', `audit log ${file}: no intact record in its last ${TAIL_WINDOW_BYTES} bytes`, {
        code: 'audit.corrupt_tail',
        remediation: `Run "microagent audit verify ${file}" and keep the file as evidence; start a new log elsewhere.`,
      });
    }
    return { last: null, damage };
  } finally {
    await handle.close();
  }
}

export async function findChainHead(base: string): Promise<ChainHead> {
  const { files, lastSegment, activeExists } = await listLogFiles(base);
  let damage: TailDamage | null = null;
  for (let i = files.length - 1; i >= 0; i--) {
    const tail = await scanFileTail(files[i] as string);
    // Only damage in the newest file with any bytes is tail damage; older damage is verify's to report.
    if (damage === null && (tail.damage !== null || tail.last !== null)) damage = tail.damage;
    if (tail.last !== null) return { last: tail.last, damage, lastSegment, activeExists };
  }
  return { last: null, damage, lastSegment, activeExists };
}

/** 1-based line number of byte `offset` in `file` (used when recording where damage starts). */
export async function lineAt(file: string, offset: number): Promise<number> {
  let line = 1;
  for await (const l of readFileLines(file)) {
    if (l.offset >= offset) return l.line;
    line = l.line + 1;
  }
  return line;
}

export function describeDamage(d: TailDamage): string {
  return `${basename(d.file)} at byte ${d.offset} of ${d.size}: ${d.problem}`;
}
