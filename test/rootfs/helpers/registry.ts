/**
 * A real docker-registry (distribution 2.8, Debian package) on 127.0.0.1 for pull tests, a minimal push
 * client (monolithic blob uploads, PUT manifest), and a token-auth front that answers 401 + WWW-Authenticate
 * like Docker Hub does, issues tokens, redirects blob GETs to another origin, and proxies the rest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuiltImage } from './image.js';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface RunningRegistry {
  readonly host: string;
  readonly storage: string;
  close(): Promise<void>;
}

export interface RegistryAuthConfig {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  readonly rootCertBundle: string;
}

/** Starts docker-registry in dir (storage in dir/storage unless given); with `token`, it requires bearer tokens. */
export async function startRegistry(dir: string, opts: { storage?: string; token?: RegistryAuthConfig; tls?: { certificate: string; key: string } } = {}): Promise<RunningRegistry> {
  const port = await freePort();
  const storage = opts.storage ?? join(dir, 'storage');
  const config = join(dir, `config-${port}.yml`);
  const token = opts.token;
  await writeFile(config, [
    'version: 0.1',
    'log: {level: error, accesslog: {disabled: true}}',
    `storage: {filesystem: {rootdirectory: ${storage}}, delete: {enabled: true}}`,
    `http: {addr: "127.0.0.1:${port}"${opts.tls === undefined ? '' : `, tls: {certificate: ${opts.tls.certificate}, key: ${opts.tls.key}}`}}`,
    ...(token === undefined ? [] : [`auth: {token: {realm: "${token.realm}", service: ${token.service}, issuer: ${token.issuer}, rootcertbundle: ${token.rootCertBundle}}}`]),
    '',
  ].join('\n'));
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => resolve(socket.end() !== undefined));
      socket.on('error', () => resolve(false));
    });
    if (ok) break;
    if (i > 100 || child.exitCode !== null) throw new Error(`docker-registry did not start: ${stderr}`);
    await sleep(100);
  }
  return {
    host,
    storage,
    close: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('exit', resolve));
      }
    },
  };
}

/** Storage path of a blob in the registry's filesystem driver. */
export function blobDataPath(storage: string, digest: string): string {
  const hex = digest.slice(7);
  return join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

async function pushBlob(host: string, repo: string, digest: string, data: Buffer): Promise<void> {
  const start = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload start: ${start.status}`);
  const location = new URL(start.headers.get('location') as string, `http://${host}`);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`blob PUT ${digest}: ${put.status} ${await put.text()}`);
}

export async function pushManifest(host: string, repo: string, reference: string, body: Buffer, mediaType: string): Promise<void> {
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${reference}`, { method: 'PUT', body, headers: { 'content-type': mediaType } });
  if (res.status !== 201) throw new Error(`manifest PUT: ${res.status} ${await res.text()}`);
}

export async function pushImage(host: string, repo: string, tag: string, image: BuiltImage): Promise<void> {
  await pushBlob(host, repo, image.configDigest, image.config);
  for (const layer of image.layers) await pushBlob(host, repo, layer.digest, layer.blob);
  await pushManifest(host, repo, tag, image.manifest, 'application/vnd.oci.image.manifest.v1+json');
}

export interface AuthFront {
  readonly host: string;
  /** Scopes asked for at the token endpoint, and whether basic credentials came with them. */
  readonly tokenRequests: Array<{ scope: string | null; service: string | null; basic: string | null }>;
  /** Authorization headers seen by the redirect target (must stay empty: no credential leaves its origin). */
  readonly leakedAuthorization: string[];
  close(): Promise<void>;
}

function proxy(target: string, req: IncomingMessage, res: ServerResponse, path: string): void {
  const upstream = request(`http://${target}${path}`, { method: req.method, headers: { accept: req.headers.accept ?? '*/*' } }, (up) => {
    res.writeHead(up.statusCode ?? 502, up.headers);
    up.pipe(res);
  });
  upstream.on('error', () => res.destroy());
  req.pipe(upstream);
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Token-auth front for `registry`: /v2/ needs `Bearer <token>`, tokens come from /token (optionally
 * requiring basic credentials), and blob GETs are redirected to a second origin that proxies them.
 */
export async function startAuthFront(registry: string, opts: { basic?: { username: string; password: string } } = {}): Promise<AuthFront> {
  const tokenRequests: AuthFront['tokenRequests'] = [];
  const leakedAuthorization: string[] = [];
  const token = 'test-token-' + Math.random().toString(36).slice(2);
  const blobStore = createServer((req, res) => {
    if (req.headers.authorization !== undefined) leakedAuthorization.push(req.headers.authorization);
    proxy(registry, req, res, req.url ?? '/');
  });
  const blobHost = await listen(blobStore);
  const front = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://front');
    if (url.pathname === '/token') {
      const basic = req.headers.authorization ?? null;
      tokenRequests.push({ scope: url.searchParams.get('scope'), service: url.searchParams.get('service'), basic });
      const expected = opts.basic === undefined ? null : `Basic ${Buffer.from(`${opts.basic.username}:${opts.basic.password}`).toString('base64')}`;
      if (expected !== null && basic !== expected) {
        res.writeHead(401).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
      return;
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      const repo = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(url.pathname)?.[1];
      const scope = repo === undefined ? '' : `,scope="repository:${repo}:pull"`;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${frontHost}/token",service="test-registry"${scope}`, 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    if (/\/blobs\/sha256:/.test(url.pathname)) {
      res.writeHead(307, { location: `http://${blobHost}${url.pathname}` }).end();
      return;
    }
    proxy(registry, req, res, req.url ?? '/');
  });
  const frontHost = await listen(front);
  return {
    host: frontHost,
    tokenRequests,
    leakedAuthorization,
    close: async () => {
      front.closeAllConnections();
      blobStore.closeAllConnections();
      await Promise.all([new Promise((r) => front.close(r)), new Promise((r) => blobStore.close(r))]);
    },
  };
}
