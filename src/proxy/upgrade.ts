/**
 * HTTP/1.1 Upgrade (WebSocket) through the proxy, plain or intercepted: the upgrade request is decided
 * like any request, sent over a fresh connection to the checked target (TLS verified first), and on
 * 101 both sockets are spliced. Any other answer is relayed and the connection closed. When an inject
 * rule added a secret, everything the upstream answers passes the echo scan, as for any request: the
 * 101's headers, a refusal's body (withheld whole, 502) and the frames after it (cut before an echo;
 * compression is not offered upstream, so frames carry their text as sent).
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Reason } from '../policy/index.js';
import { decisionRecord, denyAnswer, proxyVerdict } from './answers.js';
import { describeDestination } from './destination.js';
import { headersEcho, secretNeedles, StreamScan, wholeAnswerVerdict } from './echo-scan.js';
import { collectBody } from './forward.js';
import { forwardHeaders, rawDeny, requestFacts } from './http-facts.js';
import { pathOf } from './request-step.js';
import { admitRequest, upstreamAuthority, type FlowContext } from './serve-request.js';
import { closeRecord, type ProxyRuntime } from './runtime.js';
import { splice } from './splice.js';
import { classifyUpstreamError, type UpstreamFailure } from './upstream.js';

/** The upstream's answer head as sent; with `bodyLength`, re-framed for a body collected whole. */
function head(status: string, res: IncomingMessage, bodyLength?: number): string {
  let text = `HTTP/1.1 ${status}\r\n`;
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (bodyLength !== undefined && /^(content-length|transfer-encoding|connection)$/i.test(raw[i] as string)) continue;
    text += `${raw[i]}: ${raw[i + 1]}\r\n`;
  }
  if (bodyLength !== undefined) text += `content-length: ${bodyLength}\r\nconnection: close\r\n`;
  return `${text}\r\n`;
}

export async function serveUpgrade(rt: ProxyRuntime, flow: FlowContext, req: IncomingMessage, client: Socket, clientHead: Buffer, path: string): Promise<void> {
  const startedAt = Date.now();
  client.on('error', () => undefined);
  const facts = requestFacts(req, path);
  const plan = await admitRequest(rt, flow, facts, (deny) => client.end(rawDeny(deny)));
  if (plan === null) return;
  const record = (status: number | undefined, bytesUp: number, bytesDown: number, error?: string, reason?: UpstreamFailure) =>
    rt.appendInBackground(
      closeRecord({
        conn: flow.conn,
        destination: flow.destination,
        ip: flow.target.ip,
        request: { method: facts.method, path: pathOf(facts.path) },
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
    const { reason } = classifyUpstreamError(err);
    client.end(rawDeny(denyAnswer(reason, describeDestination(flow.destination))));
    record(502, 0, 0, (err as Error).message, reason);
    return;
  }
  const headers = forwardHeaders(req.headers);
  for (const { header, value } of plan.inject) headers[header.toLowerCase()] = value;
  const needles = secretNeedles(plan.scanFor);
  const scanning = needles.length > 0;
  if (scanning) delete headers['sec-websocket-extensions']; // permessage-deflate would hide an echo
  const recordDenial = (reason: Reason, status: number) => {
    rt.counters.denied++;
    rt.appendInBackground(
      decisionRecord(
        { conn: flow.conn, protocol: flow.protocol, destination: flow.destination, ip: flow.target.ip, sni: flow.sni, decrypted: flow.decrypted, method: facts.method, path: pathOf(path), status },
        proxyVerdict(rt.policy(), reason, []),
      ),
    );
  };
  /** Answers the guest with 502 `reason` instead of what the upstream sent, and records why. */
  const withhold = (reason: Reason, error: string) => {
    const answer = denyAnswer(reason, describeDestination(flow.destination));
    recordDenial(reason, answer.status);
    client.end(rawDeny(answer));
    record(answer.status, 0, 0, error);
  };
  const upReq = httpRequest({
    method: req.method ?? 'GET',
    path,
    headers: { ...headers, host: upstreamAuthority(flow, facts), connection: 'Upgrade', upgrade: req.headers.upgrade ?? 'websocket' },
    setHost: false,
    createConnection: () => upstream,
  });
  upReq.on('error', (err) => {
    client.destroy();
    record(undefined, 0, 0, err.message, classifyUpstreamError(err).reason);
  });
  upReq.on('upgrade', (res, upSocket: Socket, upHead: Buffer) => {
    const scan = scanning ? new StreamScan(needles) : null;
    const first = scan === null ? upHead : scan.push(upHead);
    if (scan !== null && (first === null || headersEcho({ raw: res.rawHeaders }, needles))) {
      upSocket.destroy();
      withhold('secret_echo', 'the upgrade answer echoed an injected secret');
      return;
    }
    client.write(head(`101 ${res.statusMessage ?? 'Switching Protocols'}`, res));
    if (first !== null && first.length > 0) client.write(first);
    rt.counters.activeTunnels++;
    splice(
      rt,
      client,
      upSocket,
      clientHead,
      (result) => {
        rt.counters.activeTunnels--;
        if (result.cut === 'secret_echo') recordDenial('secret_echo', 101);
        record(101, result.bytesUp, result.bytesDown + upHead.length, result.cut === 'secret_echo' ? 'the upgraded connection echoed an injected secret; cut before it' : result.error);
      },
      scan,
    );
  });
  upReq.on('response', (res) => {
    if (!scanning) {
      client.write(head(`${res.statusCode ?? 502} ${res.statusMessage ?? ''}`, res));
      res.pipe(client);
      res.on('end', () => record(res.statusCode, 0, 0));
      return;
    }
    void collectBody(res, rt.limits.maxScannedResponseBytes, () => undefined).then((body) => {
      if (typeof body === 'string') {
        withhold(body === 'too_large' ? 'limit_exceeded' : 'upstream_unreachable', `the refused upgrade's answer ${body === 'too_large' ? 'was over the scan cap' : 'failed'}`);
        return;
      }
      const withheld = wholeAnswerVerdict(body, res.headers['content-encoding'], [{ raw: res.rawHeaders }], needles, rt.limits.maxScannedResponseBytes);
      if (withheld !== null) withhold(withheld, `the refused upgrade's answer ${withheld === 'secret_echo' ? 'echoed an injected secret' : 'could not be decoded for the scan'}`);
      else {
        client.end(Buffer.concat([Buffer.from(head(`${res.statusCode ?? 502} ${res.statusMessage ?? ''}`, res, body.length), 'latin1'), body]));
        record(res.statusCode, 0, body.length);
      }
    });
  });
  upReq.end();
}
