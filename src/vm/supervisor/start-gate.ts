/**
 * The control socket listens from the start of a workspace's boot, so that the starter can hand over
 * its command before the guest is up (`run`: the command starts the moment the guest is configured,
 * with no round trip through the CLI in between). Until the workspace is running, the gate holds an
 * exec that asked to wait for the start, and stdin for it (the starter's stdin may flow before the
 * guest is up), and refuses everything else as still starting; then every request goes to the running
 * supervisor, the held ones in the order they came. A failed start fails them with its error.
 */
import { MicroagentError } from '../../errors.js';
import type { ControlHandler } from './control-server.js';
import { COMMAND_INPUT_OPS } from './protocol.js';

export class StartGate {
  private handler: ControlHandler | null = null;
  private readonly running: Promise<ControlHandler>;
  private settle!: { open: (handler: ControlHandler) => void; fail: (err: unknown) => void };

  constructor(private readonly workspace: string) {
    this.running = new Promise<ControlHandler>((open, fail) => (this.settle = { open, fail }));
    this.running.catch(() => undefined); // nobody may be waiting
  }

  /** The workspace is running: held and later requests go to `handler`. */
  open(handler: ControlHandler): void {
    this.handler = handler;
    this.settle.open(handler);
  }

  /** The start failed: held execs get `err`. */
  fail(err: unknown): void {
    this.settle.fail(err);
  }

  readonly handle: ControlHandler = async (request, conn) => {
    if (this.handler !== null) return this.handler(request, conn);
    const held = (request.op === 'exec' && request.waitForStart === true) || COMMAND_INPUT_OPS.has(request.op);
    if (held) {
      // Nothing runs the held requests yet: read no more of the client's until the workspace does.
      conn.hold(this.running);
      return (await this.running)(request, conn);
    }
    throw new MicroagentError('conflict', `workspace "${this.workspace}" is still starting`, {
      code: 'lifecycle.starting',
      remediation: `wait for it with "microagent wait ${this.workspace}"`,
    });
  };
}
