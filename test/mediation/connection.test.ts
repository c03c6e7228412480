/**
 * The connection step function as playbooks: events in, actions out, no sockets. Each scenario
 * asserts the order that matters (allow record before dial, deny record when the dial fails, exactly
 * one close record) and the phase the connection ends in.
 */
import { describe, expect, it } from 'vitest';
import {
  startConnection,
  step,
  type ConnectionAction,
  type ConnectionEvent,
  type ConnectionState,
} from '../../src/mediation/connection.js';

const facts = { conn: 'c1', port: 5000, target: '127.0.0.1:9', now: 1000 };

/** Runs events from a fresh connection and returns every action in order plus the final state. */
function play(events: readonly ConnectionEvent[], atCapacity = false): { actions: string[]; state: ConnectionState; all: ConnectionAction[] } {
  const start = startConnection({ ...facts, atCapacity });
  let state = start.state;
  const all: ConnectionAction[] = [...start.actions];
  for (const event of events) {
    const next = step(state, event);
    state = next.state;
    all.push(...next.actions);
  }
  return { actions: all.map(describeAction), state, all };
}

function describeAction(a: ConnectionAction): string {
  switch (a.type) {
    case 'append_audit':
      return a.event.event === 'mediation.connect'
        ? `audit connect ${a.event.verdict}${a.event.reason ? ` ${a.event.reason}` : ''}${a.gate ? ' (gate)' : ''}`
        : `audit close ${a.event.closed_by}`;
    case 'end_write':
    case 'destroy':
      return `${a.type} ${a.side}`;
    default:
      return a.type;
  }
}

const closedEvent = (side: 'guest' | 'target', now = 1250): ConnectionEvent => ({ type: 'socket_closed', side, bytesUp: 10, bytesDown: 20, now });

describe('connection playbooks', () => {
  it('normal exchange: allow record, then dial, relay, half-close both ways, one close record', () => {
    const { actions, state, all } = play([
      { type: 'admitted' },
      { type: 'dialled' },
      { type: 'eof', side: 'guest' },
      { type: 'eof', side: 'target' },
      closedEvent('target'),
      closedEvent('guest'),
    ]);
    expect(actions).toEqual(['audit connect allow (gate)', 'dial', 'relay', 'end_write target', 'end_write guest', 'audit close guest']);
    expect(state.phase).toBe('closed');
    expect(all.at(-1)).toMatchObject({ event: { bytes_up: 10, bytes_down: 20, duration_ms: 250, conn: 'c1', port: 5000 } });
  });

  it('never dials before the allow record is durable', () => {
    const { actions } = play([]);
    expect(actions).toEqual(['audit connect allow (gate)']);
  });

  it('audit failure: the guest is closed, nothing dialled, no more records', () => {
    const { actions, state } = play([{ type: 'audit_failed', error: 'disk full' }, closedEvent('guest')]);
    expect(actions).toEqual(['audit connect allow (gate)', 'destroy guest']);
    expect(state.phase).toBe('closed');
  });

  it('target unreachable: guest closed at once, deny target_unreachable, no close record', () => {
    const { actions, state, all } = play([{ type: 'admitted' }, { type: 'dial_failed', error: 'connect ECONNREFUSED' }, closedEvent('guest')]);
    expect(actions).toEqual(['audit connect allow (gate)', 'dial', 'destroy guest', 'audit connect deny target_unreachable']);
    expect(all[3]).toMatchObject({ event: { error: 'connect ECONNREFUSED' } });
    expect(state.phase).toBe('closed');
  });

  it('at capacity: closed at once, deny limit_exceeded, never audited as allowed', () => {
    const { actions, state } = play([closedEvent('guest')], true);
    expect(actions).toEqual(['destroy guest', 'audit connect deny limit_exceeded']);
    expect(state.phase).toBe('closed');
  });

  it('sever while relaying: both sockets destroyed, close record says sever', () => {
    const { actions } = play([{ type: 'admitted' }, { type: 'dialled' }, { type: 'sever' }, closedEvent('guest'), closedEvent('target')]);
    expect(actions).toEqual(['audit connect allow (gate)', 'dial', 'relay', 'destroy guest', 'destroy target', 'audit close sever']);
  });

  it('sever while the allow record is being written: no dial, close record once it is durable', () => {
    const { actions, state } = play([{ type: 'sever' }, closedEvent('guest'), { type: 'admitted' }]);
    expect(actions).toEqual(['audit connect allow (gate)', 'destroy guest', 'audit close sever']);
    expect(state.phase).toBe('closed');
  });

  it('sever while dialling: the dial is abandoned, the late socket destroyed, close record says sever', () => {
    const { actions } = play([{ type: 'admitted' }, { type: 'sever' }, closedEvent('guest'), { type: 'dialled' }, closedEvent('target')]);
    expect(actions).toEqual(['audit connect allow (gate)', 'dial', 'destroy guest', 'destroy target', 'destroy target', 'audit close sever']);
  });

  it('a guest gone while its allow record is written is never dialled for', () => {
    const { actions, state } = play([closedEvent('guest'), { type: 'admitted' }]);
    expect(actions).toEqual(['audit connect allow (gate)', 'audit close guest']);
    expect(state.phase).toBe('closed');
  });

  it('the first reason to close wins: a limit then a socket error is closed_by limit', () => {
    const { actions, all } = play([
      { type: 'admitted' },
      { type: 'dialled' },
      { type: 'limit', error: 'more than 10 bytes' },
      { type: 'socket_error', side: 'target', error: 'EPIPE' },
      closedEvent('guest'),
      closedEvent('target'),
    ]);
    expect(actions.at(-1)).toBe('audit close limit');
    expect(all.at(-1)).toMatchObject({ event: { error: 'more than 10 bytes' } });
  });

  it('a socket that vanishes while relaying ends the connection on behalf of that side', () => {
    const { actions } = play([{ type: 'admitted' }, { type: 'dialled' }, closedEvent('target'), closedEvent('guest')]);
    expect(actions).toEqual(['audit connect allow (gate)', 'dial', 'relay', 'destroy guest', 'audit close target']);
  });

  it('an event the phase does not expect closes the connection with closed_by error', () => {
    const { actions, all } = play([{ type: 'dialled' }, closedEvent('guest'), { type: 'admitted' }]);
    expect(actions).toEqual(['audit connect allow (gate)', 'destroy guest', 'audit close error']);
    expect(all.at(-1)).toMatchObject({ event: { error: 'internal: unexpected dialled while connecting' } });
  });

  it('events after closed change nothing', () => {
    const { state } = play([{ type: 'admitted' }, { type: 'dial_failed', error: 'x' }, closedEvent('guest')]);
    expect(step(state, { type: 'sever' })).toEqual({ state, actions: [] });
    expect(step(state, closedEvent('guest'))).toEqual({ state, actions: [] });
  });
});
