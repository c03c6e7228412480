/**
 * The supervisor process entry: `node dist/supervisor/main.js STATE_DIR [PENDING_LOG]` (this module
 * bundled, see package.json "build"), spawned detached by src/vm/workspace/supervisor-process.ts; its
 * stdout/stderr go to the workspace's supervisor.log. The launch line (JSON: the workspace's name and whether to probe its shell) arrives
 * on stdin, so the boot assets below (kernel manifest, initramfs) are ready while the caller is still creating the workspace. No line
 * (the caller gave up): exit, removing the pending log the caller made for it.
 */
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
const line = await firstLine(process.stdin);
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

/** The first line on `input`, or null if it ends without one; stops reading either way. */
function firstLine(input: NodeJS.ReadStream): Promise<string | null> {
  return new Promise((resolve) => {
    let text = '';
    const finish = (line: string | null) => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.destroy();
      resolve(line);
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const end = text.indexOf('\n');
      if (end >= 0) finish(text.slice(0, end));
    };
    const onEnd = () => finish(null);
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('error', onEnd);
  });
}
