/**
 * One mediated connection's lifecycle as a pure step function: (state, event) -> (state, actions).
 * Phases: connecting (allow record being written, then the target dialled) -> relaying -> closing ->
 * closed. The broker (broker.ts) performs the actions on real sockets and feeds results back as events;
 * nothing here touches a socket, so "audit before dial" and "every connection gets its records" are
 * checked without I/O. Byte relaying itself never passes through here (that is the hot path).
 *
 * Never: dial before the allow record is durable; relay after the audit log failed; let an event a
 * phase does not expect pass silently (it closes the connection with closed_by 'error').
 */
import type { MediationCloseEvent, MediationConnectEvent } from '../audit/record.js';

export type ConnectionPhase = 'connecting' | 'relaying' | 'closing' | 'closed';
export type Side = 'guest' | 'target';
export type ClosedBy = MediationCloseEvent['closed_by'];

/** The allow record is written before dialling; until it is durable nothing reaches the target. */
type AllowRecord = 'pending' | 'durable' | 'failed';
type TargetSocket = 'none' | 'dialling' | 'open' | 'closed';

export interface ConnectionState {
  readonly conn: string;
  readonly port: number;
  readonly target: string;
  readonly startedAt: number;
  readonly phase: ConnectionPhase;
  readonly allowRecord: AllowRecord;
  readonly guestOpen: boolean;
  readonly targetSocket: TargetSocket;
  readonly ended: { readonly guest: boolean; readonly target: boolean };
  /** Set once, by the first thing that ended the connection. */
  readonly closedBy: ClosedBy | null;
  readonly error: string | null;
  /** The dial failed and a deny record says so; no close record follows. */
  readonly denied: boolean;
  /** Counters as of the last socket close, for the close record. */
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly lastCloseAt: number;
}

export type ConnectionEvent =
  | { readonly type: 'admitted' }
  | { readonly type: 'audit_failed'; readonly error: string }
  | { readonly type: 'dialled' }
  | { readonly type: 'dial_failed'; readonly error: string }
  | { readonly type: 'eof'; readonly side: Side }
  | { readonly type: 'socket_error'; readonly side: Side; readonly error: string }
  | { readonly type: 'limit'; readonly error: string }
  | { readonly type: 'sever' }
  /** The broker must stop this connection for a reason of its own (the audit log failed). */
  | { readonly type: 'abort'; readonly error: string }
  | { readonly type: 'socket_closed'; readonly side: Side; readonly bytesUp: number; readonly bytesDown: number; readonly now: number };

export type ConnectionAction =
  /** `gate`: the result comes back as `admitted` / `audit_failed`; otherwise a failure is only logged. */
  | { readonly type: 'append_audit'; readonly event: MediationConnectEvent | MediationCloseEvent; readonly gate: boolean }
  | { readonly type: 'dial' }
  /** Write the PROXY header (if the channel has it on) and start moving bytes both ways. */
  | { readonly type: 'relay' }
  /** Pass a half-close on: the other side sent EOF, so end this side's writable. */
  | { readonly type: 'end_write'; readonly side: Side }
  | { readonly type: 'destroy'; readonly side: Side };

export interface Step {
  readonly state: ConnectionState;
  readonly actions: readonly ConnectionAction[];
}

export interface ConnectionFacts {
  readonly conn: string;
  readonly port: number;
  readonly target: string;
  readonly now: number;
  /** The channel already has its maximum of live connections. */
  readonly atCapacity: boolean;
}

/** A new guest connection: denied at once when the channel is full, else its allow record is written. */
export function startConnection(facts: ConnectionFacts): Step {
  const base = { conn: facts.conn, port: facts.port, target: facts.target };
  const state: ConnectionState = {
    ...base,
    startedAt: facts.now,
    phase: 'connecting',
    allowRecord: 'pending',
    guestOpen: true,
    targetSocket: 'none',
    ended: { guest: false, target: false },
    closedBy: null,
    error: null,
    denied: false,
    bytesUp: 0,
    bytesDown: 0,
    lastCloseAt: facts.now,
  };
  if (facts.atCapacity) {
    const deny: MediationConnectEvent = { event: 'mediation.connect', verdict: 'deny', reason: 'limit_exceeded', ...base };
    return {
      state: { ...state, phase: 'closing', allowRecord: 'failed', denied: true },
      actions: [{ type: 'destroy', side: 'guest' }, { type: 'append_audit', event: deny, gate: false }],
    };
  }
  const allow: MediationConnectEvent = { event: 'mediation.connect', verdict: 'allow', reason: null, ...base };
  return { state, actions: [{ type: 'append_audit', event: allow, gate: true }] };
}

export function step(state: ConnectionState, event: ConnectionEvent): Step {
  // A closed connection has written its last record; late socket events change nothing.
  if (state.phase === 'closed') return { state, actions: [] };
  switch (event.type) {
    case 'admitted':
      if (state.allowRecord !== 'pending') return unexpected(state, event.type);
      if (state.phase === 'connecting') return { state: { ...state, allowRecord: 'durable', targetSocket: 'dialling' }, actions: [{ type: 'dial' }] };
      return settle({ ...state, allowRecord: 'durable' }, []);
    case 'audit_failed':
      if (state.allowRecord !== 'pending') return unexpected(state, event.type);
      return shutDown({ ...state, allowRecord: 'failed' }, 'error', `audit log unavailable: ${event.error}`);
    case 'dialled':
      if (state.targetSocket !== 'dialling') return unexpected(state, event.type);
      if (state.phase !== 'connecting') return settle({ ...state, targetSocket: 'open' }, [{ type: 'destroy', side: 'target' }]);
      return { state: { ...state, phase: 'relaying', targetSocket: 'open' }, actions: [{ type: 'relay' }] };
    case 'dial_failed': {
      if (state.targetSocket !== 'dialling') return unexpected(state, event.type);
      if (state.phase !== 'connecting') return settle({ ...state, targetSocket: 'closed' }, []);
      const deny: MediationConnectEvent = {
        event: 'mediation.connect', verdict: 'deny', reason: 'target_unreachable',
        conn: state.conn, port: state.port, target: state.target, error: event.error,
      };
      const next: ConnectionState = { ...state, phase: 'closing', targetSocket: 'closed', denied: true, error: event.error };
      return settle(next, [{ type: 'destroy', side: 'guest' }, { type: 'append_audit', event: deny, gate: false }]);
    }
    case 'eof': {
      if (state.phase !== 'relaying' && state.phase !== 'closing') return unexpected(state, event.type);
      if (state.ended[event.side]) return { state, actions: [] };
      const ended = { ...state.ended, [event.side]: true };
      const bothEnded = ended.guest && ended.target;
      const next: ConnectionState = {
        ...state,
        ended,
        closedBy: state.closedBy ?? event.side,
        phase: bothEnded ? 'closing' : state.phase,
      };
      if (state.phase === 'closing') return { state: next, actions: [] };
      return { state: next, actions: [{ type: 'end_write', side: other(event.side) }] };
    }
    case 'socket_error':
      return shutDown(state, 'error', `${event.side}: ${event.error}`);
    case 'limit':
      return shutDown(state, 'limit', event.error);
    case 'sever':
      return shutDown(state, 'sever', null);
    case 'abort':
      return shutDown(state, 'error', event.error);
    case 'socket_closed': {
      const counted = { ...state, bytesUp: event.bytesUp, bytesDown: event.bytesDown, lastCloseAt: event.now };
      const next: ConnectionState =
        event.side === 'guest' ? { ...counted, guestOpen: false } : { ...counted, targetSocket: 'closed' };
      // A socket gone for good before closing: whatever the other side still sends has nowhere to go,
      // and a guest gone while its allow record is written must not be dialled for.
      if (state.phase === 'relaying' || state.phase === 'connecting') return shutDown(next, event.side, null);
      return settle(next, []);
    }
    default:
      return unreachable(event);
  }
}

/** Ends the connection: both sockets destroyed, `closedBy` kept from whatever ended it first. */
function shutDown(state: ConnectionState, closedBy: ClosedBy, error: string | null): Step {
  if (state.phase === 'closed') return { state, actions: [] };
  const actions: ConnectionAction[] = [];
  if (state.guestOpen) actions.push({ type: 'destroy', side: 'guest' });
  if (state.targetSocket === 'open' || state.targetSocket === 'dialling') actions.push({ type: 'destroy', side: 'target' });
  const next: ConnectionState = {
    ...state,
    phase: 'closing',
    closedBy: state.closedBy ?? closedBy,
    error: state.error ?? error,
  };
  return settle(next, actions);
}

/** Moves to `closed` once no socket is open and the allow record's fate is known; adds the close record. */
function settle(state: ConnectionState, actions: ConnectionAction[]): Step {
  const targetDone = state.targetSocket === 'none' || state.targetSocket === 'closed';
  if (state.phase === 'relaying' || state.guestOpen || !targetDone || state.allowRecord === 'pending') {
    return { state, actions };
  }
  const closed: ConnectionState = { ...state, phase: 'closed' };
  if (state.allowRecord !== 'durable' || state.denied) return { state: closed, actions };
  const record: MediationCloseEvent = {
    event: 'mediation.close',
    conn: state.conn,
    port: state.port,
    target: state.target,
    bytes_up: state.bytesUp,
    bytes_down: state.bytesDown,
    duration_ms: Math.max(0, Math.round(state.lastCloseAt - state.startedAt)),
    closed_by: state.closedBy ?? 'error',
    ...(state.error === null ? {} : { error: state.error }),
  };
  return { state: closed, actions: [...actions, { type: 'append_audit', event: record, gate: false }] };
}

function unexpected(state: ConnectionState, what: string): Step {
  return shutDown(state, 'error', `internal: unexpected ${what} while ${state.phase}`);
}

function other(side: Side): Side {
  return side === 'guest' ? 'target' : 'guest';
}

function unreachable(value: never): never {
  throw new Error(`unexpected connection event ${JSON.stringify(value)}`);
}
