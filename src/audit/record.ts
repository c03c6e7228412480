/**
 * The audit record schema, defined once. Proxy, resolver, broker and lifecycle all write through these
 * types; docs/audit.md documents the same fields. Field names are snake_case and stable: auditors'
 * tooling depends on them. Never put a secret value in a record: only secret *names*.
 *
 * The writer (writer.ts) adds the envelope (`v`, `seq`, `ts`, `workspace`, `workspace_id`,
 * `runtime_id`, `prev`, `hash`); callers supply an `AuditEvent`.
 */
import type { Mode, Verdict } from '../policy/types.js';
import type { Reason, Signal } from '../policy/reasons.js';

export const AUDIT_SCHEMA_VERSION = 1;

/** Fields every decision carries. */
export interface DecisionFields {
  readonly verdict: Verdict;
  readonly rule: string | null;
  readonly reason: Reason;
  readonly signals: readonly Signal[];
  readonly mode: Mode;
  readonly policy_hash: string;
}

/** A decision as the policy engine returns it (camelCase), or a verdict shaped like one. */
export interface DecisionLike {
  readonly verdict: Verdict;
  readonly rule: string | null;
  readonly reason: Reason;
  readonly signals: readonly Signal[];
  readonly mode: Mode;
  readonly policyHash: string;
}

/** A decision's fields as every decision record spells them. */
export function decisionFields(d: DecisionLike): DecisionFields {
  return { verdict: d.verdict, rule: d.rule, reason: d.reason, signals: d.signals, mode: d.mode, policy_hash: d.policyHash };
}

export interface EgressDecisionEvent extends DecisionFields {
  readonly event: 'egress.decision';
  readonly conn: string;
  readonly protocol: 'http' | 'https' | 'tcp';
  readonly host: string | null;
  readonly port: number;
  readonly sni?: string | null;
  readonly ip?: string | null;
  readonly method?: string;
  readonly path?: string;
  readonly decrypted: boolean;
  readonly status?: number;
  readonly secret_names?: readonly string[];
}

export interface EgressCloseEvent {
  readonly event: 'egress.close';
  readonly conn: string;
  readonly host: string | null;
  readonly port: number;
  readonly ip: string | null;
  /** Set on the close of one request inside a connection; the connection's own close has neither. */
  readonly method?: string;
  readonly path?: string;
  readonly decrypted: boolean;
  readonly status?: number;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly duration_ms: number;
  readonly reason?: Reason;
  readonly signals?: readonly Signal[];
  readonly error?: string;
}

export interface DnsQueryEvent extends DecisionFields {
  readonly event: 'dns.query';
  readonly name: string;
  readonly qtype: string;
  readonly transport: 'udp' | 'tcp';
  readonly answers: number;
  readonly upstream_ms: number | null;
  readonly cached: boolean;
  readonly rcode: string;
}

/**
 * A question about to leave the host for the upstream resolvers (a cache miss): durable before it is
 * sent. `proxy`: the egress proxy's own lookup of a destination it allowed.
 */
export interface DnsForwardEvent extends DecisionFields {
  readonly event: 'dns.forward';
  readonly name: string;
  readonly qtype: string;
  readonly transport: 'udp' | 'tcp' | 'proxy';
}

export interface MediationConnectEvent {
  readonly event: 'mediation.connect';
  readonly verdict: 'allow' | 'deny';
  readonly reason: Reason | null;
  readonly conn: string;
  readonly port: number;
  readonly target: string;
  readonly error?: string;
}

export interface MediationCloseEvent {
  readonly event: 'mediation.close';
  readonly conn: string;
  readonly port: number;
  readonly target: string;
  readonly bytes_up: number;
  readonly bytes_down: number;
  readonly duration_ms: number;
  readonly closed_by: 'guest' | 'target' | 'limit' | 'sever' | 'error';
  readonly error?: string;
}

export interface PolicyReloadEvent {
  readonly event: 'policy.reload';
  readonly reason: 'reload_ok' | 'reload_invalid';
  readonly policy_hash: string;
  readonly file: string;
  readonly error?: string;
}

export interface InboundConnectEvent {
  readonly event: 'inbound.connect';
  readonly conn: string;
  readonly host_port: number;
  readonly guest_port: number;
  readonly peer: string;
  readonly verdict: 'allow' | 'deny';
  readonly reason: Reason | null;
}

export interface LifecycleEvent {
  readonly event: `lifecycle.${string}`;
  readonly state: string;
  readonly detail?: string;
}

/**
 * A signed checkpoint over the chain so far (HMAC-SHA256 or Ed25519; key kept on the host).
 * `upto_seq`/`upto_hash` name the record it seals (the one just before it); `final` is true for the
 * checkpoint `close()` writes, so a log that ends without one was cut short or is still open.
 */
export interface CheckpointEvent {
  readonly event: 'audit.checkpoint';
  readonly algorithm: 'hmac-sha256' | 'ed25519';
  readonly key_id: string;
  readonly upto_seq: number;
  readonly upto_hash: string;
  readonly final: boolean;
  readonly signature: string;
}

/**
 * Written first in a new file when the operator told the writer to continue past a damaged tail
 * (a crash mid-write). The damaged bytes stay where they were, in the sealed segment `file`, from
 * `line` to its end (`discarded_bytes`); the chain continues from the last intact record.
 */
export interface RecoveryEvent {
  readonly event: 'audit.recovery';
  readonly file: string;
  readonly line: number;
  readonly discarded_bytes: number;
  readonly problem: string;
}

export type AuditEvent =
  | EgressDecisionEvent
  | EgressCloseEvent
  | DnsQueryEvent
  | DnsForwardEvent
  | MediationConnectEvent
  | MediationCloseEvent
  | PolicyReloadEvent
  | InboundConnectEvent
  | LifecycleEvent
  | CheckpointEvent
  | RecoveryEvent;

/** The envelope the writer adds. `prev` is the previous record's `hash` (64 zeros for the first). */
export interface AuditEnvelope {
  readonly v: number;
  readonly seq: number;
  readonly ts: string;
  readonly workspace: string;
  readonly workspace_id?: string;
  readonly runtime_id?: string;
  readonly prev: string;
  readonly hash: string;
}

export type AuditRecord = AuditEnvelope & AuditEvent;

/**
 * What an append waits for. `durable` (the default): written and fdatasynced, for a record whose
 * action reaches beyond the host (a dial, a question sent upstream), so a host crash cannot leave the
 * action without its record. `written`: in the file, which survives a crash of this process, and
 * durable with the next durable append's sync or 2 ms after its write at the latest; for answers
 * that never leave the host (a DNS answer) and reports of what already happened (a close record).
 */
export type AppendWait = 'durable' | 'written';

/**
 * The sink every enforcer writes to. `append` resolves once the record is durable (fsync'd), or
 * written when asked for `written`, and rejects with a MicroagentError (code `audit.write_failed`)
 * when it cannot be written; the caller must then deny. After one failure the sink stays failed:
 * every later append rejects too (fail closed).
 */
export interface AuditSink {
  append(event: AuditEvent, wait?: AppendWait): Promise<void>;
  readonly healthy: boolean;
  close(): Promise<void>;
}
