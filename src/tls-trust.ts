/**
 * Which certificate authorities microagent's own TLS clients (upstream dials, registry pulls) trust:
 * Node's root certificates, the host's extra CAs (the file NODE_EXTRA_CA_CERTS names) and any the
 * caller configured.
 * Node parses NODE_EXTRA_CA_CERTS, together with all its roots, at every process start-up, whether
 * or not the process ever opens a TLS connection: ~45 ms for a system bundle on a small machine, paid
 * twice on the way to a guest's boot (the CLI, then the supervisor). So the CLI's launcher (the
 * shebang of src/cli/main.ts) and the supervisor's spawn hand the file over under DEFERRED_EXTRA_CA_ENV
 * instead, and it is read here, once per process, by the first TLS client that needs it.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { SecureContext } from 'node:tls';
import { MicroagentError } from './errors.js';
import { childLog } from './log.js';

const log = childLog('tls');

/** Set by the CLI's shebang; empty when NODE_EXTRA_CA_CERTS was not set either. */
export const DEFERRED_EXTRA_CA_ENV = 'MICROAGENT_EXTRA_CA_CERTS';
const NODE_EXTRA_CA_ENV = 'NODE_EXTRA_CA_CERTS';

/** The environment for a Node process microagent spawns: the host's extra CAs deferred, not parsed at start-up. */
export function deferExtraCaCerts(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { [NODE_EXTRA_CA_ENV]: file, ...rest } = env;
  return file === undefined ? env : { ...rest, [DEFERRED_EXTRA_CA_ENV]: file };
}

/** Each file is read once per process. */
const readFiles = new Map<string, string | null>();

/**
 * The PEM text of the host's extra CAs that Node's roots do not already hold, or null when there are
 * none. An unreadable file is left out with a warning, as Node does with NODE_EXTRA_CA_CERTS: fewer
 * roots only ever means more refusals.
 */
function hostExtraCaPem(env: NodeJS.ProcessEnv): string | null {
  const file = env[NODE_EXTRA_CA_ENV] || env[DEFERRED_EXTRA_CA_ENV];
  if (file === undefined || file === '') return null;
  let pem = readFiles.get(file);
  if (pem === undefined) {
    try {
      pem = withoutRoots(readFileSync(file, 'utf8'));
    } catch (err) {
      log.warn({ err, file }, `ignoring the extra CA certificates in ${file}: cannot read them`);
      pem = null;
    }
    readFiles.set(file, pem);
  }
  return pem;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g;
const certificateKey = (block: string): string => block.replace(/\s+/g, '');

/**
 * `pem` without the certificates Node's roots already hold. A distribution's bundle (the usual
 * NODE_EXTRA_CA_CERTS) repeats nearly all of them, and parsing each again costs ~0.25 ms. Anything
 * else in the text (other certificates, TRUSTED CERTIFICATE blocks, comments) stays as it was.
 */
export function withoutRoots(pem: string): string {
  const roots = new Set(tls().rootCertificates.map(certificateKey));
  return pem.replace(PEM_CERTIFICATE, (block) => (roots.has(certificateKey(block)) ? '' : block));
}

/** node:tls (~6 ms to load) only once trust is built: `run` imports this module on its way to spawning the supervisor. */
const tls = (): typeof import('node:tls') => createRequire(import.meta.url)('node:tls') as typeof import('node:tls');

/**
 * The `ca` option for a TLS client that trusts the host's roots and extra CAs plus `extraPems`, or
 * undefined when Node's default store is exactly that (it saves parsing the ~140 roots again).
 */
export function trustedCas(extraPems: readonly string[], env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  // With NODE_EXTRA_CA_CERTS set, Node loaded the file into its default store at start-up.
  if (extraPems.length === 0 && (env[NODE_EXTRA_CA_ENV] || !env[DEFERRED_EXTRA_CA_ENV])) return undefined;
  const host = hostExtraCaPem(env);
  // A host file holding only Node's own roots (a distribution's bundle, as a rule) adds nothing.
  if (extraPems.length === 0 && (host === null || !host.includes('-----BEGIN'))) return undefined;
  return [...tls().rootCertificates, ...(host === null ? [] : [host]), ...extraPems];
}

const contexts = new Map<string, SecureContext>();

/**
 * The TLS context for `trustedCas(extraPems)`, built once per process and list: parsing the roots
 * takes 40-70 ms, so a client must never do it per connection. Undefined: Node's default context.
 */
export function trustedContext(extraPems: readonly string[], env: NodeJS.ProcessEnv = process.env): SecureContext | undefined {
  const ca = trustedCas(extraPems, env);
  if (ca === undefined) return undefined;
  // The roots are the same in every list: what follows them tells the lists apart.
  const key = ca.slice(tls().rootCertificates.length).join('\n');
  let context = contexts.get(key);
  if (context === undefined) {
    context = tls().createSecureContext({ ca });
    contexts.set(key, context);
  }
  return context;
}

/** An extra CA the operator configured (`--upstream-ca FILE`), read now: a file that cannot be used is a typed error naming it. */
export async function readExtraCaFile(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new MicroagentError('not_found', `cannot read the upstream CA file ${path}: ${err.code ?? err.message}`, {
      code: 'tls.extra_ca',
      remediation: 'pass a readable PEM file with --upstream-ca FILE',
    });
  });
  if (!text.includes('-----BEGIN CERTIFICATE-----')) {
    throw new MicroagentError('invalid', `${path} holds no PEM certificate`, { code: 'tls.extra_ca', remediation: 'pass a PEM file (-----BEGIN CERTIFICATE-----) with --upstream-ca FILE' });
  }
  return text;
}
