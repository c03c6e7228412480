/**
 * Operational logs: pino, JSON, to stderr, level from MICROAGENT_LOG_LEVEL (default `warn`).
 * Never the audit log (src/audit) and never user-facing output (src/cli/output.ts); never a secret value.
 * pino loads on the first record at or above the level, not at import: loading it costs about 25 ms,
 * which every CLI call and the supervisor's way to QEMU would pay although most never log.
 */
import { createRequire } from 'node:module';
import type { Logger } from 'pino';

/** pino's level numbers. */
const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const;
type LevelName = keyof typeof LEVELS;

export type LogFn = (objOrMessage: object | string, message?: string) => void;

export interface Log {
  readonly debug: LogFn;
  readonly info: LogFn;
  readonly warn: LogFn;
  readonly error: LogFn;
}

const level = chosenLevel(process.env['MICROAGENT_LOG_LEVEL']);
const threshold = LEVELS[level];
let root: Logger | null = null;

function chosenLevel(raw: string | undefined): LevelName {
  if (raw === undefined || raw === '') return 'warn';
  if (raw in LEVELS) return raw as LevelName;
  process.stderr.write(`microagent: ignoring MICROAGENT_LOG_LEVEL=${raw} (use one of ${Object.keys(LEVELS).join(', ')}); logging at warn\n`);
  return 'warn';
}

function rootLogger(): Logger {
  if (root === null) {
    const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
    root = pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  }
  return root;
}

export function childLog(component: string): Log {
  let child: Logger | null = null;
  const at = (name: 'debug' | 'info' | 'warn' | 'error'): LogFn => {
    if (LEVELS[name] < threshold) return () => undefined;
    return (objOrMessage, message) => {
      child ??= rootLogger().child({ component });
      if (typeof objOrMessage === 'string' || message === undefined) child[name](objOrMessage);
      else child[name](objOrMessage, message);
    };
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
