/**
 * Host executables (QEMU, gcc, socat, mke2fs, dpkg-deb): finding them on PATH (read-only: it never
 * runs what it finds), and turning a failed run into a typed error.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { MicroagentError } from '../errors.js';

/** How much of a failed tool's stderr an error quotes: its last lines say why, the rest is noise. */
const QUOTED_LINES = 6;

/**
 * A host tool that failed, as a typed error quoting the end of its stderr. A full disk, which the
 * tool's message is the only sign of, is transient with its fix; anything else is `internal`.
 */
export function toolFailure(what: string, stderr: string, code: string, where: string, cause?: unknown): MicroagentError {
  const said = stderr.trim().split('\n').slice(-QUOTED_LINES).join('\n');
  if (/No space left on device/i.test(stderr)) {
    return new MicroagentError('transient', `${what} failed: no space left on the device (${where})`, {
      code, remediation: `free space on the filesystem of ${where} and retry`, cause,
    });
  }
  return new MicroagentError('internal', `${what} failed: ${said}`, {
    code, remediation: 're-run with MICROAGENT_LOG_LEVEL=debug; report it if the tool\'s own message does not explain it', cause,
  });
}

/** Absolute path of an executable on PATH, or undefined. */
export function findExecutable(name: string, pathVar = process.env['PATH'] ?? ''): string | undefined {
  for (const dir of pathVar.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
