// Cost of serving TLS for a host the proxy has not seen yet, and for one it has.
// Ours: one ECDSA P-256 signature per new host with a leaf key shared per CA instance (WebCrypto,
// off the event loop). Peer: http-mitm-proxy's lib/ca.ts path (node-forge RSA-2048 keygen and
// SHA-256 signature per host, synchronous on the event loop), measured in the same run.
// Both end in a tls.SecureContext. Run `npm run build` first; numbers are for this machine only.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createSecureContext } from 'node:tls';
import forge from 'node-forge';
import { createCa } from '../dist/ca/index.js';

const NEW_HOSTS = Number(process.env.CA_BENCH_HOSTS ?? 300);
const PEER_HOSTS = Number(process.env.CA_BENCH_PEER_HOSTS ?? 6);
const CACHED_LOOKUPS = 200_000;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), n: sorted.length };
}
const ms = (v) => (v < 0.01 ? v.toFixed(5) : v < 1 ? v.toFixed(3) : v.toFixed(1));

/** Times `fn` per item, and the longest event-loop stall seen while doing so. */
async function measure(items, fn) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  const samples = [];
  for (const item of items) {
    const t = performance.now();
    await fn(item);
    samples.push(performance.now() - t);
    // Let the loop turn so the delay monitor sees stalls caused by each mint.
    await new Promise((resolve) => setImmediate(resolve));
  }
  histogram.disable();
  return { ...summary(samples), maxStallMs: histogram.max / 1e6 };
}

// --- ours ---------------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'microagent-ca-bench-'));
const tOpen = performance.now();
const ca = await createCa({ dir: join(dir, 'ca'), workspace: 'bench', cacheSize: NEW_HOSTS * 4 });
const openMs = performance.now() - tOpen;
for (let i = 0; i < 20; i++) await ca.secureContextFor(`warm${i}.example.test`); // JIT warm-up
const ours = await measure(Array.from({ length: NEW_HOSTS }, (_, i) => `h${i}.example.test`), (name) => ca.secureContextFor(name));

const burstNames = Array.from({ length: NEW_HOSTS }, (_, i) => `burst${i}.example.test`);
const tBurst = performance.now();
await Promise.all(burstNames.map((n) => ca.secureContextFor(n)));
const burstPerHost = (performance.now() - tBurst) / NEW_HOSTS;

const cachedSamples = [];
for (let round = 0; round < 10; round++) {
  const t = performance.now();
  for (let i = 0; i < CACHED_LOOKUPS / 10; i++) await ca.secureContextFor('h1.example.test');
  cachedSamples.push((performance.now() - t) / (CACHED_LOOKUPS / 10));
}
const cached = summary(cachedSamples);
ca.close();
rmSync(dir, { recursive: true, force: true });

// --- peer: http-mitm-proxy's per-host forge RSA path ------------------------------------------------
const { pki, md } = forge;
const caKeys = pki.rsa.generateKeyPair(2048);
const caCert = pki.createCertificate();
caCert.publicKey = caKeys.publicKey;
caCert.serialNumber = '01';
caCert.validity.notBefore = new Date(Date.now() - 86_400_000);
caCert.validity.notAfter = new Date(Date.now() + 365 * 86_400_000);
const caAttrs = [{ name: 'commonName', value: 'NodeMITMProxyCA' }];
caCert.setSubject(caAttrs);
caCert.setIssuer(caAttrs);
caCert.setExtensions([{ name: 'basicConstraints', cA: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true }]);
caCert.sign(caKeys.privateKey, md.sha256.create());

function forgeMint(host) {
  const keys = pki.rsa.generateKeyPair(2048);
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = forge.util.bytesToHex(forge.random.getBytesSync(16)).replace(/^[89a-f]/, '1');
  cert.validity.notBefore = new Date(Date.now() - 86_400_000);
  cert.validity.notAfter = new Date(Date.now() + 365 * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: host }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: host }] },
  ]);
  cert.sign(caKeys.privateKey, md.sha256.create());
  return createSecureContext({ key: pki.privateKeyToPem(keys.privateKey), cert: pki.certificateToPem(cert) });
}
forgeMint('warm.example.test');
const peer = await measure(Array.from({ length: PEER_HOSTS }, (_, i) => `p${i}.example.test`), async (host) => forgeMint(host));

// --- report -------------------------------------------------------------------------------------
const rows = [
  ['new host, ours (ECDSA P-256, shared leaf key)', ours],
  [`new host, peer (http-mitm-proxy: forge RSA-2048 keygen + sign)`, peer],
];
console.log(`CA open (keygen CA + leaf key, write files): ${ms(openMs)} ms\n`);
console.log('| path | n | p50 ms | p99 ms | max event-loop stall ms |');
console.log('|---|---|---|---|---|');
for (const [label, r] of rows) console.log(`| ${label} | ${r.n} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.maxStallMs)} |`);
console.log(`| new hosts, ours, ${NEW_HOSTS} concurrent (per host) | ${NEW_HOSTS} | ${ms(burstPerHost)} | - | - |`);
console.log(`| cached lookup, ours (per call, median of 10 rounds) | ${CACHED_LOOKUPS} | ${ms(cached.p50)} | ${ms(cached.p99)} | - |`);
console.log('');
console.log(`ratio new host p50, peer / ours: ${(peer.p50 / ours.p50).toFixed(0)}x`);
console.log(`ratio new host p99, peer / ours: ${(peer.p99 / ours.p99).toFixed(0)}x`);
console.log(`ratio new host / cached lookup (ours, p50): ${(ours.p50 / cached.p50).toFixed(0)}x`);
