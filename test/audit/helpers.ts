/** Shared helpers for the audit tests: temp dirs, sample events, line surgery on real log files, the CLI. */
import { spawn, spawnSync } from 'node:child_process';
import fs, { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { vi } from 'vitest';
import { openAuditLog, type AuditLogOptions } from '../../src/audit/index.js';
import { canonicalLine, encodeEventBody, encodeWorkspacePrefix, hashCanonical, sealLine } from '../../src/audit/encode.js';
import type { AuditEvent, AuditRecord, EgressDecisionEvent } from '../../src/audit/record.js';

export const CLI = resolve(import.meta.dirname, '../../dist/cli/main.js');

export function tempDir(prefix = 'audit-'): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

const HOSTS = ['api.github.com', 'pypi.org', 'evil.example', '169.254.169.254', 'registry.npmjs.org'];

/** A realistic decision; `i` varies host, verdict and rule so queries have something to find. */
export function decision(i: number, extra: Partial<EgressDecisionEvent> = {}): EgressDecisionEvent {
  const host = HOSTS[i % HOSTS.length] as string;
  const denied = host === 'evil.example' || host.startsWith('169.');
  return {
    event: 'egress.decision',
    conn: `c${i}`,
    protocol: 'https',
    host,
    port: 443,
    decrypted: !denied,
    verdict: denied ? 'deny' : 'allow',
    rule: denied ? (host === 'evil.example' ? 'block-evil' : null) : 'allow-dev',
    reason: denied ? (host === 'evil.example' ? 'rule_deny' : 'internal_address') : 'rule_allow',
    signals: denied && host.startsWith('169.') ? ['internal_address'] : [],
    mode: 'guarded',
    policy_hash: 'sha256:' + 'ab'.repeat(32),
    ...extra,
  };
}

/** Writes `count` decisions through the real writer and closes the log. */
export async function writeLog(options: Omit<AuditLogOptions, 'workspace'> & { workspace?: string }, count: number): Promise<void> {
  const log = await openAuditLog({ workspace: 'ws-audit', ...options });
  await Promise.all(Array.from({ length: count }, (_, i) => log.append(decision(i))));
  await log.close();
}

export function readLines(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

export function writeLines(file: string, lines: readonly string[]): void {
  writeFileSync(file, lines.map((l) => l + '\n').join(''));
}

export function parse(line: string): AuditRecord {
  return JSON.parse(line) as AuditRecord;
}

/** What a forger who knows the format (but not the key) can build: a record with a valid own hash. */
export function forgeLine(seq: number, prev: string, ts: string, event: AuditEvent, workspace = 'ws-audit'): string {
  const canonical = canonicalLine(seq, ts, encodeWorkspacePrefix(workspace), encodeEventBody(event), prev);
  return sealLine(canonical, hashCanonical(canonical)).trimEnd();
}

/** Re-chains every line from `from` on, as a forger rewriting the rest of the file would. */
export function rechain(lines: string[], from: number): string[] {
  const out = [...lines];
  for (let i = from; i < out.length; i++) {
    const r = parse(out[i] as string) as unknown as Record<string, unknown>;
    const prev = i === 0 ? '0'.repeat(64) : parse(out[i - 1] as string).hash;
    const event = { ...r } as Record<string, unknown>;
    for (const k of ['v', 'seq', 'ts', 'workspace', 'workspace_id', 'runtime_id', 'prev', 'hash']) delete event[k];
    if (event['event'] === 'audit.checkpoint') Object.assign(event, { upto_seq: i, upto_hash: prev });
    out[i] = forgeLine(i + 1, prev, r['ts'] as string, event as unknown as AuditEvent, r['workspace'] as string);
  }
  return out;
}

export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function cli(args: readonly string[]): CliRun {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" before the audit CLI tests`);
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function cliProcess(args: readonly string[]) {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" before the audit CLI tests`);
  return spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Polls `check` until it holds (no fixed sleeps: the machine is shared and slow). */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Holds every fdatasync in this process until `release()`, which runs the real ones: the state a
 * slow disk leaves the audit writer in, on demand. The writer imports fdatasync by name, so the spy
 * goes on node's fs object and is pushed to the ESM binding. Call `restore()` in a finally.
 */
export function holdSyncs(): { held(): number; release(): void; restore(): void } {
  const held: (() => void)[] = [];
  const real = fs.fdatasync;
  const spy = vi.spyOn(fs, 'fdatasync').mockImplementation(((fd: number, cb: (err: Error | null) => void) => {
    held.push(() => real(fd, cb));
  }) as typeof fs.fdatasync);
  syncBuiltinESMExports();
  return {
    held: () => held.length,
    release: () => held.splice(0).forEach((run) => run()),
    restore: () => {
      spy.mockRestore();
      syncBuiltinESMExports();
    },
  };
}
