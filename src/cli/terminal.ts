/**
 * The user's terminal, for a guest command run on one (`connect`, `exec -t`, `run -t`): whether there
 * is one, its size and changes for the guest's pseudo-terminal, and raw mode while the command runs,
 * so keys reach the guest as typed (Ctrl-C is a byte there, not a signal here).
 */
import type { ExecOptions } from '../vm/supervisor/control-client.js';
import { usageError, type CliContext } from './command.js';

export interface UserTerminal {
  readonly tty: NonNullable<ExecOptions['tty']>;
  /** The command's environment with the user's TERM, unless it sets one itself. */
  readonly env: string[];
  /** Raw mode until `restore`. */
  raw(): void;
  restore(): void;
}

/** Whether stdin and stdout are a terminal (and the output is for a human). */
export function hasTerminal(ctx: CliContext): boolean {
  return process.stdin.isTTY === true && process.stdout.isTTY === true && ctx.out.mode === 'ux';
}

/** `-t` asked for: the terminal, or a usage error when there is none. */
export function requireTerminal(ctx: CliContext, command: string, env: readonly string[]): UserTerminal {
  if (!hasTerminal(ctx)) throw usageError(`${command}: -t needs a terminal, and stdin or stdout is not one`, 'run it from a terminal, or drop -t (add -i to pass stdin)');
  return userTerminal(env);
}

export function userTerminal(env: readonly string[]): UserTerminal {
  const size = () => ({ rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 });
  return {
    tty: { size: size(), resizes: (report) => process.stdout.on('resize', () => report(size())) },
    env: env.some((e) => e.startsWith('TERM=')) ? [...env] : [`TERM=${process.env['TERM'] ?? 'xterm-256color'}`, ...env],
    raw: () => process.stdin.setRawMode(true),
    restore: () => process.stdin.setRawMode(false),
  };
}
