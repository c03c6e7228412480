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
  process.stderr.write(`error: ${err.message}\n`);
  if (err.remediation) process.stderr.write(`  fix: ${err.remediation}\n`);
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
