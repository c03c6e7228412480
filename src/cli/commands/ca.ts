/**
 * `microagent ca ...`: create, show, export and rotate the per-workspace CA (src/ca).
 * Argument parsing and rendering only; it never prints key material except into an --out file
 * the user asked for with --include-key.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  CA_EXPORT_FORMATS,
  CA_PREVIOUS_CERT_FILE,
  createCa,
  exportCa,
  loadCa,
  rotateCa,
  writeCaExport,
  type CaExportFormat,
  type CertificateAuthority,
} from '../../ca/index.js';
import { parseCommandArgs, usageError, type CliContext, type Command } from '../command.js';

const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;

function caDir(dir: string | undefined, ctx: CliContext): string {
  return dir ?? join(ctx.stateDir, 'ca');
}

function parseDays(command: Pick<Command, 'name' | 'usage'>, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const days = Number(raw);
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(days) || days < 1) {
    throw usageError(`${command.name}: --days must be a positive whole number, got "${raw}"`, `usage: microagent ${command.name} ${command.usage}`);
  }
  return days;
}

/** A warning when the CA expires within EXPIRY_WARNING_DAYS or already has; undefined otherwise. */
function expiryWarning(ca: CertificateAuthority, now: number): string | undefined {
  const left = ca.notAfter.getTime() - now;
  if (left <= 0) return `the CA expired on ${ca.notAfter.toISOString()}; run "microagent ca rotate --dir ${ca.dir}"`;
  if (left <= EXPIRY_WARNING_DAYS * DAY_MS) {
    return `the CA expires in ${Math.ceil(left / DAY_MS)} days (${ca.notAfter.toISOString()}); run "microagent ca rotate --dir ${ca.dir}" soon`;
  }
  return undefined;
}

function describe(ca: CertificateAuthority): Record<string, string> {
  return {
    dir: ca.dir,
    cert_path: ca.certPath,
    workspace: ca.workspace,
    subject: ca.subject,
    fingerprint_sha256: ca.fingerprint256,
    not_before: ca.notBefore.toISOString(),
    not_after: ca.notAfter.toISOString(),
  };
}

function render(title: string, fields: Record<string, string>): string {
  const width = Math.max(...Object.keys(fields).map((k) => k.length));
  return [title, ...Object.entries(fields).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join('\n');
}

const create: Command = {
  name: 'ca create',
  summary: 'Create a new CA (ECDSA P-256) for a workspace; refuses to overwrite an existing one',
  usage: '[--dir DIR] [--workspace NAME] [--days N]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(create, args, {
      dir: { type: 'string' },
      workspace: { type: 'string' },
      days: { type: 'string' },
    }, false);
    const days = parseDays(create, values.days);
    const ca = await createCa({
      dir: caDir(values.dir, ctx),
      workspace: values.workspace ?? 'default',
      ...(days === undefined ? {} : { validityDays: days }),
    });
    ca.close();
    const result = describe(ca);
    return { result, human: render('created CA', result) + `\n\nguests must trust ${ca.certPath} (microagent ca export)` };
  },
};

const show: Command = {
  name: 'ca show',
  summary: 'Show the CA certificate: subject, SHA-256 fingerprint, validity and path',
  usage: '[--dir DIR]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(show, args, { dir: { type: 'string' } }, false);
    const ca = await loadCa({ dir: caDir(values.dir, ctx) });
    ca.close();
    const warning = expiryWarning(ca, Date.now());
    if (warning !== undefined) ctx.out.warn(warning);
    const fields = describe(ca);
    return { result: warning === undefined ? fields : { ...fields, warning }, human: render('CA', fields) };
  },
};

function parseFormat(raw: string | undefined): CaExportFormat {
  const format = (raw ?? 'pem') as CaExportFormat;
  if (!CA_EXPORT_FORMATS.includes(format)) {
    throw usageError(`ca export: unknown --format "${raw}"`, `use one of ${CA_EXPORT_FORMATS.join(', ')}`);
  }
  return format;
}

const exportCommand: Command = {
  name: 'ca export',
  summary: 'Export the CA certificate (PEM to stdout, or PEM/DER/PKCS#12 to --out) for guest trust stores',
  usage: '[--dir DIR] [--format pem|der|p12] [--out FILE] [--include-key] [--password P]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(exportCommand, args, {
      dir: { type: 'string' },
      format: { type: 'string' },
      out: { type: 'string' },
      'include-key': { type: 'boolean' },
      password: { type: 'string' },
    }, false);
    const format = parseFormat(values.format);
    const includeKey = values['include-key'] === true;
    if (format !== 'pem' && values.out === undefined) {
      throw usageError(`ca export: --format ${format} is binary and needs --out FILE`, 'add --out FILE, or use --format pem to print to stdout');
    }
    if (values.password !== undefined && format !== 'p12') {
      throw usageError('ca export: --password only applies to --format p12', 'drop --password or add --format p12');
    }
    const ca = await loadCa({ dir: caDir(values.dir, ctx) });
    ca.close();
    const bytes = await exportCa(ca, format, {
      includeKey,
      ...(values.password === undefined ? {} : { password: values.password }),
    });
    if (values.out === undefined) {
      const pem = bytes.toString('utf8');
      return { result: { format, fingerprint_sha256: ca.fingerprint256, pem }, human: pem };
    }
    await writeCaExport(values.out, bytes, includeKey);
    const result = { format, out: values.out, bytes: bytes.length, include_key: includeKey, fingerprint_sha256: ca.fingerprint256 };
    return { result, human: `wrote ${format} (${bytes.length} bytes${includeKey ? ', includes the CA key' : ''}) to ${values.out}` };
  },
};

const rotate: Command = {
  name: 'ca rotate',
  summary: 'Replace the CA with a new key and certificate, keeping the old certificate as ca.prev.pem',
  usage: '[--dir DIR] [--workspace NAME] [--days N]',
  async run(args, ctx) {
    const { values } = parseCommandArgs(rotate, args, {
      dir: { type: 'string' },
      workspace: { type: 'string' },
      days: { type: 'string' },
    }, false);
    const days = parseDays(rotate, values.days);
    const ca = await rotateCa({
      dir: caDir(values.dir, ctx),
      ...(values.workspace === undefined ? {} : { workspace: values.workspace }),
      ...(days === undefined ? {} : { validityDays: days }),
    });
    ca.close();
    const result = describe(ca);
    const previous = join(ca.dir, CA_PREVIOUS_CERT_FILE);
    if (!existsSync(previous)) return { result, human: render('rotated CA', result) + '\n\nthere was no previous certificate; guests must trust this one' };
    return {
      result: { ...result, previous_cert_path: previous },
      human: render('rotated CA', result) + `\n\nthe previous certificate is kept in ${previous}; guests must trust the new one`,
    };
  },
};

export const commands: readonly Command[] = [create, show, exportCommand, rotate];
