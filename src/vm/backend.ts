/**
 * The microVM backend contract: what a supervisor asks of a hypervisor (boot a guest from a kernel,
 * an initramfs and a root disk; pause, resume, stop) independent of QEMU or Firecracker. Types only;
 * implementations live in qemu.ts (and later firecracker.ts). Nothing here may spawn a process.
 */
import type { AgentClient } from './agent-client.js';
import type { MediationOptions } from './mediation-tunnel.js';
import type { VirtioDiscovery } from './kernel.js';

/** Fixed guest addresses of QEMU user networking as microagent lays it out (docs/guest.md). */
export const GUEST_NET = {
  guestIp: '10.0.2.15',
  gateway: '10.0.2.2',
  /** Where the guest reaches the workspace egress proxy (HTTP CONNECT / plain HTTP). */
  servicesIp: '10.0.2.100',
  proxyPort: 3128,
  dnsPort: 53,
} as const;

export interface PublishedPort {
  readonly hostPort: number;
  readonly guestPort: number;
  /** Host address to bind; loopback unless the user asked otherwise. */
  readonly hostAddress?: string;
}

export type NetworkConfig =
  /** No network device at all. */
  | { readonly mode: 'isolated' }
  /** QEMU user networking with restrict=on: the guest reaches only the proxy and DNS sockets. */
  | {
      readonly mode: 'user';
      readonly proxySocket: string;
      readonly dnsSocket: string;
      readonly publish?: readonly PublishedPort[];
    }
  /** Egress mediation off: plain user NAT without restrict; only when explicitly asked. */
  | {
      readonly mode: 'off';
      readonly proxySocket?: string;
      readonly dnsSocket?: string;
      readonly publish?: readonly PublishedPort[];
    };

export type Accelerator = 'kvm' | 'tcg';

export interface BootSpec {
  readonly kernelPath: string;
  /** From the kernel's manifest: 'cmdline' boots microvm without ACPI (kernel.ts). Default 'acpi'. */
  readonly virtioDiscovery?: VirtioDiscovery;
  readonly initramfsPath: string;
  /** ext4 image the guest mounts as / (read-write). */
  readonly rootfsPath: string;
  /**
   * When set, `rootfsPath` is opened read-only and the guest's writes go to a temporary file in this
   * directory, which QEMU deletes as soon as it has opened it (`snapshot=on`): nothing of them
   * outlives the VM. `run` boots the cached image this way instead of copying it for each run.
   */
  readonly rootfsWritesTo?: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly network: NetworkConfig;
  readonly mediation?: MediationOptions;
  /** Directory for this VM's sockets and logs (short path: Unix socket paths are limited to 107 bytes). */
  readonly runDir: string;
  /** Serial console log; defaults to `<runDir>/serial.log`. */
  readonly serialLog?: string;
  readonly accelerator: Accelerator;
  /**
   * Guest CID for a vhost-vsock device (hosts with /dev/vhost-vsock only). Adds the device; the
   * host-side vsock bridge is not implemented yet, the mediation tunnel is (docs/guest.md).
   */
  readonly vsockCid?: number;
  /** Extra kernel command line words. */
  readonly kernelArgs?: readonly string[];
  /**
   * A check the guest must wait for (the kernel's hash): the backend starts the VM with its vCPUs
   * held, runs this while the VM initialises, and lets the guest run only once it returns. A throw
   * kills the VM before its first instruction.
   */
  readonly beforeGuestRuns?: () => void;
}

export type VmState = 'running' | 'paused' | 'stopped';

export interface VmExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface RunningVm {
  readonly pid: number;
  readonly accelerator: Accelerator;
  readonly runDir: string;
  readonly serialLog: string;
  /** The guest agent channel; call `agent.ready()` before anything else. */
  readonly agent: AgentClient;
  readonly state: VmState;
  /** Resolves when the hypervisor process ended, for whatever reason. */
  readonly exited: Promise<VmExit>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** QEMU's own run state (`running`, `paused`, ...), from QMP query-status. */
  status(): Promise<string>;
  /** Clean shutdown through the guest agent (sync, unmount, power off); kills after `timeoutMs`. */
  halt(timeoutMs?: number): Promise<VmExit>;
  /**
   * The graceful stop signal (`stop`): the guest SIGTERMs every process and powers off once none is
   * left. Returns at once and never escalates: watch `exited`.
   */
  requestStop(): Promise<void>;
  /** Immediate stop (QMP quit, then SIGKILL). */
  kill(): Promise<VmExit>;
  /** Quarantine: removes every published-port forward, so nothing on the host reaches the guest any more. */
  closePublishedPorts(): Promise<void>;
}

export interface VmBackend {
  readonly name: string;
  boot(spec: BootSpec): Promise<RunningVm>;
}
