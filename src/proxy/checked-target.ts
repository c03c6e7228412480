/**
 * The only way to get something the proxy may dial: `checkAddresses` decides every resolved (or
 * literal) IP of a destination and, when all are allowed, mints a branded `CheckedTarget` for the first.
 * The dialers (upstream.ts, tunnel.ts) accept nothing else and assert the brand at run time too, so a
 * guest-supplied name or address can never reach `net.connect` unchecked, and no second lookup happens.
 */
import { decide, type Decision, type Policy } from '../policy/index.js';
import type { Destination } from './destination.js';

declare const checkedBrand: unique symbol;

export interface CheckedTarget {
  /** The exact address that was decided on; the dialer connects here and nowhere else. */
  readonly ip: string;
  readonly port: number;
  /** Name for upstream TLS verification and SNI; null for an IP-literal destination. */
  readonly servername: string | null;
  /** Cache key for keep-alive agents and HTTP/2 sessions: one pool per checked target. */
  readonly key: string;
  readonly [checkedBrand]: true;
}

const minted = new WeakSet<object>();

export function isCheckedTarget(value: unknown): value is CheckedTarget {
  return typeof value === 'object' && value !== null && minted.has(value);
}

/** Throws if `value` was not minted by `checkAddresses`: a bug, never a guest-triggerable path. */
export function assertCheckedTarget(value: CheckedTarget): void {
  if (!minted.has(value)) throw new Error('refusing to dial an address that was not checked by the policy');
}

export type AddressCheck =
  | { readonly kind: 'allowed'; readonly target: CheckedTarget; readonly decision: Decision }
  | { readonly kind: 'denied'; readonly ip: string; readonly decision: Decision };

/**
 * Decides every address and allows only if all are allowed: a name answering with one public and one
 * internal address is denied (and flagged as possible rebinding), so which address a retry picks
 * can never matter.
 */
export function checkAddresses(
  policy: Policy,
  protocol: 'http' | 'https' | 'tcp',
  destination: Destination,
  ips: readonly string[],
): AddressCheck {
  let first: { ip: string; decision: Decision } | null = null;
  let denied: { ip: string; decision: Decision } | null = null;
  for (const ip of ips) {
    const input =
      destination.kind === 'name'
        ? { protocol, host: destination.host, ip, port: destination.port }
        : { protocol, ip, port: destination.port };
    const decision = decide(policy, input);
    if (decision.verdict === 'deny') {
      denied ??= { ip, decision };
    } else {
      first ??= { ip, decision };
    }
  }
  if (denied !== null) {
    const mixed = first !== null && denied.decision.signals.includes('internal_address');
    const decision: Decision = mixed && !denied.decision.signals.includes('rebinding')
      ? { ...denied.decision, signals: [...denied.decision.signals, 'rebinding'] }
      : denied.decision;
    return { kind: 'denied', ip: denied.ip, decision };
  }
  if (first === null) throw new Error('checkAddresses needs at least one address');
  const servername = destination.kind === 'name' ? destination.host : null;
  const target = {
    ip: first.ip,
    port: destination.port,
    servername,
    key: `${first.ip}|${destination.port}|${servername ?? ''}`,
  } as CheckedTarget;
  minted.add(target);
  return { kind: 'allowed', target: Object.freeze(target), decision: first.decision };
}
