/**
 * Host executables (QEMU, gcc, socat, mke2fs, dpkg-deb): finding them on PATH and in sbin (read-only:
 * it never runs what it finds), and turning a failed run into a typed error.
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

/**
 * Administrative tools (mke2fs, resize2fs, depmod) live in sbin, which Debian leaves out of a
 * non-root user's PATH: they are searched there too, after the caller's own PATH.
 */
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** PATH with the sbin directories it lacks appended. */
export function hostToolPath(pathVar = process.env['PATH'] ?? ''): string {
  const dirs = pathVar.split(delimiter).filter((dir) => dir !== '');
  return [...dirs, ...SBIN_DIRS.filter((dir) => !dirs.includes(dir))].join(delimiter);
}

/** What to spawn for a host tool: its absolute path, or the bare name (so spawning reports ENOENT). */
export function hostTool(name: string): string {
  return findExecutable(name) ?? name;
}

/** Absolute path of an executable on PATH (sbin included), or undefined. */
export function findExecutable(name: string, pathVar = hostToolPath()): string | undefined {
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
