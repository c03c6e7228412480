/**
 * Files that ship with the package (policies, guest agent and kernel sources), found from this module
 * so they resolve the same from src/ (tests), dist/ (the library and CLI) and dist/supervisor/ (the
 * supervisor's bundle, which holds this module's code at another depth).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: the nearest directory above this module that holds package.json. */
export const PACKAGE_ROOT = packageRoot(dirname(fileURLToPath(import.meta.url)));

function packageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`microagent: no package.json above ${from}`);
  }
}

export const SHIPPED_POLICIES_DIR = join(PACKAGE_ROOT, 'policies');
export const DEFAULT_POLICY_FILE = join(SHIPPED_POLICIES_DIR, 'guarded.yaml');
