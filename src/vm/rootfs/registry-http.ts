/**
 * The HTTP client under the registry source: one GET over node:http or node:https (the host's CAs plus any
 * configured extra CA certificates), with an idle timeout, no automatic redirects and no cookies. It only
 * moves bytes; auth, redirects and verification are the caller's (source-registry.ts, registry-auth.ts).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { SecureContext } from 'node:tls';
import { trustedContext } from '../../tls-trust.js';

/** Seconds of silence on a connection before a pull is abandoned. */
const IDLE_TIMEOUT_MS = 60_000;

export interface HttpResponse {
  readonly status: number;
  header(name: string): string | null;
  /** The body; consume it or call discard(). */
  readonly body: AsyncIterable<Buffer>;
  discard(): void;
  text(cap: number): Promise<string>;
}

function wrap(res: IncomingMessage): HttpResponse {
  return {
    status: res.statusCode ?? 0,
    header: (name) => {
      const value = res.headers[name.toLowerCase()];
      return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
    },
    body: res,
    discard: () => res.destroy(),
    text: async (cap) => {
      const parts: Buffer[] = [];
      let total = 0;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > cap) {
          res.destroy();
          throw new Error(`response larger than ${cap} bytes`);
        }
        parts.push(chunk);
      }
      return Buffer.concat(parts).toString('utf8');
    },
  };
}

const agents = new WeakMap<SecureContext, HttpsAgent>();

/** One keep-alive agent per trust context: a connection is only ever reused under the trust that verified it. */
function agentFor(context: SecureContext | undefined): { agent?: HttpsAgent } {
  if (context === undefined) return {};
  let agent = agents.get(context);
  if (agent === undefined) {
    agent = new HttpsAgent({ keepAlive: true, secureContext: context });
    agents.set(context, agent);
  }
  return { agent };
}

/** GET url. `extraCa` (PEM) is trusted in addition to the host's roots (src/tls-trust.ts) for https URLs. */
export function httpGet(url: URL, headers: Readonly<Record<string, string>>, extraCa: readonly string[] = []): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const options = { method: 'GET', headers: { 'user-agent': 'microagent', ...headers } };
    const onResponse = (res: IncomingMessage): void => resolve(wrap(res));
    const req =
      url.protocol === 'https:'
        ? httpsRequest(url, { ...options, ...agentFor(trustedContext(extraCa)) }, onResponse)
        : httpRequest(url, options, onResponse);
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error(`no data from ${url.host} for ${IDLE_TIMEOUT_MS / 1000}s`)));
    req.on('error', reject);
    req.end();
  });
}
