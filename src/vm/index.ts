/**
 * Public API of the microVM layer (docs/guest.md): kernel install, initramfs and agent build,
 * accelerator probe, booting a guest and talking to its agent. Re-exports only.
 */
export { installKernel, loadKernel, KERNEL_META_PACKAGE, type InstalledKernel, type InstallOptions } from './kernel.js';
export { buildKernel, isCurrentBuild, type BuildOptions } from './kernel-build.js';
export { buildGuestAgent } from './agent-build.js';
export { buildInitramfs, encodeCpio, type CpioEntry } from './initramfs.js';
export { probeAccelerator, type AccelProbe, type ProbeOptions } from './accel.js';
export {
  bootVm, prepareBootAssets, standardGuestConfig, GUEST_CA_PATH, GUEST_CA_BUNDLE,
  type BootVmOptions, type BootAssets, type StandardConfigOptions,
} from './start.js';
export { qemuBackend, requireQemu, nextVmState, type VmVerb } from './qemu.js';
export { PROFILES, profile, type ProfileName } from './profiles.js';
export { AgentClient, type ExecHandle, type ExecOutput } from './agent-client.js';
export type { MediationOptions } from './mediation-tunnel.js';
export {
  GUEST_NET, type Accelerator, type BootSpec, type NetworkConfig, type PublishedPort, type RunningVm,
  type VmBackend, type VmExit, type VmState,
} from './backend.js';
export type { ExecRequest, ExitStatus, GuestConfig, Hello } from './protocol.js';
export { runDoctor, type DoctorCheck, type DoctorReport } from './doctor.js';
