// Workspace orchestration cost, measured side by side with peers in the same run (TCG or KVM, whatever
// the accelerator probe picks): `microagent run -- echo hi` to first output and to exit against a bare
// qemu-system-x86_64 boot of the same kernel, initramfs, root filesystem and QEMU command line
// (src/vm/qemu-args.ts) that runs the same command through the guest agent the moment it says HELLO,
// timed to that command's first output and exit (so the guest's own work is in both; what differs is
// the orchestration: CLI, supervisor, mediator, CONFIG); start, exec round trip, pause/resume
// and halt of a persistent workspace through the CLI against the CLI's own floor (`status`) or a host
// spawn; and host memory per running workspace (supervisor + QEMU VmRSS) against the bare QEMU.
// Run `npm run build` first. State: MICROAGENT_BENCH_STATE or the e2e tests' state directory.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { installKernel, loadKernel, prepareBootAssets, probeAccelerator } from '../dist/vm/index.js';
import { buildQemuArgs } from '../dist/vm/qemu-args.js';
import { encodeExec, encodeFrame, MSG, splitFrames } from '../dist/vm/protocol.js';
import { hostFacts, runPaths } from '../dist/vm/qemu.js';
import { ensureDefaultImage, prepareWorkspaceDisk } from '../dist/vm/rootfs/index.js';
import { PROFILES } from '../dist/vm/workspace/options.js';

const stateDir = process.env.MICROAGENT_BENCH_STATE ?? '/tmp/microagent-e2e-state';
const CLI = new URL('../dist/cli/main.js', import.meta.url).pathname;
// Guest boots under TCG vary by ±25% with the host's load: more pairs, and the per-pair ratios besides.
const RUNS = 20;
const EXECS = 10;
const PROFILE = 'tiny';

mkdirSync(stateDir, { recursive: true, mode: 0o700 });
try { loadKernel(stateDir); } catch { await installKernel({ stateDir }); }
const assets = await prepareBootAssets(stateDir);
const image = await ensureDefaultImage(stateDir);
const { accelerator } = await probeAccelerator({ stateDir, kernelPath: assets.kernel.image, initramfsPath: assets.initramfsPath });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const vmRssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

/** Runs the CLI as users do (the executable, through its shebang); resolves with wall times to the first stdout byte and to exit. */
function timeCli(args) {
  const start = performance.now();
  let first = null;
  let stdout = '';
  let stderr = '';
  const child = spawn(CLI, ['--state-dir', stateDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => { first ??= performance.now() - start; stdout += d; });
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => child.on('close', (code) => {
    if (code !== 0) reject(new Error(`microagent ${args.join(' ')} exited ${code}: ${stderr}`));
    else resolve({ firstMs: first, totalMs: performance.now() - start, stdout });
  }));
}

/**
 * The same VM as a `run`'s (user networking, restricted, but nothing forwarded), QEMU alone: wall
 * times to the agent's HELLO frame, then, running the same command through the agent (no CONFIG, no
 * mediator, no supervisor), to its first output and to its exit.
 */
async function bareBoot() {
  const runDir = mkdtempSync(join(tmpdir(), 'mab-'));
  const rootfsPath = join(runDir, 'root.ext4');
  await prepareWorkspaceDisk(image.rootfsPath, rootfsPath);
  const size = PROFILES[PROFILE];
  const args = buildQemuArgs(
    { kernelPath: assets.kernel.image, virtioDiscovery: assets.kernel.virtioDiscovery, initramfsPath: assets.initramfsPath, rootfsPath, memoryMiB: size.memoryMiB, cpus: size.cpus, network: { mode: 'user' }, runDir, accelerator },
    runPaths(runDir),
    hostFacts(),
  );
  const start = performance.now();
  const qemu = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
  const paths = runPaths(runDir);
  let socket;
  for (;;) {
    socket = await new Promise((resolve) => {
      const s = connect(paths.agentSocket);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(null));
    });
    if (socket !== null) break;
    await sleep(5);
  }
  const at = {};
  await new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      const split = splitFrames(Buffer.concat([buf, chunk]));
      if (split.kind !== 'frames') throw new Error(split.message);
      buf = split.rest;
      for (const frame of split.frames) {
        const ms = performance.now() - start;
        if (frame.type === MSG.HELLO) {
          at.hello = ms;
          socket.write(encodeFrame(MSG.EXEC, 1, encodeExec({ argv: ['echo', 'hi'], env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' } })));
        } else if (frame.type === MSG.STDOUT) at.firstOutput ??= ms;
        else if (frame.type === MSG.EXIT) {
          at.exit = ms;
          resolve();
        }
      }
    });
  });
  const rss = vmRssKiB(qemu.pid);
  socket.destroy();
  qemu.kill('SIGKILL');
  await new Promise((r) => qemu.once('exit', r));
  rmSync(runDir, { recursive: true, force: true });
  return { ...at, rss };
}

async function hostSpawn(cmd, args) {
  const t = performance.now();
  await new Promise((resolve) => spawn(cmd, args, { stdio: 'ignore' }).once('exit', resolve));
  return performance.now() - t;
}

const bare = [], bareFirst = [], bareExit = [], runFirst = [], runTotal = [], bareRss = [];
for (let i = 0; i < RUNS; i++) {
  const b = await bareBoot();
  bare.push(b.hello);
  bareFirst.push(b.firstOutput);
  bareExit.push(b.exit);
  bareRss.push(b.rss);
  const r = await timeCli(['run', '--profile', PROFILE, '--', 'echo', 'hi']);
  if (r.stdout !== 'hi\n') throw new Error(`run printed ${JSON.stringify(r.stdout)}`);
  runFirst.push(r.firstMs);
  runTotal.push(r.totalMs);
}

// Where a run's time goes, from the run's own timings (one extra run).
const breakdown = JSON.parse((await timeCli(['--json', 'run', '--profile', PROFILE, '--', 'true'])).stdout).timings;

const name = `bench-${process.pid}`;
await timeCli(['create', name, '--profile', PROFILE]);
const start = [], execCli = [], execLib = [], pause = [], resume = [], status = [], spawns = [];
let supervisorRss = NaN, qemuRss = NaN, halt = NaN;
try {
  start.push((await timeCli(['start', name])).totalMs);
  const s = JSON.parse((await timeCli(['--json', 'status', name])).stdout);
  supervisorRss = vmRssKiB(s.runtime.supervisorPid);
  qemuRss = vmRssKiB(s.runtime.vmPid);
  const { execInWorkspace } = await import('../dist/vm/workspace/service.js');
  for (let j = 0; j < EXECS; j++) {
    const t = performance.now();
    await execInWorkspace(stateDir, name, { argv: ['true'], onStdout: () => {}, onStderr: () => {} });
    execLib.push(performance.now() - t);
    spawns.push(await hostSpawn('true', []));
  }
  for (let j = 0; j < 3; j++) {
    execCli.push((await timeCli(['exec', name, '--', 'true'])).totalMs);
    status.push((await timeCli(['status', name])).totalMs);
    pause.push((await timeCli(['pause', name])).totalMs);
    resume.push((await timeCli(['resume', name])).totalMs);
  }
  halt = (await timeCli(['halt', name])).totalMs;
} finally {
  await timeCli(['kill', name]).catch(() => undefined);
  await timeCli(['delete', name]).catch(() => undefined);
}

const row = (what, ours, peer, unit = 'ms') => {
  const ratio = peer === null ? '-' : `${(ours / peer).toFixed(2)}x`;
  const fmt = (v) => (v === null ? '-' : unit === 'ms' && v < 100 ? v.toFixed(1) : v.toFixed(0));
  console.log(`| ${what} | ${fmt(ours)} | ${peer === null ? '-' : fmt(peer)} | ${ratio} |`);
};
const b = median(bare), cliFloor = median(status);
console.log(`accelerator: ${accelerator}, profile ${PROFILE} (${PROFILES[PROFILE].memoryMiB} MiB, ${PROFILES[PROFILE].cpus} vCPU), ${RUNS} runs, medians; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`);
console.log('| measure | microagent | peer | ratio |');
console.log('|---|---|---|---|');
row('`run -- echo hi` to first output vs bare QEMU boot running `echo hi`, to its first output (ms)', median(runFirst), median(bareFirst));
row('`run -- echo hi` whole run vs bare QEMU boot running `echo hi`, to its exit (ms)', median(runTotal), median(bareExit));
row('`start` (CLI) to running vs bare QEMU boot to agent HELLO (ms)', median(start), b);
row('exec `true` round trip, library (control socket) vs host spawn (ms)', median(execLib), median(spawns));
row('exec `true` round trip, CLI vs CLI `status` (ms)', median(execCli), cliFloor);
row('`pause` (CLI) vs CLI `status` (ms)', median(pause), cliFloor);
row('`resume` (CLI) vs CLI `status` (ms)', median(resume), cliFloor);
row('`halt` (CLI) to VM exit vs CLI `status` (ms)', halt, cliFloor);
row('supervisor VmRSS (MiB)', supervisorRss / 1024, null, 'MiB');
row('host memory per running workspace, supervisor + QEMU VmRSS vs bare QEMU (MiB)', (supervisorRss + qemuRss) / 1024, median(bareRss) / 1024, 'MiB');
const pairRatios = runFirst.map((ms, i) => ms / bareFirst[i]).sort((x, y) => x - y);
const pairOverheads = runFirst.map((ms, i) => ms - bareFirst[i]).sort((x, y) => x - y);
console.log(`\nbare boot: agent HELLO at ${median(bare).toFixed(0)} ms, \`echo hi\` output at ${median(bareFirst).toFixed(0)} ms (medians)`);
console.log(`run-to-first-output / bare boot's first output, per back-to-back pair: ${pairRatios.map((r) => `${r.toFixed(2)}x`).join(' ')} (median ${median(pairRatios).toFixed(2)}x)`);
console.log(`the same pairs' difference, the orchestration's own time (ms): ${pairOverheads.map((ms) => ms.toFixed(0)).join(' ')} (median ${median(pairOverheads).toFixed(0)})`);
console.log(`\none run's breakdown: create (image lookup, policy) ${breakdown.createMs} ms, start (mediator, QEMU boot, agent ready, CONFIG) ${breakdown.startMs} ms, whole run ${breakdown.totalMs} ms (in-process, without CLI start-up)`);
