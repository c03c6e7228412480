/**
 * Files that ship with the package (policies, guest agent sources), found relative to this module so
 * they resolve the same from src/ (tests) and dist/ (the installed CLI).
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The package root: one level above src/ or dist/. */
export const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));

export const SHIPPED_POLICIES_DIR = join(PACKAGE_ROOT, 'policies');
export const DEFAULT_POLICY_FILE = join(SHIPPED_POLICIES_DIR, 'guarded.yaml');
