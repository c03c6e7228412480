/**
 * The broker on real sockets: guest connections into its Unix sockets, real TCP and Unix targets, the
 * PROXY v2 header read by the target with the real parser, and the records each case leaves in the
 * real hash-chained audit log (whose chain is verified after every test).
 */
import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAuditLog, verifyAuditLog } from '../../src/audit/index.js';
import type { AuditRecord, AuditSink, MediationCloseEvent, MediationConnectEvent } from '../../src/audit/record.js';
import { validateChannels, type ChannelDeclaration } from '../../src/mediation/channels.js';
import { startBroker, type MediationBroker } from '../../src/mediation/broker.js';
import { readMediationTlvs } from '../../src/mediation/proxy-v2.js';
import { collect, eventually, guestConnect, readRecords, startTarget, tempDir, type TestTarget } from './helpers.js';

let dir: { path: string; remove: () => Promise<void> };
const cleanups: (() => Promise<void>)[] = [];

beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  const verified = await verifyAuditLog(auditPath());
  expect(verified.firstBad).toBeUndefined();
  expect(verified.ok).toBe(true);
  await dir.remove();
});

const auditPath = () => `${dir.path}/audit/audit.jsonl`;

async function target(options: Parameters<typeof startTarget>[0]): Promise<TestTarget> {
  const t = await startTarget({ dir: dir.path, ...options });
  cleanups.push(() => t.close());
  return t;
}

/** A broker writing to the real audit log; `closedLog` hands it a log already closed (appends reject). */
async function broker(declarations: ChannelDeclaration[], options: { closedLog?: boolean } = {}) {
  const log = await openAuditLog({ path: auditPath(), workspace: 'ws-test', runtimeId: 'rt-0001' });
  cleanups.push(() => log.close());
  if (options.closedLog === true) await log.close();
  const audit: AuditSink = log;
  const b: MediationBroker = await startBroker({
    workspace: 'ws-test',
    runtimeId: 'rt-0001',
    channels: validateChannels(declarations),
    socketDir: `${dir.path}/sockets`,
    audit,
  });
  cleanups.push(() => b.close());
  return { broker: b, log };
}

const records = () => readRecords(auditPath());
const connects = async () => (await records()).filter((e): e is AuditRecord & MediationConnectEvent => e.event === 'mediation.connect');
const closes = async () => (await records()).filter((e): e is AuditRecord & MediationCloseEvent => e.event === 'mediation.close');

describe('relaying', () => {
  it.each(['tcp4', 'tcp6', 'unix'] as const)('echoes through a %s target and audits connect and close', async (kind) => {
    const t = await target({ kind, proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 5000, target: t.address }]);
    const guest = await guestConnect(b.socketPathFor(5000));
    const outcome = collect(guest);
    guest.end('hello through the broker');
    const { data, how } = await outcome;
    expect(how).toBe('end');
    expect(data.toString()).toBe('hello through the broker');
    await eventually(async () => (await closes()).length === 1, 'close record');
    const [connect] = (await connects());
    const [close] = (await closes());
    expect(connect).toMatchObject({ verdict: 'allow', reason: null, port: 5000, target: t.address });
    expect(close).toMatchObject({ conn: connect?.conn, bytes_up: 24, bytes_down: 24, closed_by: 'guest', port: 5000 });
    expect(close?.error).toBeUndefined();
  });

  it('passes a half-close through: the guest ends its side and still gets the reply', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: true, behaviour: 'reply-after-eof' });
    const { broker: b } = await broker([{ port: 7, target: t.address }]);
    const guest = await guestConnect(b.socketPathFor(7));
    const outcome = collect(guest);
    guest.write('first part, ');
    guest.end('second part');
    const { data, how } = await outcome;
    expect(how).toBe('end');
    expect(data.toString()).toBe('FIRST PART, SECOND PART');
  });

  it('a target that greets and closes without reading (a banner) is heard by every guest, PROXY header or not', async () => {
    // A process of its own, as a real target is: it writes its line and closes at once, never reading,
    // so the PROXY header meets a closed socket (EPIPE); what the target said must still reach the guest.
    const path = `${dir.path}/banner.sock`;
    const script = `require('net').createServer((s) => { s.on('error', () => {}); s.write('bye\\n'); s.destroy(); }).listen(${JSON.stringify(path)}, () => process.stdout.write('ready\\n'))`;
    const server = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(async () => void server.kill());
    await new Promise<void>((resolve) => server.stdout.once('data', () => resolve()));
    const { broker: b } = await broker([{ port: 6001, target: path }]);
    const heard = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const guest = await guestConnect(b.socketPathFor(6001));
        return (await collect(guest)).data.toString();
      }),
    );
    expect(heard).toEqual(Array.from({ length: 20 }, () => 'bye\n'));
    await eventually(async () => (await closes()).length === 20, 'close records');
    // closed_by is the target's, or an error when the header arrived before the target closed and the
    // target closed with it unread (a reset): either way after its line was relayed.
    expect((await closes()).map((c) => c.bytes_down)).toEqual(Array.from({ length: 20 }, () => 4));
  });

  it('streams 64 MiB to a slow reader with bounded memory (backpressure)', async () => {
    const total = 64 * 1024 * 1024;
    const t = await target({ kind: 'tcp4', proxyProtocol: true, behaviour: { stream: total } });
    const { broker: b } = await broker([{ port: 9, target: t.address }]);
    const guest = await guestConnect(b.socketPathFor(9));
    guest.pause();
    // Give the target time to fill every buffer on the way while the guest reads nothing.
    await new Promise((r) => setTimeout(r, 300));
    const rssWhilePaused = process.memoryUsage().rss;
    const stalled = b.stats().channels[0]?.bytesDown ?? 0;
    expect(stalled).toBeLessThan(16 * 1024 * 1024);
    let received = 0;
    let peakRss = rssWhilePaused;
    const done = new Promise<void>((resolve) => {
      guest.on('data', (c: Buffer) => {
        received += c.length;
        // Read slowly: pause a moment every MiB.
        if (received % (1024 * 1024) < c.length) {
          guest.pause();
          peakRss = Math.max(peakRss, process.memoryUsage().rss);
          setTimeout(() => guest.resume(), 1);
        }
      });
      guest.on('end', () => {
        guest.end();
        resolve();
      });
    });
    guest.resume();
    await done;
    expect(received).toBe(total);
    expect(peakRss - rssWhilePaused).toBeLessThan(48 * 1024 * 1024);
    await eventually(async () => (await closes()).length === 1, 'close record');
    expect((await closes())[0]).toMatchObject({ bytes_down: total, closed_by: 'target' });
  });

  it('starts every target connection with a PROXY v2 header naming workspace, runtime, port and conn', async () => {
    const t = await target({ kind: 'tcp4', proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 4294967295, target: t.address }]);
    for (let i = 0; i < 2; i++) {
      const guest = await guestConnect(b.socketPathFor(4294967295));
      const outcome = collect(guest);
      guest.end('x');
      expect((await outcome).data.toString()).toBe('x');
    }
    expect(t.headers).toHaveLength(2);
    const conns = (await connects()).map((e) => e.conn);
    t.headers.forEach((parsed, i) => {
      if (parsed.kind !== 'header') throw new Error(`target saw ${parsed.kind}`);
      expect(parsed.header).toEqual({ command: 'proxy', family: 'unspec', transport: 'unspec' });
      expect(readMediationTlvs(parsed.tlvs)).toEqual({ workspace: 'ws-test', runtimeId: 'rt-0001', port: 4294967295, conn: conns[i] });
    });
  });

  it('sends no header when proxyProtocol is off', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: false, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 11, target: t.address, proxyProtocol: false }]);
    const guest = await guestConnect(b.socketPathFor(11));
    const outcome = collect(guest);
    guest.end('raw bytes only');
    expect((await outcome).data.toString()).toBe('raw bytes only');
  });

  it('serves several channels of one workspace, each to its own target', async () => {
    const a = await target({ kind: 'tcp4', proxyProtocol: false, behaviour: 'echo' });
    const c = await target({ kind: 'unix', proxyProtocol: false, behaviour: 'reply-after-eof' });
    const { broker: b } = await broker([
      { port: 1, target: a.address, proxyProtocol: false },
      { port: 2, target: c.address, proxyProtocol: false },
    ]);
    const [g1, g2] = await Promise.all([guestConnect(b.socketPathFor(1)), guestConnect(b.socketPathFor(2))]);
    const [o1, o2] = [collect(g1), collect(g2)];
    g1.end('one');
    g2.end('two');
    expect((await o1).data.toString()).toBe('one');
    expect((await o2).data.toString()).toBe('TWO');
  });

  it('creates the socket directory with mode 0700', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: false, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 3, target: t.address }]);
    expect((await stat(`${dir.path}/sockets`)).mode & 0o777).toBe(0o700);
    expect(b.socketPathFor(3)).toBe(`${dir.path}/sockets/3.sock`);
    expect(() => b.socketPathFor(4)).toThrow(/no mediation channel on port 4/);
  });
});

describe('limits', () => {
  it('30 simultaneous connections against a cap of 8: the excess is closed at once and audited', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 5, target: t.address, limits: { maxConnections: 8 } }]);
    const guests = await Promise.all(Array.from({ length: 30 }, () => guestConnect(b.socketPathFor(5))));
    let closedCount = 0;
    const outcomes = guests.map((g) => {
      const o = collect(g);
      void o.then(() => closedCount++);
      g.write('ping');
      return o;
    });
    // The guests do not end: only the cap can have closed the 22 that get nothing.
    const deniedRecords = async () => (await connects()).filter((e) => e.verdict === 'deny');
    await eventually(async () => (await deniedRecords()).length === 22, '22 deny records');
    for (const d of await deniedRecords()) expect(d.reason).toBe('limit_exceeded');
    await eventually(() => t.sockets.length === 8, 'eight relayed connections');
    await eventually(() => closedCount === 22, 'the 22 denied guests closed');
    expect(b.stats().channels[0]).toMatchObject({ live: 8, deniedLimit: 22, accepted: 8 });
    expect(closedCount).toBe(22);
    for (const g of guests) if (!g.destroyed) g.end();
    const all = await Promise.all(outcomes);
    expect(all.filter((o) => o.data.length === 0)).toHaveLength(22);
    expect(all.filter((o) => o.data.length > 0).map((o) => o.data.toString())).toEqual(Array(8).fill('ping'));
    // Room again once the held connections are gone.
    await eventually(() => b.stats().channels[0]?.live === 0, 'connections released');
    const again = await guestConnect(b.socketPathFor(5));
    const o = collect(again);
    again.end('pong');
    expect((await o).data.toString()).toBe('pong');
  });

  it('cuts a connection past its byte limit with closed_by limit', async () => {
    const t = await target({ kind: 'tcp4', proxyProtocol: false, behaviour: { stream: 1024 * 1024 } });
    const { broker: b } = await broker([{ port: 6, target: t.address, proxyProtocol: false, limits: { maxBytesPerConnection: 100_000 } }]);
    const guest = await guestConnect(b.socketPathFor(6));
    const outcome = await collect(guest);
    expect(outcome.data.length).toBeLessThanOrEqual(100_000);
    await eventually(async () => (await closes()).length === 1, 'close record');
    expect((await closes())[0]).toMatchObject({ closed_by: 'limit', error: 'more than 100000 bytes' });
  });

  it('closes an idle connection with closed_by limit', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: false, behaviour: 'sink' });
    const { broker: b } = await broker([{ port: 8, target: t.address, proxyProtocol: false, limits: { idleTimeoutMs: 200 } }]);
    const guest = await guestConnect(b.socketPathFor(8));
    guest.write('anyone there?');
    await collect(guest);
    await eventually(async () => (await closes()).length === 1, 'close record');
    expect((await closes())[0]).toMatchObject({ closed_by: 'limit', error: 'idle for 200 ms', bytes_up: 13 });
  });
});

describe('fail closed', () => {
  it('closes the guest at once and audits target_unreachable when the target is down', async () => {
    const t = await target({ kind: 'tcp4', proxyProtocol: true, behaviour: 'echo' });
    await t.close();
    const { broker: b } = await broker([{ port: 5, target: t.address }]);
    const guest = await guestConnect(b.socketPathFor(5));
    guest.write('is anyone home?');
    const outcome = await collect(guest);
    expect(outcome.data.length).toBe(0);
    await eventually(async () => (await connects()).length === 2, 'deny record');
    const [allow, deny] = (await connects());
    expect(allow).toMatchObject({ verdict: 'allow' });
    expect(deny).toMatchObject({ verdict: 'deny', reason: 'target_unreachable', conn: allow?.conn });
    expect(deny?.error).toMatch(/ECONNREFUSED/);
    expect((await closes())).toHaveLength(0);
    const readiness = await b.mediationReady();
    expect(readiness.ready).toBe(false);
    expect(readiness.error).toMatch(/mediation channel 5 -> 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    expect(b.stats().channels[0]).toMatchObject({ deniedUnreachable: 1, live: 0 });
  });

  it.each([
    ['unix', 'destroyed', 'target', undefined],
    ['tcp4', 'reset', 'error', /^target: .*ECONNRESET/],
  ] as const)('ends the guest when a %s target is %s mid-stream (closed_by %s)', async (kind, how, closedBy, error) => {
    const t = await target({ kind, proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 5, target: t.address }]);
    const guest = await guestConnect(b.socketPathFor(5));
    const outcome = collect(guest);
    guest.write('before the crash');
    await eventually(() => (b.stats().channels[0]?.bytesDown ?? 0) === 16, 'echo relayed');
    const victim = t.sockets[0];
    if (how === 'reset') victim?.resetAndDestroy();
    else victim?.destroy();
    const { data, how: guestSaw } = await outcome;
    expect(data.toString()).toBe('before the crash');
    expect(guestSaw).toBe('end');
    await eventually(async () => (await closes()).length === 1, 'close record');
    const [close] = (await closes());
    expect(close).toMatchObject({ closed_by: closedBy, bytes_up: 16, bytes_down: 16 });
    if (error === undefined) expect(close?.error).toBeUndefined();
    else expect(close?.error).toMatch(error);
  });

  it('closes the guest and never dials when the allow record cannot be written', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 5, target: t.address }], { closedLog: true });
    const guest = await guestConnect(b.socketPathFor(5));
    guest.write('audit me');
    const outcome = await collect(guest);
    expect(outcome.data.length).toBe(0);
    expect(t.sockets).toHaveLength(0);
  });

  it('when the audit log fails, live connections are closed too (their close could not be recorded)', async () => {
    const t = await target({ kind: 'unix', proxyProtocol: true, behaviour: 'echo' });
    const { broker: b, log } = await broker([{ port: 5, target: t.address }]);
    const live = await guestConnect(b.socketPathFor(5));
    const liveOutcome = collect(live);
    live.write('before');
    await eventually(() => (b.stats().channels[0]?.bytesDown ?? 0) === 6, 'live relay');
    await log.close();
    const late = await collect(await guestConnect(b.socketPathFor(5)));
    expect(late.data.length).toBe(0);
    const { data, how } = await liveOutcome;
    expect(data.toString()).toBe('before');
    expect(how).toBe('end');
    expect(t.sockets).toHaveLength(1);
  });

  it('reports readiness per channel: a required channel down makes the workspace not ready', async () => {
    const up = await target({ kind: 'unix', proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([
      { port: 1, target: up.address },
      { port: 2, target: `${dir.path}/nobody-listens.sock`, required: false, failClosed: false },
    ]);
    const optionalDown = await b.mediationReady();
    expect(optionalDown.ready).toBe(true);
    expect(optionalDown.channels.map((c) => [c.port, c.ready])).toEqual([[1, true], [2, false]]);
    expect(optionalDown.channels[1]?.error).toMatch(/ENOENT/);
    expect(Date.parse(optionalDown.channels[0]?.observedAt ?? '')).not.toBeNaN();
    // The probe's LOCAL header is a health check: the target parsed it and saw no relayed connection.
    await eventually(() => up.headers.length === 1, 'probe header');
    expect(up.headers[0]).toMatchObject({ kind: 'header', header: { command: 'local' } });
    await up.close();
    const requiredDown = await b.mediationReady();
    expect(requiredDown.ready).toBe(false);
    expect(requiredDown.error).toMatch(/^mediation channel 1 -> .*ENOENT|ECONNREFUSED/);
  });
});

describe('optional channels and guest aborts', () => {
  it('failClosed off: the guest waits while the target comes up, then is relayed', async () => {
    const path = `${dir.path}/late.sock`;
    const { broker: b } = await broker([{ port: 5, target: path, required: false, failClosed: false, limits: { connectTimeoutMs: 5000 } }]);
    const guest = await guestConnect(b.socketPathFor(5));
    const outcome = collect(guest);
    guest.end('patience');
    await new Promise((r) => setTimeout(r, 300));
    const late = await startTarget({ kind: 'unix', dir: dir.path, proxyProtocol: true, behaviour: 'reply-after-eof' });
    cleanups.push(() => late.close());
    // The declared path and the late target's path differ; move the late server onto the declared one.
    await new Promise<void>((resolve) => late.server.close(() => resolve()));
    await new Promise<void>((resolve) => late.server.listen(path, resolve));
    expect((await outcome).data.toString()).toBe('PATIENCE');
  });

  it('failClosed off: still denied target_unreachable once connectTimeoutMs has passed', async () => {
    const { broker: b } = await broker([{ port: 5, target: `${dir.path}/never.sock`, required: false, failClosed: false, limits: { connectTimeoutMs: 300 } }]);
    const outcome = await collect(await guestConnect(b.socketPathFor(5)));
    expect(outcome.data.length).toBe(0);
    await eventually(async () => (await connects()).length === 2, 'deny record');
    expect((await connects())[1]).toMatchObject({ verdict: 'deny', reason: 'target_unreachable', error: expect.stringMatching(/ENOENT/) });
  });

  it('a guest that goes away mid-stream reaches the target as EOF; the close is audited as the guest\'s', async () => {
    // A Unix socket has no reset: the guest vanishing is a half-close the target must be told about.
    const t = await target({ kind: 'tcp4', proxyProtocol: true, behaviour: 'reply-after-eof' });
    const { broker: b } = await broker([{ port: 5, target: t.address }]);
    const guest = await guestConnect(b.socketPathFor(5));
    guest.write('half a request');
    await eventually(() => (b.stats().channels[0]?.bytesUp ?? 0) === 14, 'bytes relayed');
    guest.destroy();
    await eventually(async () => (await closes()).length === 1, 'close record');
    expect((await closes())[0]).toMatchObject({ closed_by: 'guest', bytes_up: 14 });
    expect(t.sockets[0]?.readableEnded).toBe(true);
  });
});

describe('sever', () => {
  it('closes live connections and listeners at once; later connections find nothing', async () => {
    const t = await target({ kind: 'tcp4', proxyProtocol: true, behaviour: 'echo' });
    const { broker: b } = await broker([{ port: 5, target: t.address }, { port: 6, target: t.address }]);
    const guests = await Promise.all([5, 5, 6].map((p) => guestConnect(b.socketPathFor(p))));
    const outcomes = guests.map(collect);
    for (const g of guests) g.write('traffic');
    await eventually(() => t.sockets.length === 3, 'three live connections');
    await b.sever();
    for (const o of outcomes) expect((await o).how).not.toBe('error');
    const closed = (await closes());
    expect(closed).toHaveLength(3);
    for (const c of closed) expect(c.closed_by).toBe('sever');
    await expect(guestConnect(b.socketPathFor(5))).rejects.toThrow(/ENOENT/);
    expect(b.stats().severed).toBe(true);
    expect((await b.mediationReady()).ready).toBe(false);
  });
});
