/**
 * The guest initramfs: a cpio (newc) archive holding the guest agent as /init, the kernel modules
 * the guest needs and their load order, and /dev/console. `encodeCpio` is pure; `buildInitramfs`
 * writes the archive once per (agent, kernel) pair into a cache and reuses it. It never includes
 * anything from the host but the agent binary and the installed kernel's verified modules.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGuestAgent } from './agent-build.js';
import type { InstalledKernel } from './kernel.js';
import { makeDirs } from '../make-dirs.js';

export type CpioEntry =
  | { readonly kind: 'dir'; readonly path: string; readonly mode?: number }
  | { readonly kind: 'file'; readonly path: string; readonly data: Buffer; readonly mode?: number }
  | { readonly kind: 'char'; readonly path: string; readonly major: number; readonly minor: number; readonly mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

function header(fields: readonly number[]): string {
  return `070701${fields.map((f) => (f >>> 0).toString(16).padStart(8, '0')).join('')}`;
}

/** Serialises entries (parents before children) as a newc archive ending in TRAILER!!!. */
export function encodeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, data: Buffer, rmajor = 0, rminor = 0) => {
    const nameBuf = Buffer.from(`${name}\0`, 'utf8');
    const head = Buffer.from(
      header([ino++, mode, 0, 0, mode & S_IFDIR ? 2 : 1, 0, data.length, 0, 0, rmajor, rminor, nameBuf.length, 0]),
      'ascii',
    );
    parts.push(head, nameBuf, pad4(head.length + nameBuf.length), data, pad4(data.length));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    switch (e.kind) {
      case 'dir':
        push(name, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0));
        break;
      case 'file':
        push(name, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case 'char':
        push(name, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), e.major, e.minor);
        break;
      default: {
        const never: never = e;
        throw new Error(`unknown cpio entry ${JSON.stringify(never)}`);
      }
    }
  }
  push('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

export function initramfsEntries(agent: Buffer, modules: ReadonlyArray<{ name: string; data: Buffer }>): CpioEntry[] {
  const dirs = ['dev', 'proc', 'sys', 'newroot', 'etc', 'lib', 'lib/modules'];
  return [
    ...dirs.map((path): CpioEntry => ({ kind: 'dir', path })),
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'file', path: 'init', data: agent, mode: 0o755 },
    ...modules.map((m): CpioEntry => ({ kind: 'file', path: `lib/modules/${m.name}`, data: m.data })),
    { kind: 'file', path: 'etc/modules.list', data: Buffer.from(modules.map((m) => `${m.name}\n`).join('')) },
  ];
}

/**
 * Builds (or reuses) the initramfs for this kernel and the current guest agent source.
 * Returns its path under `<stateDir>/initramfs/`.
 */
export async function buildInitramfs(stateDir: string, kernel: InstalledKernel): Promise<string> {
  const agentPath = await buildGuestAgent(stateDir);
  const agent = readFileSync(agentPath);
  const modules = kernel.modules.map((name) => ({ name, data: readFileSync(join(kernel.dir, 'modules', name)) }));
  const hash = createHash('sha256').update(agent);
  for (const m of modules) hash.update(m.name).update(m.data);
  const dir = join(stateDir, 'initramfs');
  const out = join(dir, `${kernel.version}-${hash.digest('hex').slice(0, 16)}.cpio`);
  if (existsSync(out)) return out;
  makeDirs(dir);
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(tmp, encodeCpio(initramfsEntries(agent, modules)));
  renameSync(tmp, out);
  return out;
}
