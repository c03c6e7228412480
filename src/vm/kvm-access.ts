/**
 * Whether this user may open /dev/kvm. Its own module because every verb that boots a guest asks it
 * before anything else: it must not load the QEMU code on the CLI's way to spawning the supervisor.
 */
import { accessSync, constants, existsSync } from 'node:fs';

export const KVM_DEVICE = '/dev/kvm';

/**
 * Why this user cannot use KVM on a host that has it, and the fix; null when /dev/kvm is absent or
 * usable. Distributions give /dev/kvm to the kvm group: a user outside it would silently get TCG,
 * several times slower, so `run` and `start` say so too.
 */
export function kvmAccessProblem(): { reason: string; advice: string } | null {
  if (!existsSync(KVM_DEVICE)) return null;
  try {
    accessSync(KVM_DEVICE, constants.R_OK | constants.W_OK);
    return null;
  } catch {
    return {
      reason: `${KVM_DEVICE} is not readable and writable by this user (uid ${process.getuid?.()})`,
      advice: `Give this user access to ${KVM_DEVICE}: \`sudo usermod -aG kvm $USER\`, then log in again.`,
    };
  }
}
