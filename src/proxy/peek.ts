/**
 * Reads a CONNECT tunnel's first guest bytes until the pure ClientHello parser can decide on them, with
 * a deadline, and (for a silent guest on a non-TLS port) against a rival: the dialled upstream, whose
 * first bytes or close end the wait. It only reads and pauses; it never writes, decides or closes, and
 * every byte read is handed back so the chosen path can replay it.
 */
import type { Socket } from 'node:net';
import { parseClientHello, type ClientHelloPeek } from './client-hello.js';

type GuestPeek = ClientHelloPeek | 'timeout' | 'closed';
type PeekResult = GuestPeek | 'upstream_spoke' | 'upstream_closed';

/**
 * Reads until the ClientHello peek is decided; resolves with everything read (to replay). With a
 * `rival` (the dialled upstream of a silent guest), the rival's first bytes or its close before the
 * guest's first byte end the peek instead; its bytes are put back for the splice.
 */
export function peek(socket: Socket, head: Buffer, timeoutMs: number): Promise<{ result: GuestPeek; bytes: Buffer }>;
export function peek(socket: Socket, head: Buffer, timeoutMs: number, rival: Socket): Promise<{ result: PeekResult; bytes: Buffer }>;
export function peek(socket: Socket, head: Buffer, timeoutMs: number, rival: Socket | null = null): Promise<{ result: PeekResult; bytes: Buffer }> {
  return new Promise((resolve) => {
    let bytes = head;
    const first = parseClientHello(bytes);
    if (bytes.length > 0 && first.kind !== 'need_more') {
      resolve({ result: first, bytes });
      return;
    }
    // The guest may have gone while a server-first flow was being decided and dialled.
    if (socket.destroyed) {
      resolve({ result: 'closed', bytes });
      return;
    }
    // Once the guest spoke first, the upstream's bytes wait in its buffer for the splice.
    const ignoreRival = () => {
      rival?.off('data', onRivalData);
      rival?.off('end', onRivalGone);
      rival?.off('close', onRivalGone);
      rival?.pause();
    };
    const finish = (result: PeekResult) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('end', onClose);
      socket.pause();
      ignoreRival();
      resolve({ result, bytes });
    };
    const onData = (chunk: Buffer) => {
      ignoreRival();
      bytes = bytes.length === 0 ? chunk : Buffer.concat([bytes, chunk]);
      const result = parseClientHello(bytes);
      if (result.kind !== 'need_more') finish(result);
    };
    const onRivalData = (chunk: Buffer) => {
      ignoreRival();
      rival?.unshift(chunk);
      finish('upstream_spoke');
    };
    const onRivalGone = () => finish('upstream_closed');
    // The HTTP server's sockets allow half-open: a guest that ends before its hello has gone away.
    const onClose = () => finish('closed');
    const timer = setTimeout(() => finish('timeout'), Math.max(0, timeoutMs));
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('end', onClose);
    rival?.on('data', onRivalData);
    rival?.on('end', onRivalGone);
    rival?.on('close', onRivalGone);
    socket.resume();
  });
}
