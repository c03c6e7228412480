/**
 * QEMU command line for a microagent microVM (machine `microvm`), as a pure function of the boot
 * spec and the run directory's socket paths. It never adds a device the spec did not ask for: no
 * NIC in isolated mode, and restrict=on whenever egress is mediated.
 */
import { relative } from 'node:path';
import { MicroagentError } from '../errors.js';
import { GUEST_NET, type BootSpec, type NetworkConfig, type PublishedPort } from './backend.js';

export interface RunPaths {
  readonly agentSocket: string;
  readonly qmpSocket: string;
  readonly serialLog: string;
}

/** QEMU splits option values on commas; a literal comma is written twice. */
function optValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/** What socat's address syntax and libslirp's shell-like split both pass through as they are. */
const PLAIN_PATH = /^[A-Za-z0-9._/-]+$/;

/**
 * A guest forward to a Unix socket, through one socat per connection. The command runs in QEMU's
 * working directory, which qemu.ts sets to the run directory: the socket is named relative to it,
 * because socat cannot carry a comma, a colon or a quote in an address, and the state directory's
 * path may hold any of them.
 */
function forwardToSocket(port: number, socketPath: string, cwd: string): string {
  const name = relative(cwd, socketPath);
  if (!PLAIN_PATH.test(name)) {
    throw new MicroagentError('internal', `the forwarded socket ${socketPath} has no plain path from ${cwd}`, {
      code: 'vm.socket_path',
      remediation: 'This is a bug in microagent: the supervisor keeps its sockets in the run directory.',
    });
  }
  return `guestfwd=tcp:${GUEST_NET.servicesIp}:${port}-cmd:socat STDIO UNIX-CONNECT:${name}`;
}

function checkPort(p: number, what: string): void {
  if (!Number.isInteger(p) || p < 1 || p > 65535) {
    throw new MicroagentError('invalid', `${what} port ${p} is not a TCP port`, {
      remediation: 'Use -p HOST:GUEST with ports between 1 and 65535.',
    });
  }
}

function hostForward(p: PublishedPort): string {
  checkPort(p.hostPort, 'host');
  checkPort(p.guestPort, 'guest');
  return `hostfwd=tcp:${p.hostAddress ?? '127.0.0.1'}:${p.hostPort}-:${p.guestPort}`;
}

/** CIDs 0-2 are reserved (hypervisor, local, host). */
function vsockCid(cid: number): number {
  if (!Number.isInteger(cid) || cid < 3 || cid > 0xffff_fffe) {
    throw new MicroagentError('invalid', `vsock guest CID ${cid} is out of range`, {
      remediation: 'Use a CID of 3 or more, unique among the running guests.',
    });
  }
  return cid;
}

/** `cwd`: QEMU's working directory (the run directory), which the forwarded sockets are named from. */
export function netdevArgs(network: NetworkConfig, cwd: string): string[] {
  switch (network.mode) {
    case 'isolated':
      return [];
    case 'user':
    case 'off': {
      const parts = ['user', 'id=net0', 'ipv6=off'];
      if (network.mode === 'user') parts.push('restrict=on');
      if (network.proxySocket !== undefined) parts.push(forwardToSocket(GUEST_NET.proxyPort, network.proxySocket, cwd));
      if (network.dnsSocket !== undefined) parts.push(forwardToSocket(GUEST_NET.dnsPort, network.dnsSocket, cwd));
      for (const p of network.publish ?? []) parts.push(hostForward(p));
      return ['-netdev', parts.map(optValue).join(','), '-device', 'virtio-net-device,netdev=net0'];
    }
    default: {
      const never: never = network;
      throw new Error(`unknown network mode ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Kernel command line. Why each word:
 * - earlyprintk=ttyS0: the serial log shows boot errors before the 8250 driver takes over.
 * - panic=-1 + reboot=t: a panic or the agent's halt resets the machine, and QEMU (-no-reboot) exits.
 * - tsc_early_khz (TCG only): under TCG the guest reads the host TSC; PIT calibration fails on a busy
 *   host and leaves the guest on jiffies, making boots ten times slower.
 * - nolapic_timer (TCG, kernels booted without ACPI): TCG's CPUs have no TSC-deadline timer, so the
 *   kernel calibrates its local APIC timer against the tick, polling with interrupts off: 0.2 s of
 *   every TCG boot. The PIT serves as the tick instead. Under KVM the TSC-deadline timer needs no
 *   calibration. Only for the machine without ACPI (the built kernel, kernel-build.ts): on microvm's
 *   ACPI machine Debian's cloud kernel lost its timers with it (sleeps and timeouts never ended).
 * - mitigations=off: the guest kernel's own speculation mitigations (PTI) cost heavily under TCG and
 *   protect nothing on the host side; all guest processes belong to the same workspace.
 * - pci=off, i8042.*: microvm has neither; probing them only wastes boot time.
 * - cryptomgr.notests: the kernel's self-tests of its own crypto code took 0.3-0.6 s of each TCG boot;
 *   they check the guest kernel against itself and guard nothing on the host side of the boundary.
 * - init_on_alloc=0 apparmor=0 audit=0: page zeroing on every allocation, an LSM nobody loads profiles
 *   into and the kernel's own audit netlink cost ~10% of a TCG boot; like the mitigations, they only
 *   separate guest processes from each other. The sandbox boundary is the VM and the mediator.
 * - initcall_blacklist: tracefs's kprobe-events, function-graph and trace files (nothing in the guest
 *   traces its kernel) and the SP800-108 KDF's self-test (cryptomgr.notests skips the others) took
 *   100-130 ms of each TCG boot between them (initcall_debug).
 */
export function kernelCommandLine(spec: BootSpec, host: HostFacts): string {
  return [
    'console=ttyS0', 'earlyprintk=ttyS0', 'quiet', 'panic=-1', 'reboot=t', 'mitigations=off',
    'tsc=reliable', 'no_timer_check', 'pci=off', 'i8042.noaux', 'i8042.nomux', 'i8042.nopnp', 'i8042.dumbkbd',
    'rcupdate.rcu_expedited=1', 'cryptomgr.notests', 'init_on_alloc=0', 'apparmor=0', 'audit=0',
    'initcall_blacklist=init_kprobe_trace,init_trace_printk_function_export,stack_trace_init,init_graph_tracefs,crypto_kdf108_init',
    ...(spec.accelerator === 'tcg' && host.tscKhz !== undefined ? [`tsc_early_khz=${host.tscKhz}`] : []),
    ...(spec.accelerator === 'tcg' && spec.virtioDiscovery === 'cmdline' ? ['nolapic_timer'] : []),
    'microagent.root=/dev/vda',
    ...(spec.kernelArgs ?? []),
  ].join(' ');
}

export interface HostFacts {
  /** Host TSC frequency, which TCG guests see. */
  readonly tscKhz?: number;
}

/**
 * The microvm machine. acpi=off only for a kernel that finds its devices on the command line
 * (kernel.ts, virtioDiscovery): QEMU then appends their `virtio_mmio.device=` words itself, and the
 * guest skips ACPI's table parsing, which a TCG boot pays for instruction by instruction.
 */
function machine(spec: BootSpec): string {
  return `microvm,x-option-roms=off,rtc=on${spec.virtioDiscovery === 'cmdline' ? ',acpi=off' : ''}`;
}

export function buildQemuArgs(spec: BootSpec, paths: RunPaths, host: HostFacts = {}): string[] {
  return [
    '-M', machine(spec),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    ...(spec.accelerator === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
    '-m', String(spec.memoryMiB),
    '-smp', String(spec.cpus),
    '-kernel', spec.kernelPath,
    '-initrd', spec.initramfsPath,
    '-append', kernelCommandLine(spec, host),
    '-chardev', `file,id=console,path=${optValue(paths.serialLog)}`,
    '-serial', 'chardev:console',
    '-drive', `id=root,file=${optValue(spec.rootfsPath)},format=raw,if=none${spec.rootfsWritesTo === undefined ? '' : ',snapshot=on'}`,
    '-device', 'virtio-blk-device,drive=root',
    '-device', 'virtio-rng-device',
    '-chardev', `socket,id=agent,path=${optValue(paths.agentSocket)},server=on,wait=off`,
    // One port (the agent's) needs max_ports=2 (port 0 is the console's). The default, 31, had the
    // guest set up 64 virtqueues at boot: the virtio-serial probe took ~47 ms under TCG, ~21 ms now.
    '-device', 'virtio-serial-device,max_ports=2',
    '-device', 'virtserialport,name=microagent.agent,chardev=agent',
    '-qmp', `unix:${optValue(paths.qmpSocket)},server=on,wait=off`,
    // vCPUs held until the boot's check passes (QMP `cont`).
    ...(spec.beforeGuestRuns !== undefined ? ['-S'] : []),
    ...netdevArgs(spec.network, spec.runDir),
    ...(spec.vsockCid !== undefined ? ['-device', `vhost-vsock-device,guest-cid=${vsockCid(spec.vsockCid)}`] : []),
  ];
}
