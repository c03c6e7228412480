// Operational logs (src/log.ts) in a real child process: records at or above MICROAGENT_LOG_LEVEL are
// pino JSON on stderr with their component; below it nothing is written and pino is never loaded.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const LOG_MODULE = new URL('../dist/log.js', import.meta.url).href;

function logInChild(level: string | undefined, body: string): { stderr: string; pinoLoaded: boolean } {
  const script = `
    import { createRequire } from 'node:module';
    const { childLog } = await import(${JSON.stringify(LOG_MODULE)});
    const log = childLog('probe');
    ${body}
    const cache = createRequire(${JSON.stringify(LOG_MODULE)}).cache;
    process.stdout.write(String(Object.keys(cache).some((k) => k.includes('/node_modules/pino/'))));
  `;
  const env = { ...process.env };
  delete env['MICROAGENT_LOG_LEVEL'];
  if (level !== undefined) env['MICROAGENT_LOG_LEVEL'] = level;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return { stderr: r.stderr, pinoLoaded: r.stdout === 'true' };
}

describe('operational logs', () => {
  it('below the level (default warn) writes nothing and never loads pino', () => {
    const r = logInChild(undefined, `log.debug({ a: 1 }, 'quiet'); log.info('quiet too');`);
    expect(r.stderr).toBe('');
    expect(r.pinoLoaded).toBe(false);
  });

  it('at or above the level writes pino JSON with the component, object fields and message', () => {
    const r = logInChild('info', `log.debug('not this'); log.info({ path: '/x' }, 'opened'); log.error('failed');`);
    const lines = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      expect.objectContaining({ level: 30, component: 'probe', path: '/x', msg: 'opened' }),
      expect.objectContaining({ level: 50, component: 'probe', msg: 'failed' }),
    ]);
    expect(r.pinoLoaded).toBe(true);
  });

  it('an unknown level is named on stderr and logging stays at warn', () => {
    const r = logInChild('loud', `log.info('hidden'); log.warn('shown');`);
    const [notice, ...records] = r.stderr.trim().split('\n');
    expect(notice).toContain('ignoring MICROAGENT_LOG_LEVEL=loud');
    expect(records.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['shown']);
  });
});
