/**
 * Size profiles for workspaces: memory and vCPUs by name. Data only; the supervisor picks one.
 */
import { MicroagentError } from '../errors.js';

export const PROFILES = {
  tiny: { memoryMiB: 256, cpus: 1 },
  small: { memoryMiB: 512, cpus: 1 },
  medium: { memoryMiB: 1024, cpus: 2 },
  large: { memoryMiB: 2048, cpus: 4 },
} as const satisfies Record<string, { memoryMiB: number; cpus: number }>;

export type ProfileName = keyof typeof PROFILES;

export function profile(name: string): { memoryMiB: number; cpus: number } {
  if (!Object.hasOwn(PROFILES, name)) {
    throw new MicroagentError('invalid', `unknown size profile "${name}"`, {
      code: 'vm.profile',
      remediation: `Use one of: ${Object.keys(PROFILES).join(', ')}.`,
    });
  }
  return PROFILES[name as ProfileName];
}
