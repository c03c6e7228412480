/**
 * Exports the CA certificate (and, only when asked explicitly, its key) for installation in trust
 * stores: PEM, DER, or PKCS#12 (pkcs12.ts, loaded on demand). exportCa only returns the bytes;
 * writeCaExport writes them where the operator asked. Neither logs the key or password.
 */
import { X509Certificate } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { asMicroagentError, MicroagentError } from '../errors.js';

export type CaExportFormat = 'pem' | 'der' | 'p12';
export const CA_EXPORT_FORMATS: readonly CaExportFormat[] = ['pem', 'der', 'p12'];

export interface CaExportOptions {
  /** PKCS#12 password; required with includeKey, empty by default for a certificate-only bundle. */
  readonly password?: string;
  /** Put the CA private key into the PKCS#12 (p12 only). Default false: certificate only. */
  readonly includeKey?: boolean;
}

/** The parts of a CertificateAuthority an export needs. */
export interface ExportableCa {
  readonly certPem: string;
  readonly keyPath: string;
  readonly workspace: string;
}

export async function exportCa(ca: ExportableCa, format: CaExportFormat, options: CaExportOptions = {}): Promise<Buffer> {
  if (options.includeKey === true && format !== 'p12') {
    throw new MicroagentError('invalid', `--include-key is only supported with --format p12, not ${format}`, {
      code: 'ca.export_key_format',
      remediation: 'use --format p12 --password P, or copy ca.key.pem yourself if you really need the bare key',
    });
  }
  switch (format) {
    case 'pem':
      return Buffer.from(ca.certPem.endsWith('\n') ? ca.certPem : `${ca.certPem}\n`);
    case 'der':
      return new X509Certificate(ca.certPem).raw;
    case 'p12':
      return (await import('./pkcs12.js')).toPkcs12(ca, options);
    default: {
      const unknown: never = format;
      throw new MicroagentError('invalid', `unknown export format ${String(unknown)}`, {
        code: 'ca.export_format',
        remediation: `use one of ${CA_EXPORT_FORMATS.join(', ')}`,
      });
    }
  }
}

/** Writes an export to `path`: mode 0600 when it holds the key (set before any of it is written), else 0644. */
export async function writeCaExport(path: string, bytes: Buffer, containsKey: boolean): Promise<void> {
  const mode = containsKey ? 0o600 : 0o644;
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'w', mode);
    // An existing file keeps its own mode when opened: narrow it before the key's bytes go in.
    await handle.chmod(mode);
    await handle.writeFile(bytes);
  } catch (err) {
    // A full disk or a forbidden path has its own fix; anything else is a path that cannot be a file.
    const host = asMicroagentError(err);
    const known = host.kind !== 'internal';
    throw new MicroagentError(known ? host.kind : 'invalid', `cannot write the export to ${path}: ${known ? host.message : ((err as NodeJS.ErrnoException).code ?? (err as Error).message)}`, {
      code: 'ca.export_write',
      remediation: known ? host.remediation : 'give --out a file path in an existing directory this user may write to',
      cause: err,
    });
  } finally {
    await handle?.close();
  }
}
