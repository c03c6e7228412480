// The control socket's two ends (src/vm/supervisor/control-server.ts, control-client.ts) over a real
// Unix socket, with a scripted handler in place of a supervisor: an exec's output and exit reach the
// client even when the supervisor goes away right after the exit (a workspace that ends with its
// command), and a connection lost before the exit is an error, never a made-up exit status.
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/vm/supervisor/control-client.js';
import { startControlServer, type ControlHandler } from '../../src/vm/supervisor/control-server.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

async function serve(handler: ControlHandler): Promise<{ path: string; server: Server }> {
  const dir = mkdtempSync(join(tmpdir(), 'microagent-control-'));
  const path = join(dir, 'control.sock');
  const server = await startControlServer(path, handler);
  cleanups.push(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, server };
}

describe('the control socket', () => {
  it('an exec whose supervisor hangs up right after the exit still resolves with that exit and its output', async () => {
    let seen: unknown = null;
    const sockets: Socket[] = [];
    const { path, server } = await serve(async (request, conn) => {
      seen = request;
      if (request.op !== 'exec') return null;
      conn.send({ id: request.id, stream: 'stdout', data: Buffer.from('out\n').toString('base64') });
      conn.send({ id: request.id, stream: 'stderr', data: Buffer.from('err\n').toString('base64') });
      conn.send({ id: request.id, exit: { code: 3, signal: null, timedOut: false } });
      // The supervisor exits before its reply: its connections are cut.
      for (const socket of sockets) socket.end(() => socket.destroy());
      return new Promise(() => undefined);
    });
    server.on('connection', (socket) => sockets.push(socket));
    const client = await ControlClient.connect(path, 'w1');
    let stdout = '';
    let stderr = '';
    const exit = await client.exec({ argv: ['sh'], waitForStart: true, killWhenDone: true, onStdout: (d) => (stdout += d), onStderr: (d) => (stderr += d) });
    expect(exit).toEqual({ code: 3, signal: null, timedOut: false });
    expect([stdout, stderr]).toEqual(['out\n', 'err\n']);
    expect(seen).toMatchObject({ op: 'exec', argv: ['sh'], waitForStart: true, killWhenDone: true, stdin: false });
  });

  it('a connection lost before the exit rejects the exec as closed', async () => {
    const sockets: Socket[] = [];
    const { path, server } = await serve(async () => {
      for (const socket of sockets) socket.destroy();
      return new Promise(() => undefined);
    });
    server.on('connection', (socket) => sockets.push(socket));
    const client = await ControlClient.connect(path, 'w1');
    await expect(client.exec({ argv: ['sh'], onStdout: () => undefined, onStderr: () => undefined })).rejects.toMatchObject({ code: 'control.closed' });
  });
});
