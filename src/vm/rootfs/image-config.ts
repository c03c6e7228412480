/**
 * The image config (Env, Entrypoint, Cmd, WorkingDir, User, platform, diff_ids): parsing, resolving User
 * against the image's own /etc/passwd and /etc/group at build time, and computing what `run IMAGE -- CMD`
 * executes, with Docker's semantics. Never consults the host's user database.
 */
import { readFile } from 'node:fs/promises';
import { MicroagentError } from '../../errors.js';
import { checkDigest } from './digest.js';
import { resolveInRoot } from './safe-path.js';

/** The parsed image config, with the User resolved to numeric ids. Stored as config.json in the cache. */
export interface ImageConfig {
  readonly architecture: string;
  readonly os: string;
  /** "KEY=value" entries, in image order. */
  readonly env: readonly string[];
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly workingDir: string;
  /** The User as the image declares it ("" means root). */
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
  /** The user's home from the image's /etc/passwd ("/" when unknown), used for HOME. */
  readonly home: string;
}

/** The config as stored in the image, before User resolution. */
export type ParsedImageConfig = Omit<ImageConfig, 'uid' | 'gid' | 'home'> & { readonly diffIds: readonly string[] };

export interface RunSpec {
  readonly argv: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly uid: number;
  readonly gid: number;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function configError(where: string, detail: string): MicroagentError {
  return new MicroagentError('invalid', `${where}: image config ${detail}`, {
    code: 'image.config_invalid',
    remediation: 'Rebuild the image; its config JSON does not follow the OCI image spec.',
  });
}

function stringList(value: unknown, where: string, field: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw configError(where, `field ${field} is not a list of strings`);
  return value;
}

function optionalString(value: unknown, where: string, field: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw configError(where, `field ${field} is not a string`);
  return value;
}

export function parseImageConfig(bytes: Buffer, where: string): ParsedImageConfig {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw configError(where, 'is not JSON');
  }
  if (typeof doc !== 'object' || doc === null) throw configError(where, 'is not an object');
  const config = (doc['config'] ?? {}) as Record<string, unknown>;
  const rootfs = (doc['rootfs'] ?? {}) as Record<string, unknown>;
  const env = stringList(config['Env'], where, 'Env');
  if (env.some((e) => !e.includes('='))) throw configError(where, 'Env has an entry without "="');
  return {
    architecture: optionalString(doc['architecture'], where, 'architecture'),
    os: optionalString(doc['os'], where, 'os'),
    env,
    entrypoint: stringList(config['Entrypoint'], where, 'Entrypoint'),
    cmd: stringList(config['Cmd'], where, 'Cmd'),
    workingDir: optionalString(config['WorkingDir'], where, 'WorkingDir'),
    user: optionalString(config['User'], where, 'User'),
    diffIds: stringList(rootfs['diff_ids'], where, 'rootfs.diff_ids').map((d) => checkDigest(d, `${where}: rootfs.diff_ids`)),
  };
}

interface DatabaseEntry {
  readonly name: string;
  readonly id: number;
  readonly gid: number;
  readonly home: string;
}

/** Parses /etc/passwd (name:x:uid:gid:gecos:home:shell) or /etc/group (name:x:gid:members). Pure. */
export function parseUserDatabase(text: string, kind: 'passwd' | 'group'): DatabaseEntry[] {
  const entries: DatabaseEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const fields = line.split(':');
    const id = Number(fields[2]);
    if (fields[0] === undefined || !Number.isInteger(id) || id < 0) continue;
    const gid = kind === 'passwd' ? Number(fields[3]) : id;
    entries.push({ name: fields[0], id, gid: Number.isInteger(gid) ? gid : 0, home: (kind === 'passwd' ? fields[5] : undefined) || '/' });
  }
  return entries;
}

async function readImageFile(root: string, path: string): Promise<string> {
  const host = await resolveInRoot(root, path.split('/').filter(Boolean), { createMissing: false, followLast: true });
  if (host === null) return '';
  return readFile(host, 'utf8').catch(() => '');
}

const isNumeric = (s: string): boolean => /^[0-9]+$/.test(s);

/** Resolves a Docker User ("name", "uid", "name:group", "uid:gid") against the image root's databases. */
export async function resolveImageUser(root: string, user: string, where: string): Promise<{ uid: number; gid: number; home: string }> {
  const [userPart = '', groupPart] = user.split(':', 2);
  const passwd = parseUserDatabase(await readImageFile(root, 'etc/passwd'), 'passwd');
  const lookup = userPart === '' ? passwd.find((e) => e.id === 0) : passwd.find((e) => (isNumeric(userPart) ? e.id === Number(userPart) : e.name === userPart));
  if (lookup === undefined && userPart !== '' && !isNumeric(userPart)) {
    throw new MicroagentError('invalid', `${where}: User "${user}" names user "${userPart}", which is not in the image's /etc/passwd`, {
      code: 'image.user_unknown',
      remediation: 'Use a numeric uid[:gid] or a user that exists in the image.',
    });
  }
  const uid = lookup?.id ?? (userPart === '' ? 0 : Number(userPart));
  let gid = lookup?.gid ?? 0;
  if (groupPart !== undefined && groupPart !== '') {
    if (isNumeric(groupPart)) gid = Number(groupPart);
    else {
      const group = parseUserDatabase(await readImageFile(root, 'etc/group'), 'group').find((e) => e.name === groupPart);
      if (group === undefined) {
        throw new MicroagentError('invalid', `${where}: User "${user}" names group "${groupPart}", which is not in the image's /etc/group`, {
          code: 'image.group_unknown',
          remediation: 'Use a numeric gid or a group that exists in the image.',
        });
      }
      gid = group.id;
    }
  }
  return { uid, gid, home: lookup?.home ?? '/' };
}

/**
 * What `run IMAGE -- CMD` executes: Entrypoint is kept, CMD (when given) replaces the image's Cmd;
 * PATH and HOME are added when the image does not set them, as Docker does.
 */
export function imageRunSpec(config: ImageConfig, cmdOverride?: readonly string[]): RunSpec {
  const args = cmdOverride !== undefined && cmdOverride.length > 0 ? cmdOverride : config.cmd;
  const argv = [...config.entrypoint, ...args];
  if (argv.length === 0) {
    throw new MicroagentError('invalid', 'the image defines no Entrypoint or Cmd, and no command was given', {
      code: 'image.no_command',
      remediation: 'Give a command after `--`, e.g. `microagent run IMAGE -- /bin/sh`.',
    });
  }
  const env = [...config.env];
  const has = (key: string): boolean => env.some((e) => e.startsWith(`${key}=`));
  if (!has('PATH')) env.unshift(`PATH=${DEFAULT_PATH}`);
  if (!has('HOME')) env.push(`HOME=${config.home}`);
  return { argv, env, cwd: config.workingDir === '' ? '/' : config.workingDir, uid: config.uid, gid: config.gid };
}
