/**
 * The policy engine's public data types: what callers pass to `decide` and what they get back.
 * Pure data; the engine (compile.ts, decide.ts) never touches sockets or files beyond loading.
 */
import type { Reason, Signal } from './reasons.js';

/** guarded: intercept, apply rules, allow unlisted public; strict: default deny; off: no mediation. */
export type Mode = 'guarded' | 'strict' | 'off';
export const MODES: readonly Mode[] = ['guarded', 'strict', 'off'];

export type Protocol = 'http' | 'https' | 'tcp' | 'dns';
export type Action = 'allow' | 'deny' | 'passthrough' | 'inject';

/**
 * One question to the policy. Two stages share this shape:
 * - connection stage (no `method`, no `path`): a CONNECT, a plain TCP flow or a DNS name. Rules with
 *   method/path conditions whose other conditions match make the connection `allow` with
 *   `requestCheck: true` (each request inside is then decided on its own); deny rules with method/path
 *   conditions never deny a whole connection.
 * - request stage (`method` and `path` set): a decrypted or plain HTTP request.
 * `host` may be given raw: decide() normalises it. `ip` is the address that would be dialled (a
 * literal, or one the caller resolved); when present the internal-address rules apply to it.
 */
export interface DecisionInput {
  readonly protocol: Protocol;
  readonly host?: string;
  readonly ip?: string;
  readonly port?: number;
  readonly method?: string;
  readonly path?: string;
}

/** allow and deny are enforced; would_deny is a deny that report-only mode let through. */
export type Verdict = 'allow' | 'deny' | 'would_deny';

/** A header an inject rule adds on the host side. `secrets` names the `${secret:NAME}` references. */
export interface HeaderInjection {
  readonly header: string;
  readonly template: string;
  readonly secrets: readonly string[];
}

export interface Decision {
  readonly verdict: Verdict;
  /** What the enforcer must do: deny, allow (intercept where TLS), passthrough (splice), inject. */
  readonly action: Action;
  /** The id of the rule that decided, or null for a mode default or an address rule. */
  readonly rule: string | null;
  readonly reason: Reason;
  readonly signals: readonly Signal[];
  /** Every rule id that matched, in file order (for `policy explain`). */
  readonly matched: readonly string[];
  readonly mode: Mode;
  /** Canonical hash of the policy that decided: `sha256:<hex>`. */
  readonly policyHash: string;
  readonly inject: readonly HeaderInjection[];
  /** Connection stage only: the requests inside must each be decided too (path/method rules). */
  readonly requestCheck: boolean;
  /** The destination port is a TLS port (443, or a port a matching rule marks `tls: true`). */
  readonly tls: boolean;
}

/** Where a rule came from, for errors, lint warnings and `policy explain`. */
export interface SourcePosition {
  readonly file: string;
  readonly line: number;
  readonly column: number;
}
