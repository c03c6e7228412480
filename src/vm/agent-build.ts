/**
 * Compiles the guest agent (src/vm/guest/*.c) with the system gcc as a static binary, cached under
 * `<stateDir>/guest/` by a hash of its sources, so a changed agent is rebuilt and an unchanged one is
 * not. It never downloads anything and never uses a prebuilt binary.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MicroagentError } from '../errors.js';
import { PACKAGE_ROOT } from '../paths.js';
import { findExecutable } from './host-tools.js';
import { makeDirs } from '../make-dirs.js';

const run = promisify(execFile);

/** The C sources ship in the package (package.json "files": src/vm/guest), next to dist/. */
export function guestSourceDir(): string {
  return join(PACKAGE_ROOT, 'src', 'vm', 'guest');
}

export async function buildGuestAgent(stateDir: string, sourceDir = guestSourceDir()): Promise<string> {
  let names: string[];
  try {
    names = readdirSync(sourceDir).filter((n) => n.endsWith('.c') || n.endsWith('.h')).sort();
  } catch (err) {
    throw new MicroagentError('not_found', `guest agent sources not found in ${sourceDir}`, {
      code: 'vm.agent_source', cause: err,
      remediation: 'Reinstall microagent; the package must include src/vm/guest.',
    });
  }
  const hash = createHash('sha256');
  for (const n of names) hash.update(n).update(readFileSync(join(sourceDir, n)));
  const dir = join(stateDir, 'guest');
  const out = join(dir, `microagent-guest-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(out)) return out;
  const gcc = findExecutable('gcc');
  if (gcc === undefined) {
    throw new MicroagentError('unsupported', 'gcc was not found: it is needed once to build the guest agent', {
      code: 'vm.gcc_missing',
      remediation: 'Install it: `apt-get install gcc libc6-dev` (or `microagent doctor --fix` as root).',
    });
  }
  makeDirs(dir);
  const tmp = `${out}.${process.pid}.tmp`;
  const sources = names.filter((n) => n.endsWith('.c')).map((n) => join(sourceDir, n));
  try {
    await run(gcc, ['-O2', '-Wall', '-static', '-o', tmp, ...sources]);
  } catch (err) {
    rmSync(tmp, { force: true });
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new MicroagentError('internal', `building the guest agent failed: ${stderr.slice(0, 2000)}`, {
      code: 'vm.agent_build', cause: err,
      remediation: 'Static linking needs libc6-dev (`apt-get install libc6-dev`); otherwise report this as a bug.',
    });
  }
  renameSync(tmp, out);
  return out;
}
