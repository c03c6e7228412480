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
import { denyAnswer, type DenyAnswer } from './answers.js';
import { parseAbsoluteUrl, type Destination } from './destination.js';
import { decideFlow } from './flow.js';
import { rawDeny, sendDeny } from './http-facts.js';
import type { ProxyRuntime } from './runtime.js';
import { serveRequest, type FlowContext } from './serve-request.js';
import { serveUpgrade } from './upgrade.js';

async function openPlainFlow(rt: ProxyRuntime, req: IncomingMessage, answer: (deny: DenyAnswer) => void): Promise<{ flow: FlowContext; path: string } | null> {
  const conn = rt.nextConn();
  const url = req.url ?? '';
  if (url.startsWith('/')) {
    answer(denyAnswer('bad_request', 'an origin-form request (this is a proxy: send absolute URLs or CONNECT)', { status: 400 }));
    return null;
  }
  if (rt.overBudget()) {
    answer(denyAnswer('limit_exceeded', 'this workspace (byte budget spent)'));
    return null;
  }
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
