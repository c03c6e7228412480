/**
 * The canonical encoding of an audit record: one JSON line with fields in a fixed order, built by
 * hand (pino-style) so the bytes that are hashed are exactly the bytes written. Pure functions only;
 * this file never touches files and never writes a field the schema (record.ts) does not define.
 *
 * Line layout: {"v","seq","ts",<workspace prefix>,"event",<event fields>,"prev","hash"}.
 * The hash is SHA-256 (hex) over the line without its `,"hash":"..."` member, i.e. `{...,"prev":"<hex>"}`.
 */
import { hash } from 'node:crypto';
import { MicroagentError } from '../errors.js';
import {
  AUDIT_SCHEMA_VERSION,
  type AuditEvent,
  type CheckpointEvent,
  type DnsForwardEvent,
  type DnsQueryEvent,
  type EgressCloseEvent,
  type EgressDecisionEvent,
  type InboundConnectEvent,
  type LifecycleEvent,
  type MediationCloseEvent,
  type MediationConnectEvent,
  type PolicyReloadEvent,
  type RecoveryEvent,
} from './record.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Lists every field of E except `event`, in write order; the compiler rejects a missing or unknown one. */
function fieldOrder<E extends AuditEvent>() {
  return <const K extends readonly Exclude<keyof E, 'event'>[]>(
    keys: K & (Exclude<keyof E, 'event'> extends K[number] ? unknown : { missing: Exclude<keyof E, 'event' | K[number]> }),
  ): readonly string[] => keys as readonly string[];
}

const DECISION = ['verdict', 'rule', 'reason', 'signals', 'mode', 'policy_hash'] as const;

/** The fixed field order per event. `lifecycle.*` events share one entry. */
export const EVENT_FIELDS: Readonly<Record<string, readonly string[]>> = {
  'egress.decision': fieldOrder<EgressDecisionEvent>()([
    'conn', 'protocol', 'host', 'port', 'sni', 'ip', 'method', 'path', 'decrypted', 'status', ...DECISION, 'secret_names',
  ]),
  'egress.close': fieldOrder<EgressCloseEvent>()([
    'conn', 'host', 'port', 'ip', 'method', 'path', 'decrypted', 'status', 'bytes_up', 'bytes_down', 'duration_ms', 'reason', 'signals', 'error',
  ]),
  'dns.query': fieldOrder<DnsQueryEvent>()([
    'name', 'qtype', 'transport', 'answers', 'upstream_ms', 'cached', 'rcode', ...DECISION,
  ]),
  'dns.forward': fieldOrder<DnsForwardEvent>()(['name', 'qtype', 'transport', ...DECISION]),
  'mediation.connect': fieldOrder<MediationConnectEvent>()(['conn', 'port', 'target', 'verdict', 'reason', 'error']),
  'mediation.close': fieldOrder<MediationCloseEvent>()([
    'conn', 'port', 'target', 'bytes_up', 'bytes_down', 'duration_ms', 'closed_by', 'error',
  ]),
  'policy.reload': fieldOrder<PolicyReloadEvent>()(['reason', 'policy_hash', 'file', 'error']),
  'inbound.connect': fieldOrder<InboundConnectEvent>()(['conn', 'host_port', 'guest_port', 'peer', 'verdict', 'reason']),
  'lifecycle.*': fieldOrder<LifecycleEvent>()(['state', 'detail']),
  'audit.checkpoint': fieldOrder<CheckpointEvent>()([
    'algorithm', 'key_id', 'upto_seq', 'upto_hash', 'final', 'signature',
  ]),
  'audit.recovery': fieldOrder<RecoveryEvent>()(['file', 'line', 'discarded_bytes', 'problem']),
};

export function fieldsForEvent(event: string): readonly string[] | undefined {
  if (event.startsWith('lifecycle.') && event.length > 'lifecycle.'.length) return EVENT_FIELDS['lifecycle.*'];
  return EVENT_FIELDS[event];
}

// Printable ASCII without `"` and `\`: such strings need no escaping (the common case: hosts, ids, reasons).
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

function encodeString(s: string): string {
  return PLAIN.test(s) ? `"${s}"` : JSON.stringify(s);
}

function encodeValue(field: string, value: unknown): string {
  switch (typeof value) {
    case 'string':
      return encodeString(value);
    case 'number':
      if (!Number.isFinite(value)) throw badField(field, 'is not a finite number');
      return String(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (typeof item !== 'string') throw badField(field, 'must be a list of strings');
          out += (i === 0 ? '' : ',') + encodeString(item);
        }
        return out + ']';
      }
      throw badField(field, 'is an object; audit fields are scalars or lists of strings');
    default:
      throw badField(field, `has type ${typeof value}`);
  }
}

function badField(field: string, problem: string): MicroagentError {
  return new MicroagentError('invalid', `audit field "${field}" ${problem}`, {
    code: 'audit.invalid_record',
    remediation: 'This is a bug in the component that built the audit event; report it.',
  });
}

/** The workspace members, serialised once per log: `,"workspace":"w","workspace_id":"..."`. */
export function encodeWorkspacePrefix(workspace: string, workspaceId?: string, runtimeId?: string): string {
  let out = `,"workspace":${encodeString(workspace)}`;
  if (workspaceId !== undefined) out += `,"workspace_id":${encodeString(workspaceId)}`;
  if (runtimeId !== undefined) out += `,"runtime_id":${encodeString(runtimeId)}`;
  return out;
}

/** `,"event":"...",<fields>` for one event, in the fixed order; undefined optional fields are left out. */
export function encodeEventBody(event: AuditEvent): string {
  const fields = fieldsForEvent(event.event);
  if (fields === undefined) throw badField('event', `"${event.event}" is not an audit event`);
  const source = event as unknown as Readonly<Record<string, unknown>>;
  let out = `,"event":${encodeString(event.event)}`;
  for (const field of fields) {
    const value = source[field];
    if (value !== undefined) out += `,"${field}":${encodeValue(field, value)}`;
  }
  return out;
}

/** The hashed form: `{"v":..,"seq":..,"ts":".."<prefix><body>,"prev":".."}`. */
export function canonicalLine(seq: number, ts: string, workspacePrefix: string, body: string, prev: string): string {
  return `{"v":${AUDIT_SCHEMA_VERSION},"seq":${seq},"ts":"${ts}"${workspacePrefix}${body},"prev":"${prev}"}`;
}

export function hashCanonical(canonical: string): string {
  // One-shot: half the cost of createHash().update().digest() for a record-sized string (hot path).
  return hash('sha256', canonical, 'hex');
}

/** The written line (with newline) for a canonical form and its hash. */
export function sealLine(canonical: string, hash: string): string {
  return `${canonical.slice(0, -1)},"hash":"${hash}"}\n`;
}

const HASH_SUFFIX = /,"hash":"([0-9a-f]{64})"\}$/;

/** Splits a written line (without newline) into its canonical form and claimed hash, or null. */
export function unsealLine(line: string): { canonical: string; hash: string } | null {
  const m = HASH_SUFFIX.exec(line);
  if (m === null) return null;
  return { canonical: line.slice(0, m.index) + '}', hash: m[1] as string };
}
