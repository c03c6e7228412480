/**
 * The control protocol between the CLI and a workspace's supervisor: JSON Lines over the workspace's
 * control Unix socket (mode 0600, inside the 0700 workspace directory, so only its owner can speak it).
 * One request per line with an `id`; replies and exec stream events carry the same `id`.
 * Pure: encoding and line splitting only, so both ends are testable without sockets.
 */
import type { ErrorKind } from '../../errors.js';
import type { TerminalSize } from '../protocol.js';

export type ControlRequest =
  | { readonly id: number; readonly op: 'status' }
  | { readonly id: number; readonly op: 'stats' }
  | { readonly id: number; readonly op: 'halt' | 'pause' | 'resume' | 'stop' | 'kill' | 'quarantine' }
  | {
      readonly id: number;
      readonly op: 'exec';
      readonly argv: readonly string[];
      readonly env: readonly string[];
      readonly cwd?: string;
      readonly uid?: number;
      readonly gid?: number;
      readonly timeoutMs?: number;
      readonly stdin: boolean;
      /** Sent while the workspace starts: run once it is running, or fail with the start's error. */
      readonly waitForStart?: boolean;
      /** Kill the workspace once this command has exited (`run`'s throwaway workspace). */
      readonly killWhenDone?: boolean;
      /** Run on a terminal of this window size (its output, stderr too, comes back as stdout). */
      readonly tty?: TerminalSize;
    }
  | { readonly id: number; readonly op: 'stdin'; readonly exec: number; readonly data: string }
  | { readonly id: number; readonly op: 'stdin_eof'; readonly exec: number }
  /** A terminal command's window changed. Like stdin, never answered. */
  | { readonly id: number; readonly op: 'resize'; readonly exec: number; readonly rows: number; readonly cols: number }
  /** A signal the client received (Ctrl-C), for the command's process group. Like stdin, never answered. */
  | { readonly id: number; readonly op: 'signal'; readonly exec: number; readonly signal: string };

/** The requests that feed a running command and get no reply of their own. */
export const COMMAND_INPUT_OPS: ReadonlySet<ControlRequest['op']> = new Set(['stdin', 'stdin_eof', 'resize', 'signal']);

/** The signals a client may pass on to its command: the ones a user sends a foreground program, and SIGPIPE when the reader of its output went away (`exec ... | head`). */
export const FORWARDED_SIGNALS: ReadonlySet<string> = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGPIPE']);

export interface ControlError {
  readonly kind: ErrorKind;
  readonly code: string;
  readonly message: string;
  readonly remediation: string;
}

export type ControlReply =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: ControlError }
  /** Exec output, base64 so any bytes survive JSON. */
  | { readonly id: number; readonly stream: 'stdout' | 'stderr'; readonly data: string }
  | { readonly id: number; readonly exit: CommandExit };

/** How a command ended; `timedOut`: the guest killed it when its timeout ran out. */
export interface CommandExit {
  readonly code: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
}

export function encodeLine(message: ControlRequest | ControlReply): string {
  return JSON.stringify(message) + '\n';
}

/** Splits a chunk stream into complete lines; returns the unterminated remainder to prepend next time. */
export function splitLines(pending: string, chunk: string): { lines: string[]; rest: string } {
  const text = pending + chunk;
  const parts = text.split('\n');
  const rest = parts.pop() ?? '';
  return { lines: parts.filter((l) => l !== ''), rest };
}
