/**
 * Forwards one allowed HTTP request to its checked target and streams the answer back: HTTP/2
 * upstream when the guest spoke h2 and the origin does, HTTP/1.1 keep-alive otherwise; bodies stream
 * with size limits; trailers pass (gRPC). When a secret was injected the response is scanned for it
 * (echo-scan.ts): a body of announced length within the scan cap, or a compressed one, is collected
 * and withheld whole with 502 secret_echo if it echoes the secret; any other body streams through the
 * scan and is cut before the echo. Never logs a header value.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { ClientHttp2Stream, IncomingHttpHeaders, IncomingHttpStatusHeader } from 'node:http2';
import { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Policy, Reason, Signal } from '../policy/index.js';
import { decisionRecord, denyAnswer, proxyVerdict } from './answers.js';
import type { CheckedTarget } from './checked-target.js';
import { describeDestination, type Destination } from './destination.js';
import type { GuestReply } from './guest-reply.js';
import { forwardHeaders, headerList, isHttp2, responseHeaders, type ClientRequest } from './http-facts.js';
import type { Injection } from './request-step.js';
import { headersEcho, secretNeedles, StreamScan, wholeAnswerVerdict, type Needles } from './echo-scan.js';
import { requestHead } from './h1-response.js';
import { closeRecord, type ProxyRuntime } from './runtime.js';
import { classifyUpstreamError } from './upstream.js';

export interface ForwardJob {
  readonly conn: string;
  readonly policy: Policy;
  readonly protocol: 'http' | 'https';
  readonly destination: Destination;
  readonly target: CheckedTarget;
  readonly sni: string | null;
  readonly decrypted: boolean;
  readonly method: string;
  /** Origin-form path and query to request upstream. */
  readonly path: string;
  /** Path without query, for records. */
  readonly recordPath: string;
  readonly authority: string;
  readonly inject: readonly Injection[];
  readonly scanFor: readonly string[];
  readonly startedAt: number;
}

interface UpstreamAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The body as it streams in; null when `whole` already holds all of it. */
  readonly body: NodeJS.ReadableStream | null;
  /** The complete body, when the exchange already has it (no stream to drain). */
  readonly whole: Buffer | null;
  /** Trailers, available once the body ended. */
  trailers(): Record<string, string | string[]> | null;
}

/** The guest's request as the forwarder needs it, whoever parsed it. */
export interface GuestRequest {
  readonly headers: IncomingHttpHeaders;
  /** An HTTP/2 guest may get an HTTP/2 upstream; an HTTP/1 guest never does. */
  readonly http2: boolean;
  /** The request body to stream upstream; null when the request has none. */
  readonly body: ClientRequest | null;
}

/** The GuestRequest of a request node parsed (HTTP/1 or HTTP/2). */
export function nodeGuestRequest(req: ClientRequest): GuestRequest {
  const bodiless = isHttp2(req) ? req.stream.endAfterHeaders : req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined;
  // Nothing to stream: let node finish the (empty) request instead of plumbing an empty pipe.
  if (bodiless) req.resume();
  return { headers: req.headers, http2: isHttp2(req), body: bodiless ? null : req };
}

export async function forwardRequest(rt: ProxyRuntime, job: ForwardJob, req: GuestRequest, reply: GuestReply): Promise<void> {
  let bytesUp = 0;
  let bytesDown = 0;
  let finished = false;
  const finish = (status: number | undefined, reason?: Reason, error?: string) => {
    if (finished) return;
    finished = true;
    rt.counters.bytesUp += bytesUp;
    rt.counters.bytesDown += bytesDown;
    rt.appendInBackground(
      closeRecord({
        conn: job.conn,
        destination: job.destination,
        ip: job.target.ip,
        request: { method: job.method, path: job.recordPath },
        decrypted: job.decrypted,
        status,
        bytesUp,
        bytesDown,
        startedAt: job.startedAt,
        reason,
        signals: job.inject.length > 0 ? INJECTED : undefined,
        error,
      }),
    );
  };
  const recordDenial = (reason: Reason, status: number, signals: readonly Signal[] = []) =>
    rt.appendInBackground(
      decisionRecord(
        { conn: job.conn, protocol: job.protocol, destination: job.destination, ip: job.target.ip, method: job.method, path: job.recordPath, decrypted: job.decrypted, status, ...(job.decrypted ? { sni: job.sni } : {}) },
        proxyVerdict(job.policy, reason, signals),
      ),
    );
  const fail = (reason: Reason, error?: string, status?: number, signals?: readonly Signal[]) => {
    // Once: a request refused (413) aborts its upstream, whose rejection must not refuse it again as a 502.
    if (finished) return;
    const answer = denyAnswer(reason, describeDestination(job.destination), { ...(status === undefined ? {} : { status }), ...(signals === undefined ? {} : { signals }) });
    recordDenial(reason, answer.status, signals);
    reply.deny(answer);
    finish(answer.status, reason, error);
  };
  const failUpstream = (err: unknown) => {
    const { reason, signals } = classifyUpstreamError(err);
    fail(reason, (err as Error).message, undefined, signals);
  };

  const headers = forwardHeaders(req.headers);
  for (const { header, value } of job.inject) headers[header.toLowerCase()] = value;
  const needles = job.scanFor.length === 0 ? NO_NEEDLES : secretNeedles(job.scanFor);
  const scanning = needles.length > 0;
  // Asked uncompressed so the answer can stream through the scan; one compressed anyway is collected.
  if (scanning) headers['accept-encoding'] = 'identity';

  let upstream: Upstream;
  try {
    // Bodiless GET/HEAD from an HTTP/1 guest take the lean exchange; only an h2 guest may get an h2 upstream.
    const leanHead = !req.http2 && (job.method === 'GET' || job.method === 'HEAD') && req.body === null ? requestHead(job.method, job.path, job.authority, headers) : null;
    if (leanHead !== null) {
      const lean = rt.pool.lean.exchange(job.target, job.protocol === 'https', leanHead, job.method, rt.limits.maxHeaderBytes);
      upstream = { answer: lean.answer, body: null, abort: lean.abort };
    } else upstream = job.protocol === 'https' && req.http2 ? await openH2Upstream(rt, job, headers) : openH1Upstream(rt, job, headers, null);
  } catch (err) {
    failUpstream(err);
    return;
  }

  const guestBody = req.body;
  if (guestBody === null) upstream.body?.end();
  else {
    const maxUp = rt.limits.maxRequestBodyBytes;
    guestBody.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
      if (bytesUp > maxUp) {
        upstream.abort();
        fail('limit_exceeded', 'request body too large', 413);
        guestBody.destroy();
      }
    });
    guestBody.on('error', () => upstream.abort());
    guestBody.pipe(upstream.body as NodeJS.WritableStream);
  }
  reply.onGone(() => {
    if (!finished) {
      upstream.abort();
      finish(undefined, undefined, 'client went away');
    }
  });

  let answer: UpstreamAnswer;
  try {
    answer = await upstream.answer;
  } catch (err) {
    failUpstream(err);
    return;
  }
  const outHeaders = responseHeaders(answer.headers);
  if (scanning && headersEcho(outHeaders, needles)) {
    upstream.abort();
    fail('secret_echo');
    return;
  }

  // Small bodies of known length are collected and written once (one TLS record, one syscall), and
  // so are scanned bodies of known length within the scan cap (an echo gets a clean 502, not a cut)
  // and compressed scanned bodies (scanned decompressed, so capped too).
  const declared = Number(answer.headers['content-length'] ?? NaN);
  const encoding = answer.headers['content-encoding'];
  const collectScanned = scanning && (isCompressed(encoding) || (declared >= 0 && declared <= rt.limits.maxScannedResponseBytes));
  if (collectScanned || (declared >= 0 && declared <= SMALL_BODY_BYTES)) {
    const maxCollect = scanning ? rt.limits.maxScannedResponseBytes : rt.limits.maxResponseBodyBytes;
    const whole = answer.whole !== null && answer.whole.length <= maxCollect ? answer.whole : null;
    if (whole !== null) bytesDown = whole.length;
    const body = whole ?? (await collectBody(bodyStream(answer), maxCollect, (n) => (bytesDown = n)));
    if (typeof body === 'string') {
      upstream.abort();
      if (body === 'too_large') fail('limit_exceeded', 'response body over the collect limit', 502);
      else fail('upstream_unreachable', 'upstream response failed');
      return;
    }
    const trailers = answer.trailers();
    const withheld = scanning ? wholeAnswerVerdict(body, encoding, trailers === null ? [] : [trailers], needles, rt.limits.maxScannedResponseBytes) : null;
    if (withheld !== null) {
      fail(withheld, withheld === 'unscannable_response' ? `content-encoding "${encoding ?? ''}" could not be decoded within the scan cap` : undefined);
      return;
    }
    reply.whole(answer.status, outHeaders, body, trailers);
    finish(answer.status);
    return;
  }

  // Past this point the guest has the status and headers: an echo found now cuts the answer short.
  const cut = (reason: Reason, error: string) => {
    upstream.abort();
    recordDenial(reason, answer.status);
    reply.destroy();
    finish(answer.status, reason, error);
  };
  const maxDown = rt.limits.maxResponseBodyBytes;
  const scan = scanning ? new StreamScan(needles) : null;
  reply.start(answer.status, outHeaders, declared >= 0 ? declared : null);
  const body = bodyStream(answer);
  body.on('data', (chunk: Buffer) => {
    if (finished) return;
    bytesDown += chunk.length;
    if (bytesDown > maxDown) {
      upstream.abort();
      reply.destroy();
      finish(answer.status, 'limit_exceeded', 'response body too large');
      return;
    }
    const out = scan === null ? chunk : scan.push(chunk);
    if (out === null) {
      cut('secret_echo', 'the streamed response echoed an injected secret; cut before it');
      return;
    }
    if (out.length > 0 && !reply.write(out)) {
      body.pause();
      reply.onDrain(() => body.resume());
    }
  });
  body.on('end', () => {
    if (finished) return;
    const trailers = answer.trailers();
    if (scan !== null) {
      if (trailers !== null && headersEcho(trailers, needles)) {
        cut('secret_echo', 'the response trailers echoed an injected secret');
        return;
      }
      const rest = scan.end();
      if (rest.length > 0) reply.write(rest);
    }
    reply.end(trailers);
    finish(answer.status);
  });
  body.on('error', (err: Error) => {
    reply.destroy();
    finish(answer.status, classifyUpstreamError(err).reason, err.message);
  });
}

const SMALL_BODY_BYTES = 64 * 1024;
/** Most requests inject nothing: no needles to build per request. */
const NO_NEEDLES: Needles = [];

function isCompressed(encoding: string | undefined): boolean {
  return encoding !== undefined && encoding.trim().toLowerCase() !== 'identity';
}
const INJECTED: readonly Signal[] = ['secret_injected'];

/** The answer's body as a stream (a whole body is replayed: it is over the collect size or limit). */
function bodyStream(answer: UpstreamAnswer): NodeJS.ReadableStream {
  if (answer.body !== null) return answer.body;
  const whole = answer.whole as Buffer;
  return Readable.from(whole.length > 0 ? [whole] : []);
}

/** The whole body, or why not: past `max` bytes, or the stream failed. */
export function collectBody(body: NodeJS.ReadableStream, max: number, progress: (bytes: number) => void): Promise<Buffer | 'too_large' | 'failed'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    body.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      progress(bytes);
      if (bytes > max) {
        body.removeAllListeners('data');
        resolve('too_large');
        return;
      }
      chunks.push(chunk);
    });
    body.once('end', () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    body.once('error', () => resolve('failed'));
  });
}

interface Upstream {
  readonly answer: Promise<UpstreamAnswer>;
  /** Where the request body goes; null when the request was sent whole (lean exchange). */
  readonly body: NodeJS.WritableStream | null;
  abort(): void;
}

/** An HTTP/2 stream on the target's pooled session, or HTTP/1.1 when the origin does not speak h2. */
async function openH2Upstream(rt: ProxyRuntime, job: ForwardJob, headers: Record<string, string | string[]>): Promise<Upstream> {
  const upstream = await rt.pool.sessionFor(job.target);
  if (upstream.kind === 'h1') return openH1Upstream(rt, job, headers, upstream.take());
  const stream: ClientHttp2Stream = upstream.session.request({ ...headers, ':method': job.method, ':path': job.path, ':authority': job.authority, ':scheme': 'https' });
  // Errors after the answer surface through the body stream; this keeps them from being unhandled.
  stream.on('error', () => undefined);
  let trailers: Record<string, string | string[]> | null = null;
  stream.on('trailers', (t: IncomingHttpHeaders) => {
    trailers = responseHeaders(t);
  });
  const answer = new Promise<UpstreamAnswer>((resolve, reject) => {
    stream.once('response', (h: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
      stream.off('error', reject);
      resolve({ status: Number(h[':status'] ?? 502), headers: h, body: stream, whole: null, trailers: () => trailers });
    });
    stream.once('error', reject);
  });
  return { answer, body: stream, abort: () => stream.close() };
}

/** HTTP/1.1 through the target's keep-alive agent, or on `spareSocket` (already verified) when given. */
function openH1Upstream(rt: ProxyRuntime, job: ForwardJob, headers: Record<string, string | string[]>, spareSocket: TLSSocket | null): Upstream {
  const upReq = httpRequest({
    host: job.target.ip,
    port: job.target.port,
    method: job.method,
    path: job.path,
    headers: headerList(headers, job.authority),
    setHost: false,
    ...(spareSocket === null ? { agent: rt.pool.agentFor(job.target, job.protocol === 'https') } : { createConnection: () => spareSocket }),
  });
  upReq.on('error', () => undefined);
  const answer = new Promise<UpstreamAnswer>((resolve, reject) => {
    upReq.once('response', (upRes: IncomingMessage) => {
      upReq.off('error', reject);
      resolve({
        status: upRes.statusCode ?? 502,
        headers: upRes.headers,
        body: upRes,
        whole: null,
        trailers: () => (upRes.complete ? responseHeaders(upRes.trailers) : null),
      });
    });
    upReq.once('error', reject);
  });
  return { answer, body: upReq, abort: () => upReq.destroy() };
}
