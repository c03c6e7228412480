/**
 * Broker start-up on the file system: the socket directory must be private, a stale socket is
 * replaced, a live socket or a non-socket file is never taken over.
 */
import { spawnSync } from 'node:child_process';
import { chmod, lstat, mkdir, writeFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openAuditLog, type AuditLog } from '../../src/audit/index.js';
import { startBroker } from '../../src/mediation/broker.js';
import { validateChannels } from '../../src/mediation/channels.js';
import { collect, guestConnect, readRecords, startTarget, tempDir, type TestTarget } from './helpers.js';

let dir: { path: string; remove: () => Promise<void> };
let audit: AuditLog;
let target: TestTarget;

beforeEach(async () => {
  dir = await tempDir('ma-med-start-');
  audit = await openAuditLog({ path: `${dir.path}/audit.jsonl`, workspace: 'ws-start' });
  target = await startTarget({ kind: 'unix', dir: dir.path, proxyProtocol: false, behaviour: 'echo' });
});
afterEach(async () => {
  await target.close();
  await audit.close();
  await dir.remove();
});

const start = (socketDir: string) =>
  startBroker({
    workspace: 'ws-start',
    runtimeId: 'rt',
    channels: validateChannels([{ port: 9, target: target.address, proxyProtocol: false }]),
    socketDir,
    audit,
  });

describe('socket directory', () => {
  it('refuses an existing directory other users can enter, and leaves its mode alone', async () => {
    const shared = `${dir.path}/shared`;
    await mkdir(shared);
    await chmod(shared, 0o755);
    await expect(start(shared)).rejects.toMatchObject({ kind: 'invalid', code: 'mediation.socket_dir', message: expect.stringMatching(/not a private directory.*mode 755/) });
  });

  it('accepts an existing private directory', async () => {
    const own = `${dir.path}/own`;
    await mkdir(own, { mode: 0o700 });
    const broker = await start(own);
    await broker.close();
  });

  it('refuses a directory too long for Unix socket paths', async () => {
    await expect(start(`${dir.path}/${'d'.repeat(100)}`)).rejects.toMatchObject({ code: 'mediation.socket_dir' });
  });
});

describe('identity', () => {
  it('refuses an empty workspace name or a runtime id too long for the PROXY header', async () => {
    const channels = validateChannels([{ port: 9, target: target.address }]);
    const socketDir = `${dir.path}/s`;
    await expect(startBroker({ workspace: '', runtimeId: 'rt', channels, socketDir, audit })).rejects.toMatchObject({ kind: 'invalid', message: expect.stringMatching(/workspace must be 1 to 1024 bytes, got 0/) });
    await expect(startBroker({ workspace: 'w', runtimeId: 'r'.repeat(2000), channels, socketDir, audit })).rejects.toMatchObject({ message: expect.stringMatching(/runtimeId/) });
  });
});

describe('socket files', () => {
  it('replaces a stale socket nothing answers on', async () => {
    const sockets = `${dir.path}/s`;
    await mkdir(sockets, { mode: 0o700 });
    // A broker that was killed: its socket file stays behind with nothing listening.
    const killed = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(`${sockets}/9.sock`)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(killed.signal).toBe('SIGKILL');
    expect((await lstat(`${sockets}/9.sock`)).isSocket()).toBe(true);
    const second = await start(sockets);
    const guest = await guestConnect(second.socketPathFor(9));
    const outcome = collect(guest);
    guest.end('alive');
    expect((await outcome).data.toString()).toBe('alive');
    await second.close();
    expect((await readRecords(`${dir.path}/audit.jsonl`)).map((r) => r.event)).toEqual(['mediation.connect', 'mediation.close']);
  });

  it('refuses to take over a socket another broker still serves', async () => {
    const sockets = `${dir.path}/s`;
    const first = await start(sockets);
    await expect(start(sockets)).rejects.toMatchObject({ kind: 'conflict', code: 'mediation.socket_in_use' });
    // The first broker is untouched.
    const guest = await guestConnect(first.socketPathFor(9));
    const outcome = collect(guest);
    guest.end('still mine');
    expect((await outcome).data.toString()).toBe('still mine');
    await first.close();
  });

  it('refuses to replace a file that is not a socket', async () => {
    const sockets = `${dir.path}/s`;
    await mkdir(sockets, { mode: 0o700 });
    await writeFile(`${sockets}/9.sock`, 'precious');
    await expect(start(sockets)).rejects.toMatchObject({ kind: 'conflict', code: 'mediation.socket_path' });
  });
});
