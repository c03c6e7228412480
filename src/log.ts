/**
 * Operational logs: pino, JSON, to stderr, level from MICROAGENT_LOG_LEVEL (default `warn`).
 * Never the audit log (src/audit) and never user-facing output (src/cli/output.ts); never a secret value.
 */
import { pino, type Logger } from 'pino';

const level = process.env['MICROAGENT_LOG_LEVEL'] ?? 'warn';

export const log: Logger = pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));

export function childLog(component: string): Logger {
  return log.child({ component });
}
