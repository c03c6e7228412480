/**
 * Host-side client of the guest agent: owns the Unix socket QEMU exposes for the virtio-serial
 * port, multiplexes command streams over it, and hands tunnel frames to the mediation tunnel.
 * It never interprets guest output and never lets a guest frame for an unknown stream reach a caller.
 */
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { StdinFlow } from './stdin-flow.js';
import { connectWithRetry } from './unix-connect.js';
import {
  decodeExit,
  decodeHello,
  encodeConfig,
  encodeExec,
  encodeFrame,
  GUEST_STREAM_BIT,
  MSG,
  OUTPUT_WINDOW,
  splitFrames,
  encodeTerminalSize,
  type ExecRequest,
  type ExitStatus,
  type Frame,
  type GuestConfig,
  type Hello,
  type TerminalSize,
} from './protocol.js';

const log = childLog('vm.agent');

export interface ExecHandle {
  /**
   * The command's output. Read both: like a child process's pipes, output nobody
   * takes holds the command once the guest's output window (1 MiB) is not credited.
   */
  readonly stdout: PassThrough;
  readonly stderr: PassThrough;
  /** Resolves when the command ended (EXIT); rejects when the guest refused it or the channel broke. */
  readonly exit: Promise<ExitStatus>;
  /**
   * Queues bytes for the command's stdin; they go out as the guest's window allows (stdin-flow.ts).
   * False once more than a MiB waits on the host: hold the source until `stdinDrained`.
   */
  writeStdin(data: Buffer | string): boolean;
  stdinDrained(listener: () => void): void;
  endStdin(): void;
  signal(signo: number): void;
  /** A terminal command's new window size (the guest's kernel tells the command with SIGWINCH). */
  resize(size: TerminalSize): void;
}

export interface ExecOutput {
  readonly status: ExitStatus;
  readonly stdout: string;
  readonly stderr: string;
}

/** Receives the tunnel frames (T_*) and the end of the channel; see mediation-tunnel.ts. */
export interface TunnelSink {
  onFrame(frame: Frame): void;
  onChannelClosed(): void;
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

interface Session {
  readonly stdout: PassThrough;
  readonly stderr: PassThrough;
  readonly stdin: StdinFlow;
  readonly settle: Pending;
  /** Output bytes received and not credited back yet (see creditOutput). */
  owed: number;
  waitingForDrain: boolean;
}

export class AgentClient {
  private buffered: Buffer = Buffer.alloc(0);
  private nextStream = 1;
  private readonly sessions = new Map<number, Session>();
  private readonly configs = new Map<number, Pending>();
  private hello: Hello | undefined;
  private helloWaiters: Array<(h: Hello) => void> = [];
  private closedError: MicroagentError | undefined;
  private readonly closeWaiters: Array<() => void> = [];
  tunnel: TunnelSink | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => log.debug({ err: err.message }, 'agent socket error'));
    socket.on('close', () =>
      this.fail(new MicroagentError('transient', 'the guest agent channel closed', {
        code: 'vm.agent_closed',
        remediation: 'The microVM stopped or was killed; check its serial log and start it again.',
      })),
    );
  }

  /** Connects to the socket QEMU listens on, retrying while QEMU is still creating it. */
  static connect(path: string, timeoutMs = 10_000): Promise<AgentClient> {
    return connectWithRetry(path, timeoutMs, (socket) => new AgentClient(socket), (cause) =>
      new MicroagentError('transient', `cannot connect to the guest agent socket ${path}`, {
        code: 'vm.agent_connect', cause,
        remediation: 'QEMU did not start its agent channel; check the serial log and that QEMU is running.',
      }),
    );
  }


  /** Resolves when the agent has booted the guest and serves commands (guestReady + execReady). */
  async ready(timeoutMs = 60_000): Promise<Hello> {
    if (this.hello) return this.hello;
    const got = new Promise<Hello>((resolve) => this.helloWaiters.push(resolve));
    const deadline = Date.now() + timeoutMs;
    // HELLO is sent at agent start and again for every PING, so a HELLO written before we connected
    // is never the only chance.
    while (!this.hello) {
      this.checkOpen();
      if (Date.now() > deadline) {
        throw new MicroagentError('transient', `the guest agent did not answer within ${timeoutMs} ms`, {
          code: 'vm.agent_timeout',
          remediation: 'Read the serial log in the run directory for kernel or agent errors; TCG boots take several seconds on a busy host.',
        });
      }
      this.send(MSG.PING, 0);
      await Promise.race([got, sleep(250)]);
    }
    return this.hello;
  }

  /** Applies CA, environment, hostname, DNS relay and mediation listeners; resolves on READY. */
  configure(cfg: GuestConfig): Promise<void> {
    this.checkOpen();
    const stream = this.allocateStream();
    const done = new Promise<void>((resolve, reject) =>
      this.configs.set(stream, { resolve: () => resolve(), reject }),
    );
    this.send(MSG.CONFIG, stream, encodeConfig(cfg));
    return done;
  }

  exec(req: ExecRequest): ExecHandle {
    this.checkOpen();
    if (req.argv.length === 0) {
      throw new MicroagentError('invalid', 'exec needs at least one argument (the command)', {
        remediation: 'Pass argv such as ["sh", "-c", "..."].',
      });
    }
    const stream = this.allocateStream();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let settle: Pending = { resolve: () => {}, reject: () => {} };
    const exit = new Promise<ExitStatus>((resolve, reject) => {
      settle = { resolve: (v) => resolve(v as ExitStatus), reject };
    });
    exit.catch(() => {}); // callers that only read output must not see an unhandled rejection
    // After EXIT, or once the channel is gone, these are no-ops: a caller racing the end of a
    // command (a hung-up client killing it) must not get an exception.
    const toCommand = (type: number, payload?: Buffer) => {
      if (this.sessions.has(stream)) this.sendFrame(type, stream, payload);
    };
    const stdin = new StdinFlow(toCommand);
    const handle: ExecHandle = {
      stdout,
      stderr,
      exit,
      writeStdin: (data) => stdin.write(Buffer.from(data)),
      stdinDrained: (listener) => stdin.drained(listener),
      endStdin: () => stdin.end(),
      signal: (signo) => {
        const p = Buffer.alloc(4);
        p.writeUInt32BE(signo);
        toCommand(MSG.SIGNAL, p);
      },
      resize: (size) => toCommand(MSG.RESIZE, encodeTerminalSize(size)),
    };
    this.sessions.set(stream, { stdout, stderr, stdin, settle, owed: 0, waitingForDrain: false });
    this.send(MSG.EXEC, stream, encodeExec(req));
    return handle;
  }

  /** Runs a command to completion and collects its output (for short commands). */
  async run(req: ExecRequest, stdin?: Buffer | string): Promise<ExecOutput> {
    const handle = this.exec(stdin === undefined ? req : { ...req, stdin: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    handle.stdout.on('data', (c: Buffer) => out.push(c));
    handle.stderr.on('data', (c: Buffer) => err.push(c));
    if (stdin !== undefined) {
      handle.writeStdin(stdin);
      handle.endStdin();
    }
    const status = await handle.exit;
    return { status, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
  }

  /** Asks the guest to sync, unmount and power off; resolves when the channel closes. */
  async halt(): Promise<void> {
    if (this.closedError) return;
    const closed = new Promise<void>((resolve) => this.closeWaiters.push(resolve));
    this.send(MSG.HALT, 0);
    await closed;
  }

  /** The graceful stop signal: the guest sends SIGTERM to every process and powers off once none is left. */
  requestStop(): void {
    if (!this.closedError) this.send(MSG.STOP, 0);
  }

  sendFrame(type: number, stream: number, payload?: Buffer): void {
    if (!this.closedError) this.send(type, stream, payload);
  }

  close(): void {
    this.socket.destroy();
  }

  private send(type: number, stream: number, payload?: Buffer): void {
    this.checkOpen();
    this.socket.write(encodeFrame(type, stream, payload));
  }

  private allocateStream(): number {
    const id = this.nextStream;
    this.nextStream = this.nextStream >= GUEST_STREAM_BIT - 1 ? 1 : this.nextStream + 1;
    return id;
  }

  private checkOpen(): void {
    if (this.closedError) throw this.closedError;
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const split = splitFrames(this.buffered);
    if (split.kind === 'error') {
      log.error({ reason: split.message }, 'guest agent sent a bad frame; closing the channel');
      this.socket.destroy();
      return;
    }
    this.buffered = Buffer.from(split.rest);
    for (const frame of split.frames) this.onFrame(frame);
  }

  private onFrame(frame: Frame): void {
    if (frame.type >= MSG.T_OPEN && frame.type <= MSG.T_CREDIT) return this.tunnel?.onFrame(frame);
    switch (frame.type) {
      case MSG.HELLO: {
        const hello = decodeHello(frame.payload);
        if (!hello) return log.warn('malformed HELLO from guest');
        this.hello = hello;
        for (const w of this.helloWaiters.splice(0)) w(hello);
        return;
      }
      case MSG.READY: {
        this.configs.get(frame.stream)?.resolve(undefined);
        this.configs.delete(frame.stream);
        return;
      }
      case MSG.STDIN_CREDIT:
        if (frame.payload.length === 4) this.sessions.get(frame.stream)?.stdin.credit(frame.payload.readUInt32BE(0));
        return;
      case MSG.STDOUT:
      case MSG.STDERR: {
        const s = this.sessions.get(frame.stream);
        if (!s) return;
        (frame.type === MSG.STDOUT ? s.stdout : s.stderr).write(Buffer.from(frame.payload));
        s.owed += frame.payload.length;
        this.creditOutput(frame.stream, s);
        return;
      }
      case MSG.EXIT: {
        const s = this.sessions.get(frame.stream);
        if (!s) return;
        this.sessions.delete(frame.stream);
        const status = decodeExit(frame.payload);
        s.stdout.end();
        s.stderr.end();
        if (status) s.settle.resolve(status);
        else s.settle.reject(new MicroagentError('internal', 'malformed EXIT frame from the guest agent'));
        return;
      }
      case MSG.ERROR:
        return this.onGuestError(frame.stream, frame.payload.toString('utf8'));
      case MSG.HALTING:
        return;
      default:
        log.warn({ type: frame.type }, 'unknown frame type from guest agent');
    }
  }

  /**
   * Gives the guest back its output window for what the command's reader has taken: while a reader
   * holds its stream (paused, or not keeping up), nothing is credited, and after OUTPUT_WINDOW bytes
   * the guest stops reading the command's pipes. Credits go out per quarter window.
   */
  private creditOutput(stream: number, s: Session): void {
    if (s.stdout.writableNeedDrain || s.stderr.writableNeedDrain) {
      if (s.waitingForDrain) return;
      s.waitingForDrain = true;
      const retry = () => {
        s.waitingForDrain = false;
        if (this.sessions.get(stream) === s) this.creditOutput(stream, s);
      };
      (s.stdout.writableNeedDrain ? s.stdout : s.stderr).once('drain', retry);
      return;
    }
    if (s.owed < OUTPUT_WINDOW / 4) return;
    const n = Buffer.alloc(4);
    n.writeUInt32BE(s.owed);
    s.owed = 0;
    this.sendFrame(MSG.OUTPUT_CREDIT, stream, n);
  }

  private onGuestError(stream: number, message: string): void {
    const err = new MicroagentError('invalid', `guest agent: ${message}`, {
      code: 'vm.agent_refused',
      remediation: 'The guest agent rejected the request; check the command and its arguments.',
    });
    const s = this.sessions.get(stream);
    const c = this.configs.get(stream);
    if (s) {
      this.sessions.delete(stream);
      s.stdout.end();
      s.stderr.end();
      s.settle.reject(err);
    } else if (c) {
      this.configs.delete(stream);
      c.reject(err);
    } else {
      log.warn({ stream, message }, 'guest agent error');
    }
  }

  private fail(err: MicroagentError): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const s of this.sessions.values()) {
      s.stdout.end();
      s.stderr.end();
      s.settle.reject(err);
    }
    this.sessions.clear();
    for (const c of this.configs.values()) c.reject(err);
    this.configs.clear();
    for (const w of this.closeWaiters.splice(0)) w();
    this.tunnel?.onChannelClosed();
  }
}
