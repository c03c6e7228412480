/**
 * Typed errors shared by every module. An error says what went wrong (`message`), how to fix it
 * (`remediation`) and which of a fixed set of kinds it is (`kind`), set where the error is raised and
 * never guessed from message text. The CLI maps `kind` to exit codes and AX-mode JSON; the proxy maps
 * it to its typed 403/502 answers.
 */

/** The fixed, documented set of error kinds (docs/cli.md). */
export const ERROR_KINDS = [
  'not_found',
  'conflict',
  'invalid',
  'policy_denied',
  'unsupported',
  'transient',
  'internal',
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

export interface ErrorDetails {
  /** How to fix it, phrased as an instruction to the user. */
  readonly remediation?: string;
  /** A stable, module-specific code such as `policy.parse` or `audit.write_failed`. */
  readonly code?: string;
  /** True when trying again later may succeed (exit code 75 in the CLI). */
  readonly retryable?: boolean;
  readonly cause?: unknown;
}

export class MicroagentError extends Error {
  readonly kind: ErrorKind;
  readonly remediation: string;
  readonly code: string;
  readonly retryable: boolean;

  constructor(kind: ErrorKind, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'MicroagentError';
    this.kind = kind;
    this.remediation = details.remediation ?? '';
    this.code = details.code ?? kind;
    this.retryable = details.retryable ?? kind === 'transient';
  }
}

export function isMicroagentError(err: unknown): err is MicroagentError {
  return err instanceof MicroagentError;
}

/** Wraps anything thrown into a MicroagentError, keeping typed errors as they are. */
export function asMicroagentError(err: unknown): MicroagentError {
  if (err instanceof MicroagentError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MicroagentError('internal', message, {
    cause: err,
    remediation: 'This is a bug in microagent; re-run with MICROAGENT_LOG_LEVEL=debug and report it.',
  });
}
