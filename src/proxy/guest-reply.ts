/**
 * How the forwarder answers the guest, whoever parsed its request: node's ServerResponse or
 * Http2ServerResponse (nodeReply), or the lean HTTP/1.1 connection writing on the TLS socket itself
 * (h1-serve.ts). The forwarder decides what to send; a reply only frames and writes it. A reply never
 * changes a status, a header or a byte of the body it is given.
 */
import { constants } from 'node:http2';
import type { DenyAnswer } from './answers.js';
import { sendDeny, type ClientResponse } from './http-facts.js';

export type HeaderMap = Record<string, string | string[]>;

export interface GuestReply {
  /** Calls `listener` once if the guest goes away before the answer is complete. */
  onGone(listener: () => void): void;
  /** Answers with a typed deny, or cuts the connection when an answer already started. */
  deny(answer: DenyAnswer): void;
  /** The complete answer in one go (head, body, trailers). */
  whole(status: number, headers: HeaderMap, body: Buffer, trailers: HeaderMap | null): void;
  /** Starts a streamed answer; `declaredLength` is the body length the origin announced, or null. */
  start(status: number, headers: HeaderMap, declaredLength: number | null): void;
  /** False when the guest is not keeping up: wait for onDrain before writing more. */
  write(chunk: Buffer): boolean;
  onDrain(listener: () => void): void;
  end(trailers: HeaderMap | null): void;
  /** Cuts the answer short (the guest sees a reset, never a truncated body passed off as complete). */
  destroy(): void;
}

function addTrailers(res: ClientResponse, trailers: HeaderMap | null): void {
  if (trailers === null) return;
  for (const _ in trailers) {
    res.addTrailers(trailers);
    return;
  }
}

/** A reply through node's HTTP/1 or HTTP/2 server response. */
export function nodeReply(res: ClientResponse): GuestReply {
  return {
    onGone: (listener) => void res.on('close', listener),
    deny: (answer) => sendDeny(res, answer),
    whole(status, headers, body, trailers) {
      res.writeHead(status, headers);
      addTrailers(res, trailers);
      res.end(body);
    },
    start: (status, headers) => void res.writeHead(status, headers),
    write: (chunk) => (res as NodeJS.WritableStream).write(chunk),
    onDrain: (listener) => void res.once('drain', listener),
    end(trailers) {
      addTrailers(res, trailers);
      res.end();
    },
    // An HTTP/2 stream destroyed without an error ends with RST_STREAM NO_ERROR, which a client takes
    // for a complete (truncated) body: it is reset with INTERNAL_ERROR, as the cut it is.
    destroy: () => ('stream' in res ? res.stream.close(constants.NGHTTP2_INTERNAL_ERROR) : void res.destroy()),
  };
}
