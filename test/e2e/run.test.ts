/**
 * `microagent run` end to end with real QEMU guests (TCG here), through the CLI: the guest's command,
 * its exit code, HTTPS through the workspace proxy to a local origin (decrypted, the guest trusting the
 * workspace CA), a direct connection that bypasses the proxy, DNS through the filtering resolver,
 * a mediation round trip, and the audit records of all of it. Each `run` boots one VM, so each test
 * packs several checks into one guest command.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryAuditLog } from '../../src/audit/index.js';
import { ensureDefaultImage } from '../../src/vm/rootfs/index.js';
import { runInWorkspace } from '../../src/vm/workspace/run.js';
import {
  cliJson,
  cli,
  CLI,
  E2E_STATE_DIR,
  expectNoStackTrace,
  makeOriginCa,
  startDnsUpstream,
  startMediationTarget,
  startOrigin,
  tempDir,
  VM_TIMEOUT,
  writePolicy,
  type DnsUpstream,
  type MediationTarget,
  type Origin,
  type TestCa,
} from './helpers.js';

interface RunJson {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  audit: string;
  workspace: string;
  timings: { firstOutputMs: number | null; totalMs: number };
}

/** Splits `== NAME` sections of a guest script's output. */
function sections(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  let current = '';
  for (const line of stdout.split('\n')) {
    const m = /^== (\S+)$/.exec(line);
    if (m !== null) current = m[1] as string;
    else out[current] = `${out[current] ?? ''}${line}\n`;
  }
  return out;
}

describe.sequential('microagent run', () => {
  it('passes the guest command through: uname, exit code, output', { timeout: VM_TIMEOUT }, async () => {
    const r = await cli(['run', '--profile', 'tiny', '--', 'sh', '-c', 'uname -a; date +%s; echo "nofile $(ulimit -n) $(ulimit -Hn)"; echo to-stderr >&2; exit 7']);
    // The suite's kernel is the built one (global-setup.ts).
    expect(r.stdout).toMatch(/^Linux run-[0-9a-f]{8} \S+-microagent .* x86_64/m);
    // The guest's wall clock comes from microvm's RTC: TLS clients in the guest judge certificates by it.
    const guestClock = Number(/^(\d{10})$/m.exec(r.stdout)?.[1]);
    expect(Math.abs(guestClock - Date.now() / 1000)).toBeLessThan(120);
    expect(r.stderr).toContain('to-stderr');
    expect(r.code).toBe(7);
    // Commands get the open-file limits systemd and Docker give (init's are 1024/4096).
    expect(r.stdout).toMatch(/^nofile 1024 524288$/m);
  });

  it('boots the cached image read-only: a run\'s writes reach neither the image nor the next run', { timeout: VM_TIMEOUT }, async () => {
    const { rootfsPath } = await ensureDefaultImage(E2E_STATE_DIR);
    const digest = () => createHash('sha256').update(readFileSync(rootfsPath)).digest('hex');
    const before = digest();
    const child = spawn(CLI, ['--state-dir', E2E_STATE_DIR, 'run', '--profile', 'tiny', '--', 'sh', '-c', 'echo written > /etc/probe && sync && hostname && cat /etc/probe && sleep 1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    const name = await new Promise<string>((resolve) => child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /^(run-[0-9a-f]{8})$/m.exec(stdout);
      if (m !== null) resolve(m[1] as string);
    }));
    // While the guest runs: its workspace has no disk of its own, and says which image it boots.
    const dir = join(E2E_STATE_DIR, 'workspaces', name);
    expect(JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).config.disk).toEqual({ kind: 'throwaway', base: rootfsPath });
    expect(existsSync(join(dir, 'disk.ext4'))).toBe(false);
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(0);
    expect(stdout).toBe(`${name}\nwritten\n`);
    const second = await cli(['run', '--profile', 'tiny', '--', 'cat', '/etc/probe']);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain('/etc/probe');
    expect(digest()).toBe(before);
  });

  it('keeps time on two vCPUs: sleeps and timeouts end when they should', { timeout: VM_TIMEOUT }, async () => {
    // The built kernel ticks from the PIT under TCG (nolapic_timer), which the second vCPU only gets by broadcast.
    const r = await cli(['run', '--cpus', '2', '--', 'sh', '-c', 'nproc; timeout 1 sleep 30; echo "timeout=$?"; sleep 0.3; echo slept']);
    expect(r.stdout.split('\n').slice(0, 3), r.stderr).toEqual(['2', 'timeout=143', 'slept']);
    expect(r.code).toBe(0);
  });

  it('--timeout: the guest kills the command when it runs out, and the run says so', { timeout: VM_TIMEOUT }, async () => {
    const r = await cliJson<RunJson & { signal: string | null; timedOut: boolean }>(['run', '--profile', 'tiny', '--timeout', '1', '--', 'sh', '-c', 'echo started; sleep 30; echo finished']);
    expect(r.json).toMatchObject({ exitCode: 137, signal: 'SIGKILL', timedOut: true, stdout: 'started\n' });
    expect(r.stderr).toContain('warning: the command was still running after --timeout 1 s: the guest killed it');
    expect(r.code).toBe(137);
    const inTime = await cliJson<RunJson & { timedOut: boolean }>(['run', '--profile', 'tiny', '--timeout', '30', '--', 'sh', '-c', 'exit 3']);
    expect(inTime.json).toMatchObject({ exitCode: 3, timedOut: false });
    expect(inTime.stderr).not.toContain('--timeout');
  });

  it('a reader that goes away ends the run like Ctrl-C: the workspace is killed and removed, its audit log kept', { timeout: VM_TIMEOUT }, async () => {
    const child = spawn(CLI, ['--state-dir', E2E_STATE_DIR, 'run', '--profile', 'tiny', '--', 'sh', '-c', 'while true; do echo y; sleep 0.05; done'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Like `| head -1`: read the first output, then close the pipe.
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).not.toBe(0);
    expect(stderr).toContain('run interrupted');
    expect(stderr).not.toMatch(/EPIPE|\n\s+at /);
    const name = /workspace (run-[0-9a-f]{8})/.exec(stderr)?.[1] as string;
    expect(readdirSync(join(E2E_STATE_DIR, 'workspaces'))).not.toContain(name);
    expect(existsSync(join(E2E_STATE_DIR, 'runs', name, 'audit.jsonl'))).toBe(true);
  });

  it('stdin written before the guest is up reaches the command: the supervisor holds it with the command until the start', { timeout: VM_TIMEOUT }, async () => {
    const stdin = new PassThrough();
    stdin.end('sent-before-boot\n');
    let stdout = '';
    const r = await runInWorkspace(E2E_STATE_DIR, {
      profile: 'tiny',
      command: ['sh', '-c', 'read line; echo "got $line"; exit 5'],
      stdin,
      onStdout: (d) => (stdout += d.toString()),
      onStderr: () => undefined,
    });
    expect(stdout).toBe('got sent-before-boot\n');
    expect(r.exitCode).toBe(5);
    expect(readdirSync(join(E2E_STATE_DIR, 'workspaces'))).not.toContain(r.workspace);
  });

  it('run -i pipes the CLI\'s stdin to the command, all of it, even what arrives before the guest is up', { timeout: VM_TIMEOUT }, async () => {
    const input = Buffer.alloc(3 * 1024 * 1024 + 7, 'x');
    const child = spawn(CLI, ['--state-dir', E2E_STATE_DIR, 'run', '-i', '--profile', 'tiny', '--', 'sh', '-c', 'wc -c; exit 6'], { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdin.end(input);
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(6);
    expect(stdout.trim()).toBe(String(input.length));
  });

  it('a run whose CLI is killed outright still ends its VM; gc then removes the workspace and keeps its audit log', { timeout: VM_TIMEOUT }, async () => {
    const child = spawn(CLI, ['--state-dir', E2E_STATE_DIR, 'run', '--profile', 'tiny', '--', 'sh', '-c', 'hostname; sleep 600'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const name = await new Promise<string>((resolve) => child.stdout.on('data', (d: Buffer) => resolve(d.toString().trim())));
    expect(name).toMatch(/^run-[0-9a-f]{8}$/);
    child.kill('SIGKILL');
    // Its control connection closed: the command is killed in the guest, and with it the workspace.
    const dir = join(E2E_STATE_DIR, 'workspaces', name);
    for (let i = 0; i < 200 && existsSync(join(dir, 'runtime.json')); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(existsSync(join(dir, 'runtime.json'))).toBe(false);
    expect(JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).state).toBe('stopped');
    // Nobody is left to remove it but gc, which keeps the run's decisions where run itself would have.
    const gc = await cliJson<{ name: string; repaired: string }[]>(['gc']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.json).toContainEqual({ name, repaired: `abandoned run removed; its audit log is kept in ${join(E2E_STATE_DIR, 'runs', name)}` });
    expect(existsSync(dir)).toBe(false);
    const kept = readFileSync(join(E2E_STATE_DIR, 'runs', name, 'audit.jsonl'), 'utf8');
    expect(kept).toContain('"event":"lifecycle.stopped"');
  });

  it('Ctrl-C while the guest boots ends the run once the start has settled: killed, removed, a clear message', { timeout: VM_TIMEOUT }, async () => {
    const child = spawn(CLI, ['--state-dir', E2E_STATE_DIR, 'run', '--profile', 'tiny', '--', 'sh', '-c', 'echo never-printed-before-the-interrupt; sleep 600'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // The supervisor's spawn is the CLI's first step; its pending log shows the run has begun.
    const root = join(E2E_STATE_DIR, 'workspaces');
    const running = () => existsSync(root) && readdirSync(root).some((f) => f.startsWith('run-'));
    for (let i = 0; i < 400 && !running(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(75);
    expect(stderr).toContain('run interrupted');
    expect(stderr).not.toMatch(/\n\s+at /);
    const name = /workspace (run-[0-9a-f]{8})/.exec(stderr)?.[1] as string;
    expect(readdirSync(root)).not.toContain(name);
  });

  it('a required mediation channel whose target is down fails the start, leaving no VM or workspace', { timeout: VM_TIMEOUT }, async () => {
    const r = await cli(['run', '--profile', 'tiny', '--mediation', '7000=127.0.0.1:1', '--', 'echo', 'never']);
    expect(r.code, `stderr: ${r.stderr}`).toBe(75);
    expect(r.stdout).not.toContain('never');
    expect(r.stderr).toMatch(/a required mediation channel is not ready: mediation channel 7000 -> 127\.0\.0\.1:1/);
    expect(r.stderr).toContain('--mediation-optional');
    expectNoStackTrace(r);
    // The throwaway workspace is gone (other files' workspaces share this state directory).
    const name = /workspace "(run-[0-9a-f]{8})" failed to start/.exec(r.stderr)?.[1];
    expect(name).toBeDefined();
    expect(existsSync(join(E2E_STATE_DIR, 'workspaces', name as string))).toBe(false);
  });

  it('--mediation-no-proxy-protocol lets a channel reach a plain HTTP service on the host', { timeout: VM_TIMEOUT }, async () => {
    // With the default PROXY v2 header in front, node's HTTP parser answers 400; without it, the page.
    const service = createHttpServer((_req, res) => res.end('hello from the host\n'));
    await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
    const target = `127.0.0.1:${(service.address() as AddressInfo).port}`;
    try {
      const fetch = `wget -Y off -q -O- http://127.0.0.1:7000/ || echo "wget rc=$?"`;
      const plain = await cli(['run', '--profile', 'tiny', '--mediation', `7000=${target}`, '--mediation-no-proxy-protocol', '--', 'sh', '-c', fetch]);
      expect(plain.stdout, `stderr: ${plain.stderr}`).toBe('hello from the host\n');
      const stamped = await cli(['run', '--profile', 'tiny', '--mediation', `7000=${target}`, '--', 'sh', '-c', fetch]);
      expect(stamped.stdout).toContain('wget rc=1');
    } finally {
      service.close();
    }
  });

  it('a command the guest cannot find exits 127 with a clear message', { timeout: VM_TIMEOUT }, async () => {
    const r = await cli(['run', '--profile', 'tiny', '--', 'no-such-command-e2e', '--flag']);
    expect(r.code, `stderr: ${r.stderr}`).toBe(127);
    expect(r.stderr).toContain('no-such-command-e2e: command not found');
    expectNoStackTrace(r);
  });

  /** A tiny persistent workspace for one test (started unless told otherwise), killed and deleted after it. */
  async function withWorkspace(label: string, use: (name: string) => Promise<void>, options: { create?: readonly string[]; start?: boolean } = {}): Promise<void> {
    const name = `e2e-${label}-${process.pid}`;
    expect((await cli(['create', name, '--profile', 'tiny', ...(options.create ?? [])])).code).toBe(0);
    try {
      if (options.start !== false) expect((await cli(['start', name])).code).toBe(0);
      await use(name);
    } finally {
      await cli(['kill', name]);
      await cli(['delete', name]);
    }
  }

  it('--disk grows a workspace\'s disk (create) or a run\'s throwaway one, and the guest sees the room; one smaller than the image is refused', { timeout: VM_TIMEOUT }, async () => {
    const small = await cli(['create', `e2e-disk-small-${process.pid}`, '--disk', '100M']);
    expect(small.code).toBe(2);
    expect(small.stderr).toMatch(/^error: --disk 100M is smaller than the image's root filesystem \(\d+M\)\n {2}fix: give --disk \d+M or more\n$/);
    await withWorkspace('disk', async (name) => {
      const df = await cli(['exec', name, '--', 'df', '-m', '/']);
      const sizeMiB = Number(df.stdout.trim().split('\n')[1]?.split(/\s+/)[1]);
      expect(sizeMiB, df.stdout).toBeGreaterThan(900);
      expect(sizeMiB, df.stdout).toBeLessThanOrEqual(1024);
    }, { create: ['--disk', '1G'] });
    // A run's throwaway disk asked to be larger boots a grown copy of its own.
    const run = await cli(['--json', 'run', '--disk', '1G', '--profile', 'tiny', '--', 'df', '-m', '/']);
    const result = JSON.parse(run.stdout) as { exitCode: number; stdout: string; audit: string };
    expect(Number(result.stdout.trim().split('\n')[1]?.split(/\s+/)[1]), result.stdout).toBeGreaterThan(900);
    expect(existsSync(result.audit)).toBe(true);
  });

  it('connect on a terminal gives the guest one: its size and resizes, TERM, Ctrl-C to the foreground job, the shell\'s exit code', { timeout: VM_TIMEOUT }, async () => {
    await withWorkspace('tty', async (name) => {
      // script(1) gives the CLI a terminal (33x111), resized to 40x120 after 5 s (a window the user
      // drags: SIGWINCH to connect); the keys are typed into it one step at a time.
      const keys = [[1500, 'tty; stty size; echo "T=$TERM"\r'], [1500, 'sleep 30\r'], [800, '\x03'], [2500, 'echo "now $(stty size)"\r'], [800, 'echo "alive-$((2))"; exit 5\r']] as const;
      const session = spawn('script', ['-qec', `stty rows 33 cols 111; (sleep 5; stty rows 40 cols 120 < /dev/tty) & exec ${process.execPath} ${CLI} --state-dir ${E2E_STATE_DIR} connect ${name}`, '/dev/null'], {
        env: { ...process.env, TERM: 'xterm-e2e' }, stdio: ['pipe', 'pipe', 'pipe'],
      });
      let screen = '';
      session.stdout.on('data', (d: Buffer) => (screen += d.toString()));
      for (const [wait, text] of keys) {
        await new Promise((r) => setTimeout(r, wait));
        session.stdin.write(text);
      }
      const code = await new Promise<number | null>((resolve) => session.on('close', resolve));
      expect(screen).toMatch(/\/dev\/pts\/\d+\r/);
      expect(screen).toMatch(/^33 111\r/m);
      expect(screen).toMatch(/^T=xterm-e2e\r/m);
      expect(screen).toMatch(/^now 40 120\r/m);
      expect(screen).toMatch(/^alive-2\r/m);
      expect(code).toBe(5);
    });
  });

  it('exec passes Ctrl-C (SIGINT) on to the command: one that traps it decides, one that does not dies of it (130)', { timeout: VM_TIMEOUT }, async () => {
    await withWorkspace('sigint', async (name) => {
      const interrupted = async (script: string) => {
        const child = spawn(process.execPath, [CLI, '--state-dir', E2E_STATE_DIR, 'exec', name, '--', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let sent = false;
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (!sent && out.includes('ready\n')) sent = child.kill('SIGINT');
        });
        const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
        return { code, out };
      };
      expect(await interrupted('trap "echo got-int; exit 3" INT; echo ready; while :; do sleep 0.1; done')).toEqual({ code: 3, out: 'ready\ngot-int\n' });
      expect(await interrupted('echo ready; sleep 60; echo finished')).toEqual({ code: 130, out: 'ready\n' });
    });
  });

  it('Ctrl-C during start stops the waiting, not the start; wait then sees it running and exits', { timeout: VM_TIMEOUT }, async () => {
    await withWorkspace('startint', async (name) => {
      const events = join(E2E_STATE_DIR, 'workspaces', name, 'events.json');
      const start = spawn(process.execPath, [CLI, '--state-dir', E2E_STATE_DIR, 'start', name], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      start.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // Interrupted as soon as the start is recorded: the guest boots for hundreds of ms more under TCG.
      for (let i = 0; i < 500 && !(existsSync(events) && readFileSync(events, 'utf8').includes('"starting"')); i++) await new Promise((r) => setTimeout(r, 10));
      start.kill('SIGINT');
      const code = await new Promise<number | null>((resolve) => start.on('close', resolve));
      expect([code, stderr]).toEqual([75, `error: stopped waiting for workspace "${name}" to start; it goes on starting\n  fix: "microagent wait ${name}" waits for it again; "microagent kill ${name}" ends it\n`]);
      // wait polls through the rest of the start (a status refused while starting must not hold it open).
      expect(await cli(['wait', name], { timeoutMs: 60_000 })).toMatchObject({ code: 0, stdout: `${name}: running\n` });
    }, { start: false });
  });

  it('run -t runs the command on a terminal of the user\'s size, its exit code passed through', { timeout: VM_TIMEOUT }, async () => {
    const session = spawn('script', ['-qec', `stty rows 20 cols 70; exec ${process.execPath} ${CLI} --state-dir ${E2E_STATE_DIR} run -t --profile tiny -- sh -c 'stty size; tty; exit 9'`, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let screen = '';
    session.stdout.on('data', (d: Buffer) => (screen += d.toString()));
    const code = await new Promise<number | null>((resolve) => session.on('close', resolve));
    expect(screen).toMatch(/(^|\x1b\[K)20 70\r/m);
    expect(screen).toMatch(/^\/dev\/pts\/\d+\r/m);
    expect(code).toBe(9);
  });

  it.each([['exec', '-t', 'any-workspace', '--', 'true'], ['run', '-t', '--', 'true']])('%s -t without a terminal is refused, saying why', async (...args) => {
    const r = await cli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: ${args[0]}: -t needs a terminal, and stdin or stdout is not one\n  fix: run it from a terminal, or drop -t (add -i to pass stdin)\n`);
  });

  describe.sequential('with a local origin, DNS upstream and mediation target', () => {
    let dir: string;
    let ca: TestCa;
    let origin: Origin;
    let dns: DnsUpstream;
    let target: MediationTarget;
    let policy: string;

    beforeAll(async () => {
      dir = tempDir('run');
      ca = makeOriginCa(dir, ['origin.test', 'denied.test']);
      origin = await startOrigin(ca);
      dns = await startDnsUpstream(['origin.test', 'denied.test']);
      target = await startMediationTarget();
      policy = writePolicy(dir, ['origin.test'], ['denied.test']);
    });
    afterAll(async () => {
      await origin?.close();
      await dns?.close();
      await target?.close();
    });

    it('a run whose egress was denied says where the denials are recorded', { timeout: VM_TIMEOUT }, async () => {
      const r = await cli(['run', '--profile', 'tiny', '--policy', policy, '--dns-upstream', dns.address, '--upstream-ca', ca.caFile, '--', 'curl', '-sS', '-o', '/dev/null', `https://denied.test:${origin.port}/`]);
      expect(r.code).not.toBe(0);
      const warning = /^warning: the egress policy denied \d+ of this run's connections, requests or lookups: (microagent audit query (\S+) --verdict deny)$/m.exec(r.stderr);
      expect(warning, r.stderr).not.toBeNull();
      const listed = await cliJson<Record<string, unknown>[]>(['audit', 'query', warning?.[2] as string, '--verdict', 'deny']);
      expect(listed.json).toMatchObject([{ event: 'egress.decision', host: 'denied.test', rule: 'e2e-denied' }]);
      // Nothing denied, nothing said.
      expect((await cli(['run', '--profile', 'tiny', '--policy', policy, '--', 'true'])).stderr).toBe('');
    });

    it('HTTPS to an allowed origin is decrypted and answered; denied, direct and refused-DNS traffic fails; mediation reaches the host', { timeout: VM_TIMEOUT }, async () => {
      const p = origin.port;
      const script = [
        `echo '== allowed'; curl -sS --max-time 60 https://origin.test:${p}/hello; echo "rc=$?"`,
        `echo '== denied'; curl -sS --max-time 60 -D - -o /dev/null https://denied.test:${p}/; echo "rc=$?"`,
        `echo '== direct'; curl -sS --noproxy '*' --max-time 10 https://origin.test:${p}/direct; echo "rc=$?"`,
        `echo '== direct-host'; curl -sS --noproxy '*' --max-time 10 -k https://10.0.2.2:${p}/direct; echo "rc=$?"`,
        `echo '== ns-allowed'; nslookup -type=A origin.test; echo "rc=$?"`,
        `echo '== ns-denied'; nslookup -type=A denied.test; echo "rc=$?"`,
        `echo '== mediation'; echo ping-e2e | nc 127.0.0.1 7000; echo "rc=$?"`,
        `echo '== env'; echo "$HTTPS_PROXY node:$NODE_USE_ENV_PROXY"`,
      ].join('\n');
      const r = await cliJson<RunJson>([
        'run', '--profile', 'tiny', '--policy', policy, '--dns-upstream', dns.address, '--upstream-ca', ca.caFile,
        '--mediation', `7000=${target.address}`, '--', 'sh', '-c', script,
      ]);
      expect(r.code, r.stderr).toBe(0);
      const s = sections(r.json.stdout);

      expect(s['allowed']).toContain(`hello from origin.test /hello`);
      expect(s['allowed']).toContain('rc=0');
      expect(origin.requests).toContain('origin.test /hello');

      expect(s['denied']).toMatch(/^HTTP\/\S+ 403/m);
      expect(s['denied']).toMatch(/^x-microagent-reason: \S+/im);
      expect(origin.requests.some((q) => q.startsWith('denied.test'))).toBe(false);

      expect(s['direct']).not.toContain('hello from');
      expect(s['direct']).not.toContain('rc=0');
      expect(s['direct-host']).not.toContain('hello from');
      expect(s['direct-host']).not.toContain('rc=0');
      expect(origin.requests.some((q) => q.endsWith('/direct'))).toBe(false);

      expect(s['ns-allowed']).toMatch(/Address:?\s+127\.0\.0\.1/);
      expect(s['ns-allowed']).toContain('rc=0');
      expect(s['ns-denied']).not.toMatch(/Address:?\s+127\.0\.0\.1/);
      expect(s['ns-denied']).not.toContain('rc=0');

      expect(s['mediation']).toContain('pong:ping-e2e');
      expect(target.headers).toHaveLength(1);
      expect(target.headers[0]).toMatchObject({ command: 'proxy', tlvs: { workspace: r.json.workspace, port: 7000 } });

      expect(s['env']).toContain('http://10.0.2.100:3128 node:1');

      const records = (await queryAuditLog(r.json.audit)) as unknown as Record<string, unknown>[];
      // run executes its own command next, so the start skips the /bin/sh probe (start keeps it: lifecycle tests).
      expect(records.find((x) => x['event'] === 'lifecycle.running')?.['detail']).toContain('no shell probe');
      const egress = records.filter((x) => x['event'] === 'egress.decision');
      const allowed = egress.find((x) => x['host'] === 'origin.test' && x['verdict'] === 'allow' && x['path'] === '/hello');
      expect(allowed, JSON.stringify(egress)).toMatchObject({ decrypted: true, rule: 'e2e-origin', port: p });
      const denied = egress.find((x) => x['host'] === 'denied.test');
      expect(denied, JSON.stringify(egress)).toMatchObject({ verdict: 'deny', rule: 'e2e-denied' });
      const dnsRecords = records.filter((x) => x['event'] === 'dns.query');
      expect(dnsRecords.find((x) => x['name'] === 'origin.test' && x['verdict'] === 'allow')).toBeDefined();
      expect(dnsRecords.find((x) => x['name'] === 'denied.test' && x['verdict'] === 'deny')).toMatchObject({ rule: 'e2e-denied' });
      expect(records.find((x) => x['event'] === 'mediation.connect' && x['port'] === 7000)).toMatchObject({ verdict: 'allow' });
    });

    it('ssh-style raw TCP: microagent-connect opens a tunnel a strict [tcp] rule allows, recorded as tcp; another port is refused with the reason', { timeout: VM_TIMEOUT }, async () => {
      // An SSH-like server: greets first, then echoes.
      const forge = createNetServer((socket) => {
        socket.on('error', () => undefined);
        socket.write('SSH-2.0-forge\r\n');
        socket.pipe(socket);
      });
      await new Promise<void>((r) => forge.listen(0, '127.0.0.1', r));
      const port = (forge.address() as AddressInfo).port;
      const strict = join(dir, 'ssh-policy.yaml');
      writeFileSync(strict, `version: 1\nmode: strict\nrules:\n  - id: forge-ssh\n    action: passthrough\n    hosts: [origin.test]\n    ports: [${port}]\n    protocols: [tcp]\n`);
      const helper = '/run/microagent/bin/microagent-connect';
      const script = [
        'exec 2>&1',
        `echo '== allowed'; printf 'SSH-2.0-guest\\r\\n' | ${helper} origin.test ${port}; echo "rc=$?"`,
        `echo '== refused'; printf x | ${helper} origin.test ${port + 1}; echo "rc=$?"`,
      ].join('\n');
      try {
        const r = await cliJson<RunJson>(['run', '--profile', 'tiny', '--policy', strict, '--dns-upstream', dns.address, '--', 'sh', '-c', script]);
        expect(r.code, r.stderr).toBe(0);
        const s = sections(r.json.stdout);
        // Its FIN follows its bytes at once: the answer must still come back (a half-open tunnel).
        expect(s['allowed'], JSON.stringify(r.json.stdout)).toBe('SSH-2.0-forge\r\nSSH-2.0-guest\r\nrc=0\n');
        expect(s['refused']).toContain('microagent-connect: the proxy refused the tunnel: HTTP/1.1 403');
        expect(s['refused']).toContain('reason: default_deny');
        expect(s['refused']).toContain('rc=1');
        const egress = ((await queryAuditLog(r.json.audit)) as unknown as Record<string, unknown>[]).filter((x) => x['event'] === 'egress.decision');
        expect(egress.filter((x) => x['port'] === port)).toMatchObject([
          { protocol: 'tcp', verdict: 'allow', rule: 'forge-ssh', ip: '127.0.0.1' },
          { protocol: 'tcp', verdict: 'allow', rule: 'forge-ssh', ip: '127.0.0.1' },
        ]);
        expect(egress.filter((x) => x['port'] === port + 1)).toMatchObject([{ protocol: 'https', verdict: 'deny', reason: 'default_deny' }]);
      } finally {
        forge.close();
      }
    });

    it('--network isolated has no NIC and still mediates', { timeout: VM_TIMEOUT }, async () => {
      const script = `echo '== net'; ls /sys/class/net; echo '== mediation'; echo iso | nc 127.0.0.1 7000`;
      const before = target.headers.length;
      const r = await cliJson<RunJson>(['run', '--profile', 'tiny', '--network', 'isolated', '--mediation', `7000=${target.address}`, '--', 'sh', '-c', script]);
      expect(r.code, r.stderr).toBe(0);
      const s = sections(r.json.stdout);
      expect(s['net']?.trim().split(/\s+/)).toEqual(['lo']);
      expect(s['mediation']).toContain('pong:iso');
      expect(target.headers.slice(before)).toMatchObject([{ command: 'proxy', tlvs: { workspace: r.json.workspace, port: 7000 } }]);
    });
  });
});
