/**
 * Reading a policy file's text, with the one error every caller gives for a file that cannot be read.
 * Apart from load.ts so a caller that only needs the bytes does not load the YAML parser.
 */
import { readFile } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';

export async function readPolicyFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw policyReadError(path, err);
  }
}

/** Why a policy file could not be read, and what to do: for a reader that must read synchronously. */
export function policyReadError(path: string, err: unknown): MicroagentError {
  const code = (err as NodeJS.ErrnoException).code;
  return new MicroagentError(code === 'ENOENT' ? 'not_found' : 'invalid', `cannot read policy ${path}: ${(err as Error).message}`, {
    code: 'policy.read',
    remediation: code === 'ENOENT' ? 'check the path, or start from policies/guarded.yaml' : 'make the file readable',
    cause: err,
  });
}
