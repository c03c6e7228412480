import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { MicroagentError } from '../../src/errors.js';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveImage } from '../../src/vm/rootfs/index.js';
import { sha256Digest } from '../../src/vm/rootfs/digest.js';
import type { ImageProgressEvent } from '../../src/vm/rootfs/progress.js';
import { dir, ext4Cat, file, makeImage, makeLayer } from './helpers/image.js';
import { startTokenServer } from './helpers/token-server.js';
import { blobDataPath, pushImage, pushManifest, startAuthFront, startRegistry, type RunningRegistry } from './helpers/registry.js';

let work: string;
let stateDir: string;
const CLI = join(import.meta.dirname, '../../dist/cli/main.js');
let registry: RunningRegistry;
/** A multi-platform index pinned by digest, and the manifest it selected for linux/amd64. */
let pinnedIndex: { digest: string; manifest: string };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'rootfs-registry-'));
  stateDir = join(work, 'state');
  registry = await startRegistry(work);
});
afterAll(async () => {
  await registry?.close();
  await rm(work, { recursive: true, force: true });
});

const app = makeImage({
  layers: [makeLayer([dir('srv/'), file('srv/app', 'v1'), file('srv/big', 'z'.repeat(3 << 20))]), makeLayer([file('srv/app', 'v2')])],
  config: { Cmd: ['/srv/app'] },
});

describe('registry pulls (real docker-registry on loopback)', () => {
  it('pulls by tag, verifies digests, reports progress, then serves from the cache', async () => {
    await pushImage(registry.host, 'test/app', '1', app);
    const events: ImageProgressEvent[] = [];
    const img = await resolveImage(`${registry.host}/test/app:1`, { stateDir, onProgress: (e) => events.push(e) });
    expect(img).toMatchObject({ digest: app.manifestDigest, cached: false });
    expect(ext4Cat(img.rootfsPath, '/srv/app')).toBe('v2');
    const layerEvents = events.filter((e): e is Extract<ImageProgressEvent, { kind: 'layer' }> => e.kind === 'layer');
    expect(layerEvents.at(-1)).toMatchObject({ index: 2, count: 2 });
    const firstLayerDone = layerEvents.filter((e) => e.index === 1).at(-1);
    expect(firstLayerDone?.bytes).toBe(app.layers[0]!.blob.length);
    expect(events.map((e) => e.kind)).toContain('filesystem');
    const again = await resolveImage(`${registry.host}/test/app:1`, { stateDir });
    expect(again).toMatchObject({ digest: app.manifestDigest, cached: true, rootfsPath: img.rootfsPath });
  });

  it('picks linux/amd64 from a multi-platform index, and names the platforms when it is missing', async () => {
    const amd = makeImage({ layers: [makeLayer([file('arch', 'amd64')])] });
    const arm = makeImage({ layers: [makeLayer([file('arch', 'arm64')])], architecture: 'arm64' });
    await pushImage(registry.host, 'test/multi', 'amd', amd);
    await pushImage(registry.host, 'test/multi', 'arm', arm);
    const entry = (img: typeof amd, architecture: string) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.manifestDigest, size: img.manifest.length, platform: { os: 'linux', architecture } });
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [entry(arm, 'arm64'), entry(amd, 'amd64')] }));
    await pushManifest(registry.host, 'test/multi', 'both', index, 'application/vnd.oci.image.index.v1+json');
    const img = await resolveImage(`${registry.host}/test/multi:both`, { stateDir });
    expect(img.digest).toBe(amd.manifestDigest);
    expect(ext4Cat(img.rootfsPath, '/arch')).toBe('amd64');
    // Pinned by the index's digest (what `docker pull` shows for a multi-platform image).
    pinnedIndex = { digest: sha256Digest(index), manifest: amd.manifestDigest };
    expect(await resolveImage(`${registry.host}/test/multi@${pinnedIndex.digest}`, { stateDir })).toMatchObject({ digest: amd.manifestDigest, cached: true });

    const armOnly = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [entry(arm, 'arm64')] }));
    await pushManifest(registry.host, 'test/multi', 'armonly', armOnly, 'application/vnd.oci.image.index.v1+json');
    await expect(resolveImage(`${registry.host}/test/multi:armonly`, { stateDir })).rejects.toMatchObject({ kind: 'unsupported', code: 'image.platform', message: expect.stringContaining('linux/arm64') });
    // A single-platform manifest for arm64 is caught from its config.
    await expect(resolveImage(`${registry.host}/test/multi:arm`, { stateDir })).rejects.toMatchObject({ kind: 'unsupported', message: expect.stringContaining('linux/arm64') });
  });

  it('rejects a blob tampered with in the registry storage, naming the layer digest', async () => {
    const victim = makeImage({ layers: [makeLayer([file('payload', 'genuine')])] });
    await pushImage(registry.host, 'test/tamper', '1', victim);
    const layer = victim.layers[0]!;
    const path = blobDataPath(registry.storage, layer.digest);
    const original = await readFile(path);
    const evil = makeLayer([file('payload', 'EVILEVI')]).blob;
    expect(evil.length).toBe(original.length);
    await writeFile(path, evil);
    const err = await resolveImage(`${registry.host}/test/tamper:1`, { stateDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'invalid', code: 'image.digest_mismatch' });
    expect((err as Error).message).toContain(layer.digest);
    expect((err as Error).message).toContain(sha256Digest(evil));
  });

  it('rejects a manifest tampered with in the registry storage, by tag and by digest', async () => {
    const victim = makeImage({ layers: [makeLayer([file('m', 'manifest')])], config: { Cmd: ['/m'] } });
    await pushImage(registry.host, 'test/tamper-manifest', '1', victim);
    const path = blobDataPath(registry.storage, victim.manifestDigest);
    const original = await readFile(path, 'utf8');
    await writeFile(path, original.replace('tar+gzip', 'tar+zstd'));
    const byTag = await resolveImage(`${registry.host}/test/tamper-manifest:1`, { stateDir }).catch((e: unknown) => e);
    expect(byTag).toMatchObject({ kind: 'invalid', code: 'image.digest_mismatch', message: expect.stringContaining(victim.manifestDigest) });
    const byDigest = await resolveImage(`${registry.host}/test/tamper-manifest@${victim.manifestDigest}`, { stateDir }).catch((e: unknown) => e);
    expect(byDigest).toMatchObject({ kind: 'invalid', code: 'image.digest_mismatch', message: expect.stringContaining(victim.manifestDigest) });
  });

  it('pulls over HTTPS with an extra CA, and does not accept an untrusted certificate', async () => {
    const dir = await mkdtemp(join(work, 'tls-'));
    const sh = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    sh('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=microagent test CA', '-days', '1', '-keyout', 'ca.key', '-out', 'ca.pem');
    sh('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'leaf.key', '-out', 'leaf.csr');
    await writeFile(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    sh('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'san.ext', '-out', 'leaf.pem');
    const tls = await startRegistry(dir, { storage: registry.storage, tls: { certificate: join(dir, 'leaf.pem'), key: join(dir, 'leaf.key') } });
    try {
      const ca = await readFile(join(dir, 'ca.pem'), 'utf8');
      const img = await resolveImage(`${tls.host}/test/app:1`, { stateDir: join(dir, 'state'), caCertificates: [ca] });
      expect(img.digest).toBe(app.manifestDigest);
      expect(ext4Cat(img.rootfsPath, '/srv/app')).toBe('v2');
      // Untrusted: HTTPS fails, the loopback fallback to plain HTTP meets a TLS port, and the pull fails.
      await expect(resolveImage(`${tls.host}/test/app:1`, { stateDir: join(dir, 'state2') })).rejects.toMatchObject({ code: 'registry.http_error' });
    } finally {
      await tls.close();
    }
  });

  it('a connection dropped in the middle of a layer is a transient error to pull again, not a bug to report', async () => {
    await pushImage(registry.host, 'test/app', '1', app);
    const [host, port] = registry.host.split(':') as [string, string];
    const layer = app.layers[0]?.digest as string;
    // In front of the registry: the first layer's body is cut after its first chunk, Content-Length sent.
    const front = createServer((req, res) => {
      const upstream = httpRequest({ host, port: Number(port), path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (!(req.url ?? '').includes(layer)) return void answer.pipe(res);
        answer.once('data', (chunk: Buffer) => {
          res.write(chunk.subarray(0, chunk.length >> 1));
          setImmediate(() => res.socket?.destroy());
          answer.destroy();
        });
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    try {
      const frontHost = `127.0.0.1:${(front.address() as AddressInfo).port}`;
      const err = await resolveImage(`${frontHost}/test/app:1`, { stateDir: join(work, 'state-cut') }).catch((e: unknown) => e as MicroagentError);
      expect(err).toMatchObject({ kind: 'transient', code: 'image.blob_truncated', retryable: true });
      expect((err as MicroagentError).message).toContain(layer);
      expect((err as MicroagentError).remediation).toMatch(/pull again/i);
    } finally {
      front.closeAllConnections();
      await new Promise((resolve) => front.close(resolve));
    }
  });

  it('answers unknown tags with not_found and a dead registry with transient', async () => {
    await expect(resolveImage(`${registry.host}/test/app:nope`, { stateDir })).rejects.toMatchObject({ kind: 'not_found', code: 'registry.not_found' });
    await expect(resolveImage('127.0.0.1:1/test/app:1', { stateDir })).rejects.toMatchObject({ kind: 'transient', code: 'registry.unreachable' });
  });

  it('a registry on plain HTTP that is not named as loopback needs --insecure-registry', async () => {
    await pushImage(registry.host, 'test/app', '1', app);
    // The IPv4-mapped address reaches the loopback registry without being taken for loopback, so only
    // the flag lets microagent speak plain HTTP to it.
    const mapped = `[::ffff:${registry.host.replace(/:[0-9]+$/, '')}]:${registry.host.split(':').at(-1)}`;
    const create = (...extra: string[]) =>
      spawnSync(process.execPath, [CLI, '--state-dir', join(work, 'cli-state'), 'create', `ws${extra.length}`, '--image', `${mapped}/test/app:1`, ...extra], { encoding: 'utf8' });
    const refused = create();
    expect(refused.status).toBe(75);
    expect(refused.stderr).toContain(`needs --insecure-registry ${mapped}`);
    const pulled = create('--insecure-registry', mapped);
    expect(pulled.stderr).toBe('');
    expect(pulled.status).toBe(0);
    expect(pulled.stdout).toMatch(/: prepared$/m);
  });

  it('follows the bearer-token flow and blob redirects without leaking the token to the other origin', async () => {
    const front = await startAuthFront(registry.host);
    try {
      const fresh = join(work, 'state-token');
      const img = await resolveImage(`${front.host}/test/app:1`, { stateDir: fresh });
      expect(img.digest).toBe(app.manifestDigest);
      expect(ext4Cat(img.rootfsPath, '/srv/app')).toBe('v2');
      expect(front.tokenRequests.length).toBeGreaterThan(0);
      expect(front.tokenRequests.every((r) => r.scope === 'repository:test/app:pull' && r.service === 'test-registry' && r.basic === null)).toBe(true);
      expect(front.leakedAuthorization).toEqual([]);
    } finally {
      await front.close();
    }
  });

  it('pulls from a docker-registry in token-auth mode, through its real WWW-Authenticate challenge', async () => {
    const dir = await mkdtemp(join(work, 'token-'));
    const tokens = await startTokenServer(dir, 'test-registry', 'test-issuer');
    const secured = await startRegistry(dir, { storage: registry.storage, token: { realm: tokens.realm, service: 'test-registry', issuer: 'test-issuer', rootCertBundle: tokens.certPath } });
    try {
      const anonymous = await fetch(`http://${secured.host}/v2/test/app/manifests/1`);
      expect(anonymous.status).toBe(401);
      const img = await resolveImage(`${secured.host}/test/app:1`, { stateDir: join(dir, 'state') });
      expect(img.digest).toBe(app.manifestDigest);
      expect(ext4Cat(img.rootfsPath, '/srv/app')).toBe('v2');
      expect(tokens.requests.length).toBeGreaterThan(0);
      expect(tokens.requests.every((r) => r.service === 'test-registry' && r.scope === 'repository:test/app:pull')).toBe(true);
    } finally {
      await secured.close();
      await tokens.close();
    }
  });

  it('sends basic credentials to the token service only when configured, and fails typed without them', async () => {
    const basic = { username: 'alice', password: 's3cret' };
    const front = await startAuthFront(registry.host, { basic });
    try {
      const fresh = join(work, 'state-basic');
      const err = await resolveImage(`${front.host}/test/app:1`, { stateDir: fresh }).catch((e: unknown) => e);
      expect(err).toMatchObject({ kind: 'invalid', code: 'registry.unauthorized' });
      expect((err as Error).message).not.toContain('s3cret');
      const img = await resolveImage(`${front.host}/test/app:1`, { stateDir: fresh, auth: { [front.host]: basic } });
      expect(img.digest).toBe(app.manifestDigest);
      expect(front.tokenRequests.at(-1)?.basic).toBe(`Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    } finally {
      await front.close();
    }
  });

  it('create uses the credentials docker login saved ($DOCKER_CONFIG), and says how to log in without them', async () => {
    const front = await startAuthFront(registry.host, { basic: { username: 'bob', password: 'hunter2' } });
    try {
      const dockerConfig = await mkdtemp(join(work, 'docker-config-'));
      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [`https://${front.host}`]: { auth: Buffer.from('bob:hunter2').toString('base64') } } }));
      // Asynchronously: the auth front answering runs on this event loop.
      const create = (name: string, env: NodeJS.ProcessEnv) =>
        new Promise<{ status: number | null; stderr: string }>((resolve) => {
          execFile(process.execPath, [CLI, '--state-dir', join(work, 'login-state'), 'create', name, '--image', `${front.host}/test/app:1`], { env: { ...process.env, ...env } }, (err, _stdout, stderr) =>
            resolve({ status: err === null ? 0 : ((err as { code?: number }).code ?? null), stderr }),
          );
        });
      const anonymous = await create('anon', { DOCKER_CONFIG: join(work, 'no-docker-config') });
      expect(anonymous.status).toBe(1);
      expect(anonymous.stderr).toContain(`log in with "docker login ${front.host}"`);
      const loggedIn = await create('bob', { DOCKER_CONFIG: dockerConfig });
      expect(loggedIn.stderr).toBe('');
      expect(loggedIn.status).toBe(0);
      expect(front.tokenRequests.at(-1)?.basic).toBe(`Basic ${Buffer.from('bob:hunter2').toString('base64')}`);
    } finally {
      await front.close();
    }
  });

  it('serves an image pinned by digest from the cache without the network, by its manifest or its index', async () => {
    await registry.close();
    const img = await resolveImage(`${registry.host}/test/app@${app.manifestDigest}`, { stateDir });
    expect(img).toMatchObject({ cached: true, digest: app.manifestDigest });
    expect(await resolveImage(`${registry.host}/test/multi@${pinnedIndex.digest}`, { stateDir })).toMatchObject({ cached: true, digest: pinnedIndex.manifest });
  });
});
