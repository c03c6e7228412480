// Shared fixtures for the CA tests: temporary CA directories, real TLS servers on 127.0.0.1
// serving contexts from the CA, and async child processes (curl, openssl, the CLI).
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TLSSocket, type SecureContext } from 'node:tls';
import { afterEach } from 'vitest';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A fresh temporary directory, removed after the test; the CA goes in `<it>/ca`. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'microagent-ca-test-'));
  dirs.push(dir);
  return dir;
}

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program without blocking the event loop (the TLS server under test lives in this process). */
export function run(file: string, args: readonly string[], options: { input?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(file, [...args], { encoding: 'utf8', timeout: 20_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1;
      resolve({ code, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export const CLI = join(import.meta.dirname, '../../dist/cli/main.js');

export function cli(args: readonly string[]): Promise<Run> {
  return run(process.execPath, [CLI, ...args]);
}

export interface TlsOrigin {
  readonly port: number;
  close(): Promise<void>;
}

const RESPONSE = 'HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 9\r\nconnection: close\r\n\r\norigin ok';

/**
 * A TLS origin on 127.0.0.1 that answers one fixed HTTP response. `contextFor` is called with the
 * client's SNI (or undefined without SNI, as for IP literals) and supplies the secure context, the
 * way the proxy wires the CA: tls.Server ignores a `secureContext` option, so each accepted socket
 * is wrapped in a server-side TLSSocket here.
 */
export async function startTlsOrigin(options: {
  defaultContext?: SecureContext;
  SNICallback?: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
}): Promise<TlsOrigin> {
  const live = new Set<Socket>();
  const server: Server = createNetServer((raw) => {
    live.add(raw);
    raw.once('close', () => live.delete(raw));
    const socket = new TLSSocket(raw, {
      isServer: true,
      ...(options.defaultContext === undefined ? {} : { secureContext: options.defaultContext }),
      ...(options.SNICallback === undefined ? {} : { SNICallback: options.SNICallback }),
    });
    socket.on('error', () => socket.destroy());
    socket.once('secure', () => socket.end(RESPONSE));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        // Clients may keep a finished connection half-open; the test is over, so cut them.
        for (const socket of live) socket.destroy();
      }),
  };
}

/** Runs `fn`, expecting a MicroagentError-shaped rejection; returns it for assertions. */
export async function rejection(fn: () => Promise<unknown>): Promise<{ kind: string; code: string; message: string; remediation: string }> {
  try {
    await fn();
  } catch (err) {
    return err as { kind: string; code: string; message: string; remediation: string };
  }
  throw new Error('expected a rejection, but the call succeeded');
}

/**
 * A CA directory written by openssl instead of microagent (PrintableString names, openssl's own
 * extension encoding): `dir` (0700) with ca.pem and a 0600 PKCS#8 ca.key.pem.
 */
export async function opensslCa(dir: string, subject: string, extensions: readonly string[]): Promise<void> {
  await mkdir(dir, { mode: 0o700 });
  const config = `${dir}.cnf`;
  await writeFile(config, '[req]\ndistinguished_name=dn\nstring_mask=default\n[dn]\n');
  const made = await run('openssl', [
    'req', '-x509', '-config', config, '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(dir, 'ca.key.pem'), '-out', join(dir, 'ca.pem'), '-days', '30', '-subj', subject,
    ...extensions.flatMap((e) => ['-addext', e]),
  ]);
  if (made.code !== 0) throw new Error(`openssl req failed: ${made.stderr}`);
}
