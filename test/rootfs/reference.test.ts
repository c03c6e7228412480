import { describe, expect, it } from 'vitest';
import { formatImageReference, parseImageReference } from '../../src/vm/rootfs/index.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

describe('parseImageReference', () => {
  it.each([
    ['debian', { kind: 'registry', registry: 'docker.io', repository: 'library/debian', tag: 'latest', digest: undefined }],
    ['debian:12', { kind: 'registry', registry: 'docker.io', repository: 'library/debian', tag: '12' }],
    ['team/app:v1.2_3', { kind: 'registry', registry: 'docker.io', repository: 'team/app', tag: 'v1.2_3' }],
    ['localhost:5000/x', { kind: 'registry', registry: 'localhost:5000', repository: 'x', tag: 'latest' }],
    ['localhost/x', { kind: 'registry', registry: 'localhost', repository: 'x' }],
    ['127.0.0.1:5000/a/b/c:t', { kind: 'registry', registry: '127.0.0.1:5000', repository: 'a/b/c', tag: 't' }],
    ['[::1]:5000/app', { kind: 'registry', registry: '[::1]:5000', repository: 'app' }],
    ['ghcr.io/o/p-q__r.s', { kind: 'registry', registry: 'ghcr.io', repository: 'o/p-q__r.s' }],
    [`reg.example:443/app@${DIGEST}`, { kind: 'registry', registry: 'reg.example:443', repository: 'app', tag: undefined, digest: DIGEST }],
    [`app:1@${DIGEST}`, { kind: 'registry', tag: '1', digest: DIGEST }],
    ['oci:/var/images/app', { kind: 'layout', path: '/var/images/app', tag: undefined }],
    ['oci:./layout:v2', { kind: 'layout', path: './layout', tag: 'v2' }],
    ['oci-archive:/tmp/a.tar', { kind: 'archive', format: 'oci-archive', path: '/tmp/a.tar' }],
    ['docker-archive:/tmp/a:b.tar', { kind: 'archive', format: 'docker-archive', path: '/tmp/a:b.tar' }],
    ['/abs/dir', { kind: 'path', path: '/abs/dir' }],
    ['./rel.tar', { kind: 'path', path: './rel.tar' }],
  ])('parses %s', (raw, expected) => {
    expect(parseImageReference(raw)).toMatchObject(expected);
  });

  it.each([
    ['', 'empty'],
    [' debian', 'whitespace'],
    ['Debian', 'lowercase'],
    ['app:', 'not a valid tag'],
    ['app:-x', 'not a valid tag'],
    ['a//b', 'name component'],
    ['app@sha256:short', 'not a valid sha256'],
    ['my_host:5000/app', 'registry host'],
    ['oci:', 'path is empty'],
    ['x/-y', 'name component'],
  ])('rejects %j (%s)', (raw, detail) => {
    expect(() => parseImageReference(raw)).toThrow(expect.objectContaining({ kind: 'invalid', code: expect.stringMatching(/^image\.(reference|digest)_invalid$/), message: expect.stringContaining(detail) }));
  });

  it('refuses digest algorithms other than sha256 as unsupported', () => {
    expect(() => parseImageReference(`app@sha512:${'a'.repeat(128)}`)).toThrow(expect.objectContaining({ kind: 'unsupported' }));
  });

  it('formats back to a canonical form', () => {
    expect(formatImageReference(parseImageReference('debian'))).toBe('docker.io/library/debian:latest');
    expect(formatImageReference(parseImageReference(`localhost:5000/x@${DIGEST}`))).toBe(`localhost:5000/x@${DIGEST}`);
  });
});
