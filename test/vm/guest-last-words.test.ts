// What a failed start reports when the VM exits before the agent is up: the agent's last console
// line (src/vm/supervisor/supervisor.ts, guestLastWords), read from the serial log's end.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { guestLastWords } from '../../src/vm/supervisor/supervisor.js';

const dir = mkdtempSync(join(tmpdir(), 'ma-last-words-'));
const log = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

describe('guestLastWords', () => {
  it('is the agent\'s last line, without its prefix, after kernel lines', () => {
    const path = log('serial.log', '[    0.000000] Linux version 6.1\nmicroagent-guest: loading virtio_blk\n[    1.2] reboot\nmicroagent-guest: root device /dev/vda did not appear; powering off\n[   11.4] reboot: Restarting system\n');
    expect(guestLastWords(path)).toBe('root device /dev/vda did not appear; powering off');
  });

  it('reads only the end of a long log', () => {
    const path = log('long.log', `microagent-guest: an old line\n${'x'.repeat(40_000)}\nmicroagent-guest: the last one\n`);
    expect(guestLastWords(path)).toBe('the last one');
    expect(guestLastWords(log('old.log', `microagent-guest: only early\n${'x'.repeat(40_000)}\n`))).toBeNull();
  });

  it('is null when the agent said nothing, or there is no log', () => {
    expect(guestLastWords(log('kernel-only.log', '[    0.000000] Linux version 6.1\nKernel panic - not syncing: VFS\n'))).toBeNull();
    expect(guestLastWords(join(dir, 'absent.log'))).toBeNull();
  });
});
