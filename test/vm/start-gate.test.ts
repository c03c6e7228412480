// The supervisor's start gate (src/vm/supervisor/start-gate.ts) without sockets: what it holds while
// the workspace starts, in what order it lets the held requests through, and what a failed start does.
import { describe, expect, it } from 'vitest';
import { MicroagentError } from '../../src/errors.js';
import type { ControlConnection } from '../../src/vm/supervisor/control-server.js';
import type { ControlRequest } from '../../src/vm/supervisor/protocol.js';
import { StartGate } from '../../src/vm/supervisor/start-gate.js';

const holds: Promise<unknown>[] = [];
const conn: ControlConnection = { send: () => true, whenDrained: (listener) => listener(), closed: new Promise(() => undefined), hold: (until) => void holds.push(until) };
const exec = (id: number, waitForStart?: boolean): ControlRequest => ({ id, op: 'exec', argv: ['true'], env: [], stdin: true, ...(waitForStart === undefined ? {} : { waitForStart }) });
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('the start gate', () => {
  it.each<[string, ControlRequest]>([
    ['status', { id: 1, op: 'status' }],
    ['kill', { id: 1, op: 'kill' }],
    ['an exec that did not ask to wait', exec(1)],
    ['an exec that asked not to wait', exec(1, false)],
  ])('refuses %s while the workspace starts', async (_, request) => {
    const gate = new StartGate('w1');
    await expect(gate.handle(request, conn)).rejects.toMatchObject({ kind: 'conflict', code: 'lifecycle.starting', remediation: 'wait for it with "microagent wait w1"' });
  });

  it('holds an exec that asked to wait, and its stdin, then hands them over in the order they came', async () => {
    const gate = new StartGate('w1');
    holds.length = 0;
    const seen: string[] = [];
    const held = [
      gate.handle(exec(1, true), conn),
      gate.handle({ id: 2, op: 'stdin', exec: 1, data: 'aGk=' }, conn),
      gate.handle({ id: 3, op: 'stdin_eof', exec: 1 }, conn),
    ];
    await tick();
    expect(seen).toEqual([]);
    // Meanwhile the connection reads nothing more: the client's stdin waits in its own socket.
    expect(holds).toHaveLength(3);
    let released = false;
    void Promise.all(holds).then(() => (released = true));
    await tick();
    expect(released).toBe(false);
    gate.open(async (request) => {
      seen.push(request.op);
      return request.id;
    });
    expect(await Promise.all(held)).toEqual([1, 2, 3]);
    expect(released).toBe(true);
    expect(seen).toEqual(['exec', 'stdin', 'stdin_eof']);
    // Once open, everything goes straight through.
    expect(await gate.handle({ id: 4, op: 'status' }, conn)).toBe(4);
  });

  it('fails the held requests with the start\'s own error', async () => {
    const gate = new StartGate('w1');
    const held = gate.handle(exec(1, true), conn);
    const cause = new MicroagentError('not_found', 'no kernel installed', { code: 'vm.kernel_missing', remediation: 'microagent kernel install' });
    gate.fail(cause);
    await expect(held).rejects.toBe(cause);
  });

  it('a start that fails with nobody waiting leaves no unhandled rejection behind', async () => {
    const gate = new StartGate('w1');
    gate.fail(new Error('boot failed'));
    await tick();
    await expect(gate.handle({ id: 1, op: 'status' }, conn)).rejects.toMatchObject({ code: 'lifecycle.starting' });
  });
});
