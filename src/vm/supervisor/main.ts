/**
 * The supervisor process entry: `node dist/vm/supervisor/main.js STATE_DIR NAME`, spawned detached by
 * `microagent start`. Its stdout/stderr go to the workspace's supervisor.log.
 */
import { superviseWorkspace } from './supervisor.js';

const [stateDir, name] = process.argv.slice(2);
if (stateDir === undefined || name === undefined) {
  process.stderr.write('usage: main.js STATE_DIR NAME (started by "microagent start", not by hand)\n');
  process.exit(2);
}
await superviseWorkspace(stateDir, name);
