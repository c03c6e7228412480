// Playbook for the sans-IO connection step (after mitmproxy's tutils.Playbook): a conversation is a
// list of events in and the actions expected out, in order. The log it returns lets a test assert
// ordering invariants such as "audit before dial" in one line.
import { expect } from 'vitest';
import type { Policy } from '../../src/policy/index.js';
import { stepConnection, type ConnectionAction, type ConnectionEvent, type ConnectionState } from '../../src/proxy/connection-step.js';

export type LogEntry = { readonly dir: 'in'; readonly event: ConnectionEvent } | { readonly dir: 'out'; readonly action: ConnectionAction };

export interface Turn {
  readonly send: ConnectionEvent;
  /** Partial shapes of the actions expected, in order (toMatchObject semantics). */
  readonly expect: readonly Record<string, unknown>[];
}

export function playbook(policy: Policy, turns: readonly Turn[]): { log: LogEntry[]; state: ConnectionState } {
  let state: ConnectionState = { phase: 'start' };
  const log: LogEntry[] = [];
  for (const turn of turns) {
    log.push({ dir: 'in', event: turn.send });
    const result = stepConnection(policy, state, turn.send);
    state = result.state;
    for (const action of result.actions) log.push({ dir: 'out', action });
    expect(result.actions.length, `actions after ${turn.send.type}: ${JSON.stringify(result.actions.map((a) => a.type))}`).toBe(turn.expect.length);
    turn.expect.forEach((shape, i) => expect(result.actions[i]).toMatchObject(shape));
  }
  return { log, state };
}

/** Every dial is preceded by an awaited audit of an allow and then an `audited` event; no resolve after a deny. */
export function assertAuditBeforeDial(log: readonly LogEntry[]): void {
  let awaitedAllow = false;
  let audited = false;
  for (const entry of log) {
    if (entry.dir === 'out' && entry.action.type === 'audit' && entry.action.wait) {
      expect(entry.action.record.verdict).not.toBe('deny');
      awaitedAllow = true;
    }
    if (entry.dir === 'in' && entry.event.type === 'audited') audited = awaitedAllow;
    if (entry.dir === 'out' && entry.action.type === 'dial') {
      expect(awaitedAllow && audited, 'dial without a durable audit record first').toBe(true);
    }
  }
}

export function actionTypes(log: readonly LogEntry[]): string[] {
  return log.flatMap((e) => (e.dir === 'out' ? [e.action.type] : []));
}
