// Hot reload against real files: a valid edit swaps the policy, an invalid one keeps the old policy and
// is reported, an editor-style rename is picked up, and a save without changes does nothing.
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MicroagentError } from '../../src/errors.js';
import { decide, watchPolicy, type Policy, type PolicyWatch } from '../../src/policy/index.js';

const v1 = 'version: 1\nmode: strict\nrules:\n  - {id: one, action: allow, hosts: [one.example]}\n';
const v2 = 'version: 1\nmode: strict\nrules:\n  - {id: two, action: allow, hosts: [two.example]}\n';

let dir: string;
let file: string;
let watcher: PolicyWatch | null = null;
const reloads: Policy[] = [];
const invalids: MicroagentError[] = [];

/** Resolves once `predicate` holds, checking on every event loop turn (no fixed sleeps). */
async function until(predicate: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Replaces the file in one step, so the watcher can never read it half-written. */
async function replaceFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

const allows = (policy: Policy, host: string) => decide(policy, { protocol: 'https', host, port: 443 }).verdict === 'allow';

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'microagent-policy-watch-'));
  file = join(dir, 'policy.yaml');
  await writeFile(file, v1);
  reloads.length = 0;
  invalids.length = 0;
  watcher = watchPolicy(file, { onReload: (p) => reloads.push(p), onInvalid: (e) => invalids.push(e) }, 20);
});

afterEach(async () => {
  watcher?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('watchPolicy', () => {
  it('starts with the file as it is', () => {
    expect(allows(watcher!.current(), 'one.example')).toBe(true);
  });

  it('swaps in a valid edit', async () => {
    const before = watcher!.current().hash;
    await writeFile(file, v2);
    await until(() => reloads.length === 1, 'reload');
    const now = watcher!.current();
    expect(now).toBe(reloads[0]);
    expect(now.hash).not.toBe(before);
    expect(allows(now, 'two.example')).toBe(true);
    expect(allows(now, 'one.example')).toBe(false);
  });

  it('keeps the old policy and reports an invalid edit with its position', async () => {
    const before = watcher!.current();
    await replaceFile(file, v1.replace('allow', 'alow'));
    await until(() => invalids.length === 1, 'invalid report');
    expect(invalids[0]).toMatchObject({ kind: 'invalid', code: 'policy.invalid' });
    expect(invalids[0]?.message).toContain(`${file}:4:23: action must be one of`);
    expect(watcher!.current()).toBe(before);
    // Fixing the file afterwards is picked up.
    await replaceFile(file, v2);
    await until(() => reloads.length === 1, 'reload after fix');
    expect(allows(watcher!.current(), 'two.example')).toBe(true);
  });

  it('follows an editor-style replace by rename', async () => {
    const tmp = join(dir, '.policy.yaml.swp');
    await writeFile(tmp, v2);
    await rename(tmp, file);
    await until(() => reloads.length === 1, 'reload after rename');
    expect(allows(watcher!.current(), 'two.example')).toBe(true);
  });

  it('ignores a save that does not change the content', async () => {
    await replaceFile(file, v1);
    await replaceFile(file, v2); // a real change afterwards proves events are flowing
    await until(() => reloads.length >= 1, 'reload');
    expect(reloads).toHaveLength(1);
    expect(invalids).toHaveLength(0);
  });

  it('reports a deleted file once, keeps the policy in force, and reloads the file when it is back', async () => {
    const before = watcher!.current();
    await rm(file);
    await until(() => invalids.length === 1, 'the missing file reported');
    expect(invalids[0]).toMatchObject({ kind: 'not_found', code: 'policy.file_missing', message: `policy file ${file} is gone; the policy loaded before stays in force` });
    await writeFile(join(dir, 'other.yaml'), v2); // another event in the directory: no second report
    await new Promise((r) => setTimeout(r, 100));
    expect(invalids).toHaveLength(1);
    expect(watcher!.current()).toBe(before);
    await replaceFile(file, v2);
    await until(() => reloads.length === 1, 'reload when the file is back');
    expect(allows(watcher!.current(), 'two.example')).toBe(true);
  });

  it('throws when the initial file is invalid', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'version: 1\nrulez: []\n');
    expect(() => watchPolicy(bad, { onReload: () => {}, onInvalid: () => {} })).toThrow(/bad\.yaml:2:1: unknown key "rulez"/);
  });
});
