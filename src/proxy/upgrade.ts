/**
 * HTTP/1.1 Upgrade (WebSocket) through the proxy, plain or intercepted: the upgrade request is decided
 * like any request, sent over a fresh connection to the checked target (TLS verified first), and on
 * 101 both sockets are spliced. Any other answer is relayed and the connection closed.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { denyAnswer } from './answers.js';
import { describeDestination } from './destination.js';
import { forwardHeaders, rawDeny, requestFacts } from './http-facts.js';
import { admitRequest, upstreamAuthority, type FlowContext } from './serve-request.js';
import { closeRecord, type ProxyRuntime } from './runtime.js';
import { splice } from './splice.js';
import { classifyUpstreamError } from './upstream.js';

function head(status: string, res: IncomingMessage): string {
  let text = `HTTP/1.1 ${status}\r\n`;
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return `${text}\r\n`;
}

export async function serveUpgrade(rt: ProxyRuntime, flow: FlowContext, req: IncomingMessage, client: Socket, clientHead: Buffer, path: string): Promise<void> {
  const startedAt = Date.now();
  client.on('error', () => undefined);
  const facts = requestFacts(req, path);
  const plan = await admitRequest(rt, flow, facts, (deny) => client.end(rawDeny(deny)));
  if (plan === null) return;
  const record = (status: number | undefined, bytesUp: number, bytesDown: number, error?: string, reason?: 'upstream_cert_invalid' | 'upstream_unreachable') =>
    rt.appendInBackground(
      closeRecord({
        conn: flow.conn,
        destination: flow.destination,
        ip: flow.target.ip,
        decrypted: flow.decrypted,
        ...(status === undefined ? {} : { status }),
        bytesUp,
        bytesDown,
        startedAt,
        ...(reason === undefined ? {} : { reason }),
        ...(error === undefined ? {} : { error }),
      }),
    );
  let upstream: Socket;
  try {
    upstream = await rt.pool.dial(flow.target, flow.protocol === 'https');
  } catch (err) {
    const reason = classifyUpstreamError(err);
    client.end(rawDeny(denyAnswer(reason, describeDestination(flow.destination))));
    record(502, 0, 0, (err as Error).message, reason);
    return;
  }
  const headers = forwardHeaders(req.headers);
  for (const { header, value } of plan.inject) headers[header.toLowerCase()] = value;
  const upReq = httpRequest({
    method: req.method ?? 'GET',
    path,
    headers: { ...headers, host: upstreamAuthority(flow, facts), connection: 'Upgrade', upgrade: req.headers.upgrade ?? 'websocket' },
    setHost: false,
    createConnection: () => upstream,
  });
  upReq.on('error', (err) => {
    client.destroy();
    record(undefined, 0, 0, err.message, 'upstream_unreachable');
  });
  upReq.on('upgrade', (res, upSocket: Socket, upHead: Buffer) => {
    client.write(head(`101 ${res.statusMessage ?? 'Switching Protocols'}`, res));
    if (upHead.length > 0) client.write(upHead);
    rt.counters.activeTunnels++;
    splice(rt, client, upSocket, clientHead, (result) => {
      rt.counters.activeTunnels--;
      record(101, result.bytesUp, result.bytesDown + upHead.length, result.error);
    });
  });
  upReq.on('response', (res) => {
    client.write(head(`${res.statusCode ?? 502} ${res.statusMessage ?? ''}`, res));
    res.pipe(client);
    res.on('end', () => record(res.statusCode, 0, 0));
  });
  upReq.end();
}
