/**
 * Clients for the DNS tests: dns-packet over real UDP and TCP/Unix sockets, raw datagrams for the
 * fuzzing cases, and dig.
 */
import { createSocket } from 'node:dgram';
import { connect, type NetConnectOpts } from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import dnsPacket, { type DecodedPacket, type RecordType } from 'dns-packet';

const run = promisify(execFile);

export function encodeQuery(name: string, type: RecordType | string, id = Math.floor(Math.random() * 65536)): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as RecordType, class: 'IN' }],
  });
}

/** Sends one datagram; resolves with the reply bytes, or null when none came within `timeoutMs`. */
export function sendUdp(port: number, message: Buffer, timeoutMs = 2000): Promise<Buffer | null> {
  const socket = createSocket('udp4');
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.close();
      resolve(null);
    }, timeoutMs);
    socket.on('message', (reply) => {
      clearTimeout(timer);
      socket.close();
      resolve(reply);
    });
    socket.send(message, port, '127.0.0.1');
  });
}

export async function queryUdp(port: number, name: string, type: RecordType | string): Promise<DecodedPacket> {
  const reply = await sendUdp(port, encodeQuery(name, type));
  if (reply === null) throw new Error(`no UDP answer for ${name} ${type}`);
  return dnsPacket.decode(reply);
}

/**
 * Sends several framed queries on one connection; resolves with the replies in arrival order.
 * `halfClose`: send our FIN right after the queries, as a client with nothing more to ask may.
 */
export function queryStream(where: NetConnectOpts, messages: readonly Buffer[], timeoutMs = 3000, halfClose = false): Promise<DecodedPacket[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(where);
    const replies: DecodedPacket[] = [];
    let pending: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`only ${replies.length} of ${messages.length} stream answers arrived`));
    }, timeoutMs);
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`connection closed after ${replies.length} of ${messages.length} answers`));
    });
    socket.on('connect', () => {
      for (const m of messages) {
        const framed = Buffer.alloc(m.length + 2);
        framed.writeUInt16BE(m.length, 0);
        m.copy(framed, 2);
        socket.write(framed);
      }
      if (halfClose) socket.end();
    });
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        replies.push(dnsPacket.decode(pending.subarray(2, 2 + pending.readUInt16BE(0))));
        pending = pending.subarray(2 + pending.readUInt16BE(0));
      }
      if (replies.length === messages.length) {
        clearTimeout(timer);
        socket.end();
        resolve(replies);
      }
    });
  });
}

export function rcodeOf(packet: DecodedPacket): string {
  return (packet as DecodedPacket & { rcode: string }).rcode;
}

export function addressesOf(packet: DecodedPacket): string[] {
  return (packet.answers ?? []).filter((a) => a.type === 'A' || a.type === 'AAAA').map((a) => String((a as { data: unknown }).data));
}

export interface DigResult {
  readonly status: string;
  readonly answers: string[];
  readonly flags: string;
  readonly output: string;
}

/** Runs dig against our server and extracts status, flags and the answer section. */
export async function dig(port: number, name: string, type: string, extra: readonly string[] = []): Promise<DigResult> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), name, type, '+tries=1', '+time=3', ...extra]);
  const status = /status: (\w+)/.exec(stdout)?.[1] ?? 'NONE';
  const flags = /;; flags: ([^;]*);/.exec(stdout)?.[1] ?? '';
  const section = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(stdout)?.[1] ?? '';
  const answers = section
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(/\s+/).slice(3).join(' '));
  return { status, answers, flags, output: stdout };
}
