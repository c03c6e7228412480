/**
 * Absolute-form proxy requests and WebSocket upgrades: parse the URL strictly, bind the Host header to
 * it, decide the flow like a CONNECT, then serve the request on the checked target. An `http://` URL is
 * protocol http; an `https://` one (busybox wget, Alpine's wget, asks an HTTP proxy so instead of with a
 * CONNECT) is protocol https, fetched over TLS verified by the proxy, and decided per request like any
 * other (nothing is intercepted, so no secret is injected into it). Origin-form requests to the proxy
 * itself are refused: it serves no content.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { decisionRecord, denyAnswer, proxyVerdict, type DenyAnswer } from './answers.js';
import { parseAbsoluteUrl, type Destination } from './destination.js';
import { decideFlow } from './flow.js';
import { rawDeny, sendDeny } from './http-facts.js';
import type { ProxyRuntime } from './runtime.js';
import { serveRequest, type FlowContext } from './serve-request.js';
import { serveUpgrade } from './upgrade.js';

async function openPlainFlow(rt: ProxyRuntime, req: IncomingMessage, answer: (deny: DenyAnswer) => void): Promise<{ flow: FlowContext; path: string } | null> {
  const conn = rt.nextConn();
  const url = req.url ?? '';
  // Refused before there is a destination to decide on; recorded like every other refusal.
  const refuse = (reason: 'bad_request' | 'limit_exceeded', what: string) => {
    const deny = denyAnswer(reason, what, reason === 'bad_request' ? { status: 400 } : {});
    rt.counters.denied++;
    rt.appendInBackground(decisionRecord({ conn, protocol: 'http', destination: null, decrypted: false, method: req.method, status: deny.status }, proxyVerdict(rt.policy(), reason, [])));
    answer(deny);
    return null;
  };
  if (url.startsWith('/')) return refuse('bad_request', 'an origin-form request (this is a proxy: send absolute URLs or CONNECT)');
  // RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400 (node would answer it unrecorded).
  if (req.httpVersion === '1.1' && req.headers.host === undefined) return refuse('bad_request', 'an HTTP/1.1 request without a Host header');
  if (rt.overBudget()) return refuse('limit_exceeded', 'this workspace (byte budget spent)');
  const protocol = HTTPS_URL.test(url) ? 'https' : 'http';
  const parsed = parseAbsoluteUrl(url, protocol);
  const outcome = await decideFlow(
    rt,
    parsed.kind === 'ok'
      ? { type: 'open', request: { conn, protocol, tunnel: false, destination: parsed.destination, auditHealthy: rt.audit.healthy } }
      : { type: 'invalid_target', conn, protocol, detail: parsed.detail },
  );
  if (outcome.kind === 'denied' || parsed.kind !== 'ok') {
    if (outcome.kind === 'denied') answer(outcome.answer);
    return null;
  }
  const destination: Destination = parsed.destination;
  return { flow: { conn, protocol, destination, target: outcome.target, sni: null, decrypted: false }, path: parsed.path };
}

const HTTPS_URL = /^https:\/\//i;

export async function handlePlainRequest(rt: ProxyRuntime, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const opened = await openPlainFlow(rt, req, (deny) => sendDeny(res, deny));
  if (opened !== null) await serveRequest(rt, opened.flow, req, res, opened.path);
}

export async function handlePlainUpgrade(rt: ProxyRuntime, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  socket.on('error', () => undefined);
  const opened = await openPlainFlow(rt, req, (deny) => socket.end(rawDeny(deny)));
  if (opened !== null) await serveUpgrade(rt, opened.flow, req, socket, head, opened.path);
}
