/**
 * Registry credentials where users already keep them: the `auths` of Docker's config file
 * (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), as `docker login` writes them.
 * Credential helpers (`credsStore`, `credHelpers`) are not run. A missing file means no credentials;
 * an unreadable one is warned about and ignored, so public images still pull. Never logs a secret.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { childLog } from '../../log.js';
import type { RegistryCredentials } from './registry-auth.js';

const log = childLog('rootfs');

/** Docker names Docker Hub by its v1 index; image references name it docker.io. */
const REGISTRY_ALIASES: Readonly<Record<string, string>> = { 'index.docker.io': 'docker.io', 'registry-1.docker.io': 'docker.io' };

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env['DOCKER_CONFIG'] ?? join(homedir(), '.docker'), 'config.json');
}

/** Credentials by registry (HOST[:PORT], as image references name it). */
export function readDockerCredentials(path = dockerConfigPath()): Record<string, RegistryCredentials> {
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(readFileSync(path, 'utf8')) as typeof config;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ path, err: (err as Error).message }, 'registry credentials unreadable; pulling without them');
    return {};
  }
  const credentials: Record<string, RegistryCredentials> = {};
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    const decoded = entry.auth === undefined ? null : Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded?.indexOf(':') ?? -1;
    const username = decoded !== null && colon > 0 ? decoded.slice(0, colon) : entry.username;
    const password = decoded !== null && colon > 0 ? decoded.slice(colon + 1) : entry.password;
    if (username === undefined || password === undefined) continue;
    const host = registryOf(key);
    if (host !== null) credentials[REGISTRY_ALIASES[host] ?? host] = { username, password };
  }
  return credentials;
}

/** `https://index.docker.io/v1/`, `localhost:5000` or `registry.example` -> the host[:port]. */
function registryOf(key: string): string | null {
  try {
    return new URL(key.includes('://') ? key : `https://${key}`).host;
  } catch {
    return null;
  }
}
