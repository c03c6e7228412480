/**
 * One real QEMU (TCG or KVM by probe) guest in isolated mode, exercised through the agent: exec,
 * exit codes, command-not-found, stdin, concurrency, CA + environment config, no NIC, pause/resume,
 * and a clean halt.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootVm, standardGuestConfig, type RunningVm } from '../../src/vm/index.js';
import { FRAME_MAX_PAYLOAD, MSG } from '../../src/vm/protocol.js';
import { removeTestDirs, runDir, testKernel, testRootfs, TEST_STATE_DIR } from './helpers.js';

const CA = '-----BEGIN CERTIFICATE-----\nMIIBtestmicroagentca\n-----END CERTIFICATE-----\n';

describe('microVM guest agent (isolated network)', () => {
  let vm: RunningVm;

  beforeAll(async () => {
    await testKernel();
    vm = await bootVm({ stateDir: TEST_STATE_DIR, rootfsPath: testRootfs(), runDir: runDir(), profile: 'tiny', network: { mode: 'isolated' } });
    const hello = await vm.agent.ready(240_000);
    expect(hello.hasNetwork).toBe(false);
  }, 300_000);

  afterAll(async () => {
    if (vm && vm.state !== 'stopped') await vm.kill();
    removeTestDirs();
  });

  it('runs a command and streams its stdout', async () => {
    const out = await vm.agent.run({ argv: ['uname', '-a'] });
    expect(out.status).toEqual({ kind: 'exited', code: 0, timedOut: false });
    expect(out.stdout).toContain('Linux');
  });

  it('reports exit codes, and 127 with a message for a missing command', async () => {
    expect((await vm.agent.run({ argv: ['sh', '-c', 'exit 7'] })).status).toMatchObject({ kind: 'exited', code: 7 });
    const missing = await vm.agent.run({ argv: ['no-such-command-here'] });
    expect(missing.status).toMatchObject({ kind: 'exited', code: 127 });
    expect(missing.stderr).toContain('no-such-command-here: command not found');
  });

  it('runs as the requested uid/gid in the requested directory', async () => {
    const out = await vm.agent.run({ argv: ['sh', '-c', 'id -u; id -g; pwd'], uid: 1000, gid: 1001, cwd: '/tmp' });
    expect(out.stdout).toBe('1000\n1001\n/tmp\n');
    const bad = await vm.agent.run({ argv: ['true'], cwd: '/does/not/exist' });
    expect(bad.status).toMatchObject({ code: 126 });
    expect(bad.stderr).toContain('cannot change directory to /does/not/exist');
  });

  it('streams large output completely and in order', async () => {
    const out = await vm.agent.run({ argv: ['sh', '-c', 'dd if=/dev/zero bs=65536 count=128 2>/dev/null; echo END'] });
    expect(out.stdout.length).toBe(8 * 1024 * 1024 + 4);
    expect(out.stdout.endsWith('\0END\n')).toBe(true);
  });

  it('passes stdin through and separates stderr', async () => {
    const out = await vm.agent.run({ argv: ['sh', '-c', 'cat; echo oops >&2'] }, 'hello from the host\n');
    expect(out.stdout).toBe('hello from the host\n');
    expect(out.stderr).toBe('oops\n');
  });

  it("holds a command's unread stdin on the host: the guest agent takes no more than its window", async () => {
    // 16 MiB at once to a command that reads nothing for a second: without the window the agent
    // (PID 1) would buffer all of it in the guest's 128 MiB.
    const handle = vm.agent.exec({ argv: ['sh', '-c', 'sleep 1; wc -c'], stdin: true });
    const chunks: Buffer[] = [];
    handle.stdout.on('data', (d: Buffer) => chunks.push(d));
    const input = Buffer.alloc(16 * 1024 * 1024, 7);
    expect(handle.writeStdin(input)).toBe(false); // past the host's high-water mark: hold the source
    const drained = new Promise<void>((resolve) => handle.stdinDrained(resolve));
    handle.endStdin();
    const rss = await vm.agent.run({ argv: ['sh', '-c', "sed -n 's/^VmRSS: *\\([0-9]*\\) kB/\\1/p' /proc/1/status"] });
    expect(Number(rss.stdout.trim())).toBeLessThan(4 * 1024);
    await drained;
    expect((await handle.exit).kind).toBe('exited');
    expect(Buffer.concat(chunks).toString().trim()).toBe(String(input.length));
  });

  it("holds a command's output while its reader does: the command waits on its pipe, then everything arrives", async () => {
    // 8 MiB stream out in under half a second when taken (above); here nothing is taken for 3 s.
    const size = 8 * 1024 * 1024;
    const handle = vm.agent.exec({ argv: ['sh', '-c', `head -c ${size} /dev/zero; touch /tmp/output-done`] });
    handle.stdout.pause(); // a reader that takes nothing for now
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const during = await vm.agent.run({ argv: ['sh', '-c', 'test -e /tmp/output-done && echo done || echo waiting'] });
    expect(during.stdout).toBe('waiting\n');
    // What waits on the host is about the guest's window (1 MiB), not the command's whole output.
    expect(handle.stdout.writableLength + handle.stdout.readableLength).toBeLessThanOrEqual(1.5 * 1024 * 1024);
    let received = 0;
    const ended = new Promise((resolve) => handle.stdout.once('end', resolve));
    handle.stdout.on('data', (d: Buffer) => (received += d.length));
    handle.stdout.resume();
    expect((await handle.exit).kind).toBe('exited');
    await ended;
    expect(received).toBe(size);
  });

  it('runs a command on a terminal: its controlling tty, the window size given, resized while it runs, stderr on the same screen', async () => {
    const handle = vm.agent.exec({ argv: ['sh'], tty: { rows: 24, cols: 100 } });
    let screen = '';
    handle.stdout.on('data', (c: Buffer) => (screen += c.toString()));
    handle.stderr.on('data', (c: Buffer) => (screen += `[stderr:${c.toString()}]`));
    const until = async (text: string) => {
      for (let i = 0; i < 400 && !screen.includes(text); i++) await new Promise((r) => setTimeout(r, 25));
      expect(screen).toContain(text);
    };
    // The terminal echoes what is typed: markers are computed, so only the output holds them.
    handle.writeStdin('tty; echo "size $(stty size)"; echo to-stderr >&2; [ -t 0 ] && echo "stdin-is-a-$((0))"\n');
    await until('stdin-is-a-0\r\n');
    expect(screen).toMatch(/\/dev\/pts\/\d+\r\n/);
    expect(screen).toContain('size 24 100\r\n');
    expect(screen).toContain('to-stderr\r\n');
    expect(screen).not.toContain('[stderr:');
    handle.resize({ rows: 50, cols: 132 });
    handle.writeStdin('echo "now $(stty size)"\n');
    await until('now 50 132\r\n');
    // Ctrl-C is a byte on a terminal: the shell's foreground job gets SIGINT, the shell lives on.
    handle.writeStdin('sleep 30\n');
    await new Promise((r) => setTimeout(r, 300));
    handle.writeStdin('\x03');
    handle.writeStdin('echo "after-interrupt-$((1))"; exit 4\n');
    await until('after-interrupt-1\r\n');
    expect(await handle.exit).toMatchObject({ kind: 'exited', code: 4 });
  });

  it('a terminal command running as another user owns its terminal: it can open it by name', async () => {
    const handle = vm.agent.exec({ argv: ['sh', '-c', 'id -u; exec 3<>"$(tty)" && echo "reopened-$((1))"'], uid: 1000, gid: 1000, tty: { rows: 10, cols: 40 } });
    let screen = '';
    handle.stdout.on('data', (c: Buffer) => (screen += c.toString()));
    expect(await handle.exit).toMatchObject({ kind: 'exited', code: 0 });
    expect(screen).toBe('1000\r\nreopened-1\r\n');
  });

  it('multiplexes concurrent commands', async () => {
    const runs = await Promise.all(
      [1, 2, 3, 4].map((n) => vm.agent.run({ argv: ['sh', '-c', `sleep 0.${n}; echo run-${n}; exit ${n}`] })),
    );
    runs.forEach((r, i) => {
      expect(r.stdout).toBe(`run-${i + 1}\n`);
      expect(r.status).toMatchObject({ code: i + 1 });
    });
  });

  it('kills a command at its timeout and delivers signals', async () => {
    const timed = await vm.agent.run({ argv: ['sleep', '30'], timeoutMs: 300 });
    expect(timed.status).toEqual({ kind: 'signaled', signal: 9, timedOut: true });
    const h = vm.agent.exec({ argv: ['sleep', '30'] });
    setTimeout(() => h.signal(15), 200);
    expect(await h.exit).toEqual({ kind: 'signaled', signal: 15, timedOut: false });
    expect(() => h.signal(9)).not.toThrow(); // after EXIT: a no-op
  });

  it('installs the CA and sets the environment for every command', async () => {
    await vm.agent.configure(standardGuestConfig({ caPem: CA, hostname: 'ws-test', network: { mode: 'isolated' }, env: { EXTRA: 'x y' } }));
    const bundle = await vm.agent.run({ argv: ['cat', '/etc/ssl/certs/ca-certificates.crt', '/etc/ssl/certs/microagent-ca.pem'] });
    expect(bundle.stdout.split('MIIBtestmicroagentca').length - 1).toBe(2);
    const env = await vm.agent.run({ argv: ['env'] });
    for (const line of ['SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt', 'NODE_EXTRA_CA_CERTS=/etc/ssl/certs/microagent-ca.pem',
      'REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt', 'CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt', 'EXTRA=x y']) {
      expect(env.stdout).toContain(line);
    }
    expect(env.stdout).not.toContain('HTTP_PROXY'); // isolated: no proxy to point at
    expect((await vm.agent.run({ argv: ['hostname'] })).stdout).toBe('ws-test\n');
    const hosts = (await vm.agent.run({ argv: ['cat', '/etc/hosts'] })).stdout;
    expect(hosts).toContain('127.0.0.1\tlocalhost');
    expect(hosts).toContain('127.0.1.1\tws-test');
    // Configuring again does not append the CA twice.
    await vm.agent.configure(standardGuestConfig({ caPem: CA, network: { mode: 'isolated' } }));
    const again = await vm.agent.run({ argv: ['cat', '/etc/ssl/certs/ca-certificates.crt'] });
    expect(again.stdout.split('MIIBtestmicroagentca').length - 1).toBe(1);
    // A new CA (rotation) is appended too, and becomes microagent-ca.pem.
    await vm.agent.configure(standardGuestConfig({ caPem: CA.replace('MIIBtestmicroagentca', 'MIIBtestrotatedca'), network: { mode: 'isolated' } }));
    const rotated = await vm.agent.run({ argv: ['cat', '/etc/ssl/certs/ca-certificates.crt'] });
    expect([rotated.stdout.split('MIIBtestmicroagentca').length - 1, rotated.stdout.split('MIIBtestrotatedca').length - 1]).toEqual([1, 1]);
    expect((await vm.agent.run({ argv: ['cat', '/etc/ssl/certs/microagent-ca.pem'] })).stdout).toContain('MIIBtestrotatedca');
  });

  it('survives bad frames: unknown type, malformed EXEC, oversized frame', async () => {
    vm.agent.sendFrame(0x77, 0, Buffer.from('junk'));
    vm.agent.sendFrame(MSG.EXEC, 4242, Buffer.from([1, 0xff, 0xff, 0xff, 0xff])); // TLV length past the end
    vm.agent.sendFrame(MSG.EXEC, 4243, Buffer.alloc(FRAME_MAX_PAYLOAD + 10)); // skipped, not parsed
    vm.agent.sendFrame(MSG.SIGNAL, 4244, Buffer.from([1])); // wrong payload size
    const out = await vm.agent.run({ argv: ['echo', 'still-serving'] });
    expect(out.stdout).toBe('still-serving\n');
  });

  it('has no network device in isolated mode', async () => {
    expect((await vm.agent.run({ argv: ['ls', '/sys/class/net'] })).stdout.trim()).toBe('lo');
  });

  it('pauses and resumes through QMP', async () => {
    await vm.pause();
    expect(await vm.status()).toBe('paused');
    await expect(vm.pause()).rejects.toMatchObject({ kind: 'conflict' });
    await vm.resume();
    expect(await vm.status()).toBe('running');
    expect((await vm.agent.run({ argv: ['echo', 'awake'] })).stdout).toBe('awake\n');
  });

  it('halts cleanly: the guest powers off and QEMU exits 0', async () => {
    const exit = await vm.halt(30_000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(vm.state).toBe('stopped');
    await expect(vm.agent.run({ argv: ['true'] })).rejects.toMatchObject({ kind: 'transient' });
  });
});
