/**
 * A minimal QMP (QEMU Machine Protocol) client over QEMU's Unix socket: capabilities handshake, then
 * one command at a time (stop, cont, quit, query-status). It never sends a command before the
 * handshake finished and never leaves a caller waiting after the socket closed.
 */
import type { Socket } from 'node:net';
import { MicroagentError } from '../errors.js';
import { connectWithRetry } from './unix-connect.js';

interface Waiter {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class QmpClient {
  private buffered = '';
  private readonly queue: Waiter[] = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      const err = new MicroagentError('transient', 'the QEMU monitor (QMP) connection closed', {
        code: 'vm.qmp_closed',
        remediation: 'The microVM has stopped; start it again.',
      });
      for (const w of this.queue.splice(0)) w.reject(err);
    });
  }

  static connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const open = async (socket: Socket): Promise<QmpClient> => {
      const client = new QmpClient(socket);
      await client.next(); // greeting
      await client.execute('qmp_capabilities');
      return client;
    };
    return connectWithRetry(path, timeoutMs, open, (cause) =>
      new MicroagentError('transient', `cannot connect to the QEMU monitor socket ${path}`, {
        code: 'vm.qmp_connect', cause,
        remediation: 'QEMU did not start; read the QEMU log in the run directory.',
      }),
    );
  }


  /** Runs one QMP command and resolves with its `return` value. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed) throw new MicroagentError('transient', 'the QEMU monitor connection is closed', { code: 'vm.qmp_closed' });
    const reply = this.next();
    this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    const msg = (await reply) as { return?: unknown; error?: { desc?: string } };
    if (msg.error) {
      throw new MicroagentError('internal', `QMP ${command} failed: ${msg.error.desc ?? 'unknown error'}`, {
        code: 'vm.qmp_error',
      });
    }
    return msg.return;
  }

  close(): void {
    this.socket.destroy();
  }

  private next(): Promise<unknown> {
    return new Promise((resolve, reject) => this.queue.push({ resolve, reject }));
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('event' in msg) continue; // asynchronous events are not replies
      this.queue.shift()?.resolve(msg);
    }
  }
}
