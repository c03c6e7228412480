// Egress proxy micro-benchmarks (run `npm run build` first; figures only, no assertions):
//  1. first request to a new host name: added latency at p50/p90, curl direct vs curl via the proxy
//     (each name is new to the proxy: policy decision, lookup, leaf mint, upstream handshake);
//  2. memory with 1,000 open intercepted tunnels: RSS of a `microagent proxy` child process.
// Prints a markdown table with ratios against the direct (no proxy) peer measured in the same run.
//   node bench/proxy.bench.mjs [--hosts 100] [--tunnels 1000] [--no-fsync]
import 'reflect-metadata';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { parseArgs } from 'node:util';
import { openAuditLog } from '../dist/audit/index.js';
import { loadOrCreateCa } from '../dist/ca/index.js';
import { parsePolicy } from '../dist/policy/index.js';
import { startEgressProxy } from '../dist/proxy/index.js';

const { values } = parseArgs({ options: { hosts: { type: 'string', default: '100' }, tunnels: { type: 'string', default: '1000' }, 'no-fsync': { type: 'boolean', default: false } } });
const FSYNC = !values['no-fsync'];
const HOSTS = Number(values.hosts);
const TUNNELS = Number(values.tunnels);
const dir = mkdtempSync(join(tmpdir(), 'proxy-bench-'));

function openssl(args) {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}
openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=bench origin CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=bench.test']);
writeFileSync(join(dir, 'leaf.ext'), 'subjectAltName=DNS:bench.test,DNS:*.bench.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '2', '-extfile', 'leaf.ext']);
const originCa = join(dir, 'ca.pem');

// The origin runs in its own process, as a real one would: sharing the proxy's event loop would
// serialise the upstream handshake with the proxy's own work and hide what overlaps.
const originChild = spawn(process.execPath, ['-e', `
  const { readFileSync } = require('node:fs');
  const server = require('node:https').createServer({ key: readFileSync(${JSON.stringify(join(dir, 'leaf.key'))}), cert: readFileSync(${JSON.stringify(join(dir, 'leaf.pem'))}) }, (req, res) => res.end('ok'));
  server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`], { stdio: ['ignore', 'pipe', 'inherit'] });
const originPort = await new Promise((resolve) => originChild.stdout.once('data', (d) => resolve(Number(String(d).trim()))));

const policyText = 'version: 1\nmode: guarded\nrules:\n  - id: bench\n    action: allow\n    cidrs: [127.0.0.1/32]\n';
writeFileSync(join(dir, 'policy.yaml'), policyText);

function curlTime(args) {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{time_total}', ...args], (err, stdout) => {
      if (err) return reject(err);
      const [code, seconds] = stdout.trim().split(' ');
      if (code !== '200') return reject(new Error(`status ${code}`));
      resolve(Number(seconds) * 1000);
    });
  });
}
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

// --- 1. first request to a new host -------------------------------------------------------
const audit = await openAuditLog({ path: join(dir, 'audit.jsonl'), workspace: 'bench', fsync: FSYNC });
const ca = await loadOrCreateCa({ dir: join(dir, 'proxy-ca'), workspace: 'bench' });
const policy = parsePolicy(policyText, 'bench.yaml');
const proxy = await startEgressProxy({
  policy: () => policy,
  audit,
  ca,
  resolver: { lookup: async () => ['127.0.0.1'], namesForAddress: () => [] },
  listen: { host: '127.0.0.1', port: 0 },
  workspace: 'bench',
  upstreamCa: [readFileSync(originCa, 'utf8')],
});
const proxyUrl = `http://127.0.0.1:${proxy.addresses.tcp.port}`;
const direct = [];
const viaProxy = [];
for (let i = 1; i <= HOSTS; i++) {
  const name = `n${i}.bench.test`;
  direct.push(await curlTime(['--cacert', originCa, '--resolve', `${name}:${originPort}:127.0.0.1`, `https://${name}:${originPort}/`]));
  viaProxy.push(await curlTime(['-x', proxyUrl, '--cacert', ca.certPath, `https://${name}:${originPort}/`]));
}
await proxy.close();
await audit.close();

// --- 2. RSS with N open intercepted tunnels ------------------------------------------------
const stateDir = join(dir, 'state');
const child = spawn(process.execPath, [new URL('../dist/cli/main.js', import.meta.url).pathname, '--state-dir', stateDir, 'proxy', '--policy', join(dir, 'policy.yaml'), '--listen', '127.0.0.1:0', '--upstream-ca', originCa, '--no-fsync'], { stdio: ['ignore', 'pipe', 'inherit'] });
const childPort = await new Promise((resolve) => {
  let out = '';
  child.stdout.on('data', (c) => {
    out += c;
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
});
const childCa = readFileSync(join(stateDir, 'proxy-ca', 'ca.pem'));
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) / 1024;
const openTunnel = () =>
  new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: childPort }, () => socket.write(`CONNECT 127.0.0.1:${originPort} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n\r\n`));
    socket.once('data', (d) => {
      if (!d.toString().startsWith('HTTP/1.1 200')) return reject(new Error(d.toString()));
      const tls = tlsConnect({ socket, host: '127.0.0.1', ca: childCa, ALPNProtocols: ['http/1.1'] }, () => {
        tls.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\n\r\n`);
        tls.once('data', () => resolve(tls));
      });
      tls.on('error', reject);
    });
    socket.on('error', reject);
  });
await openTunnel().then((t) => t.destroy());
const idleRss = rss();
const tunnels = [];
for (let i = 0; i < TUNNELS; i += 50) tunnels.push(...(await Promise.all(Array.from({ length: Math.min(50, TUNNELS - i) }, openTunnel))));
const loadedRss = rss();
for (const t of tunnels) t.destroy();
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));
originChild.kill();

const p50d = percentile(direct, 50);
const p50p = percentile(viaProxy, 50);
const p90d = percentile(direct, 90);
const p90p = percentile(viaProxy, 90);
const f = (x) => x.toFixed(1);
console.log(`| metric (${HOSTS} new hosts, audit fsync ${FSYNC ? 'on' : 'off'}; ${TUNNELS} tunnels) | direct | via microagent proxy | added | ratio |`);
console.log('|---|---:|---:|---:|---:|');
console.log(`| first request to a new host, p50 (ms) | ${f(p50d)} | ${f(p50p)} | ${f(p50p - p50d)} | ${f(p50p / p50d)}x |`);
console.log(`| first request to a new host, p90 (ms) | ${f(p90d)} | ${f(p90p)} | ${f(p90p - p90d)} | ${f(p90p / p90d)}x |`);
console.log(`| proxy RSS idle (MB) | - | ${f(idleRss)} | - | - |`);
console.log(`| proxy RSS with ${tunnels.length} open intercepted tunnels (MB) | - | ${f(loadedRss)} | ${f(loadedRss - idleRss)} | ${f((loadedRss - idleRss) * 1024 / tunnels.length)} KB/tunnel |`);
process.exit(0);
