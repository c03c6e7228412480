// Exfiltration guard, fail-closed audit and a real dnsmasq upstream, each on its own server instance
// (the guard's counters and the audit log's failed state are per workspace).
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { addressesOf, dig, queryUdp, rcodeOf } from './helpers/client.js';
import { GUARDED_POLICY, startHarness, type Harness } from './helpers/harness.js';
import { a, startTestUpstream, type TestUpstream } from './helpers/upstream.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function withUpstream(): Promise<TestUpstream> {
  const upstream = await startTestUpstream();
  cleanups.push(() => upstream.close());
  return upstream;
}

async function withHarness(options: Parameters<typeof startHarness>[0]): Promise<Harness> {
  const h = await startHarness(options);
  cleanups.push(() => h.close());
  return h;
}

describe('exfiltration guard', () => {
  it('refuses a burst of random-label names under one domain and long labels', async () => {
    const upstream = await withUpstream();
    const h = await withHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address], limits: { distinctNamesPerDomainPerSecond: 10 } });
    const names = Array.from({ length: 25 }, () => `${randomBytes(8).toString('hex')}.exfil.test`);
    const replies = await Promise.all(names.map((name) => queryUdp(h.port, name, 'TXT')));
    const refused = replies.filter((r) => rcodeOf(r) === 'REFUSED').length;
    expect(refused).toBe(15);
    expect(upstream.received.filter((q) => q.name.endsWith('.exfil.test'))).toHaveLength(10);
    const limited = (await h.records()).filter((r) => r.reason === 'rate_limited');
    expect(limited).toHaveLength(15);
    expect(limited[0]).toMatchObject({ verdict: 'deny', signals: ['exfiltration_guard'], rcode: 'REFUSED', qtype: 'TXT' });

    const longLabel = `${'q'.repeat(50)}.other.test`;
    expect((await dig(h.port, longLabel, 'A')).status).toBe('REFUSED');
    expect(await h.lastRecord(longLabel)).toMatchObject({ reason: 'rate_limited', signals: ['exfiltration_guard'] });
    expect(upstream.count(longLabel)).toBe(0);
  });

  it('limits the query rate per workspace with a token bucket', async () => {
    const upstream = await withUpstream();
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    const h = await withHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address], limits: { queriesPerSecond: 1, burst: 5 } });
    const replies = await Promise.all(Array.from({ length: 8 }, () => queryUdp(h.port, 'web.test', 'A')));
    expect(replies.filter((r) => rcodeOf(r) === 'NOERROR')).toHaveLength(5);
    expect(replies.filter((r) => rcodeOf(r) === 'REFUSED')).toHaveLength(3);
  });
});

describe('stream limits', () => {
  it('closes a TCP connection that stays idle past the timeout', async () => {
    const upstream = await withUpstream();
    const h = await withHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address], limits: { tcpIdleTimeoutMs: 300 } });
    const socket = connect({ host: '127.0.0.1', port: h.port });
    const closed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 3000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    socket.destroy();
    expect(closed).toBe(true);
  });

  it('a client dribbling a byte at a time of a query it never finishes is closed all the same', async () => {
    const upstream = await withUpstream();
    const h = await withHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address], limits: { tcpIdleTimeoutMs: 300 } });
    const socket = connect({ host: '127.0.0.1', port: h.port });
    socket.on('error', () => undefined);
    socket.write(Buffer.from([0x00, 0x40])); // a 64-byte query is coming
    const dribble = setInterval(() => socket.write(Buffer.from([0x00])), 100);
    const closedAfter = await new Promise<number | null>((resolve) => {
      const started = Date.now();
      const timer = setTimeout(() => resolve(null), 3000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(Date.now() - started);
      });
    });
    clearInterval(dribble);
    socket.destroy();
    expect(closedAfter).not.toBeNull();
  });
});

describe('fail closed', () => {
  it('answers REFUSED and forwards nothing once the audit log cannot be written', async () => {
    const upstream = await withUpstream();
    upstream.set('web.test', 'A', [a('web.test', '192.0.2.10', 300)]);
    upstream.set('late.allowed.test', 'A', [a('late.allowed.test', '192.0.2.11', 300)]);
    const h = await withHarness({ policy: GUARDED_POLICY, upstreams: [upstream.address] });
    expect(addressesOf(await queryUdp(h.port, 'web.test', 'A'))).toEqual(['192.0.2.10']);
    await h.audit.close(); // appends now reject: the sink is no longer writable
    expect(rcodeOf(await queryUdp(h.port, 'web.test', 'A'))).toBe('REFUSED');
    expect(rcodeOf(await queryUdp(h.port, 'late.allowed.test', 'A'))).toBe('REFUSED');
    expect(upstream.count('late.allowed.test')).toBe(0);
  });
});

describe('dnsmasq as the upstream', () => {
  it('forwards allowed names to a real dnsmasq and strips its internal answers', async () => {
    const port = await freeUdpPort();
    const dnsmasq: ChildProcess = spawn('dnsmasq', [
      '--no-daemon', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts',
      '--conf-file=/dev/null', '--pid-file=', `--user=${userInfo().username}`,
      '--address=/x.test/192.0.2.10', '--host-record=host.allowed.test,192.0.2.11', '--host-record=leak.allowed.test,10.1.2.3',
    ], { stdio: 'ignore' });
    cleanups.push(async () => {
      dnsmasq.kill('SIGTERM');
      await new Promise((r) => dnsmasq.once('exit', r));
    });
    await untilAnswering(port);
    const h = await withHarness({ policy: GUARDED_POLICY, upstreams: [`127.0.0.1:${port}`], resolver: { timeoutMs: 500, retries: 3 } });
    expect((await dig(h.port, 'www.x.test', 'A')).answers).toEqual(['A 192.0.2.10']);
    expect((await dig(h.port, 'host.allowed.test', 'A')).answers).toEqual(['A 192.0.2.11']);
    expect((await dig(h.port, 'leak.allowed.test', 'A')).answers).toEqual([]);
    expect(await h.lastRecord('www.x.test')).toMatchObject({ reason: 'unlisted', answers: 1, rcode: 'NOERROR' });
    expect((await h.lastRecord('leak.allowed.test')).signals).toEqual(expect.arrayContaining(['answer_stripped']));
  });
});

/** dnsmasq binds a moment after it is spawned (seconds on a loaded machine); asking before races it. */
async function untilAnswering(port: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await queryUdp(port, 'www.x.test', 'A');
      return;
    } catch (err) {
      if (attempt >= 100) throw err;
    }
    await sleep(100);
  }
}

function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  return new Promise((resolve) =>
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    }),
  );
}
