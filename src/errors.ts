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

/** The host's own failures, which no code path of microagent can prevent: what each means and what to do. */
const HOST_ERRNO: Readonly<Record<string, { readonly kind: ErrorKind; readonly what: string; readonly fix: (where: string) => string }>> = {
  ENOSPC: { kind: 'transient', what: 'no space left on the device', fix: (where) => `free space on the filesystem${where} and retry` },
  EDQUOT: { kind: 'transient', what: 'disk quota exceeded', fix: (where) => `free space in your quota${where} and retry` },
  EROFS: { kind: 'invalid', what: 'read-only file system', fix: (where) => `use a writable location${where} (e.g. --state-dir DIR)` },
  EACCES: { kind: 'invalid', what: 'permission denied', fix: (where) => `check the permissions${where}, or run as a user who may use it` },
  EPERM: { kind: 'invalid', what: 'operation not permitted', fix: (where) => `check the permissions${where}, or run as a user who may use it` },
  EMFILE: { kind: 'transient', what: 'too many open files', fix: () => 'raise the open-file limit (ulimit -n) and retry' },
  ENFILE: { kind: 'transient', what: 'too many open files on this host', fix: () => 'close other programs or raise fs.file-max, and retry' },
};

/**
 * Wraps anything thrown into a MicroagentError, keeping typed errors as they are. A raw error from the
 * host (a full disk, a read-only or forbidden path) gets its meaning and fix; anything else is a bug.
 */
export function asMicroagentError(err: unknown): MicroagentError {
  if (err instanceof MicroagentError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const errno = err as NodeJS.ErrnoException;
  const host = typeof errno?.code === 'string' ? HOST_ERRNO[errno.code] : undefined;
  if (host !== undefined) {
    const path = typeof errno.path === 'string' ? errno.path : undefined;
    return new MicroagentError(host.kind, `${host.what}${path === undefined ? '' : `: ${path}`} (${errno.syscall ?? 'system call'} ${errno.code})`, {
      code: `host.${(errno.code as string).toLowerCase()}`,
      remediation: host.fix(path === undefined ? '' : ` of ${path}`),
      cause: err,
    });
  }
  return new MicroagentError('internal', message, {
    cause: err,
    remediation: 'This is a bug in microagent; re-run with MICROAGENT_LOG_LEVEL=debug and report it.',
  });
}
