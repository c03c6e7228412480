/**
 * `audit recover`: the operator's way past a damaged tail (a torn line left by a crash or a full disk,
 * or a last record that fails its hash), which writers refuse to append after. It opens the log with
 * onCorruptTail: 'new_segment' (open.ts): the damaged file is sealed as it is, as evidence, and a new
 * active file starts with an `audit.recovery` record naming the file, line and bytes set aside.
 * Nothing is truncated or rewritten, and a log without damage is left alone. It takes the writer's
 * lock, so a log a live workspace is writing is refused.
 */
import { resolve } from 'node:path';
import { MicroagentError } from '../errors.js';
import { describeDamage, findChainHead } from './head.js';
import { openAuditLog } from './open.js';
import { parseRecordLine } from './read.js';
import type { AuditEnvelope, AuditRecord, RecoveryEvent } from './record.js';
import { findLogFiles, readFileLines } from './segments.js';

export type RecoverResult =
  | { readonly recovered: false; readonly last: AuditRecord | null }
  | { readonly recovered: true; readonly damage: string; readonly recovery: AuditEnvelope & RecoveryEvent };

/** `workspace` names the chain's workspace when no intact record is left to take it from. */
export async function recoverAuditLog(path: string, options: { readonly workspace?: string } = {}): Promise<RecoverResult> {
  const base = resolve(path);
  await findLogFiles(base);
  const head = await findChainHead(base);
  if (head.damage === null) return { recovered: false, last: head.last };
  const workspace = head.last?.workspace ?? options.workspace;
  if (workspace === undefined) {
    throw new MicroagentError('invalid', `audit log ${path} has no intact record left to take its workspace name from`, {
      code: 'audit.recover_workspace',
      remediation: 'pass --workspace NAME, the workspace the log belongs to',
    });
  }
  const workspaceId = head.last?.workspace_id;
  const log = await openAuditLog({ path: base, workspace, ...(workspaceId === undefined ? {} : { workspaceId }), onCorruptTail: 'new_segment' });
  await log.close();
  // The new active file starts with the recovery record the writer wrote at its opening.
  for await (const line of readFileLines(base)) {
    const { record } = parseRecordLine(base, line);
    if (record.event === 'audit.recovery') return { recovered: true, damage: describeDamage(head.damage), recovery: record };
    break;
  }
  throw new MicroagentError('internal', `audit log ${path} was reopened past its damage but holds no recovery record`, {
    remediation: `run "microagent audit verify ${path}" and keep the files as they are`,
  });
}
