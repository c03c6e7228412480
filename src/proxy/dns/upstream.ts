/**
 * One exchange with one upstream resolver: a query over UDP from the upstream's socket pool (random
 * socket, random source port, random id; udp-pool.ts), falling back to TCP when the answer comes back
 * truncated (a fresh connection and random id per fallback).
 * A reply counts only if it comes from the upstream's address and port and echoes our id and question;
 * anything else is ignored (RFC 5452), so spoofed replies cannot poison the cache.
 * Never decides policy and never caches: that is resolver.ts.
 */
import { randomInt } from 'node:crypto';
import { connect } from 'node:net';
import dnsPacket, { type DecodedPacket } from 'dns-packet';
import { MicroagentError } from '../../errors.js';
import type { UpstreamAddress } from './upstream-address.js';
import { encodeUpstreamQuery } from './wire.js';
import { frame, splitFrames } from './framing.js';
import { createUdpPool, DEFAULT_UDP_POOL, type UdpPool, type UdpPoolOptions } from './udp-pool.js';


export interface UpstreamReply {
  readonly packet: DecodedPacket;
  readonly transport: 'udp' | 'tcp';
}

/** One upstream resolver and the UDP sockets kept open to it. */
export interface Upstream {
  readonly address: UpstreamAddress;
  readonly udp: UdpPool;
}

export function openUpstream(address: UpstreamAddress, pool: UdpPoolOptions = DEFAULT_UDP_POOL): Upstream {
  return { address, udp: createUdpPool(address.host, address.port, pool) };
}

/** Asks one upstream; rejects with a transient MicroagentError on timeout or socket failure. */
export async function exchangeWithUpstream(upstream: Upstream, name: string, qtype: number, timeoutMs: number): Promise<UpstreamReply> {
  const udp = await exchangeOverUdp(upstream, name, qtype, timeoutMs);
  if (!udp.flag_tc) return { packet: udp, transport: 'udp' };
  return { packet: await exchangeOverTcp(upstream.address, name, qtype, timeoutMs), transport: 'tcp' };
}

function upstreamFailure(upstream: UpstreamAddress, what: string, cause?: unknown): MicroagentError {
  return new MicroagentError('transient', `upstream resolver ${upstream.host}:${upstream.port} ${what}`, {
    code: 'dns.upstream_failed',
    remediation: 'check that the upstream resolver is running and reachable, or configure another with --upstream',
    cause,
  });
}

/**
 * A reply is ours when it is a response with our id whose question section repeats ours byte for byte,
 * ignoring ASCII case (label length bytes are below 64, so lowercasing them is harmless).
 */
function isReplyTo(reply: Buffer, query: Buffer): boolean {
  if (reply.length < query.length - OPT_LENGTH || reply.readUInt16BE(0) !== query.readUInt16BE(0)) return false;
  if ((reply[2] as number) < 0x80 || reply.readUInt16BE(4) !== 1) return false;
  for (let i = 12; i < query.length - OPT_LENGTH; i++) {
    if (lower(reply[i] as number) !== lower(query[i] as number)) return false;
  }
  return true;
}

/** Our upstream queries end with one OPT record of this many bytes (root name, no options). */
const OPT_LENGTH = 11;

function lower(byte: number): number {
  return byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;
}

async function exchangeOverUdp(upstream: Upstream, name: string, qtype: number, timeoutMs: number): Promise<DecodedPacket> {
  try {
    return await upstream.udp.exchange(
      (id) => encodeUpstreamQuery(id, name, qtype),
      (candidate, query) => (isReplyTo(candidate, query) ? tryDecode(candidate) : null),
      timeoutMs,
    );
  } catch (err) {
    throw upstreamFailure(upstream.address, `failed: ${(err as Error).message}`, err);
  }
}

function exchangeOverTcp(upstream: UpstreamAddress, name: string, qtype: number, timeoutMs: number): Promise<DecodedPacket> {
  const id = randomInt(0, 65536);
  const query = encodeUpstreamQuery(id, name, qtype);
  return new Promise<DecodedPacket>((resolve, reject) => {
    const socket = connect({ host: upstream.host, port: upstream.port });
    let pending: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(upstreamFailure(upstream, `did not answer over TCP within ${timeoutMs} ms`)), timeoutMs);
    const finish = (result: DecodedPacket | Error) => {
      clearTimeout(timer);
      socket.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    socket.on('connect', () => socket.write(frame(query)));
    socket.on('error', (err) => finish(upstreamFailure(upstream, `failed over TCP: ${err.message}`, err)));
    socket.on('end', () => finish(upstreamFailure(upstream, 'closed the TCP connection without an answer')));
    socket.on('data', (chunk: Buffer) => {
      const split = splitFrames(pending.length === 0 ? chunk : Buffer.concat([pending, chunk]));
      pending = split.rest;
      for (const message of split.messages) {
        const packet = isReplyTo(message, query) ? tryDecode(message) : null;
        if (packet !== null) return finish(packet);
      }
      return undefined;
    });
  });
}

function tryDecode(message: Buffer): DecodedPacket | null {
  try {
    return dnsPacket.decode(message);
  } catch {
    return null;
  }
}
