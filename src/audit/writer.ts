/**
 * The audit writer: appends hash-chained records to the active file with group commit. Records that
 * arrive while a write+fdatasync is in flight go out together in the next single write+fdatasync, so
 * an idle log pays no added delay and a busy one pays one sync per batch. `append` resolves only once
 * its record is durable. The writer must never drop a record: a full queue makes callers wait, and a
 * failed write fails the sink for good (every pending and later append rejects with
 * `audit.write_failed`), so enforcers deny instead of acting unrecorded.
 */
import { fdatasync, fstatSync, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { signCheckpoint, type CheckpointSigner } from './checkpoint.js';
import { canonicalLine, encodeEventBody, hashCanonical, sealLine } from './encode.js';
import type { AuditEvent, AuditSink } from './record.js';
import { segmentPath } from './segments.js';

const log = childLog('audit');

/** A record far beyond any real decision is a caller bug; refusing it keeps tail scans bounded. */
const MAX_RECORD_BYTES = 64 * 1024;
/** One write call carries at most this much, so a long backlog never becomes one giant string. */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;

export interface AuditLog extends AuditSink {
  readonly path: string;
  /** seq and hash of the newest record (0 and 64 zeros before the first). */
  readonly head: { readonly seq: number; readonly hash: string };
}

export interface WriterSettings {
  readonly path: string;
  readonly handle: FileHandle;
  readonly size: number;
  readonly lastSegment: number;
  readonly prefix: string;
  readonly seq: number;
  readonly hash: string;
  readonly lastTs: string | null;
  readonly fsync: boolean;
  readonly rotateBytes: number;
  readonly maxPending: number;
  readonly signer: CheckpointSigner | null;
  readonly checkpointEvery: number;
  /** Releases the log's lock once the file is closed. */
  readonly onClosed: () => Promise<void>;
}

interface Deferred {
  resolve(): void;
  reject(err: unknown): void;
}

interface Pending {
  readonly line: string;
  readonly bytes: number;
  readonly done: Deferred | null;
}

/** Events only the writer itself may produce; a caller appending one would be forging chain metadata. */
const WRITER_EVENTS = new Set(['audit.checkpoint', 'audit.recovery']);

/** Owns the active file's handle; close() flushes, writes the final checkpoint and releases it. */
export class AuditLogWriter implements AuditLog {
  readonly path: string;
  private handle: FileHandle;
  private size: number;
  private lastSegment: number;
  private seq: number;
  private hash: string;
  private lastMs: number;
  private tsText: string;
  private sinceCheckpoint = 0;
  private queue: Pending[] = [];
  private waiters: Deferred[] = [];
  private writing = false;
  private scheduled = false;
  private drained: Deferred[] = [];
  private failure: MicroagentError | null = null;
  private closing: Promise<void> | null = null;
  private closed = false;

  constructor(private readonly s: WriterSettings) {
    this.path = s.path;
    this.handle = s.handle;
    this.size = s.size;
    this.lastSegment = s.lastSegment;
    this.seq = s.seq;
    this.hash = s.hash;
    this.tsText = s.lastTs ?? new Date(0).toISOString();
    this.lastMs = s.lastTs === null ? 0 : Date.parse(s.lastTs);
  }

  get healthy(): boolean {
    return this.failure === null && !this.closed;
  }

  get head(): { seq: number; hash: string } {
    return { seq: this.seq, hash: this.hash };
  }

  append(event: AuditEvent): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closing !== null) return Promise.reject(closedError(this.path));
    if (WRITER_EVENTS.has(event.event)) {
      return Promise.reject(
        new MicroagentError('invalid', `"${event.event}" records are written by the audit writer only`, {
          code: 'audit.invalid_record',
          remediation: 'Append decision and lifecycle events; checkpoints and recoveries are automatic.',
        }),
      );
    }
    // Encoded now, so a caller changing the event object afterwards cannot change the record.
    let body: string;
    try {
      body = encodeBody(event);
    } catch (err) {
      return Promise.reject(err);
    }
    // Backpressure: past maxPending queued records, callers wait their turn (FIFO); nothing is dropped.
    if (this.waiters.length > 0 || this.queue.length >= this.s.maxPending) {
      return new Promise<void>((resolve, reject) => {
        this.waiters.push({ resolve: () => this.enqueue(body).then(resolve, reject), reject });
      });
    }
    return this.enqueue(body);
  }

  /** Appends an event the writer itself produces (the recovery record at open). */
  appendInternal(event: AuditEvent): Promise<void> {
    return this.enqueue(encodeBody(event));
  }

  close(): Promise<void> {
    this.closing ??= this.shutDown().finally(this.s.onClosed);
    return this.closing;
  }

  private enqueue(body: string): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.push(body, { resolve, reject });
      if (this.s.signer !== null && ++this.sinceCheckpoint >= this.s.checkpointEvery) this.pushCheckpoint(false);
      this.schedule();
    });
  }

  private push(body: string, done: Deferred | null): void {
    const seq = this.seq + 1;
    const canonical = canonicalLine(seq, this.timestamp(), this.s.prefix, body, this.hash);
    const hash = hashCanonical(canonical);
    const line = sealLine(canonical, hash);
    this.seq = seq;
    this.hash = hash;
    this.queue.push({ line, bytes: Buffer.byteLength(line), done });
  }

  private pushCheckpoint(final: boolean): void {
    this.sinceCheckpoint = 0;
    this.push(encodeEventBody(signCheckpoint(this.s.signer as CheckpointSigner, this.seq, this.hash, final)), null);
  }

  /** Milliseconds, never going backwards even if the wall clock does, so `ts` is non-decreasing. */
  private timestamp(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.tsText = new Date(now).toISOString();
    }
    return this.tsText;
  }

  private schedule(): void {
    if (this.writing || this.scheduled) return;
    this.scheduled = true;
    // Never a timer: an idle log waits for nothing. With fsync, a microtask starts the slow fdatasync at
    // once and the records arriving meanwhile share the next one. Without, the write is the only cost:
    // setImmediate lets every append of this turn of the event loop (a burst of datagrams, many sockets'
    // data) share one write(2), where a microtask would write once per I/O callback.
    (this.s.fsync ? queueMicrotask : setImmediate)(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    let batch: Pending[] = [];
    try {
      while (this.queue.length > 0 && this.failure === null) {
        let bytes = 0;
        let take = 0;
        const room = Math.min(this.s.rotateBytes - this.size, MAX_BATCH_BYTES);
        while (take < this.queue.length) {
          const next = (this.queue[take] as Pending).bytes;
          if (take > 0 && bytes + next > room) break;
          bytes += next;
          take++;
        }
        batch = this.queue.splice(0, take);
        this.releaseWaiters();
        this.writeFully(Buffer.from(batch.map((p) => p.line).join(''), 'utf8'));
        if (this.s.fsync) await datasync(this.handle.fd);
        // Writes to a deleted file succeed but reach nobody: an unlinked log counts as a failed write.
        if (fstatSync(this.handle.fd).nlink === 0) throw unlinkedError(this.path);
        this.size += bytes;
        for (const p of batch) p.done?.resolve();
        batch = [];
        if (this.size >= this.s.rotateBytes) await this.rotate();
      }
    } catch (err) {
      this.fail(err, batch);
    } finally {
      this.writing = false;
      for (const d of this.drained.splice(0)) d.resolve();
    }
  }

  /**
   * Synchronous on purpose: an append to the page cache takes microseconds, less than the thread-pool
   * round trip an async write costs, so only the fdatasync (the slow part) leaves the event loop.
   */
  private writeFully(buf: Buffer): void {
    for (let off = 0; off < buf.length; ) off += writeSync(this.handle.fd, buf, off, buf.length - off);
  }

  /** Lets waiting callers in, oldest first; each enqueues synchronously, so the queue stays bounded. */
  private releaseWaiters(): void {
    while (this.waiters.length > 0 && this.queue.length < this.s.maxPending) (this.waiters.shift() as Deferred).resolve();
  }

  /** Seals the active file as the next numbered segment and starts a new one; the chain runs on. */
  private async rotate(): Promise<void> {
    await this.handle.close();
    const sealed = segmentPath(this.path, this.lastSegment + 1);
    await rename(this.path, sealed);
    this.lastSegment++;
    this.handle = await open(this.path, 'a', 0o600);
    this.size = 0;
    await syncDirectory(dirname(this.path));
    log.info({ path: this.path, sealed, seq: this.seq }, 'audit log rotated');
  }

  private fail(err: unknown, inFlight: readonly Pending[]): void {
    if (this.failure === null) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
      this.failure = new MicroagentError(
        'transient',
        `audit log ${this.path} cannot be written (${code}: ${(err as Error).message}); ` +
          'decisions that need an audit record are denied until it is fixed',
        {
          code: 'audit.write_failed',
          cause: err,
          remediation:
            'Free space or restore write access to the audit directory, run "microagent audit verify" on the log, ' +
            'then restart the workspace (the log stays failed until reopened).',
        },
      );
      log.error({ err, path: this.path, code, seq: this.seq }, 'AUDIT LOG WRITE FAILED: failing closed, every append now rejects');
    }
    const failure = this.failure;
    for (const p of inFlight) p.done?.reject(failure);
    for (const p of this.queue.splice(0)) p.done?.reject(failure);
    for (const w of this.waiters.splice(0)) w.reject(failure);
  }

  private async whenDrained(): Promise<void> {
    if (!this.writing && !this.scheduled) return new Promise((r) => setImmediate(r));
    return new Promise((resolve, reject) => this.drained.push({ resolve, reject }));
  }

  private async shutDown(): Promise<void> {
    const busy = () => this.waiters.length > 0 || this.queue.length > 0 || this.writing || this.scheduled;
    while (busy() && this.failure === null) await this.whenDrained();
    if (this.s.signer !== null && this.failure === null) {
      this.pushCheckpoint(true);
      this.schedule();
      while (busy() && this.failure === null) await this.whenDrained();
    }
    this.closed = true;
    await this.handle.close().catch((err: unknown) => {
      if (this.failure === null) throw err;
    });
    log.info({ path: this.path, seq: this.seq, failed: this.failure !== null }, 'audit log closed');
  }
}

/** The event's fields in canonical form; throws `audit.invalid_record` for a malformed or oversized event. */
function encodeBody(event: AuditEvent): string {
  const body = encodeEventBody(event);
  if (body.length > MAX_RECORD_BYTES) {
    throw new MicroagentError('invalid', `audit record of ${body.length} bytes exceeds ${MAX_RECORD_BYTES}`, {
      code: 'audit.invalid_record',
      remediation: 'Shorten the free-text fields (error, path, detail) of the event.',
    });
  }
  return body;
}

/** fdatasync through the callback API: 10-25 µs less event-loop time per sync than FileHandle.datasync(). */
function datasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));
}

function unlinkedError(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${path} was deleted while open`), { code: 'ENOENT' });
}

function closedError(path: string): MicroagentError {
  return new MicroagentError('conflict', `audit log ${path} is closed`, {
    code: 'audit.closed',
    remediation: 'Open the log again with openAuditLog before appending.',
  });
}

/** fsync on the directory makes a created or renamed file's name durable, not just its bytes. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
