// Reading the credentials `docker login` saved: the auths forms Docker writes, Docker Hub's v1 index
// key, and a missing or broken file meaning no credentials (public images still pull).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dockerConfigPath, readDockerCredentials } from '../../src/vm/rootfs/docker-credentials.js';

const dir = mkdtempSync(join(tmpdir(), 'docker-config-'));
const config = (value: unknown) => {
  const path = join(dir, `${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
};
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('readDockerCredentials', () => {
  it('reads auth (base64 user:password) and username/password entries, keyed by host[:port]', () => {
    const path = config({
      auths: {
        'https://index.docker.io/v1/': { auth: b64('hubuser:hub:pass') },
        'localhost:5000': { auth: b64('local:pw') },
        'https://registry.example': { username: 'u', password: 'p' },
        'broken.example': { auth: b64('no-colon') },
      },
      credsStore: 'desktop',
    });
    expect(readDockerCredentials(path)).toEqual({
      'docker.io': { username: 'hubuser', password: 'hub:pass' },
      'localhost:5000': { username: 'local', password: 'pw' },
      'registry.example': { username: 'u', password: 'p' },
    });
  });

  it('a missing or unparsable file means no credentials', () => {
    expect(readDockerCredentials(join(dir, 'absent.json'))).toEqual({});
    expect(readDockerCredentials(config('{not json'))).toEqual({});
  });

  it('looks in $DOCKER_CONFIG, else ~/.docker', () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: '/etc/dc' })).toBe('/etc/dc/config.json');
    expect(dockerConfigPath({})).toMatch(/\/\.docker\/config\.json$/);
  });
});
