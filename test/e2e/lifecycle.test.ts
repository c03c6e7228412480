/**
 * The persistent workspace lifecycle through the CLI with one real QEMU guest (TCG here): create,
 * start, exec, cp in and out, halt and start again (the disk persists), stats, pause (exec and stats refused) and resume, stop, a stop
 * that times out (failed, never escalated) and kill, quarantine (egress and mediation cut, the VM still
 * running, start refused), and gc after the supervisor is SIGKILLed. Also status/list/events/logs/egress
 * and the --mode=ax envelope of a refusal. The tests share one workspace and run in order.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { execInWorkspace, startWorkspace, workspaceStatus } from '../../src/vm/workspace/service.js';
import type { WorkspaceStats } from '../../src/vm/workspace/stats.js';
import {
  cli,
  cliJson,
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

interface Status {
  state: string;
  supervisorAlive: boolean;
  runtime: { vmPid: number | null; supervisorPid: number } | null;
  readiness: Record<string, { ready: boolean }> | null;
  paths: { audit: string };
}

interface AxError {
  ok: false;
  error: { kind: string; message: string; remediation?: string };
}

function alive(pid: number | null | undefined): boolean {
  if (pid == null) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitDead(pid: number, ms = 20_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive(pid)) return true;
    await sleep(100);
  }
  return false;
}

const NAME = `e2e-life-${process.pid}`;
const GUEST_PORT = 8080;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/** Connects to 127.0.0.1:port and returns what arrives before the connection ends ('' when refused or empty). */
function readFrom(port: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(5_000, () => socket.destroy());
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.on('close', () => resolve(text));
    socket.on('error', () => undefined);
  });
}

/** Sends `text` and half-closes at once, then returns everything that arrives before the connection ends. */
function sendThenHalfClose(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const socket = connect(port, '127.0.0.1', () => socket.end(text));
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on('data', (d: Buffer) => (got += d.toString()));
    socket.on('close', () => resolve(got));
    socket.on('error', () => undefined);
  });
}

/** readFrom until the guest's listener answers (it takes a moment to start). */
async function readWhenServing(port: number): Promise<string> {
  for (let i = 0; i < 60; i++) {
    const text = await readFrom(port);
    if (text !== '') return text;
    await sleep(500);
  }
  return '';
}

/** A guest listener on GUEST_PORT answering every connection with `line` (busybox nc in a loop). */
const SERVE = (line: string) => `setsid sh -c 'while true; do echo ${line} | nc -l -p ${GUEST_PORT}; done' </dev/null >/dev/null 2>&1 &`;

/** QEMU's own loopback forward behind a published port (from its command line). */
function qemuForwardPort(vmPid: number): number | null {
  const m = /hostfwd=tcp:127\.0\.0\.1:(\d+)-:/.exec(readFileSync(`/proc/${vmPid}/cmdline`, 'utf8'));
  return m === null ? null : Number(m[1]);
}

describe.sequential('workspace lifecycle through the CLI', () => {
  let dir: string;
  let ca: TestCa;
  let origin: Origin;
  let dns: DnsUpstream;
  let target: MediationTarget;
  let vmPid: number;
  let hostPort: number;

  const status = async () => (await cliJson<Status>(['status', NAME])).json;
  const exec = (...argv: string[]) => cli(['exec', NAME, '--', ...argv]);
  const ax = async (args: string[]) => {
    const r = await cli(['--mode=ax', ...args]);
    expectNoStackTrace(r);
    return { code: r.code, doc: JSON.parse(r.stdout) as AxError | { ok: true; result: unknown } };
  };

  beforeAll(async () => {
    dir = tempDir('life');
    ca = makeOriginCa(dir, ['origin.test']);
    origin = await startOrigin(ca);
    dns = await startDnsUpstream(['origin.test']);
    target = await startMediationTarget();
    const policy = writePolicy(dir, ['origin.test'], ['denied.test']);
    hostPort = await freePort();
    const r = await cliJson<{ state: string; config: { memoryMiB: number } }>([
      'create', NAME, '--profile', 'tiny', '--policy', policy, '--dns-upstream', dns.address, '--upstream-ca', ca.caFile, '--mediation', `7000=${target.address}`, '-p', `${hostPort}:${GUEST_PORT}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ state: 'prepared', config: { memoryMiB: 128 } });
  }, VM_TIMEOUT);

  afterAll(async () => {
    await cli(['kill', NAME]);
    await cli(['gc']);
    await cli(['delete', NAME]);
    await origin?.close();
    await dns?.close();
    await target?.close();
  }, VM_TIMEOUT);

  it('start, exec, and a file written before halt is still there after the next start', { timeout: VM_TIMEOUT }, async () => {
    const started = await cliJson<Status>(['start', NAME]);
    expect(started.code, started.stderr).toBe(0);
    expect(started.json.state).toBe('running');
    vmPid = started.json.runtime?.vmPid as number;
    expect(alive(vmPid)).toBe(true);
    expect(Object.values(started.json.readiness ?? {}).every((s) => s.ready)).toBe(true);

    const write = await exec('sh', '-c', 'echo persisted-across-halt > /root/marker && sync && hostname');
    expect(write.code, write.stderr).toBe(0);
    expect(write.stdout.trim()).toBe(NAME);
    const late = await cli(['exec', NAME, '--timeout', '1', '--', 'sh', '-c', 'echo started; sleep 30']);
    expect({ code: late.code, stdout: late.stdout }).toEqual({ code: 137, stdout: 'started\n' });
    expect(late.stderr).toContain('warning: the command was still running after --timeout 1 s: the guest killed it');
    const curl = await exec('curl', '-sS', '--max-time', '60', `https://origin.test:${origin.port}/before`);
    expect(curl.stdout).toContain('hello from origin.test /before');

    const refusedDelete = await ax(['delete', NAME]);
    expect(refusedDelete.code).not.toBe(0);
    expect(refusedDelete.doc).toMatchObject({ ok: false, error: { kind: 'conflict' } });

    // A command still running when the workspace is halted is told so, not "the agent channel closed".
    const cutShort = cli(['exec', NAME, '--', 'sh', '-c', 'echo running; sleep 61']);
    // Halted once the command runs in the guest (ps there, not a sleep here).
    for (let tries = 0; tries < 120 && (await exec('sh', '-c', 'ps | grep -v grep | grep -q "sleep 61"')).code !== 0; tries++);
    const halted = await cliJson<Status>(['halt', NAME]);
    expect(halted.code, halted.stderr).toBe(0);
    expect(halted.json.state).toBe('halted');
    expect(await waitDead(vmPid)).toBe(true);
    const cut = await cutShort;
    expect(cut.stderr).toContain(`error: workspace "${NAME}" was halted while the command ran`);
    expect(cut.code).toBe(1);

    const again = await cliJson<Status>(['start', NAME]);
    expect(again.json.state).toBe('running');
    vmPid = again.json.runtime?.vmPid as number;
    const read = await exec('cat', '/root/marker');
    expect(read.stdout).toBe('persisted-across-halt\n');

    expect((await exec('sh', '-c', SERVE('published-port-ok'))).code).toBe(0);
    expect(await readWhenServing(hostPort)).toBe('published-port-ok\n');
    // A client that sends its request and its FIN together (HTTP/1.0, nc -N) still gets the answer:
    // busybox httpd reads the request to its end, then answers.
    const stopListeners = (pattern: string) => `for p in $(ps -o pid,args | grep -e '${pattern}' | awk '{print $1}'); do kill $p; done`;
    const httpd = `${stopListeners('while tru[e]')}; ${stopListeners('n[c] -l')}; mkdir -p /www && echo served-after-fin > /www/index.html && busybox httpd -p ${GUEST_PORT} -h /www`;
    const served = await exec('sh', '-c', httpd);
    expect(served.code, served.stderr).toBe(0);
    for (let i = 0; i < 3; i++) expect(await sendThenHalfClose(hostPort, 'GET /index.html HTTP/1.0\r\n\r\n'), `try ${i}`).toContain('served-after-fin');
    expect((await exec('sh', '-c', `${stopListeners('http[d]')}; ${SERVE('published-port-ok')}`)).code).toBe(0);
  });

  it("a command's stdin reaches it while another client's command starts and ends", { timeout: VM_TIMEOUT }, async () => {
    // Each CLI call numbers its requests from 1: the supervisor must not confuse two clients' exec 1.
    const stdin = new PassThrough();
    let out = '';
    const reader = execInWorkspace(E2E_STATE_DIR, NAME, { argv: ['sh', '-c', 'read line; echo "got $line"'], stdin, timeoutMs: 60_000, onStdout: (d) => (out += d.toString()), onStderr: (d) => (out += d.toString()) });
    await sleep(1000);
    const other = await exec('echo', 'other client');
    expect(other.stdout).toBe('other client\n');
    stdin.end('hello-stdin\n');
    expect((await reader).code, out).toBe(0);
    expect(out).toBe('got hello-stdin\n');
  });

  it('exec ... | head: the reader going away ends the command with SIGPIPE, and the CLI with it (141)', { timeout: VM_TIMEOUT }, async () => {
    const child = spawn(process.execPath, [CLI, 'exec', NAME, '--', 'yes'], { env: { ...process.env, MICROAGENT_STATE_DIR: E2E_STATE_DIR }, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Read a little, then go away as head does.
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    expect(await exited).toBe(141);
    const left = await exec('sh', '-c', 'ps -o comm | grep -cx yes || true');
    expect(left.stdout.trim()).toBe('0');
  });

  it('cp copies a tree in and back out byte for byte (a tar stream through exec); a missing path says so', { timeout: VM_TIMEOUT }, async () => {
    const src = join(dir, 'files-in');
    const back = join(dir, 'files-out');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'a.txt'), 'hello\n');
    writeFileSync(join(src, 'sub', 'random.bin'), randomBytes(300_000));
    const copiedIn = await cliJson<{ into: string; bytes: number }>(['cp', src, `${NAME}:/root/files`]);
    expect(copiedIn.code, copiedIn.stderr).toBe(0);
    expect(copiedIn.json.into).toBe(`${NAME}:/root/files`);
    expect((await exec('cat', '/root/files/files-in/a.txt')).stdout).toBe('hello\n');
    const copiedOut = await cli(['cp', `${NAME}:/root/files/files-in`, back]);
    expect(copiedOut.code, copiedOut.stderr).toBe(0);
    expect(readFileSync(join(back, 'files-in', 'a.txt'), 'utf8')).toBe('hello\n');
    expect(readFileSync(join(back, 'files-in', 'sub', 'random.bin')).equals(readFileSync(join(src, 'sub', 'random.bin')))).toBe(true);
    const missing = await cli(['cp', `${NAME}:/root/no-such-file`, back]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`error: packing ${NAME}:/root/no-such-file failed in the guest: tar: ./no-such-file: No such file or directory`);
    // Copying out onto a host file: a usage error saying cp copies into a directory, not an internal bug.
    const onFile = await cli(['cp', `${NAME}:/etc/hostname`, join(back, 'files-in', 'a.txt')]);
    expect(onFile.code).toBe(2);
    expect(onFile.stderr).toContain(`is a file, and cp copies into a directory (the copy keeps its name, hostname)`);
    expectNoStackTrace(onFile);
  });

  it("an edit of the workspace's policy.yaml decides the next request; an invalid one is not loaded, and status says which policy is in force", { timeout: VM_TIMEOUT }, async () => {
    const file = join(dirname((await status()).paths.audit), 'policy.yaml');
    const original = readFileSync(file, 'utf8');
    const reloads = async () => (await cliJson<{ reason: string }[]>(['egress', NAME, '--event', 'policy.reload'])).json.map((r) => r.reason);
    const reloaded = async (count: number) => {
      for (let i = 0; i < 100 && (await reloads()).length < count; i++) await sleep(100);
      return reloads();
    };
    const before = (await reloads()).length;
    const url = `https://origin.test:${origin.port}/after-edit`;

    writeFileSync(file, original.replace('e2e-origin', 'e2e-origin-edited').replace(/hosts: \[("denied\.test")\]/, 'hosts: ["origin.test", $1]').replace('action: allow', 'action: deny'));
    expect(await reloaded(before + 1)).toEqual([...Array(before).fill('reload_ok'), 'reload_ok']);
    const denied = await exec('curl', '-sS', '-i', '--max-time', '60', url);
    expect(denied.stdout).toMatch(/403 Forbidden[\s\S]*X-Microagent-Reason: rule_deny/);
    const edited = await cliJson<{ policyHash: string; policyInForce: string }>(['status', NAME]);
    expect(edited.json.policyInForce).toMatch(/^sha256:/);

    writeFileSync(file, 'version: 1\nrules: [ {\n');
    expect((await reloaded(before + 2)).at(-1)).toBe('reload_invalid');
    const invalid = await cliJson<{ policyHash: string | null; policyInForce: string }>(['status', NAME]);
    expect(invalid.json).toMatchObject({ policyHash: null, policyInForce: edited.json.policyInForce });
    expect((await cli(['status', NAME])).stdout).toContain(`policy ${edited.json.policyInForce} in force; policy.yaml was since edited into an invalid policy`);
    expect((await exec('curl', '-sS', '-i', '--max-time', '60', url)).stdout).toContain('403 Forbidden');

    writeFileSync(file, original);
    expect((await reloaded(before + 3)).at(-1)).toBe('reload_ok');
    expect((await exec('curl', '-sS', '--max-time', '60', url)).stdout).toContain('hello from origin.test /after-edit');

    // The file it was created from is not the workspace's policy: status says when it has changed since.
    const source = join(dir, 'policy.yaml');
    expect((await cliJson<{ policySource: unknown }>(['status', NAME])).json.policySource).toEqual({ path: source, changed: false });
    writeFileSync(source, `${readFileSync(source, 'utf8')}# edited after create\n`);
    expect((await cliJson<{ policySource: unknown }>(['status', NAME])).json.policySource).toEqual({ path: source, changed: true });
    expect((await cli(['status', NAME])).stdout).toContain(`note       ${source} changed since create; this workspace decides with its own copy: to apply the change, cp ${source} ${file}`);
    writeFileSync(source, original);
  });

  it('stats shows what the workspace uses, host side and guest side', { timeout: VM_TIMEOUT }, async () => {
    const before = (await cliJson<WorkspaceStats>(['stats', NAME])).json;
    expect(await exec('curl', '-sS', '--max-time', '60', '-o', '/dev/null', `https://origin.test:${origin.port}/stats`)).toMatchObject({ code: 0 });
    const after = await cliJson<WorkspaceStats>(['stats', NAME]);
    expect(after.code, after.stderr).toBe(0);
    const s = after.json;
    expect(s).toMatchObject({ name: NAME, state: 'running', vm: { pid: vmPid } });
    expect(s.guestError).toBeUndefined();
    expect(s.vm?.rssMiB).toBeGreaterThan(16);
    expect(s.supervisor.rssMiB).toBeGreaterThan(16);
    // The guest's own view: the tiny profile's 128 MiB, less what its kernel keeps.
    expect(s.guest?.memoryTotalMiB).toBeGreaterThan(64);
    expect(s.guest?.memoryTotalMiB).toBeLessThanOrEqual(128);
    expect(s.egress?.requests).toBe((before.egress?.requests ?? 0) + 1);
    expect(s.egress?.bytesDown).toBeGreaterThan(before.egress?.bytesDown ?? 0);
    expect(s.mediation?.channels).toMatchObject([{ port: 7000 }]);
    const human = await cli(['stats', NAME]);
    expect(human.stdout).toMatch(/^ {2}guest {6}load \S+ \S+ \S+, memory [\d.]+ of [\d.]+ MiB in use, up \d+ s$/m);
  });

  it('pause refuses exec and stats, resume restores them', { timeout: VM_TIMEOUT }, async () => {
    expect((await cliJson<Status>(['pause', NAME])).json.state).toBe('paused');
    expect((await status()).state).toBe('paused');
    for (const verb of [['exec', NAME, '--', 'true'], ['stats', NAME]]) {
      const refused = await ax(verb);
      expect(refused.code).toBe(1);
      expect(refused.doc).toMatchObject({ ok: false, error: { kind: 'conflict', message: expect.stringContaining('paused') } });
      expect((refused.doc as AxError).error.remediation).toContain('resume');
    }
    expect((await cliJson<Status>(['resume', NAME])).json.state).toBe('running');
    const r = await exec('echo', 'after-resume');
    expect(r.stdout).toBe('after-resume\n');
    expect((await cliJson<WorkspaceStats>(['stats', NAME])).json.state).toBe('running');
  });

  it('a paused workspace can be quarantined; its frozen guest is refused exec, stats and halt at once, and kill ends it', { timeout: VM_TIMEOUT }, async () => {
    expect((await cliJson<Status>(['pause', NAME])).json.state).toBe('paused');
    expect((await cliJson<Status>(['quarantine', NAME])).json.state).toBe('quarantined');
    for (const verb of [['exec', NAME, '--', 'true'], ['stats', NAME], ['halt', NAME]]) {
      const refused = await ax(verb);
      expect(refused.code, verb.join(' ')).toBe(1);
      expect(refused.doc).toMatchObject({ ok: false, error: { kind: 'conflict', message: expect.stringContaining('vCPUs frozen (it was paused)') } });
    }
    const events = await cli(['events', NAME]);
    expect(events.stdout).toContain('the VM stays frozen (it was paused)');
    expect((await cliJson<Status>(['kill', NAME])).json.state).toBe('stopped');
    expect(await waitDead(vmPid)).toBe(true);
    const started = await cliJson<Status>(['start', NAME]);
    expect(started.json.state).toBe('running');
    vmPid = started.json.runtime?.vmPid as number;
  });

  it('stop powers the guest off through the agent', { timeout: VM_TIMEOUT }, async () => {
    const stopped = await cliJson<Status>(['stop', NAME]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.json.state).toBe('stopped');
    expect(await waitDead(vmPid)).toBe(true);
  });

  it('a guest process that ignores SIGTERM makes stop time out: failed, VM not killed; kill ends it', { timeout: VM_TIMEOUT }, async () => {
    const started = await cliJson<Status>(['start', NAME]);
    expect(started.json.state).toBe('running');
    vmPid = started.json.runtime?.vmPid as number;
    const trap = await exec('sh', '-c', "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 1000\" </dev/null >/dev/null 2>&1 &");
    expect(trap.code, trap.stderr).toBe(0);

    const r = await cli(['stop', NAME]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/did not stop within 5 s/);
    expect(r.stderr).toMatch(/kill/);
    expectNoStackTrace(r);
    const s = await status();
    expect(s.state).toBe('failed');
    expect(alive(vmPid)).toBe(true);
    // Failed with its VM still running: start (a second VM on the same disk) and delete are refused,
    // and the running VM stays recorded, so kill still reaches it.
    for (const verb of ['start', 'delete']) {
      const refused = await cli([verb, NAME]);
      expect(refused.code, verb).toBe(1);
      expect(refused.stderr, verb).toContain(`workspace "${NAME}": its VM process ${vmPid} still runs`);
      expect(refused.stderr, verb).toContain(`fix: end it with "microagent kill ${NAME}", then ${verb} it`);
    }
    expect((await status()).runtime?.vmPid).toBe(vmPid);

    const killed = await cliJson<Status>(['kill', NAME]);
    expect(killed.json.state).toBe('stopped');
    expect(await waitDead(vmPid)).toBe(true);
  });

  it('quarantine cuts egress and mediation, keeps the VM running for inspection by exec (recorded), and refuses start', { timeout: VM_TIMEOUT }, async () => {
    const started = await cliJson<Status>(['start', NAME]);
    vmPid = started.json.runtime?.vmPid as number;
    const beforeQuarantine = target.headers.length;
    expect((await exec('sh', '-c', SERVE('before-quarantine'))).code).toBe(0);
    expect(await readWhenServing(hostPort)).toBe('before-quarantine\n');

    // A command started before quarantine probes egress and mediation 15 s later (the test quarantines
    // as soon as the command says it runs): what was already running is cut off too.
    const probeScript = [
      'echo armed',
      'sleep 15',
      `timeout 30 curl -sS --max-time 20 https://origin.test:${origin.port}/quarantined; echo "curl-rc=$?"`,
      `echo q | timeout 20 nc 127.0.0.1 7000; echo "nc-rc=$?"`,
    ].join('; ');
    const probe = spawn(process.execPath, [CLI, '--state-dir', E2E_STATE_DIR, 'exec', NAME, '--', 'sh', '-c', probeScript], { stdio: ['ignore', 'pipe', 'pipe'] });
    let probeOut = '';
    const armed = new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        probeOut += d.toString();
        if (probeOut.includes('armed')) resolve();
      };
      probe.stdout.on('data', onData);
      probe.stderr.on('data', onData);
    });
    const probeExit = new Promise<number | null>((r) => probe.on('close', r));
    onTestFinished(() => void probe.kill('SIGKILL'));
    await armed;

    const q = await cliJson<Status>(['quarantine', NAME]);
    expect(q.code, q.stderr).toBe(0);
    expect(q.json.state).toBe('quarantined');
    expect(await probeExit, probeOut).toBe(0);
    expect(probeOut).toMatch(/curl-rc=[1-9]/);
    expect(probeOut).not.toContain('hello from');
    expect(probeOut).not.toContain('pong');
    expect(probeOut).toMatch(/nc-rc=\d+/);
    expect(origin.requests).not.toContain('origin.test /quarantined');
    expect(target.headers.length).toBe(beforeQuarantine);
    // Published ports are closed too, including QEMU's loopback forward behind them.
    expect(await readFrom(hostPort), 'the published port after quarantine').toBe('');
    const backend = qemuForwardPort(vmPid);
    expect(backend).not.toBeNull();
    expect(await readFrom(backend as number), "QEMU's forward behind the published port after quarantine").toBe('');

    const s = await status();
    expect(s.state).toBe('quarantined');
    expect(s.supervisorAlive).toBe(true);
    expect(s.runtime?.vmPid).toBe(vmPid);
    expect(alive(vmPid)).toBe(true);

    const refused = await ax(['start', NAME]);
    expect(refused.doc).toMatchObject({ ok: false, error: { kind: 'conflict' } });
    expect((refused.doc as AxError).error.remediation).toMatch(/halt, stop or kill/);
    // Live response: exec still reaches the guest (the agent channel is neither network nor mediation),
    // its commands reach nothing outside, and each is recorded before it runs, without its arguments.
    const inspected = await exec('sh', '-c', `cat /proc/1/comm; curl -sS --max-time 10 https://origin.test:${origin.port}/inspect; echo "curl-rc=$?"`);
    expect(inspected.code).toBe(0);
    expect(inspected.stdout).toMatch(/curl-rc=[1-9]/);
    expect(origin.requests).not.toContain('origin.test /inspect');
    const recorded = await cliJson<Record<string, unknown>[]>(['egress', NAME, '--event', 'lifecycle.exec']);
    expect(recorded.json).toMatchObject([{ state: 'quarantined', detail: 'exec of sh (its 2 argument(s) not recorded)' }]);
    expect(JSON.stringify(recorded.json)).not.toContain('/inspect');
    // stats runs nothing in a quarantined guest: no egress to count, the guest not asked.
    const quarantinedStats = (await cliJson<WorkspaceStats>(['stats', NAME])).json;
    expect(quarantinedStats).toMatchObject({ state: 'quarantined', egress: null, guest: null, guestError: expect.stringContaining('quarantined') });

    expect((await cliJson<Status>(['kill', NAME])).json.state).toBe('stopped');
    expect(await waitDead(vmPid)).toBe(true);
  });

  it('gc leaves a booting workspace alone, and repairs one whose supervisor was SIGKILLed, killing the orphaned VM', { timeout: VM_TIMEOUT }, async () => {
    const starting = startWorkspace(E2E_STATE_DIR, NAME);
    const during = await cliJson<{ name: string }[]>(['gc']);
    expect(during.json.map((r) => r.name)).not.toContain(NAME);
    await starting;
    expect((await workspaceStatus(E2E_STATE_DIR, NAME)).state).toBe('running');
    const runtime = JSON.parse(readFileSync(join(E2E_STATE_DIR, 'workspaces', NAME, 'runtime.json'), 'utf8')) as { supervisorPid: number; vmPid: number };
    process.kill(runtime.supervisorPid, 'SIGKILL');
    expect(await waitDead(runtime.supervisorPid)).toBe(true);
    expect(alive(runtime.vmPid)).toBe(true);

    const s = await status();
    expect(s.state).toBe('failed');
    expect(s.supervisorAlive).toBe(false);
    const listed = await cliJson<Status[]>(['list']);
    expect(listed.json.find((w) => (w as unknown as { name: string }).name === NAME)?.state).toBe('failed');

    // start and delete do not kill a VM behind the user's back: they say what is left.
    for (const verb of ['start', 'delete']) {
      const refused = await ax([verb, NAME]);
      expect(refused.doc).toMatchObject({ ok: false, error: { kind: 'conflict', message: `workspace "${NAME}": its supervisor died and its VM process ${runtime.vmPid} still runs, without egress` } });
    }

    const gc = await cliJson<{ name: string; repaired: string }[]>(['gc']);
    expect(gc.json).toContainEqual({ name: NAME, repaired: expect.stringContaining('orphaned VM process killed') });
    expect(await waitDead(runtime.vmPid)).toBe(true);
    expect((await status()).state).toBe('failed');
  });

  it('after its supervisor and VM died together (a host reboot), start boots it again; no gc needed', { timeout: VM_TIMEOUT }, async () => {
    expect((await cliJson<Status>(['start', NAME])).json.state).toBe('running');
    const runtime = JSON.parse(readFileSync(join(E2E_STATE_DIR, 'workspaces', NAME, 'runtime.json'), 'utf8')) as { supervisorPid: number; vmPid: number };
    process.kill(runtime.vmPid, 'SIGKILL');
    process.kill(runtime.supervisorPid, 'SIGKILL');
    expect(await waitDead(runtime.supervisorPid)).toBe(true);
    expect(await waitDead(runtime.vmPid)).toBe(true);

    expect((await cliJson<Status>(['start', NAME])).json.state).toBe('running');
    expect((await cli(['exec', NAME, '--', 'echo', 'back'])).stdout).toBe('back\n');
    const trail = (await cliJson<{ verb: string; state: string }[]>(['events', NAME])).json.map((e) => `${e.verb}:${e.state}`);
    expect(trail.slice(-3)).toEqual(['start:failed', 'start:starting', 'start:running']);
    expect((await cliJson<Status>(['kill', NAME])).json.state).toBe('stopped');
  });

  it('events, logs and egress show the history; delete removes the workspace', { timeout: VM_TIMEOUT }, async () => {
    const events = await cliJson<{ verb: string; state: string }[]>(['events', NAME]);
    const trail = events.json.map((e) => `${e.verb}:${e.state}`);
    for (const step of ['create:prepared', 'start:running', 'halt:halted', 'pause:paused', 'resume:running', 'stop:stopped', 'stop:failed', 'kill:stopped', 'quarantine:quarantined', 'gc:failed']) {
      expect(trail).toContain(step);
    }
    const human = await cli(['events', NAME]);
    expect(human.stdout).toMatch(/quarantine\s+running\s+-> quarantined/);

    const logs = await cliJson<{ log: string }>(['logs', NAME]);
    expect(logs.json.log).toMatch(/Linux version/);

    const egress = await cliJson<Record<string, unknown>[]>(['egress', NAME, '--host', 'origin.test', '--event', 'egress.decision']);
    expect(egress.code, egress.stderr).toBe(0);
    expect(egress.json.some((r) => r['path'] === '/before' && r['verdict'] === 'allow' && r['decrypted'] === true)).toBe(true);
    const lifecycle = await cliJson<Record<string, unknown>[]>(['egress', NAME, '--event', 'lifecycle.*']);
    expect(lifecycle.json.map((r) => r['event'])).toEqual(expect.arrayContaining(['lifecycle.running', 'lifecycle.halted', 'lifecycle.quarantined']));

    const deleted = await cli(['delete', NAME]);
    expect(deleted.code, deleted.stderr).toBe(0);
    const gone = await ax(['status', NAME]);
    expect(gone.doc).toMatchObject({ ok: false, error: { kind: 'not_found' } });
  });
});
