/**
 * `mkdir -p`, without Node's own recursive mkdir: where mkdir answers ENOENT although the parent
 * exists (procfs: `--ca-dir /proc/x`), Node retries the parent and the child forever at full CPU, and
 * the synchronous form never lets a signal in. Here each directory is tried at most twice.
 * Synchronous for every caller: it runs at start-up and when a workspace is made, never per request.
 */
import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { MicroagentError } from './errors.js';

/** mkdir that reports whether it created path (false: a directory was already there). */
function tryMkdir(path: string, mode: number, parentKnown: boolean): boolean | 'no_parent' {
  try {
    mkdirSync(path, { mode });
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && statSync(path).isDirectory()) return false;
    if (code !== 'ENOENT' || dirname(path) === path) throw err;
    if (!parentKnown) return 'no_parent';
    throw new MicroagentError('invalid', `cannot create directory ${path}: its filesystem refuses new directories (ENOENT)`, {
      code: 'host.mkdir', remediation: 'choose a directory on an ordinary, writable filesystem', cause: err,
    });
  }
}

/** Creates path and its missing parents with mode; returns the first directory it created, as Node does. */
export function makeDirs(path: string, mode = 0o777): string | undefined {
  const made = tryMkdir(path, mode, false);
  if (made !== 'no_parent') return made ? path : undefined;
  const first = makeDirs(dirname(path), mode);
  return tryMkdir(path, mode, true) ? (first ?? path) : first;
}
