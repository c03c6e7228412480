// TARGET strings for `policy explain` and test cases: URLs are requests, authorities are connections,
// and hosts are passed on raw so decide() (not a URL parser) judges odd spellings.
import { describe, expect, it } from 'vitest';
import { targetInput, type DecisionInput, type TargetOptions } from '../../src/policy/index.js';

describe('targetInput', () => {
  it.each([
    ['https://api.github.com/repos/x?page=2', {}, { protocol: 'https', host: 'api.github.com', port: 443, method: 'GET', path: '/repos/x?page=2' }],
    ['http://example.com', {}, { protocol: 'http', host: 'example.com', port: 80, method: 'GET', path: '/' }],
    ['HTTPS://Example.com:8443/a', { method: 'POST' }, { protocol: 'https', host: 'Example.com', port: 8443, method: 'POST', path: '/a' }],
    ['http://[::1]:8080/x', {}, { protocol: 'http', host: '[::1]', port: 8080, method: 'GET', path: '/x' }],
    ['http://127.1/', {}, { protocol: 'http', host: '127.1', port: 80, method: 'GET', path: '/' }],
    ['api.github.com', {}, { protocol: 'https', host: 'api.github.com', port: 443 }],
    ['api.github.com:443', {}, { protocol: 'https', host: 'api.github.com', port: 443 }],
    ['example.com:80', {}, { protocol: 'http', host: 'example.com', port: 80 }],
    ['10.0.0.1:5432', {}, { protocol: 'tcp', host: '10.0.0.1', port: 5432 }],
    ['[fd00:ec2::254]:80', {}, { protocol: 'http', host: '[fd00:ec2::254]', port: 80 }],
    ['2001:db8::1', {}, { protocol: 'https', host: '2001:db8::1', port: 443 }],
    ['example.com', { protocol: 'dns' }, { protocol: 'dns', host: 'example.com' }],
    ['example.com', { protocol: 'tcp' }, { protocol: 'tcp', host: 'example.com' }],
    ['example.com:443', { method: 'GET' }, { protocol: 'https', host: 'example.com', port: 443, method: 'GET', path: '/' }],
    ['example.com', { ip: '93.184.215.14' }, { protocol: 'https', host: 'example.com', port: 443, ip: '93.184.215.14' }],
  ] as [string, TargetOptions, DecisionInput][])('%s %j', (target, options, input) => {
    expect(targetInput(target, options)).toEqual({ ok: true, value: input });
  });

  it.each([
    ['ftp://example.com/', /scheme "ftp"/],
    ['https://user:pw@example.com/', /user info/],
    ['example.com:0', /not a port/],
    ['example.com:65536', /not a port/],
    ['example.com:https', /not a port/],
    ['[::1', /unclosed/],
    ['[::1]x', /unexpected/],
    ['example.com/path', /not a URL or host/],
    [':443', /no host/],
  ])('%s is refused', (target, problem) => {
    const parsed = targetInput(target);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) {
      expect(parsed.problem).toMatch(problem);
      expect(parsed.fix.length).toBeGreaterThan(0);
    }
  });
});
