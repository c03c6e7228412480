// An agent's git through the proxy: clone and push over smart HTTP to an HTTPS origin that speaks
// HTTP/1.1 only (git-http-backend behind node's https server, as many self-hosted forges are).
// Such an origin's guest is offered HTTP/1.1 too: offered h2, git's curl (7.88 on Debian 12) stalls
// a push whose answer begins before the upload ends, which git-http-backend's answers do.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectTunnel, decisions, listen, makeOriginCa, startHttpsOrigin, startTestProxy, testResolver, type OriginCa, type TestProxy } from './helpers.js';

const run = promisify(execFile);
const GIT_HTTP_BACKEND = execFileSync('git', ['--exec-path'], { encoding: 'utf8' }).trim() + '/git-http-backend';

/** git-http-backend as a CGI program: the request streams into it, its answer streams back. */
function gitOrigin(ca: OriginCa, projectRoot: string): Server {
  return createHttpsServer({ key: ca.key, cert: ca.cert }, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://origin.test');
    const cgi = spawn(GIT_HTTP_BACKEND, [], {
      env: {
        GIT_PROJECT_ROOT: projectRoot, GIT_HTTP_EXPORT_ALL: '1', REMOTE_USER: 'agent', REMOTE_ADDR: '127.0.0.1',
        PATH_INFO: url.pathname, QUERY_STRING: url.search.slice(1), REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '', GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
      },
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let answering = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (answering) return void res.write(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end).toString().split('\r\n')) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const status = Number.parseInt(headers['status'] ?? '200', 10);
      delete headers['status'];
      res.writeHead(status, headers);
      answering = true;
      res.write(head.subarray(end + 4));
    });
    cgi.stdout.on('end', () => res.end());
  });
}

let ca: OriginCa;
let tp: TestProxy;
let h1Port: number;
let h2Port: number;
const dirs: string[] = [];
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};

beforeAll(async () => {
  ca = makeOriginCa();
  const projects = tempDir('git-origin-');
  execFileSync('git', ['init', '-q', '--bare', join(projects, 'repo.git')]);
  execFileSync('git', ['-C', join(projects, 'repo.git'), 'config', 'http.receivepack', 'true']);
  h1Port = await listen(gitOrigin(ca, projects));
  h2Port = (await startHttpsOrigin(ca)).port;
  const policy = 'version: 1\nmode: guarded\nrules:\n  - id: forge\n    action: allow\n    hosts: [origin.test]\n    cidrs: [127.0.0.1/32]\n';
  tp = await startTestProxy(policy, { resolver: testResolver({ 'origin.test': ['127.0.0.1'] }), originCa: ca });
});
afterAll(async () => {
  await tp?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('the protocol a guest is offered', () => {
  it.each([
    { origin: 'an HTTP/1.1-only origin', port: () => h1Port, expected: 'http/1.1' },
    { origin: 'an h2 origin', port: () => h2Port, expected: 'h2' },
  ])('is what the origin speaks: $origin gets $expected, first time and once known', async ({ port, expected }) => {
    for (let connection = 0; connection < 2; connection++) {
      const { socket } = await connectTunnel(tp.port, `origin.test:${port()}`);
      const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem, ALPNProtocols: ['h2', 'http/1.1'] });
      await new Promise((resolve, reject) => tls.once('secureConnect', resolve).once('error', reject));
      expect(tls.alpnProtocol).toBe(expected);
      tls.destroy();
    }
  });

  it('does not wait for an origin that never finishes its handshake: the guest is offered both', async () => {
    const silent = createNetServer((socket) => socket.on('error', () => undefined));
    const port = await listen(silent as unknown as Server);
    try {
      const { socket } = await connectTunnel(tp.port, `origin.test:${port}`);
      const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem, ALPNProtocols: ['h2', 'http/1.1'] });
      await new Promise((resolve, reject) => tls.once('secureConnect', resolve).once('error', reject));
      expect(tls.alpnProtocol).toBe('h2');
      tls.destroy();
    } finally {
      silent.close();
    }
  }, 20_000);

  it('is h2 for a guest offering nothing else (gRPC), translated to HTTP/1.1 upstream', async () => {
    const { socket } = await connectTunnel(tp.port, `origin.test:${h1Port}`);
    const tls = tlsConnect({ socket, servername: 'origin.test', ca: tp.caPem, ALPNProtocols: ['h2'] });
    await new Promise((resolve, reject) => tls.once('secureConnect', resolve).once('error', reject));
    expect(tls.alpnProtocol).toBe('h2');
    tls.destroy();
  });
});

describe('git over smart HTTP through the proxy', () => {
  it('clones, pushes 5 MB and clones the pushed commit back; every request is decided and recorded', async () => {
    const work = tempDir('git-client-');
    const env = { ...process.env, https_proxy: tp.url, GIT_SSL_CAINFO: tp.caPath, GIT_TERMINAL_PROMPT: '0' };
    const git = (...args: string[]) => run('git', ['-c', 'user.name=agent', '-c', 'user.email=agent@origin.test', ...args], { cwd: work, env, timeout: 60_000 });
    const url = `https://origin.test:${h1Port}/repo.git`;
    await git('clone', '-q', url, 'first');
    writeFileSync(join(work, 'first', 'data.bin'), randomBytes(5 * 1024 * 1024));
    await git('-C', 'first', 'add', 'data.bin');
    await git('-C', 'first', 'commit', '-qm', 'data');
    await git('-C', 'first', 'push', '-q', 'origin', 'HEAD:main');
    await git('clone', '-q', '--branch', 'main', url, 'second');
    const pushed = (await git('-C', 'first', 'rev-parse', 'HEAD')).stdout;
    expect((await git('-C', 'second', 'rev-parse', 'HEAD')).stdout).toBe(pushed);

    const requests = decisions(await tp.records()).filter((r) => r.path !== undefined && r.path.startsWith('/repo.git/'));
    expect(requests.map((r) => r.verdict)).not.toContain('deny');
    expect(requests.some((r) => r.method === 'POST' && r.path === '/repo.git/git-receive-pack')).toBe(true);
  }, 120_000);
});
