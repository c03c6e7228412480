/**
 * `audit tail [-f]`: the last records of a log, then (when following) every new record as the writer
 * makes it durable, across rotations. Polls rather than watching: fs.watch misses renames on some
 * filesystems, and a poll every 100 ms costs nothing. Holds the active file open, so after a rotation
 * it finishes the renamed file before moving on. A log cut short in place, or replaced by a new file
 * without a rotation (a new chain from seq 1), is followed again from its start, and the caller told.
 * Never writes.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseRecordLine, type LocatedRecord } from './read.js';
import { findLogFiles, listLogFiles, readFileLines, segmentPath } from './segments.js';

export interface TailOptions {
  /** Records of history to show first (default 10). */
  readonly lines?: number;
  /** Keep reading new records until `signal` aborts. */
  readonly follow?: boolean;
  readonly signal?: AbortSignal;
  readonly pollMs?: number;
  /** Called when following starts over: the file got shorter, or was replaced without a rotation. */
  readonly onRestart?: (why: 'truncated' | 'replaced') => void;
}

/** Yielded by the follower when the log's records start over (see TailOptions.onRestart). */
interface Restart {
  readonly restart: 'truncated' | 'replaced';
}

const READ_CHUNK = 1 << 16;

/** Reads a growing file from where it last stopped; yields complete lines only. */
class GrowingFile {
  private offset = 0;
  private line = 1;
  private carry: Buffer = Buffer.alloc(0);
  private constructor(
    readonly file: string,
    private readonly handle: FileHandle,
    readonly ino: number,
  ) {}

  static async open(file: string): Promise<GrowingFile | null> {
    const handle = await open(file, 'r').catch(() => null);
    if (handle === null) return null;
    return new GrowingFile(file, handle, (await handle.stat()).ino);
  }

  async *lines(): AsyncGenerator<LocatedRecord | Restart> {
    if ((await this.handle.stat()).size < this.offset) {
      this.offset = 0;
      this.line = 1;
      this.carry = Buffer.alloc(0);
      yield { restart: 'truncated' };
    }
    const buf = Buffer.alloc(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await this.handle.read(buf, 0, buf.length, this.offset);
      if (bytesRead === 0) return;
      this.offset += bytesRead;
      let data = Buffer.concat([this.carry, buf.subarray(0, bytesRead)]);
      for (let nl = data.indexOf(10); nl !== -1; nl = data.indexOf(10)) {
        const text = data.toString('utf8', 0, nl);
        data = data.subarray(nl + 1);
        yield parseRecordLine(this.file, { text, line: this.line++ });
      }
      this.carry = Buffer.from(data);
    }
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/** Sealed segments numbered after `after`, oldest first, with their inodes. */
async function segmentsAfter(path: string, after: number): Promise<{ n: number; file: string; ino: number }[]> {
  const { lastSegment } = await listLogFiles(path);
  const found: { n: number; file: string; ino: number }[] = [];
  for (let n = after + 1; n <= lastSegment; n++) {
    const file = segmentPath(path, n);
    const st = await stat(file).catch(() => null);
    if (st !== null) found.push({ n, file, ino: st.ino });
  }
  return found;
}

/**
 * Yields each record once, in chain order. Fast rotation can make the follower meet a segment both as
 * the file it was reading and as a sealed segment; seq is strictly increasing in a log, so a record at
 * or below the last one yielded is such a re-read and is skipped here, once, for every path.
 */
export async function* tailAuditLog(path: string, options: TailOptions = {}): AsyncGenerator<LocatedRecord> {
  let lastSeq = 0;
  for await (const r of followRecords(path, options)) {
    if ('restart' in r) {
      lastSeq = 0;
      options.onRestart?.(r.restart);
      continue;
    }
    if (r.record.seq <= lastSeq) continue;
    lastSeq = r.record.seq;
    yield r;
  }
}

async function* followRecords(path: string, options: TailOptions): AsyncGenerator<LocatedRecord | Restart> {
  const keep = options.lines ?? 10;
  const pollMs = options.pollMs ?? 100;
  const history: LocatedRecord[] = [];
  const remember = (r: LocatedRecord) => {
    history.push(r);
    if (history.length > keep) history.shift();
  };
  // Following may start before the log's first record is written; showing history may not.
  let { lastSegment: seenSegment } = await findLogFiles(path, { allowNone: options.follow === true });
  if (seenSegment > 0 && keep > 0) {
    const sealed = segmentPath(path, seenSegment);
    for await (const l of readFileLines(sealed)) if (l.terminated) remember(parseRecordLine(sealed, l));
  }
  let current = await GrowingFile.open(path);
  // The active file last followed, kept while the path is briefly missing mid-rotation.
  let followedIno = current?.ino ?? null;
  try {
    if (current !== null) for await (const r of current.lines()) if (!('restart' in r)) remember(r);
    yield* history;
    if (!options.follow) return;
    while (options.signal?.aborted !== true) {
      if (current !== null) yield* current.lines();
      const now = await stat(path).catch(() => null);
      if (current === null || now === null || now.ino !== current.ino) {
        if (current !== null) {
          // Rotated: the renamed file may hold records written after our last read.
          yield* current.lines();
          await current.close();
          current = null;
        }
        if (now === null) {
          await pause(pollMs, options.signal);
          continue;
        }
        current = await GrowingFile.open(path);
        const sealedBefore = seenSegment;
        // Segments sealed between our old file and the new active one (fast rotation) are read whole.
        for (const seg of await segmentsAfter(path, seenSegment)) {
          if (seg.ino === current?.ino) break;
          seenSegment = seg.n;
          if (seg.ino === followedIno) continue;
          for await (const l of readFileLines(seg.file)) if (l.terminated) yield parseRecordLine(seg.file, l);
        }
        // A new file where no rotation sealed the old one: another chain, not the next records of ours.
        if (followedIno !== null && seenSegment === sealedBefore && current !== null) yield { restart: 'replaced' };
        followedIno = current?.ino ?? followedIno;
        continue;
      }
      await pause(pollMs, options.signal);
    }
  } finally {
    await current?.close();
  }
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return sleep(ms, undefined, signal === undefined ? {} : { signal }).catch(() => undefined);
}
