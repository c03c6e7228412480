/**
 * The CLI's end of a workspace's control socket. `request` sends one operation and waits for its reply;
 * `exec` streams a guest command's output and resolves with its exit status.
 */
import { connect, type Socket } from 'node:net';
import { MicroagentError } from '../../errors.js';
import type { TerminalSize } from '../protocol.js';
import { encodeLine, splitLines, type CommandExit, type ControlReply, type ControlRequest } from './protocol.js';

type Pending = { resolve: (value: unknown) => void; reject: (err: Error) => void; onReply?: (reply: ControlReply) => void };

export interface ExecOptions {
  readonly argv: readonly string[];
  readonly env?: readonly string[];
  readonly cwd?: string;
  readonly uid?: number;
  readonly gid?: number;
  readonly timeoutMs?: number;
  readonly stdin?: NodeJS.ReadableStream;
  readonly onStdout: (data: Buffer) => void;
  readonly onStderr: (data: Buffer) => void;
  /** See the exec request (protocol.ts): sent while the workspace starts, and ending it. */
  readonly waitForStart?: boolean;
  readonly killWhenDone?: boolean;
  /**
   * Run on a terminal of `size` (what the command writes, stderr too, arrives at onStdout);
   * `resizes` is handed the function that reports each new size of the user's terminal.
   */
  readonly tty?: { readonly size: TerminalSize; readonly resizes?: (report: (size: TerminalSize) => void) => void };
  /** Handed the function that passes a signal the client received (Ctrl-C) on to the command. */
  readonly signals?: (forward: (signal: NodeJS.Signals) => void) => void;
}

export type ExecResult = CommandExit;

type Op = Exclude<ControlRequest, { op: 'exec' | 'stdin' | 'stdin_eof' | 'resize' | 'signal' }>['op'];

/** Stdin bytes (base64 lines) this client lets wait in its socket before it stops reading its source. */
const STDIN_BUFFER = 1024 * 1024;

export class ControlClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(
    private readonly socket: Socket,
    workspace: string,
  ) {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      const { lines, rest } = splitLines(buffered, chunk);
      buffered = rest;
      for (const line of lines) this.onReply(JSON.parse(line) as ControlReply);
    });
    socket.on('close', () => {
      const gone = new MicroagentError('transient', 'the workspace supervisor closed the control connection', {
        code: 'control.closed',
        remediation: `check "microagent status ${workspace}"; run "microagent gc" if its supervisor died`,
      });
      for (const p of this.pending.values()) p.reject(gone);
      this.pending.clear();
    });
  }

  static async connect(socketPath: string, workspace: string): Promise<ControlClient> {
    const socket = connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new MicroagentError('transient', `cannot reach the supervisor of workspace "${workspace}": ${err.code ?? err.message}`, {
            code: 'control.unreachable',
            remediation: `check "microagent status ${workspace}"; run "microagent gc" if its supervisor died`,
          }),
        ),
      );
    });
    socket.on('error', () => socket.destroy());
    return new ControlClient(socket, workspace);
  }

  private onReply(reply: ControlReply): void {
    const p = this.pending.get(reply.id);
    if (p === undefined) return;
    if ('ok' in reply) {
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else p.reject(new MicroagentError(reply.error.kind, reply.error.message, { code: reply.error.code, remediation: reply.error.remediation }));
      return;
    }
    p.onReply?.(reply);
  }

  private send(request: ControlRequest, onReply?: (reply: ControlReply) => void): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject, ...(onReply === undefined ? {} : { onReply }) });
      this.socket.write(encodeLine(request));
    });
  }

  request(op: Op): Promise<unknown> {
    return this.send({ id: this.nextId++, op } as ControlRequest);
  }

  async exec(options: ExecOptions): Promise<ExecResult> {
    const id = this.nextId++;
    let exit: ExecResult | undefined;
    const done = this.send(
      {
        id,
        op: 'exec',
        argv: options.argv,
        env: options.env ?? [],
        ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
        ...(options.uid === undefined ? {} : { uid: options.uid }),
        ...(options.gid === undefined ? {} : { gid: options.gid }),
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
        stdin: options.stdin !== undefined,
        ...(options.waitForStart === true ? { waitForStart: true } : {}),
        ...(options.killWhenDone === true ? { killWhenDone: true } : {}),
        ...(options.tty === undefined ? {} : { tty: options.tty.size }),
      },
      (reply) => {
        if ('stream' in reply) (reply.stream === 'stdout' ? options.onStdout : options.onStderr)(Buffer.from(reply.data, 'base64'));
        else if ('exit' in reply) exit = reply.exit;
      },
    );
    options.tty?.resizes?.(({ rows, cols }) => this.socket.write(encodeLine({ id: this.nextId++, op: 'resize', exec: id, rows, cols })));
    options.signals?.((signal) => this.socket.write(encodeLine({ id: this.nextId++, op: 'signal', exec: id, signal })));
    if (options.stdin !== undefined) {
      const input = options.stdin;
      input.on('data', (chunk: Buffer | string) => {
        const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
        this.socket.write(encodeLine({ id: this.nextId++, op: 'stdin', exec: id, data: data.toString('base64') }));
        // A supervisor that holds back (the command is not reading) fills this socket: stop reading
        // stdin until it drains. Not at every chunk past node's 16 KiB mark: that halved the rate.
        if (this.socket.writableLength > STDIN_BUFFER) {
          input.pause();
          this.socket.once('drain', () => input.resume());
        }
      });
      options.stdin.on('end', () => this.socket.write(encodeLine({ id: this.nextId++, op: 'stdin_eof', exec: id })));
    }
    // With the exit in hand, a connection that closes before the reply (a workspace ending with its
    // command) has told us everything.
    const result = (await done.catch((err: unknown) => {
      if (exit === undefined) throw err;
      return null;
    })) as ExecResult | null;
    return exit ?? result ?? { code: null, signal: null, timedOut: false };
  }

  close(): void {
    this.socket.end();
  }
}
