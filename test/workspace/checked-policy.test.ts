// A workspace's policy check (src/vm/workspace/checked-policy.ts): compiled the first time, remembered by
// the bytes' SHA-256 and microagent's version, never remembered when it fails.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/index.js';
import { checkPolicyFile } from '../../src/vm/workspace/checked-policy.js';

const GUARDED = 'version: 1\nmode: guarded\nrules:\n  - id: docs\n    action: allow\n    hosts: [docs.example.com]\n';
const STRICT = GUARDED.replace('mode: guarded', 'mode: strict');
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

let stateDir: string;
let file: string;
const entryFor = (text: string) => join(stateDir, 'policy-checks', `${createHash('sha256').update(text).digest('hex')}.json`);

beforeEach(() => {
  stateDir = mkdtempSync(join(tmpdir(), 'checked-policy-'));
  file = join(stateDir, 'policy.yaml');
  writeFileSync(file, GUARDED);
});

describe('checkPolicyFile', () => {
  it('compiles a policy the first time and remembers its mode and hash by its bytes', async () => {
    const checked = await checkPolicyFile(stateDir, file);
    const compiled = parsePolicy(GUARDED, file);
    expect(checked).toEqual({ text: Buffer.from(GUARDED), mode: 'guarded', hash: compiled.hash });
    expect(JSON.parse(readFileSync(entryFor(GUARDED), 'utf8'))).toEqual({ version: VERSION, mode: 'guarded', hash: compiled.hash });
  });

  it('answers a policy seen before from what it remembered, without compiling it', async () => {
    await checkPolicyFile(stateDir, file);
    // An entry that disagrees with the text shows which of the two answered.
    writeFileSync(entryFor(GUARDED), JSON.stringify({ version: VERSION, mode: 'strict', hash: 'remembered' }));
    expect(await checkPolicyFile(stateDir, file)).toMatchObject({ mode: 'strict', hash: 'remembered' });
  });

  it.each([
    ['another version', () => JSON.stringify({ version: `${VERSION}-other`, mode: 'strict', hash: 'stale' })],
    ['not JSON', () => '{"version": '],
    ['an unknown mode', () => JSON.stringify({ version: VERSION, mode: 'open', hash: 'x' })],
  ])('compiles again over a remembered entry from %s', async (_, entry) => {
    await checkPolicyFile(stateDir, file);
    writeFileSync(entryFor(GUARDED), entry());
    expect(await checkPolicyFile(stateDir, file)).toMatchObject({ mode: 'guarded', hash: parsePolicy(GUARDED, file).hash });
    expect(JSON.parse(readFileSync(entryFor(GUARDED), 'utf8'))).toMatchObject({ version: VERSION, mode: 'guarded' });
  });

  it('checks changed bytes afresh', async () => {
    await checkPolicyFile(stateDir, file);
    writeFileSync(file, STRICT);
    expect(await checkPolicyFile(stateDir, file)).toMatchObject({ text: Buffer.from(STRICT), mode: 'strict' });
    expect(readdirSync(join(stateDir, 'policy-checks'))).toHaveLength(2);
  });

  it('never remembers a policy that fails, so each create reports it', async () => {
    const broken = GUARDED.replace('action: allow', 'action: permit');
    writeFileSync(file, broken);
    for (let i = 0; i < 2; i++) {
      await expect(checkPolicyFile(stateDir, file)).rejects.toMatchObject({ kind: 'invalid', code: 'policy.invalid' });
    }
    expect(existsSync(entryFor(broken))).toBe(false);
  });

  it('reports a missing file with the loader\'s error', async () => {
    await expect(checkPolicyFile(stateDir, join(stateDir, 'absent.yaml'))).rejects.toMatchObject({ kind: 'not_found', code: 'policy.read' });
  });

  it('still answers when nothing can be remembered', async () => {
    writeFileSync(join(stateDir, 'policy-checks'), 'a file where the directory would go');
    expect(await checkPolicyFile(stateDir, file)).toMatchObject({ mode: 'guarded' });
  });
});
