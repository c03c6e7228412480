/**
 * Streaming tar reader (ustar, pax and GNU long names) for image layers and image archives.
 * Header parsing is a pure function over 512-byte blocks; `readTar` drives it over a chunk stream.
 * It never touches the filesystem and never trusts a path: names come out exactly as stored, and
 * the caller (apply-layer.ts) decides whether they are safe. Must never buffer a whole entry body.
 */
import { MicroagentError } from '../../errors.js';

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  readonly path: string;
  readonly type: TarEntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** Seconds since the epoch, possibly fractional (pax). */
  readonly mtime: number;
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
}

export interface TarEntry {
  readonly header: TarHeader;
  /** The entry's bytes; read it before asking for the next entry, or it is skipped. */
  readonly body: AsyncIterable<Buffer>;
}

const BLOCK = 512;

/** One parsed header block, before pax and GNU long-name records are merged in. */
export type RawBlock =
  | { readonly kind: 'zero' }
  | {
      readonly kind: 'header';
      readonly typeflag: string;
      readonly header: TarHeader;
    };

function corrupt(message: string): MicroagentError {
  return new MicroagentError('invalid', `tar stream is corrupt: ${message}`, {
    code: 'tar.corrupt',
    remediation: 'The archive or layer is damaged; fetch or rebuild it again.',
  });
}

function readString(block: Buffer, offset: number, length: number): string {
  const slice = block.subarray(offset, offset + length);
  const nul = slice.indexOf(0);
  return slice.subarray(0, nul === -1 ? length : nul).toString('utf8');
}

/** Octal, or GNU base-256 when the high bit of the first byte is set (sizes > 8 GiB, negative times). */
function readNumber(block: Buffer, offset: number, length: number, field: string): number {
  const first = block[offset] ?? 0;
  if (first & 0x80) {
    let value = BigInt(first & 0x7f);
    for (let i = 1; i < length; i++) value = (value << 8n) | BigInt(block[offset + i] ?? 0);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${field} is too large`);
    return Number(value);
  }
  const text = readString(block, offset, length).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw corrupt(`${field} is not an octal number (${JSON.stringify(text)})`);
  return parseInt(text, 8);
}

function verifyChecksum(block: Buffer): void {
  const stored = readNumber(block, 148, 8, 'checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
  if (sum !== stored) throw corrupt('header checksum mismatch');
}

const TYPEFLAGS: Readonly<Record<string, TarEntryType>> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'directory',
  '6': 'fifo',
};

/** Parses one 512-byte header block. Pure. */
export function parseTarBlock(block: Buffer): RawBlock {
  if (block.length !== BLOCK) throw corrupt('short header block');
  if (block.every((b) => b === 0)) return { kind: 'zero' };
  verifyChecksum(block);
  const typeflag = String.fromCharCode(block[156] ?? 0);
  let path = readString(block, 0, 100);
  const magic = readString(block, 257, 6);
  if (magic === 'ustar') {
    const prefix = readString(block, 345, 155);
    if (prefix !== '') path = `${prefix}/${path}`;
  }
  const type = TYPEFLAGS[typeflag] ?? (path.endsWith('/') ? 'directory' : 'file');
  return {
    kind: 'header',
    typeflag,
    header: {
      path,
      type,
      mode: readNumber(block, 100, 8, 'mode') & 0o7777,
      uid: ownerId(readNumber(block, 108, 8, 'uid'), 'uid'),
      gid: ownerId(readNumber(block, 116, 8, 'gid'), 'gid'),
      size: readNumber(block, 124, 12, 'size'),
      mtime: readNumber(block, 136, 12, 'mtime'),
      linkname: readString(block, 157, 100),
      devmajor: readNumber(block, 329, 8, 'devmajor'),
      devminor: readNumber(block, 337, 8, 'devminor'),
    },
  };
}

/** Parses pax extended-header records ("LEN key=value\n"). Pure. */
export function parsePaxRecords(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw corrupt('pax record without length');
    const length = Number(data.subarray(pos, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= space - pos + 1 || pos + length > data.length) {
      throw corrupt('pax record length is invalid');
    }
    const record = data.subarray(space + 1, pos + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq === -1) throw corrupt('pax record without "="');
    records.set(record.slice(0, eq), record.slice(eq + 1));
    pos += length;
  }
  return records;
}

/** The largest owner id a file can have: 2^32-1 is chown's "leave it unchanged", not an owner. */
const MAX_OWNER_ID = 0xfffffffe;

function ownerId(value: number, what: 'uid' | 'gid'): number {
  if (!Number.isInteger(value) || value > MAX_OWNER_ID) throw corrupt(`${what} ${value} is not an owner id (0 to ${MAX_OWNER_ID})`);
  return value;
}

function applyPax(header: TarHeader, pax: Map<string, string>): TarHeader {
  const numeric = (key: string, fallback: number): number => {
    const raw = pax.get(key);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < 0) throw corrupt(`pax ${key} is invalid`);
    return value;
  };
  return {
    ...header,
    path: pax.get('path') ?? header.path,
    linkname: pax.get('linkpath') ?? header.linkname,
    size: numeric('size', header.size),
    uid: ownerId(numeric('uid', header.uid), 'uid'),
    gid: ownerId(numeric('gid', header.gid), 'gid'),
    mtime: numeric('mtime', header.mtime),
  };
}

/** Pulls exact byte counts out of a chunk stream without copying more than needed. */
class ChunkReader {
  private pending: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(private readonly source: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const next = await this.source.next();
    if (next.done) {
      this.done = true;
      return false;
    }
    this.pending = this.pending.length === 0 ? next.value : Buffer.concat([this.pending, next.value]);
    return true;
  }

  /** Exactly n bytes, or null at a clean end of stream (nothing pending). */
  async exact(n: number): Promise<Buffer | null> {
    while (this.pending.length < n) {
      if (!(await this.fill())) {
        if (this.pending.length === 0) return null;
        throw corrupt('unexpected end of stream (truncated archive)');
      }
    }
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /** Streams n bytes in the pieces they arrive in; throws if the stream ends first. */
  async *span(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.pending.length === 0 && !(await this.fill())) {
        throw corrupt('unexpected end of stream (truncated archive)');
      }
      const piece = this.pending.subarray(0, Math.min(left, this.pending.length));
      this.pending = this.pending.subarray(piece.length);
      left -= piece.length;
      yield piece;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const piece of this.span(n)) void piece;
  }

  async collect(n: number, cap: number, what: string): Promise<Buffer> {
    if (n > cap) throw corrupt(`${what} of ${n} bytes exceeds the ${cap}-byte limit`);
    const parts: Buffer[] = [];
    for await (const piece of this.span(n)) parts.push(Buffer.from(piece));
    return Buffer.concat(parts);
  }

  /** Drains whatever follows the end marker so upstream digest checks see every byte. */
  async drain(): Promise<void> {
    this.pending = Buffer.alloc(0);
    while (await this.fill()) this.pending = Buffer.alloc(0);
  }
}

const padding = (size: number): number => (BLOCK - (size % BLOCK)) % BLOCK;
const META_CAP = 1 << 20;

/** Reads entries from a tar stream. Each entry's body must be consumed (or abandoned) before the next. */
export async function* readTar(source: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const reader = new ChunkReader(source[Symbol.asyncIterator]());
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;
  for (let first = true; ; first = false) {
    const block = await reader.exact(BLOCK);
    // An empty stream is an empty archive (some tools write empty layers that way).
    if (block === null && first) return;
    if (block === null) throw corrupt('unexpected end of stream (no end-of-archive marker)');
    const parsed = parseTarBlock(block);
    if (parsed.kind === 'zero') {
      await reader.drain();
      return;
    }
    const { typeflag, header } = parsed;
    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      const data = await reader.collect(header.size, META_CAP, 'extended header');
      await reader.skip(padding(header.size));
      // Global pax headers ('g') carry archive-wide comments in practice; they are read and ignored.
      if (typeflag === 'x') pax = parsePaxRecords(data);
      if (typeflag === 'L') longName = readString(data, 0, data.length);
      if (typeflag === 'K') longLink = readString(data, 0, data.length);
      continue;
    }
    let merged = applyPax(header, pax);
    if (longName !== undefined && !pax.has('path')) merged = { ...merged, path: longName };
    if (longLink !== undefined && !pax.has('linkpath')) merged = { ...merged, linkname: longLink };
    pax = new Map();
    longName = undefined;
    longLink = undefined;
    // Only regular files carry a body; a size on a link or directory is skipped like the reference tar does.
    const bodySize = merged.type === 'file' ? merged.size : 0;
    let delivered = 0;
    const body = (async function* () {
      for await (const piece of reader.span(bodySize - delivered)) {
        delivered += piece.length;
        yield piece;
      }
    })();
    yield { header: merged, body };
    // A consumer that stopped early (or never started) leaves the rest of the body to skip here.
    await reader.skip(bodySize - delivered);
    await reader.skip(header.size - bodySize + padding(header.size));
  }
}
