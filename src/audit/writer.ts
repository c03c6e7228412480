/**
 * The audit writer: appends hash-chained records to the active file with group commit. Records are
 * written as they come, also while an fdatasync is in flight, and the next single fdatasync covers
 * every record written meanwhile, so an idle log pays no added delay and a busy one pays one sync per
 * batch. `append` resolves once its record is durable, or once it is written when the caller asks for
 * `written` (such records leave their sync to the next durable one, or to a lazy one 2 ms later).
 * The writer must never drop a record: a full queue makes callers wait, and a failed write
 * or sync fails the sink for good (every pending and later append rejects with `audit.write_failed`),
 * so enforcers deny instead of acting unrecorded.
 */
import { fdatasync, fstatSync, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { signCheckpoint, type CheckpointSigner } from './checkpoint.js';
import { canonicalLine, encodeEventBody, hashCanonical, sealLine } from './encode.js';
import type { AppendWait, AuditEvent, AuditSink } from './record.js';
import { segmentPath } from './segments.js';

const log = childLog('audit');

/** A record far beyond any real decision is a caller bug; refusing it keeps tail scans bounded. */
const MAX_RECORD_BYTES = 64 * 1024;
/** One write call carries at most this much, so a long backlog never becomes one giant string. */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * A record nobody waits on to be durable (`written`) is synced by the next durable append's sync, or
 * this long after its write at the latest. An fdatasync costs about 100 µs of CPU here, so syncing such
 * records back to back as they come would cost a busy resolver or proxy a large share of a core.
 */
const LAZY_SYNC_MS = 2;

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
  /** Resolved after the fdatasync that follows its write, not after the write. */
  readonly durable: boolean;
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
  /** Records not written yet. */
  private queue: Pending[] = [];
  /** Written records whose callers wait for the next fdatasync. */
  private unsynced: Deferred[] = [];
  /** Something was written since the last fdatasync started (every record gets synced, waited for or not). */
  private dirty = false;
  /** Syncs what only `written` records dirtied, when no durable append's sync does first. */
  private lazySync: NodeJS.Timeout | null = null;
  /** Callers held back by backpressure. */
  private waiters: Deferred[] = [];
  /** A flush is queued as a microtask (a durable record's sync starts at once) or for the loop turn's end. */
  private flushSoon = false;
  private flushAtTurnEnd = false;
  private syncing: Promise<void> | null = null;
  private rotating = false;
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

  append(event: AuditEvent, wait: AppendWait = 'durable'): Promise<void> {
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
    const durable = wait === 'durable' && this.s.fsync;
    if (this.waiters.length > 0 || this.full()) {
      return new Promise<void>((resolve, reject) => {
        this.waiters.push({ resolve: () => this.enqueue(body, durable).then(resolve, reject), reject });
      });
    }
    return this.enqueue(body, durable);
  }

  /** Appends an event the writer itself produces (the recovery record at open). */
  appendInternal(event: AuditEvent): Promise<void> {
    return this.enqueue(encodeBody(event), this.s.fsync);
  }

  close(): Promise<void> {
    this.closing ??= this.shutDown().finally(this.s.onClosed);
    return this.closing;
  }

  private enqueue(body: string, durable: boolean): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.push(body, { resolve, reject }, durable);
      if (this.s.signer !== null && ++this.sinceCheckpoint >= this.s.checkpointEvery) this.pushCheckpoint(false);
      this.schedule(durable);
    });
  }

  private push(body: string, done: Deferred | null, durable: boolean): void {
    const seq = this.seq + 1;
    const canonical = canonicalLine(seq, this.timestamp(), this.s.prefix, body, this.hash);
    const hash = hashCanonical(canonical);
    const line = sealLine(canonical, hash);
    this.seq = seq;
    this.hash = hash;
    this.queue.push({ line, bytes: Buffer.byteLength(line), done, durable });
  }

  private pushCheckpoint(final: boolean): void {
    this.sinceCheckpoint = 0;
    this.push(encodeEventBody(signCheckpoint(this.s.signer as CheckpointSigner, this.seq, this.hash, final)), null, false);
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

  private schedule(durable: boolean): void {
    // Never a timer for a durable record: it is written and its fdatasync started in a microtask when no
    // sync is in flight. Otherwise its wait is the sync in flight (or, for a `written` record or without
    // fsync, just the write): setImmediate lets every append of this turn of the event loop (a burst of
    // datagrams, many sockets' data) share one write(2), where a microtask would write once per I/O callback.
    if (durable && this.syncing === null) {
      if (this.flushSoon) return;
      this.flushSoon = true;
      queueMicrotask(() => {
        this.flushSoon = false;
        this.flush();
      });
    } else {
      if (this.flushAtTurnEnd) return;
      this.flushAtTurnEnd = true;
      setImmediate(() => {
        this.flushAtTurnEnd = false;
        this.flush();
      });
    }
  }

  /** Writes the queued records now, sync in flight or not, and starts a sync for the durable ones. */
  private flush(): void {
    if (this.rotating || this.failure !== null) return;
    let batch: Pending[] = [];
    try {
      while (this.queue.length > 0) {
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
        this.writeFully(Buffer.from(batch.map((p) => p.line).join(''), 'utf8'));
        // Acknowledging at the write needs the check now; the sync checks for the others.
        if (batch.some((p) => p.done !== null && !p.durable)) this.assertLinked();
        this.size += bytes;
        this.dirty = this.s.fsync;
        for (const p of batch) {
          if (p.done === null) continue;
          if (p.durable) this.unsynced.push(p.done);
          else p.done.resolve();
        }
        batch = [];
        if (this.size >= this.s.rotateBytes) {
          void this.rotate();
          return;
        }
      }
    } catch (err) {
      this.fail(err, batch.map((p) => p.done));
      return;
    }
    if (this.unsynced.length > 0) void this.startSync();
    else if (this.dirty) this.armLazySync();
    this.releaseWaiters();
    this.settle();
  }

  /**
   * Synchronous on purpose: an append to the page cache takes microseconds, less than the thread-pool
   * round trip an async write costs, so only the fdatasync (the slow part) leaves the event loop.
   */
  private writeFully(buf: Buffer): void {
    for (let off = 0; off < buf.length; ) off += writeSync(this.handle.fd, buf, off, buf.length - off);
  }

  /** Writes to a deleted file succeed but reach nobody: an unlinked log counts as a failed write. */
  private assertLinked(): void {
    if (fstatSync(this.handle.fd).nlink === 0) throw unlinkedError(this.path);
  }

  /** One sync loop at a time; each round covers every record written before it started. */
  private startSync(): Promise<void> {
    this.cancelLazySync();
    this.syncing ??= this.syncWritten().finally(() => {
      this.syncing = null;
      if (this.dirty) this.armLazySync();
      this.settle();
    });
    return this.syncing;
  }

  /** Rounds go on while durable appends wait; records nobody waits on are left to the lazy sync. */
  private async syncWritten(): Promise<void> {
    let covered: Deferred[] = [];
    try {
      while (this.dirty && this.failure === null) {
        this.dirty = false;
        covered = this.unsynced.splice(0);
        await datasync(this.handle.fd);
        this.assertLinked();
        for (const d of covered) d.resolve();
        covered = [];
        this.releaseWaiters();
        if (this.unsynced.length === 0) break;
      }
    } catch (err) {
      this.fail(err, covered);
    }
  }

  private armLazySync(): void {
    // While rotating, rotate() syncs what is dirty itself: a timer could fire between the old file's
    // close and the new one's open.
    if (this.lazySync !== null || this.syncing !== null || this.failure !== null || this.rotating) return;
    this.lazySync = setTimeout(() => {
      this.lazySync = null;
      void this.startSync();
    }, LAZY_SYNC_MS);
  }

  private cancelLazySync(): void {
    if (this.lazySync === null) return;
    clearTimeout(this.lazySync);
    this.lazySync = null;
  }

  /** Past maxPending records queued or waiting for their sync, new callers wait (memory stays bounded). */
  private full(): boolean {
    return this.queue.length + this.unsynced.length >= this.s.maxPending;
  }

  /** Lets waiting callers in, oldest first; each enqueues synchronously, so the queue stays bounded. */
  private releaseWaiters(): void {
    while (this.waiters.length > 0 && !this.full()) (this.waiters.shift() as Deferred).resolve();
  }

  /** Seals the active file as the next numbered segment; writes wait meanwhile and resume in the new file. */
  private async rotate(): Promise<void> {
    this.rotating = true;
    try {
      // The sealed segment's records are synced before its rename: also those written while the sync
      // in flight ran, which it does not cover. No other sync may start until the new file is open.
      while (this.failure === null && (this.syncing !== null || this.dirty)) await this.startSync();
      if (this.failure === null) await this.startSegment();
    } catch (err) {
      this.fail(err, []);
    }
    this.rotating = false;
    this.flush();
    this.settle();
  }

  /** Renames the active file to the next segment number and opens a new one; the chain runs on. */
  private async startSegment(): Promise<void> {
    await this.handle.close();
    const sealed = segmentPath(this.path, this.lastSegment + 1);
    await rename(this.path, sealed);
    this.lastSegment++;
    this.handle = await open(this.path, 'a', 0o600);
    this.size = 0;
    await syncDirectory(dirname(this.path));
    log.info({ path: this.path, sealed, seq: this.seq }, 'audit log rotated');
  }

  private fail(err: unknown, inFlight: readonly (Deferred | null)[]): void {
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
    for (const d of inFlight) d?.reject(failure);
    for (const d of this.unsynced.splice(0)) d.reject(failure);
    for (const p of this.queue.splice(0)) p.done?.reject(failure);
    for (const w of this.waiters.splice(0)) w.reject(failure);
    this.cancelLazySync();
    this.settle();
  }

  private busy(): boolean {
    return (
      this.flushSoon ||
      this.flushAtTurnEnd ||
      this.rotating ||
      this.syncing !== null ||
      this.lazySync !== null ||
      this.queue.length > 0 ||
      this.waiters.length > 0
    );
  }

  /** Wakes close() when the writer has nothing left to do. */
  private settle(): void {
    if (!this.busy()) for (const d of this.drained.splice(0)) d.resolve();
  }

  private async whenDrained(): Promise<void> {
    if (!this.busy()) return new Promise((r) => setImmediate(r));
    return new Promise((resolve, reject) => this.drained.push({ resolve, reject }));
  }

  /** Waits until everything queued is written and synced; closing, nothing waits for the lazy sync. */
  private async drain(): Promise<void> {
    while (this.busy() && this.failure === null) {
      if (this.lazySync !== null) void this.startSync();
      await this.whenDrained();
    }
  }

  private async shutDown(): Promise<void> {
    await this.drain();
    if (this.s.signer !== null && this.failure === null) {
      this.pushCheckpoint(true);
      this.schedule(false);
      await this.drain();
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
