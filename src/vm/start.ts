/**
 * The one call a supervisor makes to get a running workspace guest: build (or reuse) the initramfs,
 * pick the accelerator by a real probe, boot through a backend, and verify the installed kernel
 * while QEMU starts with the guest held. Also builds the standard guest configuration (CA trust,
 * proxy environment, DNS relay). It never runs an unverified kernel and never guesses KVM.
 */
import type { Accelerator, BootSpec, NetworkConfig, RunningVm, VmBackend } from './backend.js';
import { GUEST_NET } from './backend.js';
import { probeAccelerator } from './accel.js';
import { buildInitramfs } from './initramfs.js';
import { readKernel, verifyKernel, type InstalledKernel } from './kernel.js';
import type { MediationOptions } from './mediation-tunnel.js';
import { profile, type ProfileName } from './profiles.js';
import type { GuestConfig } from './protocol.js';
import { qemuBackend } from './qemu.js';

export interface BootAssets {
  readonly kernel: InstalledKernel;
  readonly initramfsPath: string;
}

/**
 * The installed kernel + an initramfs for it (built once, then cached under `<stateDir>/initramfs`).
 * The kernel is not verified here: bootVm does that while QEMU starts.
 */
export async function prepareBootAssets(stateDir: string, kernelVersion?: string): Promise<BootAssets> {
  const kernel = readKernel(stateDir, kernelVersion);
  return { kernel, initramfsPath: await buildInitramfs(stateDir, kernel) };
}

export interface BootVmOptions {
  /** microagent state directory: kernels, initramfs and agent caches, accelerator probe. */
  readonly stateDir: string;
  readonly rootfsPath: string;
  /** See BootSpec.rootfsWritesTo: the guest's writes go to a deleted temporary file in this directory. */
  readonly rootfsWritesTo?: string;
  /** Per-VM directory for sockets and logs; keep it short (Unix socket paths max 107 bytes). */
  readonly runDir: string;
  readonly profile?: ProfileName;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  readonly network: NetworkConfig;
  readonly mediation?: MediationOptions;
  readonly serialLog?: string;
  /** 'auto' (default) runs the cached KVM probe. */
  readonly accelerator?: Accelerator | 'auto';
  readonly kernelVersion?: string;
  /** Assets prepared ahead (the supervisor reads them while its workspace is still being created). */
  readonly assets?: Promise<BootAssets>;
  readonly backend?: VmBackend;
}

export async function bootVm(options: BootVmOptions): Promise<RunningVm> {
  const assets = await (options.assets ?? prepareBootAssets(options.stateDir, options.kernelVersion));
  const size = profile(options.profile ?? 'small');
  let verified = false;
  const verify = () => {
    if (!verified) verifyKernel(assets.kernel);
    verified = true;
  };
  const accelerator =
    options.accelerator === undefined || options.accelerator === 'auto'
      ? (await probeAccelerator({ stateDir: options.stateDir, kernelPath: assets.kernel.image, initramfsPath: assets.initramfsPath, beforeBoot: verify })).accelerator
      : options.accelerator;
  const spec: BootSpec = {
    kernelPath: assets.kernel.image,
    virtioDiscovery: assets.kernel.virtioDiscovery,
    initramfsPath: assets.initramfsPath,
    rootfsPath: options.rootfsPath,
    ...(options.rootfsWritesTo === undefined ? {} : { rootfsWritesTo: options.rootfsWritesTo }),
    memoryMiB: options.memoryMiB ?? size.memoryMiB,
    cpus: options.cpus ?? size.cpus,
    network: options.network,
    runDir: options.runDir,
    accelerator,
    beforeGuestRuns: verify,
    ...(options.mediation ? { mediation: options.mediation } : {}),
    ...(options.serialLog ? { serialLog: options.serialLog } : {}),
  };
  return (options.backend ?? qemuBackend).boot(spec);
}

export const GUEST_CA_PATH = '/etc/ssl/certs/microagent-ca.pem';
export const GUEST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export interface StandardConfigOptions {
  readonly caPem?: string;
  readonly hostname?: string;
  readonly network: NetworkConfig;
  readonly mediationPorts?: readonly number[];
  /** Extra environment for every command; wins over the standard variables. */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * What the supervisor sends with `agent.configure()`: CA trust for every common runtime, proxy
 * variables pointing at the forwarded proxy address, and the DNS relay upstream.
 */
export function standardGuestConfig(options: StandardConfigOptions): GuestConfig {
  const env: Record<string, string> = {};
  if (options.caPem !== undefined) {
    for (const k of ['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE']) env[k] = GUEST_CA_BUNDLE;
    env['NODE_EXTRA_CA_CERTS'] = GUEST_CA_PATH;
  }
  const net = options.network;
  if (net.mode !== 'isolated' && net.proxySocket !== undefined) {
    const proxy = `http://${GUEST_NET.servicesIp}:${GUEST_NET.proxyPort}`;
    for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) env[k] = proxy;
    env['NO_PROXY'] = env['no_proxy'] = 'localhost,127.0.0.1,::1';
    // Node's fetch and http ignore the variables above unless told (node 24 and later): agents built on node would otherwise dial direct, and get nothing.
    env['NODE_USE_ENV_PROXY'] = '1';
  }
  const dnsUpstream =
    net.mode === 'isolated' ? undefined
      : net.dnsSocket !== undefined ? `${GUEST_NET.servicesIp}:${GUEST_NET.dnsPort}`
        : net.mode === 'off' ? '10.0.2.3:53' : undefined;
  return {
    env: { ...env, ...options.env },
    ...(options.caPem !== undefined ? { caPem: options.caPem } : {}),
    ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
    ...(options.mediationPorts ? { mediationPorts: options.mediationPorts } : {}),
    ...(dnsUpstream !== undefined ? { dnsUpstream } : {}),
  };
}
