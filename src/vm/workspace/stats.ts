/**
 * `microagent stats NAME`: what a running workspace uses, host side and guest side. The host side is
 * read from /proc (QEMU) and the supervisor's own counters (egress proxy, mediation broker); the
 * guest side from the guest's /proc through the agent. Parsing is here, pure; reading is the
 * supervisor's.
 */
import type { BrokerStats } from '../../mediation/broker.js';
import type { ProxyStats } from '../../proxy/server.js';

export interface ProcessUsage {
  readonly pid: number;
  /** User and system CPU time since the process started. */
  readonly cpuSeconds: number;
  readonly rssMiB: number;
}

export interface GuestUsage {
  readonly load: readonly [number, number, number];
  readonly uptimeSeconds: number;
  readonly memoryTotalMiB: number;
  readonly memoryAvailableMiB: number;
}

export interface WorkspaceStats {
  readonly name: string;
  readonly state: string;
  readonly vm: ProcessUsage | null;
  readonly supervisor: ProcessUsage;
  /** Null when the workspace has no egress proxy (`--network isolated`, `--egress off`) or it was severed. */
  readonly egress: ProxyStats | null;
  readonly mediation: BrokerStats | null;
  /** Null when the guest could not be asked (its image has no `cat`), with the reason in `guestError`. */
  readonly guest: GuestUsage | null;
  readonly guestError?: string;
}

/** A process's usage from its /proc/PID/stat and /proc/PID/status texts; `ticksPerSecond` is CLK_TCK (100 on Linux). */
export function processUsage(pid: number, stat: string, status: string, ticksPerSecond = 100): ProcessUsage {
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime: fields 14 and 15 of the whole line
  const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
  return { pid, cpuSeconds: round(ticks / ticksPerSecond, 2), rssMiB: round(rssKiB / 1024, 1) };
}

/** The guest's /proc/loadavg, /proc/uptime and /proc/meminfo, as `cat` prints them one after the other. */
export function guestUsage(text: string): GuestUsage {
  const lines = text.split('\n');
  const load = (lines[0] ?? '').split(' ').slice(0, 3).map(Number);
  const uptime = Number((lines[1] ?? '').split(' ')[0]);
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1] ?? NaN);
  const usage = {
    load: [load[0], load[1], load[2]] as [number, number, number],
    uptimeSeconds: Math.round(uptime),
    memoryTotalMiB: round(kib('MemTotal') / 1024, 1),
    memoryAvailableMiB: round(kib('MemAvailable') / 1024, 1),
  };
  if ([...usage.load, usage.uptimeSeconds, usage.memoryTotalMiB, usage.memoryAvailableMiB].some((n) => !Number.isFinite(n))) {
    throw new Error(`unexpected /proc contents from the guest: ${JSON.stringify(text.slice(0, 200))}`);
  }
  return usage;
}

/** The files `guestUsage` reads, in its order. */
export const GUEST_USAGE_FILES = ['/proc/loadavg', '/proc/uptime', '/proc/meminfo'] as const;

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
