// Root filesystem builds from OCI images, against the standard tools doing the same work in the same run:
// our guarded streaming layer applier vs GNU `tar -xzf`; a cold resolveImage (apply + mke2fs + cache)
// vs `tar -xzf` + `mke2fs -d`; a cache hit; a workspace disk copy vs a plain `cp`. Uses the default image.
// Usage: npm run build && node bench/rootfs.bench.mjs [runs]
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyLayer, finishStaging, newStagingState } from '../dist/vm/rootfs/apply-layer.js';
import { decompressLayer } from '../dist/vm/rootfs/decompress.js';
import { readTar } from '../dist/vm/rootfs/tar-reader.js';
import { buildDefaultImageLayout, prepareWorkspaceDisk, resolveImage } from '../dist/vm/rootfs/index.js';

const RUNS = Number(process.argv[2] ?? 3);
const state = process.env.MICROAGENT_STATE_DIR ?? join(homedir(), '.microagent');
const work = mkdtempSync(join(tmpdir(), 'rootfs-bench-'));
let layout = join(state, 'images', 'default-layout');
if (!existsSync(join(layout, 'index.json'))) {
  layout = join(work, 'layout');
  await buildDefaultImageLayout(layout, join(state, 'images', 'default-debs'));
}
const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
const manifest = JSON.parse(readFileSync(join(layout, 'blobs/sha256', index.manifests[0].digest.slice(7)), 'utf8'));
const layerPath = join(layout, 'blobs/sha256', manifest.layers[0].digest.slice(7));
let n = 0;
const fresh = (label) => {
  const dir = join(work, `${label}-${n++}`);
  mkdirSync(dir);
  return dir;
};

async function median(fn) {
  const times = [];
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
const mkfsPeer = (dir, image) => {
  sh('truncate', ['-s', '256M', image]);
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-E', 'root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1', '-d', dir, image]);
};

const applyOurs = await median(async () => {
  const s = newStagingState(fresh('ours'));
  await applyLayer(s, readTar(decompressLayer(createReadStream(layerPath))));
  await finishStaging(s);
});
let tarDir;
const applyTar = await median(async () => sh('tar', ['-xzf', layerPath, '-C', (tarDir = fresh('tar'))]));
let lastImage;
const coldOurs = await median(async () => {
  lastImage = await resolveImage(`oci:${layout}`, { stateDir: fresh('state') });
  if (lastImage.cached) throw new Error('a cold build was served from a cache');
});
const coldPeer = await median(async () => {
  const dir = fresh('peer');
  sh('tar', ['-xzf', layerPath, '-C', dir]);
  mkfsPeer(dir, `${dir}.ext4`);
});
const hitState = fresh('hit');
await resolveImage(`oci:${layout}`, { stateDir: hitState });
const hit = await median(() => resolveImage(`oci:${layout}`, { stateDir: hitState }));
const copyOurs = await median(() => prepareWorkspaceDisk(lastImage.rootfsPath, join(work, `ws-${n++}.ext4`)));
const copyPlain = await median(async () => sh('cp', ['--sparse=never', lastImage.rootfsPath, join(work, `plain-${n++}.ext4`)]));

const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const ms = (v) => `${v.toFixed(0)} ms`;
const allocated = Number(execFileSync('du', ['-B1', lastImage.rootfsPath]).toString().split('\t')[0]);
const content = Number(execFileSync('du', ['-sB1', '--apparent-size', tarDir]).toString().split('\t')[0]);
console.log(`Default image: layer ${mib(statSync(layerPath).size)} gzip, content ${mib(content)}, ext4 ${mib(statSync(lastImage.rootfsPath).size)} sparse (${mib(allocated)} allocated). Median of ${RUNS}.\n`);
console.log('| step | microagent | peer | ratio (ours/peer) |');
console.log('| --- | --- | --- | --- |');
console.log(`| apply default layer | ${ms(applyOurs)} | ${ms(applyTar)} (tar -xzf) | ${(applyOurs / applyTar).toFixed(2)} |`);
console.log(`| cold build (resolveImage) | ${ms(coldOurs)} | ${ms(coldPeer)} (tar -xzf + mke2fs -d) | ${(coldOurs / coldPeer).toFixed(2)} |`);
console.log(`| cache hit (resolveImage) | ${ms(hit)} | ${ms(coldOurs)} (cold build) | ${(hit / coldOurs).toFixed(3)} |`);
console.log(`| workspace disk copy | ${ms(copyOurs)} | ${ms(copyPlain)} (cp, not sparse) | ${(copyOurs / copyPlain).toFixed(2)} |`);
rmSync(work, { recursive: true, force: true });
