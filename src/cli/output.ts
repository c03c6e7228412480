/**
 * User-facing output, kept apart from operational logs (src/log.ts, stderr JSON).
 * - UX mode (default): human text and tables on stdout, errors on stderr with their remediation.
 * - AX mode (`--mode=ax` or MICROAGENT_MODE=ax): stdout carries exactly one JSON document per command,
 *   `{"ok":true,"result":...}` or `{"ok":false,"error":{kind,message,remediation,retryable,correlation_id}}`.
 * - `--json`: the bare result as JSON, for scripts.
 */
import { randomUUID } from 'node:crypto';
import type { MicroagentError } from '../errors.js';

export type OutputMode = 'ux' | 'ax' | 'json';

export interface Output {
  readonly mode: OutputMode;
  /** Human progress or streamed text; silent in AX and JSON modes (stdout must stay one document). */
  info(line: string): void;
  /** Streamed data that scripts read too (audit tail lines); printed in every mode but AX. */
  stream(line: string): void;
  warn(line: string): void;
}

export function createOutput(mode: OutputMode): Output {
  return {
    mode,
    info: (line) => {
      if (mode === 'ux') process.stdout.write(line + '\n');
    },
    stream: (line) => {
      if (mode !== 'ax') process.stdout.write(line + '\n');
    },
    warn: (line) => {
      process.stderr.write(`warning: ${line}\n`);
    },
  };
}

export function printResult(mode: OutputMode, result: unknown, human: string | undefined): void {
  if (mode === 'ax') process.stdout.write(JSON.stringify({ ok: true, result }) + '\n');
  else if (mode === 'json') process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else if (human !== undefined && human !== '') process.stdout.write(human.endsWith('\n') ? human : human + '\n');
}

// Control characters (C0, DEL, C1), bidirectional overrides and the backslash that starts an escape.
const UNPRINTABLE_CHAR = /[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const UNPRINTABLE = new RegExp(UNPRINTABLE_CHAR.source, 'g');
const UNPRINTABLE_BUT_LINES = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(c: string): string {
  if (c === '\\') return '\\\\';
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * Text from an audit log or a guest (a DNS name, a path) as a terminal shows it harmlessly: control
 * characters as `\xNN` escapes, so a recorded name cannot set the terminal's title, colour or cursor,
 * or start a row of its own in a table. `--json` output keeps the exact text.
 */
export function printable(text: string): string {
  return UNPRINTABLE_CHAR.test(text) ? text.replace(UNPRINTABLE, escapeChar) : text;
}

export function printError(mode: OutputMode, err: MicroagentError): void {
  if (mode === 'ax') {
    const error = {
      kind: err.kind,
      message: err.message,
      remediation: err.remediation,
      retryable: err.retryable,
      correlation_id: randomUUID(),
    };
    process.stdout.write(JSON.stringify({ ok: false, error }) + '\n');
    return;
  }
  // A message may quote what it could not read (a log line, a name); its own lines stay lines.
  process.stderr.write(`error: ${err.message.replace(UNPRINTABLE_BUT_LINES, escapeChar)}\n`);
  if (err.remediation) process.stderr.write(`  fix: ${err.remediation.replace(UNPRINTABLE_BUT_LINES, escapeChar)}\n`);
}

/** Exit codes (docs/cli.md): 0 ok, 1 failed, 2 usage, 75 transient. */
export function exitCodeFor(err: MicroagentError): number {
  if (err.code === 'usage') return 2;
  if (err.retryable) return 75;
  return 1;
}

/** Left-aligned text table for UX mode. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  // A loop, not Math.max(...column): an audit query can list more rows than a call takes arguments.
  const widths = header.map((h) => h.length);
  for (const row of rows) for (let i = 0; i < widths.length; i++) widths[i] = Math.max(widths[i] as number, (row[i] ?? '').length);
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
