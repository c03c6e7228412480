/**
 * Connecting to a Unix socket that QEMU is still creating: retried until a deadline, then the caller's
 * typed error. Shared by the guest agent channel and the QMP monitor.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MicroagentError } from '../errors.js';

/** Resolves with whatever `open` makes of a connected socket; `fail` turns the last error into a typed one. */
export async function connectWithRetry<T>(
  path: string,
  timeoutMs: number,
  open: (socket: Socket) => Promise<T> | T,
  fail: (cause: unknown) => MicroagentError,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect(path, () => resolve(s));
        s.once('error', reject);
      });
      return await open(socket);
    } catch (err) {
      if (Date.now() > deadline) throw fail(err);
      await sleep(50);
    }
  }
}
