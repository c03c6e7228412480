/**
 * Which kernel modules the guest needs, in load order, computed from a kernel's modules.dep and
 * modules.builtin, and whether their signatures must be kept. Pure: text and bytes in, answers out.
 * It never includes a module the guest does not need, and fails when a required driver is neither
 * built in nor available as a module.
 */
import { MicroagentError } from '../errors.js';

/** Drivers the guest cannot boot without (virtio-mmio transport, root disk, agent channel). */
export const REQUIRED_MODULES = ['virtio_mmio', 'virtio_blk', 'virtio_console', 'ext4'] as const;
/** Drivers used when present: network, entropy, and vsock for hosts with vhost-vsock. */
export const OPTIONAL_MODULES = ['virtio_net', 'virtio_rng', 'vsock', 'vmw_vsock_virtio_transport'] as const;

/** `kernel/drivers/char/hw_random/virtio-rng.ko.xz` -> `virtio_rng` (modprobe treats - and _ alike). */
export function moduleName(path: string): string {
  const file = path.slice(path.lastIndexOf('/') + 1);
  return file.replace(/\.ko(\.(xz|zst|gz))?$/, '').replaceAll('-', '_');
}

export function resolveModules(modulesDep: string, modulesBuiltin: string): string[] {
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of modulesDep.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    deps.set(moduleName(path), { path, deps: rest ? rest.split(/\s+/) : [] });
  }
  const builtin = new Set(modulesBuiltin.split('\n').filter(Boolean).map(moduleName));
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name) || builtin.has(name)) return;
    seen.add(name);
    const entry = deps.get(name);
    if (entry === undefined) return;
    for (const d of entry.deps) visit(moduleName(d));
    order.push(entry.path);
  };
  for (const name of REQUIRED_MODULES) {
    if (!builtin.has(name) && !deps.has(name)) {
      throw new MicroagentError('unsupported', `the kernel has no ${name} driver (neither built in nor a module)`, {
        code: 'vm.kernel_unsuitable',
        remediation: 'Use a kernel with virtio-mmio, virtio-blk, virtio-console and ext4, e.g. Debian linux-image-cloud-amd64.',
      });
    }
    visit(name);
  }
  for (const name of OPTIONAL_MODULES) visit(name);
  return order;
}

/** What the kernel's sign-file appends to a signed module (include/linux/module_signature.h). */
const SIGNATURE_MARKER = Buffer.from('~Module signature appended~\n');
/** struct module_signature before the marker: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len. */
const SIGNATURE_INFO_BYTES = 12;

/** A kernel module without its appended signature; anything else unchanged. */
export function withoutSignature(module: Buffer): Buffer {
  const infoEnd = module.length - SIGNATURE_MARKER.length;
  if (infoEnd < SIGNATURE_INFO_BYTES || !module.subarray(infoEnd).equals(SIGNATURE_MARKER)) return module;
  const end = infoEnd - SIGNATURE_INFO_BYTES - module.readUInt32BE(infoEnd - 4);
  return end > 0 ? module.subarray(0, end) : module;
}

/**
 * Whether a kernel refuses modules without a valid signature, from its build config (null: none
 * shipped). Only a config showing neither forced signatures nor forced lockdown lets install strip
 * them; without a config they stay.
 */
export function moduleSignaturesEnforced(config: string | null): boolean {
  if (config === null) return true;
  return /^CONFIG_MODULE_SIG_FORCE=y$/m.test(config) || /^CONFIG_LOCK_DOWN_KERNEL_FORCE_(INTEGRITY|CONFIDENTIALITY)=y$/m.test(config);
}
