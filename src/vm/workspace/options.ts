/**
 * Parsing of the workspace flags shared by `run`, `create` and `exec`: resource profiles, published
 * ports, environment assignments.
 * Pure; every bad value is a typed error naming the flag and the accepted form.
 */
import { isIP } from 'node:net';
import { totalmem } from 'node:os';
import { MicroagentError } from '../../errors.js';
import { parseChannelDeclarations } from '../../mediation/channels.js';
import { parseUpstream } from '../../proxy/dns/upstream-address.js';
import { parseRegistryHost } from '../rootfs/reference.js';

export const PROFILES = {
  tiny: { memoryMiB: 128, cpus: 1 },
  small: { memoryMiB: 256, cpus: 1 },
  medium: { memoryMiB: 512, cpus: 2 },
  large: { memoryMiB: 1024, cpus: 2 },
} as const;
export type Profile = keyof typeof PROFILES;

function invalid(flag: string, value: string, form: string): MicroagentError {
  return new MicroagentError('invalid', `${flag} ${JSON.stringify(value)} is not valid`, { code: 'usage', remediation: `use ${form}` });
}

export function parseProfile(value: string): Profile {
  if (value in PROFILES) return value as Profile;
  throw invalid('--profile', value, Object.keys(PROFILES).join(', '));
}

function port(flag: string, raw: string, value: string, form: string): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > 65535) throw invalid(flag, value, form);
  return n;
}

/** `-p [HOST_IP:]HOST_PORT:GUEST_PORT`; the host side defaults to loopback. */
export function parsePublish(value: string): { hostIp: string; hostPort: number; guestPort: number } {
  const form = '-p [HOST_IP:]HOST_PORT:GUEST_PORT, e.g. -p 8080:80 or -p 127.0.0.1:8080:80';
  const parts = value.split(':');
  if (parts.length !== 2 && parts.length !== 3) throw invalid('-p', value, form);
  const hostIp = parts.length === 3 ? (parts[0] as string) : '127.0.0.1';
  if (isIP(hostIp) !== 4) throw invalid('-p', value, form);
  return {
    hostIp,
    hostPort: port('-p', parts[parts.length - 2] as string, value, form),
    guestPort: port('-p', parts[parts.length - 1] as string, value, form),
  };
}

/** `--memory 512`, `512M`, `1G` -> MiB; at most `hostMiB` (this host's memory: QEMU could not back more). */
export function parseMemory(value: string, hostMiB = Math.floor(totalmem() / 2 ** 20)): number {
  const m = /^(\d+)([MG]i?B?)?$/i.exec(value);
  if (m === null) throw invalid('--memory', value, 'a size in MiB such as 512, 512M or 1G');
  const n = Number(m[1]) * (m[2]?.toUpperCase().startsWith('G') ? 1024 : 1);
  if (n < 64) throw invalid('--memory', value, 'at least 64M');
  if (n > hostMiB) throw invalid('--memory', value, `at most this host's memory, ${hostMiB}M`);
  return n;
}

/** `--disk 2G`, `512M`, `2048` -> MiB: the size a workspace's own disk is grown to. */
export function parseDiskSize(value: string): number {
  const m = /^(\d+)([MGT]i?B?)?$/i.exec(value);
  if (m === null) throw invalid('--disk', value, 'a size in MiB such as 2048, 512M or 4G');
  const unit = m[2]?.toUpperCase().charAt(0);
  const n = Number(m[1]) * (unit === 'T' ? 1024 * 1024 : unit === 'G' ? 1024 : 1);
  if (n < 64) throw invalid('--disk', value, 'at least 64M');
  return n;
}

/** `-e KEY=VALUE` entries, checked where the library takes them: a name, then `=`, then any value. */
export function checkEnv(entries: readonly string[]): void {
  for (const entry of entries) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(entry)) throw invalid('-e', entry, 'KEY=VALUE with a name of letters, digits and _, e.g. -e DEBUG=1');
  }
}

/** The workspace flags given as text, checked together: by createWorkspace, and by `run` before it spawns anything. */
export function parseWorkspaceFlags(flags: {
  readonly env?: readonly string[];
  readonly publish?: readonly string[];
  readonly mediation?: readonly string[];
  readonly dnsUpstreams?: readonly string[];
  readonly insecureRegistries?: readonly string[];
  readonly network?: string;
}) {
  checkEnv(flags.env ?? []);
  const insecureRegistries = (flags.insecureRegistries ?? []).map(parseRegistryHost);
  // Upstreams are kept as given; a bad one fails here, not when the workspace's resolver starts.
  for (const upstream of flags.dnsUpstreams ?? []) parseUpstream(upstream);
  const channels = parseChannelDeclarations(flags.mediation ?? []);
  // Without a vhost-vsock bridge the guest reaches a channel at 127.0.0.1:PORT (docs/guest.md), so a
  // vsock port past the TCP range would be declared and never reachable.
  const beyond = channels.find((c) => c.port > 65535);
  if (beyond !== undefined) {
    throw new MicroagentError('invalid', `mediation channel ${beyond.port}: a workspace's guest reaches channels at 127.0.0.1:PORT, so the port must be at most 65535`, {
      code: 'usage',
      remediation: 'use --mediation PORT=TARGET with a PORT from 1 to 65535',
    });
  }
  const publish = (flags.publish ?? []).map(parsePublish);
  if (flags.network === 'isolated' && publish.length > 0) {
    throw new MicroagentError('invalid', '-p publishes a guest port over the network device, and --network isolated gives the guest none', {
      code: 'usage',
      remediation: 'drop -p, or use --network user (the default)',
    });
  }
  // Caught here, not when the second listen fails after the VM was started for it.
  publish.forEach((p, i) => {
    const clash = publish.slice(0, i).find((q) => q.hostPort === p.hostPort && (q.hostIp === p.hostIp || q.hostIp === '0.0.0.0' || p.hostIp === '0.0.0.0'));
    if (clash !== undefined) {
      throw new MicroagentError('invalid', `-p ${p.hostIp}:${p.hostPort}:${p.guestPort} takes a host port that -p ${clash.hostIp}:${clash.hostPort}:${clash.guestPort} already takes`, {
        code: 'usage',
        remediation: 'give each -p its own HOST_PORT (several host ports may lead to one guest port)',
      });
    }
  });
  return { publish, channels, insecureRegistries };
}

/** The longest command timeout the guest agent keeps: its field is 32-bit milliseconds (~49 days). */
export const MAX_TIMEOUT_SECONDS = Math.floor(0xffffffff / 1000);

/** `--timeout SECONDS` as milliseconds: positive and at most MAX_TIMEOUT_SECONDS. */
export function parseTimeout(value: string): number {
  const seconds = Number(value);
  if (!(Number.isFinite(seconds) && seconds > 0 && seconds <= MAX_TIMEOUT_SECONDS)) {
    throw invalid('--timeout', value, `a number of seconds from 0.001 to ${MAX_TIMEOUT_SECONDS}, e.g. --timeout 60`);
  }
  return Math.ceil(seconds * 1000);
}

export function parseCpus(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw invalid('--cpus', value, 'a whole number from 1 to 64');
  return n;
}
