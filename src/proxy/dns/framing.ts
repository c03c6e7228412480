/**
 * DNS over a byte stream (TCP and the Unix socket; RFC 1035 section 4.2.2, RFC 7766): each message
 * is preceded by its length as two bytes. Sans-IO: the splitter takes what arrived and returns whole
 * messages plus the unconsumed tail; it never reads a socket and never buffers past one message.
 */

export interface FrameSplit {
  readonly messages: Buffer[];
  /** Bytes of an incomplete message (at most 65,537), to prepend to the next chunk. */
  readonly rest: Buffer;
}

/** Splits `pending` into complete length-prefixed messages. A zero-length message is returned as is. */
export function splitFrames(pending: Buffer): FrameSplit {
  const messages: Buffer[] = [];
  let offset = 0;
  while (pending.length - offset >= 2) {
    const length = pending.readUInt16BE(offset);
    if (pending.length - offset - 2 < length) break;
    messages.push(pending.subarray(offset + 2, offset + 2 + length));
    offset += 2 + length;
  }
  return { messages, rest: offset === 0 ? pending : pending.subarray(offset) };
}

/** Prefixes a message with its two-byte length. Messages over 65,535 bytes cannot be framed. */
export function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(message.length + 2);
  out.writeUInt16BE(message.length, 0);
  message.copy(out, 2);
  return out;
}
