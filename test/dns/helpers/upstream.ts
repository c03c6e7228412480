/**
 * A tiny authoritative DNS server the tests control, on 127.0.0.1 (UDP and TCP, same random port):
 * a programmable zone, per-name behaviours (truncate over UDP, stay silent, answer late) and a log
 * of every question it received, so tests can count what reached the upstream.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { createServer, type Socket } from 'node:net';
import dnsPacket, { type Answer, type DecodedPacket } from 'dns-packet';

export type Behaviour =
  | { readonly kind: 'answer' }
  /** Over UDP: TC set and no answers; over TCP: the full answer. */
  | { readonly kind: 'truncate_udp' }
  | { readonly kind: 'silent' }
  | { readonly kind: 'delay'; readonly ms: number }
  /** Over UDP: first a reply with the right id but another question, then one with the wrong id, then the real one. */
  | { readonly kind: 'spoof_first'; readonly ip: string };

export interface ReceivedQuestion {
  readonly name: string;
  readonly type: string;
  readonly transport: 'udp' | 'tcp';
  readonly id: number;
  readonly sourcePort: number;
}

export interface TestUpstream {
  readonly address: string;
  readonly port: number;
  /** Replaces the records for name/type ('A', 'AAAA', 'UNKNOWN_65', ...). */
  set(name: string, type: string, records: readonly Answer[]): void;
  behave(name: string, behaviour: Behaviour): void;
  readonly received: ReceivedQuestion[];
  count(name: string, type?: string): number;
  /** Called as each question arrives, before it is answered. */
  onQuestion(listener: (question: ReceivedQuestion) => void): void;
  close(): Promise<void>;
}

export function a(name: string, ip: string, ttl = 60): Answer {
  return { type: 'A', name, ttl, class: 'IN', data: ip };
}

export function aaaa(name: string, ip: string, ttl = 60): Answer {
  return { type: 'AAAA', name, ttl, class: 'IN', data: ip };
}

const SOA: Answer = {
  type: 'SOA',
  name: 'test',
  ttl: 5,
  class: 'IN',
  data: { mname: 'ns.test', rname: 'admin.test', serial: 1, refresh: 60, retry: 60, expire: 600, minimum: 5 },
};

export async function startTestUpstream(): Promise<TestUpstream> {
  const zone = new Map<string, readonly Answer[]>();
  const behaviours = new Map<string, Behaviour>();
  const received: ReceivedQuestion[] = [];
  const listeners: ((question: ReceivedQuestion) => void)[] = [];
  const key = (name: string, type: string) => `${name.toLowerCase()}|${type}`;

  const respond = async (query: DecodedPacket, transport: 'udp' | 'tcp', sourcePort: number): Promise<Buffer | null> => {
    const question = query.questions?.[0];
    if (question === undefined) return null;
    const arrived: ReceivedQuestion = { name: question.name.toLowerCase(), type: question.type, transport, id: query.id ?? 0, sourcePort };
    received.push(arrived);
    for (const listener of listeners) listener(arrived);
    const behaviour = behaviours.get(question.name.toLowerCase()) ?? { kind: 'answer' };
    if (behaviour.kind === 'silent') return null;
    if (behaviour.kind === 'delay') await new Promise((r) => setTimeout(r, behaviour.ms));
    const truncated = behaviour.kind === 'truncate_udp' && transport === 'udp';
    const records = zone.get(key(question.name, question.type));
    const nameKnown = [...zone.keys()].some((k) => k.startsWith(`${question.name.toLowerCase()}|`));
    return dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (truncated ? dnsPacket.TRUNCATED_RESPONSE : 0) | (nameKnown ? 0 : 3),
      questions: [question],
      answers: truncated ? [] : [...(records ?? [])],
      authorities: records === undefined && !truncated ? [SOA] : [],
    });
  };

  let udp = createSocket('udp4');
  const onMessage = (message: Buffer, peer: RemoteInfo): void => {
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(message);
    } catch {
      return;
    }
    const behaviour = behaviours.get(query.questions?.[0]?.name.toLowerCase() ?? '');
    if (behaviour?.kind === 'spoof_first') {
      const question = query.questions?.[0] as dnsPacket.Question;
      const forged = (id: number, name: string) =>
        dnsPacket.encode({ type: 'response', id, flags: 0, questions: [{ ...question, name }], answers: [a(question.name, behaviour.ip)] });
      udp.send(forged(query.id ?? 0, `x${question.name}`), peer.port, peer.address);
      udp.send(forged(((query.id ?? 0) + 1) & 0xffff, question.name), peer.port, peer.address);
    }
    void respond(query, 'udp', peer.port).then((out) => {
      if (out !== null) setTimeout(() => udp.send(out, peer.port, peer.address), behaviour?.kind === 'spoof_first' ? 20 : 0);
    });
  };

  const sockets = new Set<Socket>();
  const tcp = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const message = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + message.length);
        void respond(dnsPacket.decode(message), 'tcp', socket.remotePort ?? 0).then((out) => {
          if (out === null || socket.destroyed) return;
          const framed = Buffer.alloc(out.length + 2);
          framed.writeUInt16BE(out.length, 0);
          out.copy(framed, 2);
          socket.write(framed);
        });
      }
    });
  });
  // UDP and TCP on one port: the port UDP got may be taken for TCP, so try a few.
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    udp = createSocket('udp4');
    udp.on('message', onMessage);
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    port = udp.address().port;
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, '127.0.0.1', () => resolve());
      });
      break;
    } catch (err) {
      udp.close();
      if (attempt >= 10 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }

  return {
    address: `127.0.0.1:${port}`,
    port,
    set: (name, type, records) => void zone.set(key(name, type), records),
    behave: (name, behaviour) => void behaviours.set(name.toLowerCase(), behaviour),
    received,
    count: (name, type) => received.filter((q) => q.name === name.toLowerCase() && (type === undefined || q.type === type)).length,
    onQuestion: (listener) => void listeners.push(listener),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    },
  };
}
