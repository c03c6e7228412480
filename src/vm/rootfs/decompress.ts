/**
 * Layer decompression chosen by magic bytes, not by declared media type (docker-save layers are plain
 * tars whatever they are called): gzip through node:zlib, zstd through the `zstd` tool, else passthrough.
 * Errors from the compressed source or the decoder surface from the returned iterable; nothing is swallowed.
 */
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { MicroagentError } from '../../errors.js';

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

async function* prepend(first: Buffer, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (first.length > 0) yield first;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield next.value;
  }
}

async function* gunzip(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const input = Readable.from(source, { objectMode: false });
  const decoder = createGunzip();
  input.on('error', (err) => decoder.destroy(err));
  input.pipe(decoder);
  try {
    for await (const chunk of decoder) yield chunk as Buffer;
  } finally {
    input.destroy();
  }
}

async function* unzstd(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const child = spawn('zstd', ['-dc', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr: Buffer[] = [];
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
  let feedError: unknown;
  const input = Readable.from(source, { objectMode: false });
  input.on('error', (err) => {
    feedError = err;
    child.stdin.destroy();
    child.kill();
  });
  child.stdin.on('error', () => undefined);
  input.pipe(child.stdin);
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    if (feedError !== undefined) throw feedError;
    if (code !== 0) throw new Error(`zstd: ${Buffer.concat(stderr).toString().trim() || `exit ${code}`}`);
  } finally {
    input.destroy();
    if (child.exitCode === null) child.kill();
  }
}

/** Decompresses a layer stream into tar bytes. */
export async function* decompressLayer(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const iterator = source[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  while (head.length < ZSTD_MAGIC.length) {
    const next = await iterator.next();
    if (next.done) break;
    head = Buffer.concat([head, next.value]);
  }
  const stream = prepend(head, iterator);
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) {
    yield* gunzip(stream);
  } else if (head.subarray(0, 4).equals(ZSTD_MAGIC)) {
    try {
      yield* unzstd(stream);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new MicroagentError('unsupported', 'a zstd-compressed layer needs the zstd tool, which is not installed', {
          code: 'image.zstd_missing',
          remediation: 'Install zstd (scripts/setup.sh does).',
        });
      }
      throw err;
    }
  } else {
    yield* stream;
  }
}
