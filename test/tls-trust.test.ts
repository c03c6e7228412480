// Which CAs microagent's TLS clients trust (src/tls-trust.ts), judged by real TLS handshakes against a
// local origin whose CA only the host's extra-CA file holds.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, rootCertificates, type SecureContext } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUpstreamTrust } from '../src/proxy/upstream.js';
import { deferExtraCaCerts, DEFERRED_EXTRA_CA_ENV, trustedCas, trustedContext, withoutRoots } from '../src/tls-trust.js';
import { makeOriginCa, startHttpsOrigin, type OriginCa } from './proxy/helpers.js';

let originCa: OriginCa;
let port: number;
let close: () => void;
let otherCaPath: string;
let bundlePath: string;
let rootsOnlyPath: string;

beforeAll(async () => {
  originCa = makeOriginCa();
  const origin = await startHttpsOrigin(originCa);
  port = origin.port;
  close = () => origin.server.close();
  otherCaPath = join(originCa.dir, 'other.pem');
  writeFileSync(otherCaPath, rootCertificates[0] as string);
  // A distribution bundle: Node's roots, re-wrapped at 76 columns with CRLF, around the origin's CA.
  bundlePath = join(originCa.dir, 'bundle.pem');
  writeFileSync(bundlePath, [...rootCertificates.slice(0, 20).map(rewrap), originCa.caPem, ...rootCertificates.slice(20).map(rewrap)].join('\r\n'));
  rootsOnlyPath = join(originCa.dir, 'roots-only.pem');
  writeFileSync(rootsOnlyPath, `# a distribution's bundle\n${rootCertificates.map(rewrap).join('\n')}\n`);
});
afterAll(() => close());

function rewrap(pem: string): string {
  const body = pem.replace(/-----[A-Z ]+-----|\s+/g, '');
  return `-----BEGIN CERTIFICATE-----\r\n${body.match(/.{1,76}/g)?.join('\r\n')}\r\n-----END CERTIFICATE-----`;
}

/** The handshake's outcome against the origin: 'trusted' or the verification error's code. */
function handshake(secureContext: SecureContext): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'origin.test', secureContext });
    socket.once('secureConnect', () => {
      socket.destroy();
      resolve('trusted');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('trustedCas', () => {
  const missing = () => join(originCa.dir, 'missing.pem');
  it.each([
    ['nothing extra: Node\'s default store', () => ({}), [], 'default', null],
    ['NODE_EXTRA_CA_CERTS set: Node loaded it at start-up, the default store has it', () => ({ NODE_EXTRA_CA_CERTS: originCa.caPath }), [], 'default', null],
    ['deferred file, empty (NODE_EXTRA_CA_CERTS was unset)', () => ({ [DEFERRED_EXTRA_CA_ENV]: '' }), [], 'default', null],
    ['deferred file holding the origin CA', () => ({ [DEFERRED_EXTRA_CA_ENV]: originCa.caPath }), [], 'explicit', 'trusted'],
    ['deferred file holding one of Node\'s roots: nothing to add', () => ({ [DEFERRED_EXTRA_CA_ENV]: otherCaPath }), [], 'default', null],
    ['deferred bundle repeating Node\'s roots around the origin CA', () => ({ [DEFERRED_EXTRA_CA_ENV]: bundlePath }), [], 'explicit', 'trusted'],
    ['deferred bundle of Node\'s roots only: nothing to add, Node\'s default store', () => ({ [DEFERRED_EXTRA_CA_ENV]: rootsOnlyPath }), [], 'default', null],
    ['deferred bundle of Node\'s roots only, with a configured extra CA', () => ({ [DEFERRED_EXTRA_CA_ENV]: rootsOnlyPath }), ['origin'], 'explicit', 'trusted'],
    ['deferred file unreadable: left out, Node\'s default store', () => ({ [DEFERRED_EXTRA_CA_ENV]: missing() }), [], 'default', null],
    ['deferred file unreadable, with a configured extra CA: that CA and the roots', () => ({ [DEFERRED_EXTRA_CA_ENV]: missing() }), ['origin'], 'explicit', 'trusted'],
    ['configured extra CA alone', () => ({}), ['origin'], 'explicit', 'trusted'],
    ['configured extra CA besides NODE_EXTRA_CA_CERTS naming another', () => ({ NODE_EXTRA_CA_CERTS: otherCaPath }), ['origin'], 'explicit', 'trusted'],
    ['NODE_EXTRA_CA_CERTS kept in an explicit list', () => ({ NODE_EXTRA_CA_CERTS: originCa.caPath }), ['other'], 'explicit', 'trusted'],
  ] as const)('%s', async (_, env, extras, store, outcome) => {
    const pems = extras.map((e) => (e === 'origin' ? originCa.caPem : (rootCertificates[1] as string)));
    const ca = trustedCas(pems, env());
    expect(ca === undefined ? 'default' : 'explicit').toBe(store);
    if (ca !== undefined) expect(ca.slice(0, rootCertificates.length)).toEqual(rootCertificates);
    // The default store is this test process's own, whatever its environment: judge only explicit lists.
    const context = trustedContext(pems, env());
    expect(context === undefined).toBe(ca === undefined);
    if (outcome !== null && context !== undefined) expect(await handshake(context)).toBe(outcome);
  });

  it('builds one context per list and process, never one per connection', () => {
    const env = { [DEFERRED_EXTRA_CA_ENV]: originCa.caPath };
    const first = trustedContext([], env);
    expect(first).toBeDefined();
    expect(trustedContext([], env)).toBe(first);
    expect(trustedContext([originCa.caPem], env)).not.toBe(first);
    expect(trustedContext([originCa.caPem], env)).toBe(trustedContext([originCa.caPem], env));
  });

  it('builds the proxy\'s upstream store once, at its first use', () => {
    const trust = createUpstreamTrust([originCa.caPem]);
    expect(trust()).toBe(trust());
    expect(trust()).toBe(trustedContext([originCa.caPem]));
  });

  it('moves NODE_EXTRA_CA_CERTS aside for the Node processes microagent spawns', () => {
    expect(deferExtraCaCerts({ PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/extra.pem' })).toEqual({ PATH: '/bin', [DEFERRED_EXTRA_CA_ENV]: '/etc/extra.pem' });
    expect(deferExtraCaCerts({ PATH: '/bin', [DEFERRED_EXTRA_CA_ENV]: '/etc/extra.pem' })).toEqual({ PATH: '/bin', [DEFERRED_EXTRA_CA_ENV]: '/etc/extra.pem' });
  });
});

describe('withoutRoots', () => {
  const root = rootCertificates[3] as string;
  const trustedBlock = '-----BEGIN TRUSTED CERTIFICATE-----\nMIIB\n-----END TRUSTED CERTIFICATE-----\n';
  it.each([
    ['a root as Node spells it', () => root, () => ''],
    ['a root re-wrapped with CRLF', () => rewrap(root), () => ''],
    ['a CA Node does not ship', () => originCa.caPem, () => originCa.caPem],
    ['roots around a CA Node does not ship', () => `${root}\n${originCa.caPem}\n${rewrap(root)}`, () => `\n${originCa.caPem}\n`],
    ['a TRUSTED CERTIFICATE block (OpenSSL aux form)', () => trustedBlock, () => trustedBlock],
    ['comments and text that hold no certificate', () => '# bundle\nnothing here\n', () => '# bundle\nnothing here\n'],
  ])('%s', (_, input, expected) => {
    expect(withoutRoots(input())).toBe(expected());
  });
});
