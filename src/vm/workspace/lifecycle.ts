/**
 * The workspace lifecycle as one transition table: (state, verb) -> the state the verb moves to, or a
 * typed refusal. Pure: the supervisor and CLI perform the effects, this file only says what is allowed.
 * The glossary (docs/lifecycle.md) defines each verb; never add a transition without updating it.
 */
import { MicroagentError } from '../../errors.js';

export const STATES = [
  'prepared',
  'starting',
  'running',
  'paused',
  'stopping',
  'halted',
  'stopped',
  'failed',
  'quarantined',
] as const;
export type WorkspaceState = (typeof STATES)[number];

export const VERBS = ['start', 'halt', 'pause', 'resume', 'stop', 'kill', 'quarantine', 'delete', 'exec', 'stats'] as const;
export type Verb = (typeof VERBS)[number];

/** States in which a VM process may exist; `delete` is refused in these. */
export const VM_STATES: ReadonlySet<WorkspaceState> = new Set(['starting', 'running', 'paused', 'stopping', 'quarantined']);

type Outcome = { readonly next: WorkspaceState } | { readonly refuse: string; readonly remediation: string };

const ALLOW = (next: WorkspaceState): Outcome => ({ next });
const REFUSE = (refuse: string, remediation: string): Outcome => ({ refuse, remediation });

const booted = REFUSE('is already running', 'use "microagent exec" to run commands, or "halt" it first');
const quarantined = REFUSE('is quarantined', 'halt, stop or kill it first; then it can start again');

/** What each verb does from each state. Missing entries are refusals built by `transition`. */
const TABLE: Record<WorkspaceState, Partial<Record<Verb, Outcome>>> = {
  prepared: { start: ALLOW('starting'), delete: ALLOW('prepared') },
  starting: {
    start: REFUSE('is already starting', 'wait for it with "microagent wait NAME"'),
    stop: ALLOW('stopping'),
    kill: ALLOW('stopped'),
    quarantine: ALLOW('quarantined'),
  },
  running: {
    start: booted,
    halt: ALLOW('halted'),
    pause: ALLOW('paused'),
    stop: ALLOW('stopping'),
    kill: ALLOW('stopped'),
    quarantine: ALLOW('quarantined'),
    exec: ALLOW('running'),
    stats: ALLOW('running'),
  },
  paused: {
    start: REFUSE('is paused', 'use "microagent resume NAME"'),
    resume: ALLOW('running'),
    exec: REFUSE('is paused', 'use "microagent resume NAME" first'),
    stats: REFUSE('is paused', 'use "microagent resume NAME" first: a frozen guest cannot answer'),
    halt: REFUSE('is paused', 'resume it first: halt needs the guest agent'),
    stop: ALLOW('stopping'),
    kill: ALLOW('stopped'),
    quarantine: ALLOW('quarantined'),
  },
  stopping: {
    kill: ALLOW('stopped'),
    start: REFUSE('is stopping', 'wait for it to stop, or kill it'),
  },
  halted: { start: ALLOW('starting'), delete: ALLOW('halted') },
  stopped: { start: ALLOW('starting'), delete: ALLOW('stopped') },
  failed: { start: ALLOW('starting'), kill: ALLOW('stopped'), delete: ALLOW('failed') },
  quarantined: {
    start: quarantined,
    resume: quarantined,
    // Live response: the agent channel is neither network nor mediation, and the VM kept running so it can be inspected.
    exec: ALLOW('quarantined'),
    stats: ALLOW('quarantined'),
    halt: ALLOW('halted'),
    stop: ALLOW('stopping'),
    kill: ALLOW('stopped'),
    pause: quarantined,
  },
};

/** Where a verb leaves a workspace, for saying that it is there already. */
const RESULT: Partial<Record<Verb, WorkspaceState>> = { halt: 'halted', pause: 'paused', resume: 'running', kill: 'stopped', quarantine: 'quarantined' };

/** The state `verb` leads to from `state`, or a typed conflict saying why not and what to do. */
export function transition(name: string, state: WorkspaceState, verb: Verb): WorkspaceState {
  const outcome = TABLE[state][verb];
  if (outcome !== undefined && 'next' in outcome) return outcome.next;
  const refuse = (why: string, remediation: string) =>
    new MicroagentError('conflict', `workspace "${name}" ${why}: cannot ${verb}`, { code: 'lifecycle.refused', remediation: remediation.replaceAll('NAME', name) });
  if (outcome !== undefined) throw refuse(outcome.refuse, outcome.remediation);
  if (verb === 'delete') throw refuse(`is ${state}, and delete is refused while its VM may run`, 'stop or kill it first ("microagent kill NAME")');
  if (RESULT[verb] === state) throw refuse(`is already ${state}`, 'nothing to do');
  if (verb === 'resume') throw refuse(`is ${state}, not paused`, 'only a paused workspace resumes');
  const startable = TABLE[state].start !== undefined && 'next' in (TABLE[state].start as Outcome);
  if (startable) throw refuse(`is ${state}: its VM does not run`, verb === 'kill' || verb === 'stop' || verb === 'halt' ? 'nothing to do' : 'start it with "microagent start NAME"');
  throw refuse(`is ${state}`, 'wait until it is running ("microagent wait NAME"), or kill it ("microagent kill NAME")');
}
