/**
 * Connecting to a Unix socket that QEMU is still creating: retried until a deadline, then the caller's
 * typed error. Shared by the guest agent channel and the QMP monitor.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MicroagentError } from '../errors.js';

/**
 * QEMU creates its sockets some 50-80 ms into its start-up, and the guest runs only once QMP is
 * connected (the vCPUs are held for the kernel check): a coarse retry would delay every boot by up to
 * its interval. A refused connect to a Unix socket costs microseconds.
 */
const RETRY_MS = 5;

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
      await sleep(RETRY_MS);
    }
  }
}
