/**
 * The one TLS-terminating HTTP server for every intercepted connection of a proxy (mockttp's combo
 * stack, without a server per host): an http2.createSecureServer with HTTP/1.1 allowed. Tunnels hand
 * it an already-handshaken TLSSocket (its certificate is the bound name's); h2 and h1 requests then
 * arrive here and are served against the flow that socket belongs to. Never serves a socket it was
 * not handed by a decided tunnel.
 */
import { createSecureServer, type Http2SecureServer, type Http2ServerRequest, type ServerHttp2Session } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { denyAnswer } from './answers.js';
import { nodeReply } from './guest-reply.js';
import { serveLeanConnection } from './h1-serve.js';
import { isHttp2, rawDeny, sendDeny, type ClientRequest, type ClientResponse } from './http-facts.js';
import { boundRequestPath } from './identity.js';
import { refuseUnboundUrl, serveRequest, type FlowContext } from './serve-request.js';
import type { ProxyRuntime } from './runtime.js';
import type { InterceptHandoff, InterceptedFlow } from './tunnel.js';
import { serveUpgrade } from './upgrade.js';

export interface InterceptServer {
  readonly server: Http2SecureServer;
  readonly handoff: InterceptHandoff;
}

function flowContext(flow: InterceptedFlow): FlowContext {
  return { conn: flow.conn, protocol: 'https', destination: flow.destination, target: flow.target, sni: flow.sni, decrypted: true };
}

export function createInterceptServer(rt: ProxyRuntime, onClientError: (err: NodeJS.ErrnoException, socket: Socket, flow?: InterceptedFlow) => void): InterceptServer {
  const flows = new WeakMap<object, InterceptedFlow>();
  let handingOff: InterceptedFlow | null = null;
  const server = createSecureServer({
    // No trust store: this server verifies no client certificates. Without `ca`, Node gives every
    // context its root store, and the first one parses the 144 roots (~25 ms of the proxy's start).
    ca: [],
    allowHTTP1: true,
    settings: { maxHeaderListSize: rt.limits.maxHeaderBytes, maxConcurrentStreams: 256 },
    maxSessionMemory: 64,
  });
  // HTTP/1.1 connections reuse node's http parser, which reads these from the server object.
  Object.assign(server, {
    maxHeaderSize: rt.limits.maxHeaderBytes,
    headersTimeout: Math.min(rt.limits.headersTimeoutMs, rt.limits.requestTimeoutMs),
    requestTimeout: rt.limits.requestTimeoutMs,
  });
  // The 'session' event fires synchronously inside the handoff for h2: bind the session to its flow.
  server.on('session', (session: ServerHttp2Session) => {
    if (handingOff !== null) flows.set(session, handingOff);
  });
  const flowOf = (req: ClientRequest): InterceptedFlow | undefined =>
    isHttp2(req) ? flows.get((req as Http2ServerRequest).stream.session as object) : flows.get(req.socket);

  // One FlowContext per flow, built at its first request: every request on a keep-alive connection shares it.
  const contexts = new WeakMap<InterceptedFlow, FlowContext>();
  const contextOf = (flow: InterceptedFlow): FlowContext => {
    let context = contexts.get(flow);
    if (context === undefined) contexts.set(flow, (context = flowContext(flow)));
    return context;
  };

  const onRequest = (req: ClientRequest, res: ClientResponse) => {
    const flow = flowOf(req);
    if (flow === undefined) {
      sendDeny(res, denyAnswer('bad_request', 'a connection with no decided flow', { status: 500 }));
      return;
    }
    const context = contextOf(flow);
    const path = boundRequestPath(flow.destination, req.url ?? '/');
    if (path === null) {
      refuseUnboundUrl(rt, context, req.method ?? 'GET', nodeReply(res));
      return;
    }
    void serveRequest(rt, context, req, res, path);
  };
  server.on('request', onRequest);
  // Listened for, so node does not answer 100 Continue before the request is decided (serve-request.ts).
  server.on('checkContinue', onRequest);
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const flow = flows.get(socket);
    if (flow === undefined) {
      socket.end(rawDeny(denyAnswer('bad_request', 'a connection with no decided flow', { status: 500 })));
      return;
    }
    void serveUpgrade(rt, contextOf(flow), req, socket, head, req.url ?? '/');
  });
  // A request the parser refused (an oversized head) is recorded against its tunnel's destination.
  const onTunnelClientError = (err: NodeJS.ErrnoException, socket: Socket) => onClientError(err, socket, flows.get(socket));
  server.on('clientError', onTunnelClientError);

  const toServer = (tlsSocket: TLSSocket, flow: InterceptedFlow) => {
    // What tls.Server does for sockets it accepted itself; http2 waits for it before reading frames.
    // The HTTP/1.1 fallback reads the server from the socket, as tls.Server would have set it.
    Object.assign(tlsSocket, { secureConnecting: false, server });
    handingOff = flow;
    try {
      server.emit('secureConnection', tlsSocket);
    } finally {
      handingOff = null;
    }
  };
  const handoff: InterceptHandoff = (tlsSocket: TLSSocket, flow: InterceptedFlow) => {
    flows.set(tlsSocket, flow);
    // HTTP/1.1 starts on the lean path; node's server takes over at the first request it does not serve.
    if (tlsSocket.alpnProtocol !== 'h2') serveLeanConnection(tlsSocket, { rt, flow: contextOf(flow), fallback: () => toServer(tlsSocket, flow), onClientError: onTunnelClientError });
    else toServer(tlsSocket, flow);
  };
  return { server, handoff };
}
