/**
 * `audit verify`: walks every file of a log in order and checks each record on its own (decode.ts)
 * and against the one before it: contiguous seq, `prev` equal to the previous hash, non-decreasing ts,
 * one workspace. With a key it also checks every checkpoint signature and that the log ends sealed by
 * a final checkpoint (otherwise records may have been cut from the end). Reports the first bad record
 * by file, line and seq. Never modifies the log.
 */
import { basename } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { checkCheckpointSignature, checkpointVerifier, type CheckpointVerifier } from './checkpoint.js';
import { decodeLine, type DecodedLine } from './decode.js';
import { GENESIS_HASH } from './encode.js';
import type { AuditRecord, RecoveryEvent } from './record.js';
import { fileSize, findLogFiles, readFileLines } from './segments.js';

const NOT_UTF8: DecodedLine = { kind: 'bad', problem: 'the line is not valid UTF-8: its bytes were changed after writing (the writer writes only UTF-8)', seq: null };

export interface BadRecord {
  readonly file: string;
  readonly line: number;
  /** The record's own seq when readable, else the seq expected at that place. */
  readonly seq: number;
  readonly problem: string;
  /** The chain is whole; the signed checkpoints do not vouch for it from this record on. */
  readonly unsigned?: true;
}

export interface Recovery {
  readonly file: string;
  readonly line: number;
  readonly discardedBytes: number;
  readonly problem: string;
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly records: number;
  readonly lastSeq: number;
  readonly lastHash: string;
  readonly files: readonly string[];
  /** Checkpoints found (signatures checked only when a key was given). */
  readonly checkpoints: number;
  readonly signed: boolean;
  /** Records after the last valid checkpoint (only meaningful with a key). */
  readonly unsignedTail: number;
  /** Damaged tails that a later `audit.recovery` record acknowledged. */
  readonly recoveries: readonly Recovery[];
  readonly firstBad?: BadRecord;
}

export interface VerifyOptions {
  /** The HMAC secret or Ed25519 public key (loadCheckpointVerifier reads one from a file). */
  readonly key?: CheckpointVerifier | KeyObject | Buffer;
  /** With a key: accept records after the last checkpoint (a log still being written). */
  readonly allowUnsignedTail?: boolean;
}

interface Suspect {
  readonly bad: BadRecord;
  readonly offset: number;
  readonly size: number;
}

class Walk {
  records = 0;
  seq = 0;
  hash = GENESIS_HASH;
  ts = '';
  workspace: string | null = null;
  checkpoints = 0;
  signedThroughSeq = 0;
  lastWasFinal = false;
  firstUnsigned: BadRecord | null = null;
  lastCheckpointAt: BadRecord | null = null;
  recoveries: Recovery[] = [];
}

export async function verifyAuditLog(path: string, options: VerifyOptions = {}): Promise<VerifyResult> {
  const given = options.key;
  const key: CheckpointVerifier | undefined = given === undefined || 'keyId' in given ? given : checkpointVerifier(given);
  const { files } = await findLogFiles(path);
  const w = new Walk();
  const result = (firstBad?: BadRecord): VerifyResult => ({
    ok: firstBad === undefined,
    records: w.records,
    lastSeq: w.seq,
    lastHash: w.hash,
    files,
    checkpoints: w.checkpoints,
    signed: key !== undefined,
    unsignedTail: key === undefined ? 0 : w.seq - w.signedThroughSeq,
    recoveries: w.recoveries,
    ...(firstBad === undefined ? {} : { firstBad }),
  });

  let suspect: Suspect | null = null;
  for (const file of files) {
    let firstInFile = true;
    for await (const l of readFileLines(file)) {
      const at = (seq: number, problem: string): BadRecord => ({ file, line: l.line, seq, problem });
      // The hash covers the text; bytes that are not UTF-8 decode to U+FFFD, so they are refused before it.
      const decoded = !l.terminated ? null : l.utf8 ? decodeLine(l.text) : NOT_UTF8;
      if (decoded === null || decoded.kind === 'bad') {
        const problem = decoded === null ? 'torn record: the line has no newline (crash mid-write or truncation)' : decoded.problem;
        const bad = at(decoded?.seq ?? w.seq + 1, problem);
        if (suspect !== null) return result(suspect.bad);
        // Damage may be a crash's torn tail that the next file's recovery record acknowledges.
        suspect = { bad, offset: l.offset, size: await fileSize(file) };
        break;
      }
      const record = decoded.record;
      if (firstInFile && suspect !== null) {
        if (!acknowledges(record, suspect)) return result(suspect.bad);
        w.recoveries.push({ file: suspect.bad.file, line: suspect.bad.line, discardedBytes: suspect.size - suspect.offset, problem: suspect.bad.problem });
        suspect = null;
      } else if (record.event === 'audit.recovery') {
        return result(at(record.seq, 'audit.recovery record without a damaged tail right before it'));
      }
      firstInFile = false;
      const problem = chainProblem(w, record, key);
      if (problem !== null) return result(at(record.seq, problem));
      advance(w, record, key, at(record.seq, ''));
    }
  }
  if (suspect !== null) return result(suspect.bad);
  if (key !== undefined && !options.allowUnsignedTail) {
    if (w.firstUnsigned !== null) {
      return result({
        ...w.firstUnsigned,
        unsigned: true,
        problem:
          `not covered by a signed checkpoint (${w.seq - w.signedThroughSeq} record(s) at the end): the log was cut ` +
          'after its last checkpoint, or the writer did not close cleanly (use --live for a log still being written)',
      });
    }
    if (w.records === 0) return result({ file: files.at(-1) as string, line: 1, seq: 1, problem: 'the log is empty' });
    if (!w.lastWasFinal && w.lastCheckpointAt !== null) {
      return result({
        ...w.lastCheckpointAt,
        unsigned: true,
        problem: 'the log ends without the final checkpoint written on close: records after it may have been cut off',
      });
    }
  }
  return result();
}

function acknowledges(record: AuditRecord, suspect: Suspect): boolean {
  if (record.event !== 'audit.recovery') return false;
  const r = record as unknown as RecoveryEvent;
  return r.file === basename(suspect.bad.file) && r.line === suspect.bad.line && r.discarded_bytes === suspect.size - suspect.offset;
}

function chainProblem(w: Walk, r: AuditRecord, key: CheckpointVerifier | undefined): string | null {
  const expected = w.seq + 1;
  if (r.seq > expected) return `seq ${r.seq} where ${expected} was expected: record(s) ${expected}..${r.seq - 1} are missing here (deleted, or moved later)`;
  if (r.seq < expected) return `seq ${r.seq} where ${expected} was expected: a record was inserted, duplicated or moved here`;
  if (r.prev !== w.hash) {
    return w.records === 0 && w.hash === GENESIS_HASH && r.seq === 1
      ? 'the first record does not start the chain (prev is not 64 zeros)'
      : `prev does not match the hash of record ${w.seq}: the record before it was replaced, or this one was forged`;
  }
  if (r.ts < w.ts) return `ts ${r.ts} is earlier than the previous record's ${w.ts}`;
  if (w.workspace !== null && r.workspace !== w.workspace) return `workspace "${r.workspace}" differs from "${w.workspace}"`;
  if (r.event === 'audit.checkpoint') {
    if (r.upto_seq !== w.seq || r.upto_hash !== w.hash) return 'checkpoint does not seal the record right before it';
    if (key !== undefined) return checkCheckpointSignature(key, r);
  }
  return null;
}

function advance(w: Walk, r: AuditRecord, key: CheckpointVerifier | undefined, here: BadRecord): void {
  w.records++;
  w.seq = r.seq;
  w.hash = r.hash;
  w.ts = r.ts;
  w.workspace ??= r.workspace;
  if (r.event === 'audit.checkpoint') {
    w.checkpoints++;
    w.lastWasFinal = r.final;
    w.lastCheckpointAt = here;
    if (key !== undefined) {
      w.signedThroughSeq = r.seq;
      w.firstUnsigned = null;
    }
    return;
  }
  w.lastWasFinal = false;
  if (key !== undefined && w.firstUnsigned === null) w.firstUnsigned = here;
}
