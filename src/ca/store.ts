/**
 * The CA directory on disk: ca.key.pem (PKCS#8, 0600), ca.pem (0644), ca.prev.pem (the certificate
 * a rotation replaced, kept so guests can trust both during the transition), in a 0700 directory.
 * It creates, reads and rotates those files and enforces their modes; it never logs key material,
 * never follows a symlink to the key, and never builds a path from anything but the three fixed names.
 */
import { constants } from 'node:fs';
import { chmod, link, lstat, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { makeDirs } from '../make-dirs.js';
import {
  createCaCertificate,
  exportPkcs8Pem,
  generateEcKeyPair,
  importEcPrivateKey,
  readCaCertificate,
  type CaCertificateFacts,
  type EcPrivateKey,
} from './x509.js';

export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca.key.pem';
export const CA_PREVIOUS_CERT_FILE = 'ca.prev.pem';
export const DEFAULT_CA_VALIDITY_DAYS = 365;

const DIR_MODE = 0o700;
const KEY_MODE = 0o600;
const CERT_MODE = 0o644;
// The subject CN is capped at 64 characters and "microagent CA " takes 14 of them.
const WORKSPACE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$/;

/** What a loaded CA directory holds, checked: the key matches the certificate, which is a CA. */
export interface CaMaterial {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly certPem: string;
  readonly cert: CaCertificateFacts;
  readonly key: EcPrivateKey;
  readonly workspace: string;
}

export function validateWorkspaceName(workspace: string): void {
  if (!WORKSPACE_NAME.test(workspace)) {
    throw new MicroagentError('invalid', `invalid workspace name ${JSON.stringify(workspace)} for a CA`, {
      code: 'ca.invalid_workspace',
      remediation: 'use 1-50 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit',
    });
  }
}

export function validateValidityDays(days: number): void {
  if (!Number.isInteger(days) || days < 1 || days > 3650) {
    throw new MicroagentError('invalid', `invalid CA validity ${days} days`, {
      code: 'ca.invalid_validity',
      remediation: 'give a whole number of days between 1 and 3650',
    });
  }
}

function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/** Writes a temporary sibling file with its final mode, flushed to disk; returns its path. */
async function writeTemp(finalPath: string, data: string, mode: number): Promise<string> {
  const tmp = `${finalPath}.tmp-${randomBytes(6).toString('hex')}`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.writeFile(data);
    // The umask may have narrowed the mode: the cert must stay readable, the key must stay 0600.
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Places a file without ever replacing an existing one: link(2) fails with EEXIST atomically. */
async function placeExclusively(finalPath: string, data: string, mode: number): Promise<void> {
  const tmp = await writeTemp(finalPath, data, mode);
  try {
    await link(tmp, finalPath);
  } catch (err) {
    if (isErrno(err, 'EEXIST')) throw conflictError(finalPath);
    throw err;
  } finally {
    await unlink(tmp);
  }
}

function conflictError(path: string): MicroagentError {
  return new MicroagentError('conflict', `a CA already exists at ${path}; refusing to overwrite it`, {
    code: 'ca.exists',
    remediation: 'use it as it is, run "microagent ca rotate" to replace it, or pick another --dir',
  });
}

async function newCaFiles(workspace: string, validityDays: number, now: number): Promise<{ keyPem: string; certPem: string }> {
  const keys = await generateEcKeyPair(true);
  return { keyPem: await exportPkcs8Pem(keys.privateKey), certPem: await createCaCertificate({ keys, workspace, validityDays, now }) };
}

async function prepareDir(dir: string): Promise<void> {
  makeDirs(dir, DIR_MODE);
  await chmod(dir, DIR_MODE);
}

/** Creates a new CA in `dir`; throws `conflict` if either file already exists there. */
export async function writeNewCa(dir: string, workspace: string, validityDays: number, now: number): Promise<void> {
  validateWorkspaceName(workspace);
  validateValidityDays(validityDays);
  await prepareDir(dir);
  for (const file of [CA_KEY_FILE, CA_CERT_FILE]) {
    if (await exists(join(dir, file))) throw conflictError(join(dir, file));
  }
  const { keyPem, certPem } = await newCaFiles(workspace, validityDays, now);
  await placeExclusively(join(dir, CA_KEY_FILE), keyPem, KEY_MODE);
  await placeExclusively(join(dir, CA_CERT_FILE), certPem, CERT_MODE);
  await syncDir(dir);
}

/**
 * Replaces the CA in `dir`, keeping the old certificate as ca.prev.pem. The key is renamed into
 * place before the certificate; a crash in between leaves a pair that readCa rejects as mismatched,
 * never a certificate signed by a key it does not belong to.
 */
export async function writeRotatedCa(dir: string, workspace: string, validityDays: number, now: number): Promise<void> {
  validateWorkspaceName(workspace);
  validateValidityDays(validityDays);
  await prepareDir(dir);
  const certPath = join(dir, CA_CERT_FILE);
  const keyPath = join(dir, CA_KEY_FILE);
  const { keyPem, certPem } = await newCaFiles(workspace, validityDays, now);
  const keyTmp = await writeTemp(keyPath, keyPem, KEY_MODE);
  const certTmp = await writeTemp(certPath, certPem, CERT_MODE);
  try {
    const previous = await readFile(certPath, 'utf8').catch((err: unknown) => {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    });
    if (previous !== undefined) {
      await rename(await writeTemp(join(dir, CA_PREVIOUS_CERT_FILE), previous, CERT_MODE), join(dir, CA_PREVIOUS_CERT_FILE));
    }
    await rename(keyTmp, keyPath);
    await rename(certTmp, certPath);
  } finally {
    await unlink(keyTmp).catch(() => undefined);
    await unlink(certTmp).catch(() => undefined);
  }
  await syncDir(dir);
}

function notFound(dir: string, what: string): MicroagentError {
  return new MicroagentError('not_found', `no CA in ${dir}: ${what} is missing`, {
    code: 'ca.not_found',
    remediation: `run "microagent ca create --dir ${dir}" (or pass the --dir of an existing CA)`,
  });
}

function invalid(code: string, message: string, remediation: string, cause?: unknown): MicroagentError {
  return new MicroagentError('invalid', message, { code, remediation, cause });
}

async function checkDir(dir: string): Promise<void> {
  // stat, not lstat: a symlinked CA directory is fine as long as the directory it names is safe.
  const st = await stat(dir).catch((err: unknown) => {
    if (isErrno(err, 'ENOENT')) throw notFound(dir, 'the directory');
    throw err;
  });
  if (!st.isDirectory()) throw invalid('ca.not_a_directory', `CA path ${dir} is not a directory`, 'pass the CA directory with --dir');
  if ((st.mode & 0o022) !== 0) {
    throw invalid(
      'ca.dir_permissions',
      `CA directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}), so its certificate could be swapped`,
      `run "chmod 700 ${dir}"`,
    );
  }
}

/** Reads the key without following symlinks and refuses it unless only its owner can read it. */
export async function readKeyPem(dir: string, keyPath: string): Promise<string> {
  const fh = await open(keyPath, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: unknown) => {
    if (isErrno(err, 'ENOENT')) throw notFound(dir, CA_KEY_FILE);
    if (isErrno(err, 'ELOOP')) throw invalid('ca.key_symlink', `CA key ${keyPath} is a symlink`, 'replace it with the key file itself, mode 0600');
    throw err;
  });
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw invalid('ca.key_not_file', `CA key ${keyPath} is not a regular file`, 'restore the key file or run "microagent ca rotate"');
    if ((st.mode & 0o077) !== 0) {
      throw invalid(
        'ca.key_permissions',
        `CA key ${keyPath} is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}); refusing to use it`,
        `run "chmod 600 ${keyPath}"; if others may have read it, also run "microagent ca rotate --dir ${dir}" and re-import the CA in guests`,
      );
    }
    const uid = process.getuid?.();
    if (uid !== undefined && uid !== 0 && st.uid !== uid) {
      throw invalid('ca.key_owner', `CA key ${keyPath} belongs to uid ${st.uid}, not to this user (uid ${uid})`, `run "chown $(id -u) ${keyPath}"`);
    }
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** The CA key as PKCS#8 DER and the SubjectPublicKeyInfo it implies. */
function readPrivateKey(keyPem: string): { pkcs8: Buffer; spki: Buffer } {
  const key = createPrivateKey(keyPem);
  return { pkcs8: key.export({ type: 'pkcs8', format: 'der' }), spki: createPublicKey(key).export({ type: 'spki', format: 'der' }) };
}

/** Loads and checks the CA in `dir`: modes, parse, CA constraints and key/certificate match. */
export async function readCa(dir: string): Promise<CaMaterial> {
  await checkDir(dir);
  const certPath = join(dir, CA_CERT_FILE);
  const keyPath = join(dir, CA_KEY_FILE);
  const certFile = await readFile(certPath, 'utf8').catch((err: unknown) => {
    if (isErrno(err, 'ENOENT')) throw notFound(dir, CA_CERT_FILE);
    throw err;
  });
  const keyPem = await readKeyPem(dir, keyPath);
  const broken = `restore the CA files or run "microagent ca rotate --dir ${dir}" (guests must then trust the new certificate)`;
  let cert: CaCertificateFacts;
  try {
    cert = readCaCertificate(certFile);
  } catch (err) {
    throw invalid('ca.unreadable', `cannot parse the CA files in ${dir}: ${(err as Error).message}`, broken, err);
  }
  if (!cert.isCa) throw invalid('ca.not_a_ca', `${certPath} is not a CA certificate`, broken);
  const workspace = cert.workspace;
  if (workspace === undefined) throw invalid('ca.foreign', `${certPath} was not made by microagent (subject ${cert.subject})`, broken);
  let key: EcPrivateKey;
  try {
    const { pkcs8, spki } = readPrivateKey(keyPem);
    if (!spki.equals(cert.spki)) throw invalid('ca.key_mismatch', `CA key ${keyPath} does not belong to ${certPath}`, broken);
    key = await importEcPrivateKey(pkcs8);
  } catch (err) {
    if (err instanceof MicroagentError) throw err;
    throw invalid('ca.unreadable', `cannot read the CA key ${keyPath}: ${(err as Error).message}`, broken, err);
  }
  return { dir, certPath, keyPath, certPem: cert.pem, cert, key, workspace };
}
