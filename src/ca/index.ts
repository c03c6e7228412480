/**
 * Public API of the per-workspace certificate authority (see docs/ca.md).
 * The proxy opens one CA per workspace (or per `microagent proxy` instance) and asks it for a TLS
 * context only after policy allowed the name; nothing here decides policy.
 */
import { MicroagentError } from '../errors.js';
import { CertificateAuthority, type AuthorityOptions } from './authority.js';
import { DEFAULT_CA_VALIDITY_DAYS, readCa, writeNewCa, writeRotatedCa } from './store.js';

export { CertificateAuthority, DEFAULT_CACHE_SIZE, DEFAULT_LEAF_VALIDITY_DAYS } from './authority.js';
export type { AuthorityOptions, CaStats, SniCallback } from './authority.js';
export { exportCa, writeCaExport, CA_EXPORT_FORMATS } from './export.js';
export type { CaExportFormat, CaExportOptions } from './export.js';
export { parseLeafName, type LeafName } from './names.js';
export { CA_CERT_FILE, CA_KEY_FILE, CA_PREVIOUS_CERT_FILE, DEFAULT_CA_VALIDITY_DAYS } from './store.js';

export interface CreateCaOptions extends AuthorityOptions {
  readonly dir: string;
  readonly workspace: string;
  /** CA certificate lifetime. Default 365 days. */
  readonly validityDays?: number;
}

export interface LoadCaOptions extends AuthorityOptions {
  readonly dir: string;
}

export interface RotateCaOptions extends AuthorityOptions {
  readonly dir: string;
  /** Default: the workspace of the CA being replaced. */
  readonly workspace?: string;
  readonly validityDays?: number;
}

/** Creates a new CA in `dir` (mode 0700) and opens it; `conflict` if one is already there. */
export async function createCa(options: CreateCaOptions): Promise<CertificateAuthority> {
  const now = (options.now ?? Date.now)();
  await writeNewCa(options.dir, options.workspace, options.validityDays ?? DEFAULT_CA_VALIDITY_DAYS, now);
  return loadCa(options);
}

/** Opens the CA in `dir`: `not_found` when there is none, `invalid` when its files are unsafe or broken. */
export async function loadCa(options: LoadCaOptions): Promise<CertificateAuthority> {
  return CertificateAuthority.open(await readCa(options.dir), options);
}

/** Opens the CA in `dir`, creating it for `workspace` first if there is none. */
export async function loadOrCreateCa(options: CreateCaOptions): Promise<CertificateAuthority> {
  let ca: CertificateAuthority;
  try {
    ca = await loadCa(options);
  } catch (err) {
    if (!(err instanceof MicroagentError && err.code === 'ca.not_found')) throw err;
    try {
      ca = await createCa(options);
    } catch (createErr) {
      // Another process created it between our load and create: use theirs.
      if (!(createErr instanceof MicroagentError && createErr.code === 'ca.exists')) throw createErr;
      ca = await loadCa(options);
    }
  }
  if (ca.workspace !== options.workspace) {
    ca.close();
    throw new MicroagentError('conflict', `the CA in ${options.dir} belongs to workspace "${ca.workspace}", not "${options.workspace}"`, {
      code: 'ca.workspace_mismatch',
      remediation: 'give each workspace its own CA directory',
    });
  }
  return ca;
}

/**
 * Replaces the CA in `dir` with a new key and certificate; the old certificate stays in
 * ca.prev.pem so guests can trust both while they switch. A CA whose files are unreadable can be
 * rotated too (that is the repair for a lost or exposed key) as long as a workspace is known.
 */
export async function rotateCa(options: RotateCaOptions): Promise<CertificateAuthority> {
  let workspace = options.workspace;
  if (workspace === undefined) {
    const old = await loadCa({ dir: options.dir }).catch((err: unknown) => {
      throw new MicroagentError('invalid', `cannot tell which workspace the CA in ${options.dir} belongs to`, {
        code: 'ca.rotate_needs_workspace',
        remediation: 'pass --workspace NAME',
        cause: err,
      });
    });
    workspace = old.workspace;
    old.close();
  }
  const now = (options.now ?? Date.now)();
  await writeRotatedCa(options.dir, workspace, options.validityDays ?? DEFAULT_CA_VALIDITY_DAYS, now);
  return loadCa(options);
}
