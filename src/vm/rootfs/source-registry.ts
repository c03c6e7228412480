/**
 * Image source: a registry speaking the OCI distribution API (GET /v2/, manifests by tag or digest, blobs),
 * over HTTPS, falling back to plain HTTP only for loopback and configured insecure registries. Auth
 * follows the server's WWW-Authenticate challenge (bearer token or basic). Redirects are followed by hand so credentials never
 * travel to another origin. Every manifest and blob is verified against its digest; sizes are capped.
 */
import { MicroagentError } from '../../errors.js';
import { childLog } from '../../log.js';
import { checkDigest, readVerified, sha256Digest, verifyBlob } from './digest.js';
import { MANIFEST_ACCEPT, MANIFEST_CAP, type Descriptor } from './oci.js';
import { DEFAULT_REGISTRY, type ImageReference } from './reference.js';
import { basicHeader, fetchBearerToken, parseChallenge, unauthorized, type RegistryCredentials } from './registry-auth.js';
import { httpGet, type HttpResponse } from './registry-http.js';
import type { ImageSource } from './source.js';

const log = childLog('rootfs');
const MAX_REDIRECTS = 5;

export interface RegistryOptions {
  /** Registries (host[:port]) that may be reached over plain HTTP when HTTPS fails. Loopback hosts always may. */
  readonly insecureRegistries?: readonly string[];
  /** Extra CA certificates (PEM) trusted for registries and their token services, beside the system roots. */
  readonly caCertificates?: readonly string[];
  /** Credentials per registry host[:port] as written in references (e.g. "docker.io", "localhost:5000"). */
  readonly auth?: Readonly<Record<string, RegistryCredentials>>;
}

type RegistryRef = Extract<ImageReference, { kind: 'registry' }>;

function isLoopback(registry: string): boolean {
  const host = registry.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host);
}

function unreachable(registry: string, err: unknown): MicroagentError {
  const detail = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  const unnamed = detail === 'ENOTFOUND' || detail === 'EAI_AGAIN';
  return new MicroagentError('transient', `registry ${registry} is unreachable: ${detail}`, {
    code: 'registry.unreachable',
    remediation: unnamed
      ? `${registry.replace(/:[0-9]+$/, '')} does not resolve on this host: check the image reference and the host's DNS`
      : `check the registry address and that it is running; a registry on plain HTTP needs --insecure-registry ${registry} (loopback ones are tried over HTTP already)`,
    cause: err,
  });
}

function statusError(registry: string, what: string, status: number): MicroagentError {
  if (status === 404) {
    return new MicroagentError('not_found', `registry ${registry} has no ${what}`, {
      code: 'registry.not_found',
      remediation: 'Check the repository name and tag (or digest).',
    });
  }
  if (status === 401 || status === 403) return unauthorized(registry, `${what} answered ${status}`);
  return new MicroagentError(status === 429 || status >= 500 ? 'transient' : 'invalid', `registry ${registry} answered ${status} for ${what}`, {
    code: 'registry.http_error',
    remediation: status === 429 || status >= 500 ? 'Try again later.' : 'Check the image reference.',
  });
}

/** Opens a registry reference: pings /v2/ (HTTPS; plain HTTP only as a fallback where allowed) and learns how to authenticate. */
export async function openRegistry(ref: RegistryRef, opts: RegistryOptions): Promise<ImageSource> {
  const { registry, repository } = ref;
  const httpAllowed = isLoopback(registry) || (opts.insecureRegistries ?? []).includes(registry);
  const host = registry === DEFAULT_REGISTRY ? 'registry-1.docker.io' : registry;
  const extraCa = opts.caCertificates ?? [];
  const credentials = opts.auth?.[registry];
  const scope = `repository:${repository}:pull`;
  const description = `registry image ${registry}/${repository}${ref.tag === undefined ? '' : `:${ref.tag}`}${ref.digest === undefined ? '' : `@${ref.digest}`}`;
  let base = `https://${host}`;
  let authorization: string | undefined;

  async function send(url: URL, accept: string): Promise<HttpResponse> {
    let target = url;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const headers: Record<string, string> = { accept };
      // Credentials only ever go to the registry's own origin, never to a redirect target elsewhere.
      if (authorization !== undefined && target.origin === new URL(base).origin) headers['authorization'] = authorization;
      let res: HttpResponse;
      try {
        res = await httpGet(target, headers, extraCa);
      } catch (err) {
        throw unreachable(registry, err);
      }
      const location = res.header('location');
      if (res.status >= 300 && res.status < 400 && location !== null) {
        res.discard();
        target = new URL(location, target);
        if (target.protocol !== 'https:' && target.protocol !== 'http:') throw statusError(registry, 'a redirect to a non-HTTP URL', res.status);
        continue;
      }
      return res;
    }
    throw new MicroagentError('invalid', `registry ${registry} redirected more than ${MAX_REDIRECTS} times`, { code: 'registry.redirect_loop' });
  }

  async function authenticate(res: HttpResponse): Promise<boolean> {
    const challenge = parseChallenge(res.header('www-authenticate'));
    res.discard();
    if (challenge === null) return false;
    if (challenge.scheme === 'basic') {
      if (credentials === undefined) return false;
      authorization = basicHeader(credentials);
      return true;
    }
    authorization = `Bearer ${await fetchBearerToken(registry, base.startsWith('https:'), challenge, scope, credentials, extraCa)}`;
    return true;
  }

  /** GET with auth: on a 401, answer the challenge once and retry. */
  async function get(path: string, accept: string, what: string): Promise<HttpResponse> {
    const url = new URL(`${base}/v2/${path}`);
    let res = await send(url, accept);
    if (res.status === 401 && (await authenticate(res))) res = await send(url, accept);
    if (res.status !== 200) {
      res.discard();
      throw statusError(registry, what, res.status);
    }
    return res;
  }

  let ping: HttpResponse;
  try {
    ping = await send(new URL(`${base}/v2/`), 'application/json');
  } catch (err) {
    // Like Docker: loopback and listed insecure registries may speak plain HTTP when HTTPS fails.
    if (!httpAllowed) throw err;
    base = `http://${host}`;
    ping = await send(new URL(`${base}/v2/`), 'application/json');
  }
  if (ping.status === 401) await authenticate(ping);
  else if (ping.status !== 200) {
    ping.discard();
    throw statusError(registry, 'the /v2/ API (is it an OCI registry?)', ping.status);
  } else ping.discard();
  log.debug({ registry, repository, scheme: base.slice(0, base.indexOf(':')), authenticated: authorization !== undefined }, 'registry opened');

  async function fetchManifest(reference: string, expectedDigest: string | undefined): Promise<{ bytes: Buffer; digest: string; mediaType: string | undefined }> {
    const res = await get(`${repository}/manifests/${reference}`, MANIFEST_ACCEPT, `manifest ${repository}:${reference}`);
    const length = Number(res.header('content-length') ?? '0');
    if (length > MANIFEST_CAP) {
      res.discard();
      throw new MicroagentError('invalid', `registry ${registry}: manifest ${reference} is ${length} bytes, over the limit`, { code: 'image.manifest_invalid' });
    }
    const bytes =
      expectedDigest === undefined
        ? await readCapped(res.body, MANIFEST_CAP, `${description}: manifest`)
        : await readVerified(res.body, { digest: expectedDigest, size: undefined }, `${description}: manifest`, MANIFEST_CAP);
    const digest = sha256Digest(bytes);
    const announced = res.header('docker-content-digest');
    if (expectedDigest === undefined && announced !== null && announced.startsWith('sha256:') && checkDigest(announced, description) !== digest) {
      throw new MicroagentError('invalid', `${description}: manifest hashes to ${digest} but the registry announced ${announced}`, {
        code: 'image.digest_mismatch',
        remediation: 'The registry or something between it and you altered the manifest; pull again or pull by digest.',
      });
    }
    return { bytes, digest, mediaType: res.header('content-type')?.split(';')[0]?.trim() };
  }

  return {
    description,
    tag: undefined,
    root: () => fetchManifest(ref.digest ?? (ref.tag as string), ref.digest),
    manifest: async (descriptor: Descriptor) => {
      const fetched = await fetchManifest(descriptor.digest, descriptor.digest);
      if (fetched.bytes.length !== descriptor.size) {
        throw new MicroagentError('invalid', `${description}: manifest ${descriptor.digest} is ${fetched.bytes.length} bytes, the index says ${descriptor.size}`, { code: 'image.digest_mismatch' });
      }
      return fetched.bytes;
    },
    blob: (descriptor, what, cap) => {
      async function* stream(): AsyncGenerator<Buffer> {
        const res = await get(`${repository}/blobs/${descriptor.digest}`, '*/*', `${what} ${descriptor.digest}`);
        const length = Number(res.header('content-length') ?? '0');
        if (length > cap) {
          res.discard();
          throw new MicroagentError('invalid', `${description}: ${what} ${descriptor.digest} is ${length} bytes, over the ${cap}-byte limit`, { code: 'image.blob_too_large' });
        }
        yield* res.body;
      }
      return verifyBlob(stream(), descriptor, `${description}: ${what}`, cap);
    },
    close: async () => undefined,
  };
}

/** A manifest fetched by tag has no digest to check in advance: collect it under the cap, then hash it. */
async function readCapped(chunks: AsyncIterable<Buffer>, cap: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of chunks) {
    total += chunk.length;
    if (total > cap) throw new MicroagentError('invalid', `${what} is larger than the ${cap}-byte limit`, { code: 'image.manifest_invalid' });
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}
