/**
 * A loaded workspace CA serving TLS secure contexts for leaf names, minted on demand and cached.
 *
 * Why one leaf key per CA instance rather than one per host: generating a key pair per host is the
 * expensive step (node-forge RSA-2048 keygen takes hundreds of ms and blocks the event loop), while
 * a leaf only has to prove possession of *some* key the CA vouched for. With the key pair generated
 * once, asynchronously, when the CA is opened, minting a new host costs one ECDSA P-256 signature
 * (~1-2 ms, done by WebCrypto off the event loop). The key lives only in memory and only as long as
 * this object; it is never the CA key, so a leaked leaf key cannot sign anything.
 *
 * It must never decide policy: callers ask for a context only for names the proxy already allowed.
 */
import { createSecureContext, type SecureContext } from 'node:tls';
import { MicroagentError } from '../errors.js';
import { childLog } from '../log.js';
import { ExpiringLru } from './lru.js';
import { parseLeafName, type LeafName } from './names.js';
import type { CaMaterial } from './store.js';
import { prepareLeafSigner, type LeafSigner } from './leaf.js';
import { exportPkcs8Pem, generateEcKeyPair, LEAF_BACKDATE_MS } from './x509.js';

const log = childLog('ca');
const DAY_MS = 86_400_000;

export const DEFAULT_CACHE_SIZE = 1000;
export const DEFAULT_LEAF_VALIDITY_DAYS = 7;

export interface AuthorityOptions {
  /** Most secure contexts kept (least recently used evicted first). Default 1,000. */
  readonly cacheSize?: number;
  /** Leaf lifetime, clamped to the CA's own notAfter. Default 7 days. */
  readonly leafValidityDays?: number;
  /** Milliseconds since the epoch; tests move it to exercise expiry. Default Date.now. */
  readonly now?: () => number;
}

export interface CaStats {
  /** Leaf certificates signed. */
  readonly minted: number;
  /** Requests answered from the cache. */
  readonly cacheHits: number;
  /** Requests that joined a mint already in flight for the same name. */
  readonly coalesced: number;
  readonly cacheSize: number;
  readonly evictions: number;
  readonly inFlight: number;
}

/** Called by the TLS stack as `SNICallback`; see CertificateAuthority.sniCallback. */
export type SniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;

export class CertificateAuthority {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly certPem: string;
  readonly workspace: string;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** SHA-256 of the DER certificate, colon-separated hex (as openssl and browsers show it). */
  readonly fingerprint256: string;

  private readonly cache: ExpiringLru<string, SecureContext>;
  private readonly inFlight = new Map<string, Promise<SecureContext>>();
  private readonly leafValidityMs: number;
  private readonly now: () => number;
  private closed = false;
  private counters = { minted: 0, cacheHits: 0, coalesced: 0 };

  private constructor(
    material: CaMaterial,
    private readonly leafKeyPem: string,
    private readonly signLeaf: LeafSigner,
    options: AuthorityOptions,
  ) {
    this.dir = material.dir;
    this.certPath = material.certPath;
    this.keyPath = material.keyPath;
    this.certPem = material.certPem;
    this.workspace = material.workspace;
    this.subject = material.cert.subject;
    this.notBefore = material.cert.notBefore;
    this.notAfter = material.cert.notAfter;
    this.fingerprint256 = material.cert.fingerprint256;
    this.now = options.now ?? Date.now;
    this.leafValidityMs = (options.leafValidityDays ?? DEFAULT_LEAF_VALIDITY_DAYS) * DAY_MS;
    this.cache = new ExpiringLru(options.cacheSize ?? DEFAULT_CACHE_SIZE, this.now);
  }

  /** Generates this instance's leaf key pair (async, WebCrypto) and prepares the signer. */
  static async open(material: CaMaterial, options: AuthorityOptions = {}): Promise<CertificateAuthority> {
    const cacheSize = options.cacheSize ?? DEFAULT_CACHE_SIZE;
    if (!Number.isInteger(cacheSize) || cacheSize < 1) {
      throw new MicroagentError('invalid', `invalid CA cache size ${cacheSize}`, { code: 'ca.invalid_option', remediation: 'give a positive whole number' });
    }
    const days = options.leafValidityDays ?? DEFAULT_LEAF_VALIDITY_DAYS;
    if (!(days > 0 && days <= 397)) {
      throw new MicroagentError('invalid', `invalid leaf validity ${days} days`, { code: 'ca.invalid_option', remediation: 'give a number of days in (0, 397]' });
    }
    const leafKeys = await generateEcKeyPair(true);
    const leafKeyPem = await exportPkcs8Pem(leafKeys.privateKey);
    const signLeaf = await prepareLeafSigner(material.cert, material.key, leafKeys.publicKey);
    return new CertificateAuthority(material, leafKeyPem, signLeaf, options);
  }

  /**
   * The TLS context for `name` (a normalised DNS name or canonical IP literal). Concurrent first
   * requests for one name share a single mint; later ones hit the cache until shortly before the
   * leaf expires. Rejects with `invalid` for a malformed name or an expired CA.
   */
  async secureContextFor(name: string): Promise<SecureContext> {
    if (this.closed) {
      throw new MicroagentError('invalid', `the CA in ${this.dir} was closed`, { code: 'ca.closed', remediation: 'open the CA again with loadCa' });
    }
    const cached = this.cache.get(name);
    if (cached !== undefined) {
      this.counters.cacheHits++;
      return cached;
    }
    const pending = this.inFlight.get(name);
    if (pending !== undefined) {
      this.counters.coalesced++;
      return pending;
    }
    const leaf = parseLeafName(name);
    const minting = this.mint(leaf).finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, minting);
    return minting;
  }

  /**
   * An `SNICallback` for tls/http2 servers. It does not decide policy: by the time a ClientHello
   * arrives the proxy must already have decided on the CONNECT authority and bound SNI to it.
   * Pass `isAuthorised` (normally "servername equals the authorised authority") so that a name the
   * proxy did not pre-authorise fails the handshake instead of being minted. Clients send no SNI
   * for IP literals; for those the proxy must use `secureContextFor(ip)` directly.
   */
  sniCallback(isAuthorised?: (servername: string) => boolean): SniCallback {
    return (servername, cb) => {
      if (isAuthorised !== undefined && !isAuthorised(servername)) {
        cb(new MicroagentError('policy_denied', `TLS server name ${JSON.stringify(servername.slice(0, 255))} was not authorised`, {
          code: 'ca.sni_not_authorised',
          remediation: 'the client must send the SNI of the host it asked the proxy to CONNECT to',
        }));
        return;
      }
      this.secureContextFor(servername).then(
        (ctx) => cb(null, ctx),
        (err: unknown) => cb(err instanceof Error ? err : new Error(String(err))),
      );
    };
  }

  stats(): CaStats {
    return { ...this.counters, cacheSize: this.cache.size, evictions: this.cache.evictions, inFlight: this.inFlight.size };
  }

  /** Drops every cached context; mints still in flight complete but are not cached. */
  close(): void {
    this.closed = true;
    this.cache.clear();
  }

  private async mint(leaf: LeafName): Promise<SecureContext> {
    const now = this.now();
    const caNotAfter = this.notAfter.getTime();
    if (caNotAfter <= now) {
      throw new MicroagentError('invalid', `the CA in ${this.dir} expired on ${this.notAfter.toISOString()}`, {
        code: 'ca.expired',
        remediation: `run "microagent ca rotate --dir ${this.dir}" and have guests trust the new certificate`,
      });
    }
    // A leaf never outlives its CA: clients would reject the chain at the CA's expiry anyway.
    const notAfter = Math.min(now + this.leafValidityMs, caNotAfter);
    const pem = await this.signLeaf(leaf, { notBefore: new Date(now - LEAF_BACKDATE_MS), notAfter: new Date(notAfter) });
    // `ca: []`: a server context needs no trust store (see the intercept server in src/proxy).
    const context = createSecureContext({ key: this.leafKeyPem, cert: pem, minVersion: 'TLSv1.2', ca: [] });
    this.counters.minted++;
    // Retire the context well before the leaf expires so no handshake is served a dying certificate.
    const lifetime = notAfter - now;
    const expiresAt = now + Math.max(lifetime - Math.min(DAY_MS, lifetime / 2), 0);
    if (!this.closed) this.cache.set(leaf.name, context, expiresAt);
    log.debug({ name: leaf.name, kind: leaf.kind, not_after: new Date(notAfter).toISOString() }, 'minted leaf certificate');
    return context;
  }
}
