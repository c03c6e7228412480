/**
 * The supervisor process entry: `node dist/supervisor/main.js STATE_DIR [PENDING_LOG]` (this module
 * bundled, see package.json "build"), spawned detached by src/vm/workspace/supervisor-process.ts; its
 * stdout/stderr go to the workspace's supervisor.log. The launch line (JSON: the workspace's name and whether to probe its shell) arrives
 * on stdin, so the boot assets below (kernel manifest, initramfs) are ready while the caller is still creating the workspace. No line
 * (the caller gave up): exit, removing the pending log the caller made for it.
 */
import { read } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { prepareBootAssets } from '../start.js';
import { superviseWorkspace, type LaunchRequest } from './supervisor.js';

const [stateDir, pendingLog] = process.argv.slice(2);
if (stateDir === undefined) {
  process.stderr.write('usage: main.js STATE_DIR [PENDING_LOG] (started by "microagent start" or "run", not by hand)\n');
  process.exit(2);
}
const bootAssets = prepareBootAssets(stateDir);
// Awaited inside the start, which records a failure (a missing kernel) as the workspace's start error.
bootAssets.catch(() => undefined);
const line = await firstLine(0);
if (line === null) {
  if (pendingLog !== undefined) await unlink(pendingLog).catch(() => undefined);
  process.exit(0);
}
await superviseWorkspace(stateDir, parseLaunch(line), bootAssets);

function parseLaunch(text: string): LaunchRequest {
  const launch = JSON.parse(text) as Partial<LaunchRequest>;
  if (typeof launch.name !== 'string' || typeof launch.shellProbe !== 'boolean') {
    process.stderr.write(`launch line not understood: ${text}\n`);
    process.exit(2);
  }
  return { name: launch.name, shellProbe: launch.shellProbe };
}

/**
 * The first line on file descriptor `fd`, or null if it ends (or fails) without one. Read with plain
 * blocking reads on the thread pool: creating process.stdin (a stream over the pipe) cost ~3 ms of this
 * process's way to QEMU's spawn, and nothing else is ever read from it.
 */
async function firstLine(fd: number): Promise<string | null> {
  const chunk = Buffer.alloc(4096);
  const parts: Buffer[] = [];
  for (;;) {
    const n = await new Promise<number>((resolve) => read(fd, chunk, 0, chunk.length, null, (err, bytes) => resolve(err === null ? bytes : 0)));
    if (n === 0) return null;
    const data = chunk.subarray(0, n);
    const end = data.indexOf(10);
    parts.push(Buffer.from(end < 0 ? data : data.subarray(0, end)));
    if (end >= 0) return Buffer.concat(parts).toString('utf8');
  }
}
