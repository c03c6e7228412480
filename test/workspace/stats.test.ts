/** Parsing what `stats` reads: a process's /proc/PID/stat and status, and the guest's /proc files. */
import { describe, expect, it } from 'vitest';
import { guestUsage, processUsage } from '../../src/vm/workspace/stats.js';

describe('processUsage', () => {
  it('counts fields after the last ")", so a command name with spaces and parentheses cannot shift them', () => {
    // Fields 14 and 15 (utime, stime) are 250 and 50 ticks: 3 s at CLK_TCK 100.
    const stat = '4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 123456789 30000';
    expect(processUsage(4242, stat, 'Name:\tqemu\nVmRSS:\t  118784 kB\nThreads:\t4\n')).toEqual({ pid: 4242, cpuSeconds: 3, rssMiB: 116 });
  });

  it('is NaN, not a guess, for a status without VmRSS (a zombie)', () => {
    expect(processUsage(1, '1 (z) Z 0 0 0 0 -1 0 0 0 0 0 1 1 0 0', 'Name:\tz\n').rssMiB).toBeNaN();
  });
});

describe('guestUsage', () => {
  const proc = ['0.52 0.21 0.08 1/63 211', '312.48 298.10', 'MemTotal:         246236 kB', 'MemFree:          200000 kB', 'MemAvailable:     224000 kB', 'Buffers:            1000 kB', ''].join('\n');

  it('reads load, uptime and memory from cat of /proc/loadavg, /proc/uptime and /proc/meminfo', () => {
    expect(guestUsage(proc)).toEqual({ load: [0.52, 0.21, 0.08], uptimeSeconds: 312, memoryTotalMiB: 240.5, memoryAvailableMiB: 218.8 });
  });

  it.each([
    ['empty output', ''],
    ['an error message', 'cat: /proc/meminfo: No such file or directory\n'],
    ['no MemAvailable (a kernel older than 3.14)', proc.replace(/^MemAvailable:.*$/m, '')],
  ])('refuses %s rather than report zeros', (_label, text) => {
    expect(() => guestUsage(text)).toThrow(/unexpected \/proc contents/);
  });
});
