/**
 * The supervisor's end of the control socket: parses request lines and hands each to the workspace
 * handler, which answers through `send`. A malformed line gets a typed error reply, never a crash.
 */
import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { asMicroagentError } from '../../errors.js';
import { COMMAND_INPUT_OPS, encodeLine, splitLines, type ControlReply, type ControlRequest } from './protocol.js';

export interface ControlConnection {
  /** False once more than SEND_BUFFER waits for the client (it is not reading): hold the source until `whenDrained`. */
  send(reply: ControlReply): boolean;
  whenDrained(listener: () => void): void;
  /** Resolves when the client hangs up (an exec's owner went away). */
  readonly closed: Promise<void>;
  /** Reads no more requests until `until` settles: the client's writes then wait in its own socket (back-pressure for stdin). */
  hold(until: Promise<unknown>): void;
}

export type ControlHandler = (request: ControlRequest, conn: ControlConnection) => Promise<unknown>;

/** Reply bytes (exec output as base64 lines) let wait for a client before its command's output is held. */
const SEND_BUFFER = 1024 * 1024;

export async function startControlServer(socketPath: string, handler: ControlHandler): Promise<Server> {
  await rm(socketPath, { force: true });
  const server = createServer((socket) => serve(socket, handler));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  return server;
}

function serve(socket: Socket, handler: ControlHandler): void {
  socket.setEncoding('utf8');
  let pending = '';
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  let holds = 0;
  const conn: ControlConnection = {
    send: (reply) => {
      if (!socket.destroyed) socket.write(encodeLine(reply));
      return socket.writableLength <= SEND_BUFFER;
    },
    whenDrained: (listener) => {
      if (socket.writableLength <= SEND_BUFFER) listener();
      else socket.once('drain', listener);
    },
    closed,
    hold(until) {
      if (holds++ === 0) socket.pause();
      const release = () => {
        if (--holds === 0) socket.resume();
      };
      until.then(release, release);
    },
  };
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: string) => {
    const { lines, rest } = splitLines(pending, chunk);
    pending = rest;
    for (const line of lines) void dispatch(line, conn, handler);
  });
}

async function dispatch(line: string, conn: ControlConnection, handler: ControlHandler): Promise<void> {
  let request: ControlRequest;
  try {
    request = JSON.parse(line) as ControlRequest;
    if (typeof request.id !== 'number' || typeof request.op !== 'string') throw new Error('missing id or op');
  } catch (err) {
    conn.send({
      id: -1,
      ok: false,
      error: { kind: 'invalid', code: 'control.malformed', message: `malformed control request: ${(err as Error).message}`, remediation: 'use the microagent CLI or library to talk to the supervisor' },
    });
    return;
  }
  try {
    const result = await handler(request, conn);
    if (!COMMAND_INPUT_OPS.has(request.op)) conn.send({ id: request.id, ok: true, result: result ?? null });
  } catch (err) {
    const e = asMicroagentError(err);
    conn.send({ id: request.id, ok: false, error: { kind: e.kind, code: e.code, message: e.message, remediation: e.remediation } });
  }
}
