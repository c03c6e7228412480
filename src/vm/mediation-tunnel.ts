/**
 * Host side of the mediation channel fallback: each guest tunnel stream (T_OPEN with a port) is
 * connected to the broker's Unix socket `<socketDir>/<port>.sock` and relayed with credit-based flow
 * control. It only ever dials a socket for a port the host configured (the guest picks the port
 * number, never the path), and closes the stream on anything unexpected.
 */
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { childLog } from '../log.js';
import type { AgentClient, TunnelSink } from './agent-client.js';
import { MSG, TUNNEL_WINDOW, type Frame } from './protocol.js';

const log = childLog('vm.tunnel');

export interface MediationOptions {
  /** Mediation channel ports the guest may open. */
  readonly ports: readonly number[];
  /** Directory holding the broker's `<port>.sock` listeners (src/mediation). */
  readonly socketDir: string;
}

interface Stream {
  readonly socket: Socket;
  open: boolean;
  /** Bytes we may still send to the guest before it grants more. */
  credit: number;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function attachMediationTunnel(agent: AgentClient, options: MediationOptions): TunnelSink {
  const allowed = new Set(options.ports);
  const streams = new Map<number, Stream>();

  const closeStream = (id: number, tellGuest: boolean) => {
    const s = streams.get(id);
    if (!s) return;
    streams.delete(id);
    s.socket.destroy();
    if (tellGuest) agent.sendFrame(MSG.T_CLOSE, id);
  };

  const open = (id: number, payload: Buffer) => {
    const port = payload.length === 4 ? payload.readUInt32BE(0) : -1;
    if (!allowed.has(port) || streams.has(id)) {
      log.warn({ port, stream: id }, 'guest opened a mediation port that is not configured; refused');
      agent.sendFrame(MSG.T_CLOSE, id);
      return;
    }
    const socket = connect(join(options.socketDir, `${port}.sock`));
    const s: Stream = { socket, open: false, credit: TUNNEL_WINDOW };
    streams.set(id, s);
    socket.on('connect', () => {
      s.open = true;
      agent.sendFrame(MSG.T_OPENED, id);
    });
    socket.on('data', (chunk: Buffer) => {
      agent.sendFrame(MSG.T_DATA, id, chunk);
      s.credit -= chunk.length;
      if (s.credit <= 0) socket.pause();
    });
    socket.on('end', () => agent.sendFrame(MSG.T_EOF, id));
    socket.on('error', (err) => log.debug({ port, err: err.message }, 'mediation socket error'));
    socket.on('close', () => closeStream(id, true));
  };

  const sink: TunnelSink = {
    onFrame(frame: Frame) {
      if (frame.type === MSG.T_OPEN) return open(frame.stream, frame.payload);
      const s = streams.get(frame.stream);
      if (!s) return; // late frames for a stream already closed
      switch (frame.type) {
        case MSG.T_DATA: {
          const n = frame.payload.length;
          // Credit goes back once the broker socket took the bytes, so the guest never outruns it.
          s.socket.write(Buffer.from(frame.payload), () => agent.sendFrame(MSG.T_CREDIT, frame.stream, u32(n)));
          return;
        }
        case MSG.T_EOF:
          s.socket.end();
          return;
        case MSG.T_CLOSE:
          return closeStream(frame.stream, false);
        case MSG.T_CREDIT:
          if (frame.payload.length !== 4) return closeStream(frame.stream, true);
          s.credit += frame.payload.readUInt32BE(0);
          if (s.credit > 0) s.socket.resume();
          return;
        default:
          return closeStream(frame.stream, true);
      }
    },
    onChannelClosed() {
      for (const id of [...streams.keys()]) closeStream(id, false);
    },
  };
  agent.tunnel = sink;
  return sink;
}
