/**
 * The policy a workspace is created with: read once, checked whole, and copied into the workspace
 * from the very bytes that were checked. A check that passed is remembered under the state directory,
 * by the SHA-256 of those bytes and microagent's version, so the next workspace created with the same
 * policy skips the YAML parser and compiler (~80 ms: most of `create`, on the way to every `run`'s
 * boot). What is remembered only lets a create go ahead and names the policy's mode and hash; the
 * supervisor compiles the workspace's copy before it enforces anything, and refuses to start on an
 * invalid one.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { childLog } from '../../log.js';
import { PACKAGE_ROOT } from '../../paths.js';
import { readPolicyFile } from '../../policy/read.js';
import { MODES, type Mode } from '../../policy/types.js';
import { writeAtomic } from './store.js';
import { makeDirs } from '../../make-dirs.js';

const log = childLog('workspace');

export interface CheckedPolicy {
  /** The bytes that were checked: what the workspace gets. */
  readonly text: Buffer;
  readonly mode: Mode;
  /** The compiled policy's canonical hash (Policy.hash). */
  readonly hash: string;
}

interface Remembered {
  readonly version: string;
  readonly mode: Mode;
  readonly hash: string;
}

let packageVersion: string | undefined;
function microagentVersion(): string {
  packageVersion ??= (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  return packageVersion;
}

/** Throws the loader's `policy.read` or `policy.invalid` error when the file cannot be used. */
export async function checkPolicyFile(stateDir: string, file: string): Promise<CheckedPolicy> {
  const text = await readPolicyFile(file);
  const dir = join(stateDir, 'policy-checks');
  const entry = join(dir, `${createHash('sha256').update(text).digest('hex')}.json`);
  const version = microagentVersion();
  const remembered = await readFile(entry, 'utf8').then(parseRemembered).catch(() => null);
  if (remembered !== null && remembered.version === version) return { text, mode: remembered.mode, hash: remembered.hash };

  // The YAML parser and compiler load only here: a policy seen before never needs them.
  const { parsePolicy } = await import('../../policy/load.js');
  const policy = parsePolicy(text.toString('utf8'), file);
  const record: Remembered = { version, mode: policy.mode, hash: policy.hash };
  try {
    makeDirs(dir, 0o700);
    await writeAtomic(entry, JSON.stringify(record));
  } catch (err) {
    log.debug({ err, entry }, 'could not remember the policy check; the next create checks it again');
  }
  return { text, mode: policy.mode, hash: policy.hash };
}

function parseRemembered(json: string): Remembered | null {
  const value = JSON.parse(json) as Partial<Remembered>;
  const valid = typeof value.version === 'string' && MODES.includes(value.mode as Mode) && typeof value.hash === 'string';
  return valid ? (value as Remembered) : null;
}
