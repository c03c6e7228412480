/**
 * Opens (or creates) an audit log and continues its chain. A security log must not paper over
 * damage: when the newest record is torn or fails its hash, opening is refused unless the operator
 * asks for `onCorruptTail: 'new_segment'`, which keeps the damaged file untouched as a sealed segment
 * and starts the next file with an `audit.recovery` record naming the damage. Nothing is ever truncated.
 */
import type { KeyObject } from 'node:crypto';
import { open, rename } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { checkpointSigner, type CheckpointAlgorithm } from './checkpoint.js';
import { encodeWorkspacePrefix, GENESIS_HASH } from './encode.js';
import { describeDamage, findChainHead, lineAt } from './head.js';
import type { RecoveryEvent } from './record.js';
import { lockAuditLog } from './lock.js';
import { segmentPath } from './segments.js';
import { AuditLogWriter, syncDirectory, type AuditLog } from './writer.js';
import { makeDirs } from '../make-dirs.js';

const log = childLog('audit');

export interface CheckpointOptions {
  /** HMAC secret bytes (at least 32) or an Ed25519 private key; see loadCheckpointSigner for files. */
  readonly key: KeyObject | Buffer;
  readonly keyId?: string;
  /** Checked against the key when given. */
  readonly algorithm?: CheckpointAlgorithm;
  /** Records between checkpoints (default 1000); close() always writes a final one. */
  readonly every?: number;
}

export interface AuditLogOptions {
  readonly path: string;
  readonly workspace: string;
  readonly workspaceId?: string;
  readonly runtimeId?: string;
  /** false: append resolves after write(2), before the data is on disk (benchmarks only). */
  readonly fsync?: boolean;
  /** Seal the active file and start a new one once it reaches this size (default 64 MiB). */
  readonly rotateBytes?: number;
  readonly checkpoint?: CheckpointOptions;
  /** Records queued before append() makes callers wait (default 8192). */
  readonly maxPending?: number;
  /** 'refuse' (default) or 'new_segment' to continue past a damaged tail; see the file comment. */
  readonly onCorruptTail?: 'refuse' | 'new_segment';
}

const DEFAULTS = { rotateBytes: 64 * 1024 * 1024, maxPending: 8192, checkpointEvery: 1000 };

export async function openAuditLog(options: AuditLogOptions): Promise<AuditLog> {
  const path = resolve(options.path);
  if (options.workspace === '') {
    throw new MicroagentError('invalid', 'audit log needs a workspace name', { code: 'audit.invalid_options' });
  }
  const signer = options.checkpoint === undefined ? null : checkpointSigner(options.checkpoint.key, options.checkpoint.keyId);
  if (signer !== null && options.checkpoint?.algorithm !== undefined && options.checkpoint.algorithm !== signer.algorithm) {
    throw new MicroagentError('invalid', `checkpoint algorithm ${options.checkpoint.algorithm} does not match a ${signer.algorithm} key`, {
      code: 'audit.bad_key',
      remediation: 'Leave algorithm out to take it from the key.',
    });
  }
  let release: () => Promise<void>;
  try {
    makeDirs(dirname(path), 0o700);
    release = await lockAuditLog(path);
  } catch (err) {
    if (err instanceof MicroagentError) throw err;
    throw openFailed(path, err);
  }
  try {
    return await openWriter(path, options, signer, release);
  } catch (err) {
    await release();
    throw err;
  }
}

async function openWriter(
  path: string,
  options: AuditLogOptions,
  signer: ReturnType<typeof checkpointSigner> | null,
  release: () => Promise<void>,
): Promise<AuditLogWriter> {
  const dir = dirname(path);
  let recovery: RecoveryEvent | null = null;
  let head;
  try {
    head = await findChainHead(path);
  } catch (err) {
    if (err instanceof MicroagentError) throw err;
    throw openFailed(path, err);
  }
  if (head.last !== null && head.last.workspace !== options.workspace) {
    // verify requires one workspace per chain; continuing would make the whole log fail it.
    throw new MicroagentError('conflict', `audit log ${path} belongs to workspace "${head.last.workspace}", not "${options.workspace}"`, {
      code: 'audit.workspace_mismatch',
      remediation: 'Give each workspace its own audit log path.',
    });
  }
  let lastSegment = head.lastSegment;
  if (head.damage !== null) {
    const where = describeDamage(head.damage);
    if (options.onCorruptTail !== 'new_segment') {
      throw new MicroagentError('conflict', `audit log ${path} ends in a damaged record (${where}); refusing to append after it`, {
        code: 'audit.corrupt_tail',
        remediation:
          `Run "microagent audit verify ${path}" to see the damage, then "microagent audit recover ${path}": it keeps the ` +
          `damaged file as it is, as a sealed segment, and the chain continues from the last intact record ` +
          `(in the library: onCorruptTail: 'new_segment').`,
      });
    }
    const line = await lineAt(head.damage.file, head.damage.offset);
    let sealed = head.damage.file;
    if (sealed === path) {
      sealed = segmentPath(path, ++lastSegment);
      await rename(path, sealed);
      await syncDirectory(dir);
    }
    recovery = {
      event: 'audit.recovery',
      file: basename(sealed),
      line,
      discarded_bytes: head.damage.size - head.damage.offset,
      problem: head.damage.problem,
    };
    log.warn({ path, sealed, line, problem: head.damage.problem }, 'audit log had a damaged tail; continuing in a new file');
  }
  let handle;
  try {
    handle = await open(path, 'a', 0o600);
    await syncDirectory(dir);
  } catch (err) {
    throw openFailed(path, err);
  }
  const writer = new AuditLogWriter({
    path,
    handle,
    size: (await handle.stat()).size,
    lastSegment,
    prefix: encodeWorkspacePrefix(options.workspace, options.workspaceId, options.runtimeId),
    seq: head.last?.seq ?? 0,
    hash: head.last?.hash ?? GENESIS_HASH,
    lastTs: head.last?.ts ?? null,
    fsync: options.fsync ?? true,
    rotateBytes: positive(options.rotateBytes, DEFAULTS.rotateBytes, 'rotateBytes'),
    maxPending: positive(options.maxPending, DEFAULTS.maxPending, 'maxPending'),
    signer,
    checkpointEvery: positive(options.checkpoint?.every, DEFAULTS.checkpointEvery, 'checkpoint.every'),
    onClosed: release,
  });
  if (recovery !== null) {
    try {
      await writer.appendInternal(recovery);
    } catch (err) {
      await writer.close();
      throw err;
    }
  }
  log.info({ path, seq: writer.head.seq }, 'audit log opened');
  return writer;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!(value > 0)) {
    throw new MicroagentError('invalid', `audit log option ${name} must be positive, got ${value}`, { code: 'audit.invalid_options' });
  }
  return value;
}

/** Out of space or I/O trouble may pass; a path through a file or a directory named as the log will not. */
const PASSING_OPEN_ERRORS = new Set(['ENOSPC', 'EIO', 'EAGAIN', 'EMFILE', 'ENFILE', 'EBUSY']);

function openFailed(path: string, err: unknown): MicroagentError {
  const code = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
  return new MicroagentError(PASSING_OPEN_ERRORS.has(code) ? 'transient' : 'invalid', `cannot open audit log ${path} (${code}: ${(err as Error).message})`, {
    code: 'audit.write_failed',
    cause: err,
    remediation: 'Check that the audit directory exists, is writable and has free space.',
  });
}
