/**
 * Tar writer (ustar with pax records for long names and large numbers), used to build the default
 * image's layer reproducibly and by the tests to craft layers, including hostile ones. Pure: turns
 * entry descriptions into bytes and never reads the filesystem itself.
 */
import type { TarEntryType } from './tar-reader.js';

export interface TarWriteEntry {
  readonly path: string;
  readonly type: TarEntryType;
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtime?: number;
  readonly linkname?: string;
  readonly content?: Buffer;
  readonly devmajor?: number;
  readonly devminor?: number;
}

const BLOCK = 512;
const TYPEFLAG: Readonly<Record<TarEntryType, string>> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};

function fitsOctal(value: number, width: number): boolean {
  return Number.isInteger(value) && value >= 0 && value < 8 ** (width - 1);
}

function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  block.write(value.toString(8).padStart(width - 1, '0') + '\0', offset, width, 'ascii');
}

function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length++;
  return Buffer.from(`${length}${body}`, 'utf8');
}

function headerBlock(
  path: string,
  typeflag: string,
  fields: { mode: number; uid: number; gid: number; size: number; mtime: number; linkname: string },
  dev: { major: number; minor: number },
): Buffer {
  const block = Buffer.alloc(BLOCK);
  block.write(path, 0, 100, 'utf8');
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, fitsOctal(fields.uid, 8) ? fields.uid : 0);
  writeOctal(block, 116, 8, fitsOctal(fields.gid, 8) ? fields.gid : 0);
  writeOctal(block, 124, 12, fitsOctal(fields.size, 12) ? fields.size : 0);
  writeOctal(block, 136, 12, fitsOctal(fields.mtime, 12) ? fields.mtime : 0);
  block.write(typeflag, 156, 1, 'ascii');
  block.write(fields.linkname, 157, 100, 'utf8');
  block.write('ustar\0' + '00', 257, 8, 'ascii');
  writeOctal(block, 329, 8, dev.major);
  writeOctal(block, 337, 8, dev.minor);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return block;
}

function pad(length: number): Buffer {
  return Buffer.alloc((BLOCK - (length % BLOCK)) % BLOCK);
}

/** The bytes of one entry: an optional pax header, the ustar header, the body and its padding. */
export function tarEntryBytes(entry: TarWriteEntry): Buffer {
  const content = entry.type === 'file' ? (entry.content ?? Buffer.alloc(0)) : Buffer.alloc(0);
  const fields = {
    mode: entry.mode ?? (entry.type === 'directory' ? 0o755 : 0o644),
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    size: content.length,
    mtime: entry.mtime ?? 0,
    linkname: entry.linkname ?? '',
  };
  const pax: Buffer[] = [];
  if (Buffer.byteLength(entry.path) > 100) pax.push(paxRecord('path', entry.path));
  if (Buffer.byteLength(fields.linkname) > 100) pax.push(paxRecord('linkpath', fields.linkname));
  if (!fitsOctal(fields.uid, 8)) pax.push(paxRecord('uid', String(fields.uid)));
  if (!fitsOctal(fields.gid, 8)) pax.push(paxRecord('gid', String(fields.gid)));
  if (!fitsOctal(fields.mtime, 12)) pax.push(paxRecord('mtime', String(fields.mtime)));
  const parts: Buffer[] = [];
  if (pax.length > 0) {
    const data = Buffer.concat(pax);
    const paxFields = { mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 0, linkname: '' };
    parts.push(headerBlock('PaxHeader', 'x', paxFields, { major: 0, minor: 0 }), data, pad(data.length));
  }
  const dev = { major: entry.devmajor ?? 0, minor: entry.devminor ?? 0 };
  parts.push(headerBlock(entry.path.slice(0, 100), TYPEFLAG[entry.type], fields, dev), content, pad(content.length));
  return Buffer.concat(parts);
}

/** The end-of-archive marker: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

/** A whole archive in memory; for small archives (tests, metadata). */
export function writeTar(entries: readonly TarWriteEntry[]): Buffer {
  return Buffer.concat([...entries.map(tarEntryBytes), TAR_END]);
}
