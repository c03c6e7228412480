// State directories made by hand for workspace tests that need no VM: temporary folders removed after
// each test, and a workspace with a minimal manifest in a given state.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { WorkspaceState } from '../../src/vm/workspace/lifecycle.js';
import { createWorkspaceDir, writeManifest, type WorkspaceConfig } from '../../src/vm/workspace/store.js';

/** Returns a maker of temporary state directories, each removed after the test that made it. */
export function tempStateDirs(prefix: string): () => string {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
}

/** Creates workspace `name` in `state`: an isolated, tiny workspace whose image runs `true`. */
export async function writeTestWorkspace(stateDir: string, name: string, state: WorkspaceState, config: Partial<WorkspaceConfig> = {}): Promise<void> {
  await createWorkspaceDir(stateDir, name);
  await writeManifest(stateDir, {
    name,
    id: '00000000-0000-4000-8000-000000000001',
    createdAt: new Date().toISOString(),
    state,
    config: {
      image: 'test', imageDigest: 'sha256:0', run: { argv: ['true'], env: [], cwd: '/', uid: 0, gid: 0 }, env: [], network: 'isolated',
      egress: 'guarded', policySource: null, publish: [], mediation: [], memoryMiB: 128, cpus: 1, dnsUpstreams: [], upstreamCa: [],
      ...config,
    },
  });
}
