/**
 * The policy in force for one mediator (a workspace supervisor, `microagent proxy`, `microagent dns`):
 * the file watched for changes, an optional mode override applied to every version, and every reload
 * recorded as a `policy.reload` audit record. An invalid new file keeps the old policy in force.
 */
import type { AuditSink } from '../audit/record.js';
import type { MicroagentError } from '../errors.js';
import type { Policy } from './policy.js';
import type { Mode } from './types.js';
import { withMode } from './policy.js';
import { watchPolicy } from './watch.js';

export interface LivePolicy {
  /** The policy to decide with now; call it per flow so a reload applies to the next one. */
  readonly current: () => Policy;
  close(): void;
}

export interface LivePolicyOptions {
  readonly mode?: Mode;
  readonly audit: AuditSink;
  /** Told of each reload, for a foreground command's human output. */
  readonly onReload?: (policy: Policy) => void;
  readonly onInvalid?: (error: MicroagentError) => void;
}

export function openLivePolicy(file: string, options: LivePolicyOptions): LivePolicy {
  const apply = (p: Policy): Policy => (options.mode === undefined ? p : withMode(p, options.mode));
  let current: Policy | undefined;
  // A failed reload record is the audit log's own failure, already reported loudly there and
  // making every later decision fail closed; the reload itself must still take effect or not.
  const record = (event: Parameters<AuditSink['append']>[0]) => void options.audit.append(event).catch(() => undefined);
  const watch = watchPolicy(file, {
    onReload(policy) {
      current = apply(policy);
      record({ event: 'policy.reload', reason: 'reload_ok', policy_hash: current.hash, file });
      options.onReload?.(current);
    },
    onInvalid(error) {
      record({ event: 'policy.reload', reason: 'reload_invalid', policy_hash: current?.hash ?? '', file, error: error.message });
      options.onInvalid?.(error);
    },
  });
  current = apply(watch.current());
  return { current: () => current as Policy, close: () => watch.close() };
}
