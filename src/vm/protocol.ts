/**
 * The host <-> guest agent wire protocol (docs/guest.md), sans-IO: frame encoding, an incremental
 * frame splitter returning need-more / frames / a typed error, and the TLV payload codecs. It never
 * touches a socket and never trusts a length it has not checked against FRAME_MAX_PAYLOAD.
 * Must stay in step with src/vm/guest/agent.h.
 */

import { MicroagentError } from '../errors.js';

export const PROTOCOL_VERSION = 2;
export const FRAME_HEADER = 9;
export const FRAME_MAX_PAYLOAD = 1 << 20;
/** Bytes a tunnel peer may send before it sees a CREDIT (both directions). */
export const TUNNEL_WINDOW = 256 * 1024;
/** STDIN bytes the host may send one command before the guest's STDIN_CREDIT gives the window back. */
export const STDIN_WINDOW = 256 * 1024;
/** Output bytes (stdout and stderr together) a command may send before the host's OUTPUT_CREDIT. */
export const OUTPUT_WINDOW = 1024 * 1024;
/** Stream ids with this bit set are allocated by the guest (tunnel streams); exec ids never have it. */
export const GUEST_STREAM_BIT = 0x8000_0000;

export const MSG = {
  CONFIG: 0x01,
  EXEC: 0x02,
  STDIN: 0x03,
  STDIN_EOF: 0x04,
  SIGNAL: 0x05,
  HALT: 0x06,
  PING: 0x07,
  STOP: 0x08,
  OUTPUT_CREDIT: 0x09,
  RESIZE: 0x0a,
  HELLO: 0x81,
  READY: 0x82,
  STDOUT: 0x83,
  STDERR: 0x84,
  EXIT: 0x85,
  ERROR: 0x86,
  HALTING: 0x88,
  STDIN_CREDIT: 0x89,
  T_OPEN: 0x40,
  T_OPENED: 0x41,
  T_DATA: 0x42,
  T_EOF: 0x43,
  T_CLOSE: 0x44,
  T_CREDIT: 0x45,
} as const;

export const CFG = { CA_PEM: 1, ENV: 2, HOSTNAME: 3, MEDIATION_PORT: 4, DNS_UPSTREAM: 5 } as const;
export const EXEC_KEY = { ARG: 1, ENV: 2, CWD: 3, UID: 4, GID: 5, TIMEOUT_MS: 6, STDIN: 7, TTY: 8 } as const;
export const EXIT_KEY = { CODE: 1, SIGNAL: 2, TIMED_OUT: 3, MESSAGE: 4 } as const;
export const HELLO_KEY = { VERSION: 1, KERNEL: 2, HAS_NET: 3 } as const;

export interface Frame {
  readonly type: number;
  readonly stream: number;
  readonly payload: Buffer;
}

export type SplitResult =
  | { readonly kind: 'frames'; readonly frames: readonly Frame[]; readonly rest: Buffer }
  | { readonly kind: 'error'; readonly message: string };

export function encodeFrame(type: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(stream >>> 0, 5);
  payload.copy(out, FRAME_HEADER);
  return out;
}

/** Splits every complete frame off the front of `input`; `rest` is the incomplete tail (need more). */
export function splitFrames(input: Buffer): SplitResult {
  const frames: Frame[] = [];
  let off = 0;
  while (input.length - off >= FRAME_HEADER) {
    const len = input.readUInt32BE(off);
    if (len > FRAME_MAX_PAYLOAD) {
      return { kind: 'error', message: `frame of ${len} bytes exceeds the ${FRAME_MAX_PAYLOAD} byte limit` };
    }
    if (input.length - off < FRAME_HEADER + len) break;
    frames.push({
      type: input.readUInt8(off + 4),
      stream: input.readUInt32BE(off + 5),
      payload: input.subarray(off + FRAME_HEADER, off + FRAME_HEADER + len),
    });
    off += FRAME_HEADER + len;
  }
  return { kind: 'frames', frames, rest: input.subarray(off) };
}

export type Tlv = readonly [key: number, value: Buffer | string | number];

const MAX_U32 = 0xffffffff;

/** Numbers encode as u32 (one that does not fit is refused, never wrapped); strings as UTF-8. */
export function encodeTlv(records: readonly Tlv[]): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of records) {
    if (typeof value === 'number' && !(Number.isInteger(value) && value >= 0 && value <= MAX_U32)) {
      throw new MicroagentError('invalid', `${value} does not fit the guest protocol's 32-bit field (key ${key})`, {
        code: 'vm.protocol_range',
        remediation: `use a whole number from 0 to ${MAX_U32}`,
      });
    }
    const body =
      typeof value === 'number'
        ? Buffer.from([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff])
        : typeof value === 'string'
          ? Buffer.from(value, 'utf8')
          : value;
    const head = Buffer.allocUnsafe(5);
    head.writeUInt8(key, 0);
    head.writeUInt32BE(body.length, 1);
    parts.push(head, body);
  }
  return Buffer.concat(parts);
}

export function decodeTlv(payload: Buffer): Array<[number, Buffer]> | null {
  const out: Array<[number, Buffer]> = [];
  let off = 0;
  while (off < payload.length) {
    if (payload.length - off < 5) return null;
    const len = payload.readUInt32BE(off + 1);
    if (len > payload.length - off - 5) return null;
    out.push([payload.readUInt8(off), payload.subarray(off + 5, off + 5 + len)]);
    off += 5 + len;
  }
  return out;
}

export interface ExecRequest {
  readonly argv: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  readonly uid?: number;
  readonly gid?: number;
  readonly timeoutMs?: number;
  /** True to feed stdin through `writeStdin`; otherwise the command reads /dev/null. */
  readonly stdin?: boolean;
  /**
   * Run on a pseudo-terminal of this window size: stdin goes to it (as typed: the terminal echoes and
   * edits), and everything the command writes, stderr too, comes back as stdout.
   */
  readonly tty?: TerminalSize;
}

export interface TerminalSize {
  readonly rows: number;
  readonly cols: number;
}

/** A window size as RESIZE and EXEC's TTY record carry it: u16 rows, u16 columns, each clamped. */
export function encodeTerminalSize(size: TerminalSize): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt16BE(Math.min(Math.max(Math.trunc(size.rows), 1), 0xffff), 0);
  out.writeUInt16BE(Math.min(Math.max(Math.trunc(size.cols), 1), 0xffff), 2);
  return out;
}

export function encodeExec(req: ExecRequest): Buffer {
  const records: Tlv[] = req.argv.map((a) => [EXEC_KEY.ARG, a] as const);
  for (const [k, v] of Object.entries(req.env ?? {})) records.push([EXEC_KEY.ENV, `${k}=${v}`]);
  if (req.cwd !== undefined) records.push([EXEC_KEY.CWD, req.cwd]);
  if (req.uid !== undefined) records.push([EXEC_KEY.UID, req.uid]);
  if (req.gid !== undefined) records.push([EXEC_KEY.GID, req.gid]);
  if (req.timeoutMs !== undefined) records.push([EXEC_KEY.TIMEOUT_MS, req.timeoutMs]);
  if (req.stdin) records.push([EXEC_KEY.STDIN, Buffer.from([1])]);
  if (req.tty !== undefined) records.push([EXEC_KEY.TTY, encodeTerminalSize(req.tty)]);
  return encodeTlv(records);
}

export interface GuestConfig {
  /** PEM of the workspace CA, installed into the guest trust store. */
  readonly caPem?: string;
  /** Environment for every command (proxy variables, CA bundle paths). Replaces the previous set. */
  readonly env?: Readonly<Record<string, string>>;
  readonly hostname?: string;
  /** Mediation ports the guest agent listens on (127.0.0.1:PORT and /run/microagent/mediation/PORT.sock). */
  readonly mediationPorts?: readonly number[];
  /** "IP:PORT" the guest DNS relay forwards to over TCP; omitted leaves the relay off. */
  readonly dnsUpstream?: string;
}

export function encodeConfig(cfg: GuestConfig): Buffer {
  const records: Tlv[] = [];
  if (cfg.caPem !== undefined) records.push([CFG.CA_PEM, cfg.caPem]);
  for (const [k, v] of Object.entries(cfg.env ?? {})) records.push([CFG.ENV, `${k}=${v}`]);
  if (cfg.hostname !== undefined) records.push([CFG.HOSTNAME, cfg.hostname]);
  for (const port of cfg.mediationPorts ?? []) records.push([CFG.MEDIATION_PORT, port]);
  if (cfg.dnsUpstream !== undefined) records.push([CFG.DNS_UPSTREAM, cfg.dnsUpstream]);
  return encodeTlv(records);
}

export type ExitStatus =
  | { readonly kind: 'exited'; readonly code: number; readonly timedOut: boolean }
  | { readonly kind: 'signaled'; readonly signal: number; readonly timedOut: boolean };

export function decodeExit(payload: Buffer): ExitStatus | null {
  const records = decodeTlv(payload);
  if (records === null) return null;
  let code: number | undefined;
  let signal: number | undefined;
  let timedOut = false;
  for (const [key, value] of records) {
    if (key === EXIT_KEY.CODE && value.length === 4) code = value.readUInt32BE(0);
    else if (key === EXIT_KEY.SIGNAL && value.length === 4) signal = value.readUInt32BE(0);
    else if (key === EXIT_KEY.TIMED_OUT) timedOut = value[0] === 1;
  }
  if (signal !== undefined) return { kind: 'signaled', signal, timedOut };
  if (code !== undefined) return { kind: 'exited', code, timedOut };
  return null;
}

export interface Hello {
  readonly version: number;
  readonly kernel: string;
  readonly hasNetwork: boolean;
}

export function decodeHello(payload: Buffer): Hello | null {
  const records = decodeTlv(payload);
  if (records === null) return null;
  let version = 0;
  let kernel = '';
  let hasNetwork = false;
  for (const [key, value] of records) {
    if (key === HELLO_KEY.VERSION && value.length === 4) version = value.readUInt32BE(0);
    else if (key === HELLO_KEY.KERNEL) kernel = value.toString('utf8');
    else if (key === HELLO_KEY.HAS_NET) hasNetwork = value[0] === 1;
  }
  return { version, kernel, hasNetwork };
}
