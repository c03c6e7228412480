/**
 * Registry authentication: parsing WWW-Authenticate challenges (pure) and the bearer-token exchange of
 * the distribution spec (realm/service/scope, with basic credentials when configured). Never logs or
 * embeds a credential or token in an error message, and never sends credentials to a plain-HTTP realm
 * of an HTTPS registry.
 */
import { MicroagentError } from '../../errors.js';
import { httpGet, type HttpResponse } from './registry-http.js';

export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
}

export type Challenge =
  | { readonly scheme: 'bearer'; readonly realm: string; readonly service: string | undefined; readonly scope: string | undefined }
  | { readonly scheme: 'basic' };

/** Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`; null for anything else. */
export function parseChallenge(header: string | null): Challenge | null {
  if (header === null) return null;
  const match = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (match === null) return null;
  const scheme = (match[1] ?? '').toLowerCase();
  const params = new Map<string, string>();
  const paramRe = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)/gy;
  const rest = match[2] ?? '';
  paramRe.lastIndex = 0;
  while (paramRe.lastIndex < rest.length) {
    const m = paramRe.exec(rest);
    if (m === null) break;
    params.set((m[1] ?? '').toLowerCase(), m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? ''));
  }
  if (scheme === 'basic') return { scheme: 'basic' };
  if (scheme !== 'bearer') return null;
  const realm = params.get('realm');
  if (realm === undefined) return null;
  return { scheme: 'bearer', realm, service: params.get('service'), scope: params.get('scope') };
}

export function basicHeader(credentials: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

/** A registry (or its token service) that refused us; the fix is the same wherever it was said. */
export function unauthorized(registry: string, detail: string): MicroagentError {
  return new MicroagentError('invalid', `registry ${registry} refused access: ${detail}`, {
    code: 'registry.unauthorized',
    remediation: `log in with "docker login ${registry}" (microagent reads the credentials it saves in ~/.docker/config.json, or $DOCKER_CONFIG), and check that the repository exists and you may pull it`,
  });
}

/** Exchanges a bearer challenge for a token. */
export async function fetchBearerToken(
  registry: string,
  registryIsHttps: boolean,
  challenge: Extract<Challenge, { scheme: 'bearer' }>,
  scope: string,
  credentials: RegistryCredentials | undefined,
  extraCa: readonly string[],
): Promise<string> {
  let realm: URL;
  try {
    realm = new URL(challenge.realm);
  } catch {
    throw unauthorized(registry, 'its token realm is not a URL');
  }
  if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw unauthorized(registry, `its token realm uses ${realm.protocol}`);
  if (challenge.service !== undefined) realm.searchParams.set('service', challenge.service);
  realm.searchParams.set('scope', challenge.scope ?? scope);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (credentials !== undefined) {
    if (registryIsHttps && realm.protocol !== 'https:') throw unauthorized(registry, 'it asks for credentials over plain HTTP');
    headers['authorization'] = basicHeader(credentials);
  }
  let res: HttpResponse;
  try {
    res = await httpGet(realm, headers, extraCa);
  } catch (err) {
    throw new MicroagentError('transient', `token service of registry ${registry} (${realm.host}) is unreachable`, {
      code: 'registry.unreachable',
      remediation: 'Check the network path to the registry and its token service.',
      cause: err,
    });
  }
  if (res.status === 401 || res.status === 403) {
    res.discard();
    throw unauthorized(registry, `token service answered ${res.status}`);
  }
  if (res.status !== 200) {
    res.discard();
    throw new MicroagentError('transient', `token service of registry ${registry} answered ${res.status}`, { code: 'registry.token_failed' });
  }
  let body: { token?: unknown; access_token?: unknown };
  try {
    body = JSON.parse(await res.text(1 << 20)) as typeof body;
  } catch {
    throw unauthorized(registry, 'token response is not JSON (or too large)');
  }
  const token = typeof body.token === 'string' ? body.token : body.access_token;
  if (typeof token !== 'string' || token === '') throw unauthorized(registry, 'token response has no token');
  return token;
}
