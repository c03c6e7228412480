// microVM boot and exec latency (TCG or KVM, whatever the probe picks), measured side by side with
// peers in the same run: the bare kernel boot (initramfs agent in probe mode: resets at once, no
// modules, no root disk) as the floor for boot-to-ready, and a host `spawn('true')` as the floor
// for an exec round trip. Run `npm run build` first; reuses the test kernel state directory.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { bootVm, installKernel, loadKernel, prepareBootAssets } from '../dist/vm/index.js';

const stateDir = process.env.MICROAGENT_BENCH_STATE ?? join(tmpdir(), 'microagent-vm-test-state');
const BOOTS = 2;
const EXECS = 20;

try { loadKernel(stateDir); } catch { await installKernel({ stateDir }); }
const assets = await prepareBootAssets(stateDir);

function rootfs() {
  const dir = mkdtempSync(join(tmpdir(), 'ma-bench-root-'));
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'run', 'root']) mkdirSync(join(dir, d));
  copyFileSync('/bin/busybox', join(dir, 'bin/busybox'));
  for (const a of ['sh', 'true', 'echo']) symlinkSync('busybox', join(dir, 'bin', a));
  const img = join(mkdtempSync(join(tmpdir(), 'ma-bench-img-')), 'root.img');
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', dir, img, '64M']);
  return img;
}

function bareBoot() {
  const start = performance.now();
  const r = spawnSync('qemu-system-x86_64', [
    '-M', 'microvm,x-option-roms=off', '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '256', '-smp', '1',
    '-kernel', assets.kernel.vmlinuz, '-initrd', assets.initramfsPath,
    '-append', `console=ttyS0 quiet panic=-1 reboot=t mitigations=off tsc=reliable pci=off microagent.probe`,
  ], { stdio: 'ignore', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`bare boot failed: ${r.status}`);
  return performance.now() - start;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const bare = [], ready = [], execs = [], spawns = [];
let accelerator = '?';
for (let i = 0; i < BOOTS; i++) {
  bare.push(bareBoot());
  const start = performance.now();
  const vm = await bootVm({ stateDir, rootfsPath: rootfs(), runDir: mkdtempSync(join(tmpdir(), 'mab-')), profile: 'tiny', network: { mode: 'isolated' } });
  await vm.agent.ready(300_000);
  ready.push(performance.now() - start);
  accelerator = vm.accelerator;
  for (let j = 0; j < EXECS; j++) {
    const t = performance.now();
    await vm.agent.run({ argv: ['true'] });
    execs.push(performance.now() - t);
  }
  await vm.halt();
}
for (let j = 0; j < EXECS; j++) {
  const t = performance.now();
  await new Promise((resolve) => spawn('true').once('exit', resolve));
  spawns.push(performance.now() - t);
}
const b = median(bare), r = median(ready), e = median(execs), s = median(spawns);
console.log(`accelerator: ${accelerator}, ${BOOTS} boots, ${EXECS} execs each\n`);
console.log('| measure | microagent | peer | ratio |');
console.log('|---|---|---|---|');
console.log(`| boot to agent ready vs bare kernel boot+reset (ms, median) | ${r.toFixed(0)} | ${b.toFixed(0)} | ${(r / b).toFixed(2)}x |`);
console.log(`| exec \`true\` round trip vs host spawn (ms, median) | ${e.toFixed(2)} | ${s.toFixed(2)} | ${(e / s).toFixed(2)}x |`);
