// DNS resolver throughput and latency, side by side with dnsmasq in the same run.
// - cached: 100 names with a 5-minute TTL asked over and over (our cache vs dnsmasq answering the
//   same zone locally);
// - misses: unique names (our resolver vs a forwarding dnsmasq, both asking the same upstream dnsmasq;
//   each name is asked once, so neither cache helps).
// Load comes from dnsperf (-c 4, 5 s, 100 queries in flight; one fsync row with 1000); p50/p99 from a
// sequential node client over UDP.
// Our server writes a real, hash-chained audit record per query: once with fsync (the product
// default: a question sent upstream waits for its durable dns.forward record, every answer for its
// dns.query record's write, synced within 2 ms) and once without (no fdatasync at all).
// A third run with a sink that records nothing is a reference only (not a product mode): it shows
// what the resolver itself costs apart from the audit log. A last row answers with node's dgram and no
// DNS work at all (each query echoed back as its own answer): the ceiling of any node UDP server here. The disk's own fdatasync latency is
// measured too, because with fsync it bounds both p99 and qps (qps ~ outstanding queries / sync time).
// Our server runs in its own process (like dnsmasq), so the load generator never shares its event loop.
// Run `npm run build` first. Usage: node bench/dns.bench.mjs [seconds]
import { execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { loadavg, tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { openAuditLog } from '../dist/audit/index.js';
import { parsePolicy } from '../dist/policy/index.js';
import { createWorkspaceResolver, startDnsServer } from '../dist/proxy/dns/index.js';

const SECONDS = Number(process.argv[2] ?? 5);
const serving = process.argv[2] === '--serve';
const dir = serving ? '' : mkdtempSync(join(tmpdir(), 'microagent-dns-bench-'));
const children = [];

for (const tool of ['dnsperf', 'dnsmasq']) {
  if (spawnSync(tool, ['--version']).error) {
    console.log(`${tool} is not installed (scripts/setup.sh installs it); skipping the DNS benchmark`);
    process.exit(0);
  }
}

function freePort() {
  const socket = createSocket('udp4');
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => {
    const { port } = socket.address();
    socket.close(() => resolve(port));
  }));
}

async function startDnsmasq(extra) {
  const port = await freePort();
  const child = spawn('dnsmasq', [
    '--no-daemon', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-hosts',
    '--conf-file=/dev/null', '--pid-file=', `--user=${userInfo().username}`, '--cache-size=10000', ...extra,
  ], { stdio: 'ignore' });
  children.push(child);
  await waitForAnswer(port);
  return port;
}

/** One query over UDP; resolves with the round trip in ms, or rejects after 2 s. */
function ask(socket, port, name, id) {
  const q = Buffer.alloc(12 + name.length + 2 + 4);
  q.writeUInt16BE(id, 0);
  q.writeUInt16BE(0x0100, 2);
  q.writeUInt16BE(1, 4);
  let o = 12;
  for (const label of name.split('.')) {
    q[o++] = label.length;
    o += q.write(label, o, 'latin1');
  }
  q[o++] = 0;
  q.writeUInt16BE(1, o);
  q.writeUInt16BE(1, o + 2);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const timer = setTimeout(() => reject(new Error(`no answer from port ${port} for ${name}`)), 2000);
    socket.once('message', () => {
      clearTimeout(timer);
      resolve(Number(process.hrtime.bigint() - started) / 1e6);
    });
    socket.send(q, port, '127.0.0.1');
  });
}

async function waitForAnswer(port) {
  const socket = createSocket('udp4');
  try {
    for (let i = 0; i < 50; i++) {
      try {
        await ask(socket, port, 'warm.bench.test', i);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`nothing answers on port ${port}`);
  } finally {
    socket.close();
  }
}

/** Sequential round trips for names[i % n]: p50 and p99 in ms. */
async function latency(port, names, count = 4000) {
  const socket = createSocket('udp4');
  await new Promise((r) => socket.bind(0, '127.0.0.1', r));
  const samples = [];
  for (let i = 0; i < count; i++) samples.push(await ask(socket, port, names[i % names.length], i & 0xffff));
  socket.close();
  samples.sort((x, y) => x - y);
  const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  return { p50: at(0.5), p99: at(0.99) };
}

async function dnsperf(port, file, outstanding = 100) {
  const args = ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(SECONDS), '-c', '4', '-t', '2', '-q', String(outstanding)];
  const { stdout: out } = await promisify(execFile)('dnsperf', args, { encoding: 'utf8' });
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(out)?.[1]);
  const lost = Number(/Queries lost:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const avg = Number(/Average Latency \(s\):\s+([\d.]+)/.exec(out)?.[1]) * 1000;
  const max = Number(/max ([\d.]+)\)/.exec(out)?.[1]) * 1000;
  // Answered is not served: a failed audit log answers REFUSED/SERVFAIL (fail closed) at full speed.
  const codes = /Response codes:\s+(.*)/.exec(out)?.[1] ?? '';
  const failed = [...codes.matchAll(/([A-Z]+) (\d+)/g)].filter(([, code]) => code !== 'NOERROR').reduce((n, [, , count]) => n + Number(count), 0);
  return { qps, lost, failed, avg, max };
}

const ALLOW_BENCH = `
version: 1
mode: guarded
rules:
  - id: bench
    action: allow
    hosts: [".bench.test"]
`;
const NO_GUARD = {
  queriesPerSecond: 1e9, burst: 1e9, distinctNamesPerSecond: 1e9, distinctNamesPerDomainPerSecond: 1e9, maxInflightPerConnection: 1000,
};

if (serving) await serve(Number(process.argv[3]), process.argv[4], process.argv[5]);
if (process.argv[2] === '--echo') await echo();

/**
 * Child-process mode: node's dgram alone, answering each query with itself flagged as a response. No
 * DNS work at all: the most any node UDP server can answer on this machine, the floor for our rows.
 */
async function echo() {
  // With the literal lookup our server uses (src/proxy/dns/server.ts), so the floor stays a floor.
  const socket = createSocket({ type: 'udp4', lookup: (address, _options, callback) => callback(null, address, 4) });
  socket.on('message', (message, peer) => {
    message[2] |= 0x80;
    socket.send(message, peer.port, peer.address);
  });
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  process.stdout.write(`${socket.address().port}\n`);
  await new Promise(() => {});
}

/** Child-process mode: serve the bench zone through our resolver until killed. */
async function serve(upstreamPort, auditMode, auditPath) {
  const audit =
    auditMode === 'none'
      ? { healthy: true, append: async () => {}, close: async () => {} }
      : await openAuditLog({ path: auditPath, workspace: 'bench', fsync: auditMode === 'fsync' });
  const policy = parsePolicy(ALLOW_BENCH, 'bench.yaml');
  const resolver = createWorkspaceResolver({ upstreams: [`127.0.0.1:${upstreamPort}`], timeoutMs: 2000, retries: 1, cache: { maxEntries: 50_000 } });
  const server = await startDnsServer({ policy: () => policy, audit, resolver, listen: { host: '127.0.0.1', port: 0 }, limits: NO_GUARD });
  process.stdout.write(`${server.addresses.udp.port}\n`);
  process.on('SIGTERM', () => void server.close().then(() => audit.close()).then(() => process.exit(0)));
  await new Promise(() => {});
}

async function startOurs(upstreamPort, auditMode) {
  const auditPath = join(dir, `audit-${auditMode}.jsonl`);
  const args = auditMode === 'echo' ? ['--echo'] : ['--serve', String(upstreamPort), auditMode, auditPath];
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const [line] = await once(child.stdout, 'data');
  return {
    port: Number(String(line).trim()),
    async close() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

async function fdatasyncLatency(path) {
  const handle = await open(path, 'a');
  const samples = [];
  for (let i = 0; i < 200; i++) {
    const started = performance.now();
    await handle.write(Buffer.alloc(300));
    await handle.datasync();
    samples.push(performance.now() - started);
  }
  await handle.close();
  samples.sort((x, y) => x - y);
  return { p50: samples[100], p99: samples[197] };
}

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

try {
  const hotNames = Array.from({ length: 100 }, (_, i) => `host${i}.bench.test`);
  const hotFile = join(dir, 'hot.txt');
  writeFileSync(hotFile, hotNames.map((n) => `${n} A`).join('\n') + '\n');
  // Every miss run gets names no one has asked before, so neither dnsmasq's cache nor ours helps.
  const missFile = (tag) => {
    const file = join(dir, `miss-${tag}.txt`);
    writeFileSync(file, Array.from({ length: 300_000 }, (_, i) => `${tag}-${i}.bench.test A`).join('\n') + '\n');
    return file;
  };

  // dnsmasq #1 answers the zone itself with a 5-minute TTL, as real records have: the cached-answer
  // peer and our upstream for the cached rows. (With dnsmasq's default TTL 0 our 1 s cache floor made
  // every hot name a miss once a second, ~1-2 % of the "cached" queries, which set our p99.)
  const zonePort = await startDnsmasq(['--no-resolv', '--address=/bench.test/192.0.2.10', '--local-ttl=300']);
  // dnsmasq #2 answers the same zone with TTL 0, the upstream of both miss rows: with it, the
  // forwarding peer caches nothing (with TTL 300 it spends its time evicting live entries, a third
  // or less of its TTL-0 rate), so the miss rows compare forwarding and nothing else.
  const missZonePort = await startDnsmasq(['--no-resolv', '--address=/bench.test/192.0.2.10']);
  // dnsmasq #3 forwards to #2: the cache-miss peer.
  const forwarderPort = await startDnsmasq(['--no-resolv', `--server=127.0.0.1#${missZonePort}`, '--dns-forward-max=1000']);

  // The machine is shared and noisy: each of our runs is paired with a dnsmasq run right before it.
  const rows = [];
  const labels = { fsync: 'audit fsync (default)', nofsync: 'audit no fsync', none: 'no audit (reference)' };
  for (const auditMode of ['fsync', 'nofsync', 'none']) {
    const ours = await startOurs(zonePort, auditMode);
    await latency(ours.port, hotNames, hotNames.length); // fill the cache
    const peerHot = await dnsperf(zonePort, hotFile);
    const hot = await dnsperf(ours.port, hotFile);
    const peerHotLatency = await latency(zonePort, hotNames);
    const hotLatency = await latency(ours.port, hotNames);
    // Group commit: more queries in flight share each fdatasync, so fsync'd throughput grows with them.
    const wide = auditMode === 'fsync' ? [await dnsperf(zonePort, hotFile, 1000), await dnsperf(ours.port, hotFile, 1000)] : null;
    await ours.close();
    const oursForMisses = await startOurs(missZonePort, auditMode);
    const peerMiss = await dnsperf(forwarderPort, missFile(`peer-${auditMode}`));
    const miss = await dnsperf(oursForMisses.port, missFile(`ours-${auditMode}`));
    await oursForMisses.close();
    rows.push([`cached, ${labels[auditMode]}`, hot, peerHot, hotLatency, peerHotLatency]);
    if (wide !== null) rows.push([`cached, ${labels[auditMode]}, 1000 in flight`, wide[1], wide[0], null, null]);
    rows.push([`miss, ${labels[auditMode]}`, miss, peerMiss, null, null]);
  }

  // The floor: node's UDP path with no DNS work, against dnsmasq answering from its cache.
  const floor = await startOurs(zonePort, 'echo');
  const peerFloor = await dnsperf(zonePort, hotFile);
  const floorRun = await dnsperf(floor.port, hotFile);
  const peerFloorLatency = await latency(zonePort, hotNames);
  const floorLatency = await latency(floor.port, hotNames);
  await floor.close();
  rows.push(['node UDP echo, no DNS work (floor for any node server)', floorRun, peerFloor, floorLatency, peerFloorLatency]);

  console.log(`DNS resolver vs dnsmasq, dnsperf -c 4 -l ${SECONDS}, loopback UDP, one audit record per query (load average ${loadavg()[0].toFixed(1)} at the end)\n`);
  console.log('| case | ours qps | dnsmasq qps | ratio | ours avg/max ms | dnsmasq avg/max ms | ours lost / not NOERROR | ours p50/p99 ms | dnsmasq p50/p99 ms |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const [label, ours, peer, oursLat, peerLat] of rows) {
    console.log(
      `| ${label} | ${fmt(ours.qps)} | ${fmt(peer.qps)} | ${fmt(ours.qps / peer.qps, 2)} | ${fmt(ours.avg, 3)}/${fmt(ours.max, 1)} | ` +
        `${fmt(peer.avg, 3)}/${fmt(peer.max, 1)} | ${ours.lost} / ${ours.failed} | ` +
        `${oursLat ? `${fmt(oursLat.p50, 3)}/${fmt(oursLat.p99, 3)}` : '-'} | ${peerLat ? `${fmt(peerLat.p50, 3)}/${fmt(peerLat.p99, 3)}` : '-'} |`,
    );
  }
  const sync = await fdatasyncLatency(join(dir, 'sync-probe'));
  console.log(`\nfdatasync of a 300-byte append on this disk: p50 ${fmt(sync.p50, 3)} ms, p99 ${fmt(sync.p99, 3)} ms`);
  const [, cached, cachedPeer, cachedLatency] = rows[0];
  const verdict = (ok) => (ok ? 'met' : 'not met');
  console.log(
    `Goals, default configuration: cached qps ratio >= 1.0: ${verdict(cached.qps >= cachedPeer.qps)} (${fmt(cached.qps / cachedPeer.qps, 2)}); ` +
      `cached p99 < 1 ms on loopback: ${verdict(cachedLatency.p99 < 1)} (${fmt(cachedLatency.p99, 3)} ms).`,
  );
  const failures = rows.reduce((n, [, ours]) => n + ours.failed, 0);
  if (failures > 0) console.log(`NOT VALID: ${failures} of our answers were not NOERROR (see the table): the figures measured refusals.`);
} finally {
  for (const child of children) child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
