/**
 * Hot reload: watch the policy file's directory (editors replace files by rename, which a watch on the
 * file itself misses), debounce, and swap in the new policy only when its content changed and it is
 * valid. An invalid edit never replaces a working policy: the old one stays in force and onInvalid is
 * told (the caller audits it as policy.reload). The swap is one reference assignment, so a decision
 * sees either the old policy or the new one, never a mix.
 */
import { createHash } from 'node:crypto';
import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { asMicroagentError, MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { parsePolicy } from './load.js';
import { policyReadError } from './read.js';
import type { Policy } from './policy.js';

export interface PolicyWatchHandlers {
  onReload(policy: Policy): void;
  onInvalid(error: MicroagentError): void;
}

export interface PolicyWatch {
  current(): Policy;
  close(): void;
}

const DEBOUNCE_MS = 50;

function contentHash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Loads `path` now (throwing if invalid) and keeps `current()` up to date with valid edits. */
export function watchPolicy(path: string, handlers: PolicyWatchHandlers, debounceMs = DEBOUNCE_MS): PolicyWatch {
  const log = childLog('policy');
  const file = resolve(path);
  let initialText: string;
  try {
    initialText = readFileSync(file, 'utf8');
  } catch (err) {
    throw policyReadError(path, err);
  }
  let policy = parsePolicy(initialText, path);
  let lastContent = contentHash(initialText);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let reloading: Promise<void> = Promise.resolve();
  let missing = false;

  const reload = async (): Promise<void> => {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // Still missing once the events have settled: deleted or moved away, not an editor's rename.
      // Said once per disappearance; the policy in force stays, as for an invalid edit.
      if (missing) return;
      missing = true;
      throw new MicroagentError('not_found', `policy file ${path} is gone; the policy loaded before stays in force`, {
        code: 'policy.file_missing',
        remediation: `put the policy back at ${path} (it is reloaded when it reappears)`,
      });
    }
    missing = false;
    const content = contentHash(text);
    if (closed || content === lastContent) return;
    lastContent = content;
    const next = parsePolicy(text, path);
    policy = next;
    log.info({ file: path, hash: next.hash }, 'policy reloaded');
    handlers.onReload(next);
  };

  const schedule = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      reloading = reloading.then(reload).catch((err: unknown) => {
        if (closed) return;
        log.warn({ file: path, err: asMicroagentError(err).message }, 'policy reload rejected; previous policy stays');
        handlers.onInvalid(asMicroagentError(err));
      });
    }, debounceMs);
  };

  const name = basename(file);
  const watcher: FSWatcher = watch(dirname(file), (_event, changed) => {
    if (changed === null || changed.toString() === name) schedule();
  });
  watcher.on('error', (err) => handlers.onInvalid(asMicroagentError(err)));

  return {
    current: () => policy,
    close: () => {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      watcher.close();
    },
  };
}
