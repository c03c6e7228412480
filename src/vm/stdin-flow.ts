/**
 * One command's stdin on its way to the guest agent, within the agent's window (STDIN_WINDOW): at
 * most that many bytes are on the channel before the guest's STDIN_CREDIT says the command took
 * them, so stdin a command does not read yet waits here rather than in the guest's PID 1. What
 * waits here is `queued`; a caller holds its own source while `write` says false (past `highWater`)
 * and resumes on `drained`. The end of stdin goes out after the last byte. Sans-IO: frames go to
 * `send`, so it is tested without a guest.
 */
import { FRAME_MAX_PAYLOAD, MSG, STDIN_WINDOW } from './protocol.js';

export class StdinFlow {
  private readonly waiting: Buffer[] = [];
  private queuedBytes = 0;
  private inFlight = 0;
  private ending = false;
  private ended = false;
  private readonly drainListeners: (() => void)[] = [];

  constructor(
    private readonly send: (type: number, payload?: Buffer) => void,
    private readonly highWater = 1024 * 1024,
    private readonly window = STDIN_WINDOW,
  ) {}

  get queued(): number {
    return this.queuedBytes;
  }

  /** Queues `data`; false once more than `highWater` bytes wait: hold the source until `drained`. */
  write(data: Buffer): boolean {
    if (this.ending || data.length === 0) return this.queuedBytes <= this.highWater;
    this.waiting.push(data);
    this.queuedBytes += data.length;
    this.pump();
    return this.queuedBytes <= this.highWater;
  }

  end(): void {
    this.ending = true;
    this.pump();
  }

  /** The guest's STDIN_CREDIT: `bytes` of the window are free again. */
  credit(bytes: number): void {
    this.inFlight = Math.max(0, this.inFlight - bytes);
    this.pump();
  }

  /** Calls `listener` once when what waits here is down to `highWater` again. */
  drained(listener: () => void): void {
    if (this.queuedBytes <= this.highWater) listener();
    else this.drainListeners.push(listener);
  }

  private pump(): void {
    while (this.waiting.length > 0 && this.inFlight < this.window) {
      const head = this.waiting[0] as Buffer;
      const size = Math.min(head.length, this.window - this.inFlight, FRAME_MAX_PAYLOAD);
      this.send(MSG.STDIN, size === head.length ? head : head.subarray(0, size));
      if (size === head.length) this.waiting.shift();
      else this.waiting[0] = head.subarray(size);
      this.inFlight += size;
      this.queuedBytes -= size;
    }
    if (this.ending && !this.ended && this.waiting.length === 0) {
      this.ended = true;
      this.send(MSG.STDIN_EOF);
    }
    if (this.queuedBytes <= this.highWater) for (const listener of this.drainListeners.splice(0)) listener();
  }
}
