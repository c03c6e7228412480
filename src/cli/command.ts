/**
 * The contract between the CLI dispatcher (main.ts) and each command module under commands/.
 * A command parses its own arguments with `parseCommandArgs`, calls the library, and returns a result:
 * plain data for `--json`/AX mode and a human rendering for UX mode. Commands hold no logic of their own.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;
import { MicroagentError } from '../errors.js';
import type { Output } from './output.js';

export interface CliContext {
  readonly out: Output;
  /** From --state-dir, MICROAGENT_STATE_DIR, or ~/.microagent. */
  readonly stateDir: string;
  /** Resolves when the user asks to stop (SIGINT/SIGTERM); long-running commands watch it. */
  readonly interrupted: Promise<NodeJS.Signals>;
}

export interface CommandResult {
  /** The machine-readable result (`--json` prints it bare, AX mode wraps it in {ok, result}). */
  readonly result: unknown;
  /** UX-mode text; omitted when the command already streamed its human output. */
  readonly human?: string;
  /** Non-zero for "ran fine but the answer is failure" (a failing policy test, a broken chain). */
  readonly exitCode?: number;
}

export interface Command {
  /** Full command path, e.g. `policy check`. */
  readonly name: string;
  readonly summary: string;
  /** One line after `microagent NAME`, e.g. `FILE... [--json]`. */
  readonly usage: string;
  run(args: readonly string[], ctx: CliContext): Promise<CommandResult>;
}

/** What `run` and `exec` say on stderr when the guest killed the command because --timeout ran out. */
export function timedOutWarning(seconds: number): string {
  return `the command was still running after --timeout ${seconds} s: the guest killed it`;
}

/** A usage error: exit code 2 in every output mode. */
export function usageError(message: string, remediation: string): MicroagentError {
  return new MicroagentError('invalid', message, { code: 'usage', remediation });
}

/** util.parseArgs, strict, with parse failures turned into usage errors that name the command. */
export function parseCommandArgs<T extends OptionsConfig>(
  command: Pick<Command, 'name' | 'usage'>,
  args: readonly string[],
  options: T,
  allowPositionals = true,
): ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: boolean; strict: true }>> {
  try {
    return parseArgs({ args: [...args], options, allowPositionals, strict: true });
  } catch (err) {
    const usage = `usage: microagent ${command.name} ${command.usage}`;
    const unknown = /^Unknown option '(-[^']*)'/.exec((err as Error).message)?.[1];
    if (unknown !== undefined) {
      const near = closest(unknown, Object.keys(options).map((name) => `--${name}`));
      const asArgument = allowPositionals ? `to pass "${unknown}" on as an argument, put it after "--"; ` : '';
      throw usageError(`${command.name}: unknown option "${unknown}"`, `${near === null ? '' : `did you mean "${near}"? `}${asArgument}${usage}`);
    }
    throw usageError(`${command.name}: ${(err as Error).message}`, usage);
  }
}

/** The candidate within two edits of `word` (one for short words), for a "did you mean"; null if none or a tie. */
export function closest(word: string, candidates: readonly string[]): string | null {
  const limit = word.length <= 4 ? 1 : 2;
  const scored = candidates.map((c) => ({ c, d: editDistance(word, c) })).filter((x) => x.d <= limit).sort((a, b) => a.d - b.d);
  const [best, next] = scored;
  return best === undefined || (next !== undefined && next.d === best.d) ? null : best.c;
}

/** Levenshtein distance with adjacent transpositions counted as one edit ("strat" -> "start"). */
function editDistance(a: string, b: string): number {
  const width = b.length + 1;
  const d = new Uint16Array((a.length + 1) * width);
  const at = (i: number, j: number) => d[i * width + j] as number;
  for (let i = 0; i <= a.length; i++) d[i * width] = i;
  for (let j = 0; j <= b.length; j++) d[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      d[i * width + j] = best;
    }
  }
  return at(a.length, b.length);
}

