import { describe, expect, it } from 'vitest';
import { STATES, VERBS, transition, type Verb, type WorkspaceState } from '../../src/vm/workspace/lifecycle.js';
import { MicroagentError } from '../../src/errors.js';

const allowed: [WorkspaceState, Verb, WorkspaceState][] = [
  ['prepared', 'start', 'starting'],
  ['halted', 'start', 'starting'],
  ['stopped', 'start', 'starting'],
  ['failed', 'start', 'starting'],
  ['running', 'halt', 'halted'],
  ['running', 'pause', 'paused'],
  ['paused', 'resume', 'running'],
  ['running', 'stop', 'stopping'],
  ['paused', 'stop', 'stopping'],
  ['running', 'kill', 'stopped'],
  ['stopping', 'kill', 'stopped'],
  ['running', 'quarantine', 'quarantined'],
  ['paused', 'quarantine', 'quarantined'],
  ['quarantined', 'kill', 'stopped'],
  ['quarantined', 'halt', 'halted'],
  ['quarantined', 'stop', 'stopping'],
  ['running', 'exec', 'running'],
  ['quarantined', 'exec', 'quarantined'],
  ['running', 'stats', 'running'],
  ['quarantined', 'stats', 'quarantined'],
  ['prepared', 'delete', 'prepared'],
  ['stopped', 'delete', 'stopped'],
];

const refused: [WorkspaceState, Verb, RegExp][] = [
  ['running', 'start', /already running/],
  ['starting', 'start', /already starting/],
  ['paused', 'start', /resume/],
  ['quarantined', 'start', /halt, stop or kill/],
  ['paused', 'exec', /resume/],
  ['paused', 'stats', /resume/],
  ['halted', 'stats', /start it/],
  ['running', 'delete', /stop or kill it first \("microagent kill w"\)/],
  ['paused', 'delete', /stop or kill/],
  ['quarantined', 'delete', /stop or kill/],
  ['prepared', 'exec', /start it with "microagent start w"/],
  ['halted', 'pause', /start it/],
  // Asked for what already holds: said so, not a circular fix.
  ['running', 'resume', /is already running: cannot resume nothing to do/],
  ['halted', 'resume', /is halted, not paused: cannot resume only a paused workspace resumes/],
  ['paused', 'pause', /is already paused: cannot pause nothing to do/],
  ['quarantined', 'quarantine', /is already quarantined/],
  ['halted', 'kill', /is halted: its VM does not run: cannot kill nothing to do/],
  ['halted', 'halt', /is already halted/],
  ['stopped', 'stop', /its VM does not run: cannot stop nothing to do/],
  ['stopping', 'exec', /wait until it is running \("microagent wait w"\), or kill it \("microagent kill w"\)/],
];

describe('workspace lifecycle table', () => {
  it.each(allowed)('%s --%s--> %s', (from, verb, to) => {
    expect(transition('w', from, verb)).toBe(to);
  });

  it.each(refused)('%s refuses %s', (from, verb, remedy) => {
    let caught: unknown;
    try {
      transition('w', from, verb);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(MicroagentError);
    const err = caught as MicroagentError;
    expect(err.kind).toBe('conflict');
    expect(err.code).toBe('lifecycle.refused');
    expect(`${err.message} ${err.remediation}`).toMatch(remedy);
  });

  it('answers every (state, verb) pair with a state or a typed conflict', () => {
    for (const state of STATES) {
      for (const verb of VERBS) {
        try {
          expect(STATES).toContain(transition('w', state, verb));
        } catch (err) {
          expect((err as MicroagentError).kind).toBe('conflict');
          expect((err as MicroagentError).remediation).not.toBe('');
          expect((err as MicroagentError).remediation).not.toContain('NAME');
        }
      }
    }
  });
});
