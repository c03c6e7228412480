/**
 * The exfiltration guard: DNS is a covert channel (data encoded in query labels), so one workspace's
 * queries are held to limits on label and name length, query rate (a token bucket) and how many
 * distinct names it may ask for per second, overall and under one registered domain.
 * Pure state over an injectable clock; the server turns a trip into REFUSED + audit. It never
 * remembers more than the limits allow (the distinct-name sets are capped by the limits themselves).
 */

export interface ExfiltrationLimits {
  /** Longest label allowed (DNS allows 63; encoded payloads use the maximum). */
  readonly maxLabelLength: number;
  /** Longest name allowed, in characters without the trailing dot (DNS allows 253). */
  readonly maxNameLength: number;
  /** Sustained queries per second for the workspace. */
  readonly queriesPerSecond: number;
  /** Queries allowed in a burst above the sustained rate. */
  readonly burst: number;
  /** New distinct names per one-second window for the whole workspace. */
  readonly distinctNamesPerSecond: number;
  /** New distinct names per one-second window under one registered domain. */
  readonly distinctNamesPerDomainPerSecond: number;
}

export const DEFAULT_EXFILTRATION_LIMITS: ExfiltrationLimits = {
  maxLabelLength: 40,
  maxNameLength: 160,
  queriesPerSecond: 200,
  burst: 400,
  distinctNamesPerSecond: 100,
  distinctNamesPerDomainPerSecond: 30,
};

export type GuardTrip = 'label_length' | 'name_length' | 'query_rate' | 'distinct_names' | 'distinct_names_domain';

export interface ExfiltrationGuard {
  /**
   * Counts the query and returns null when it is within limits, or which limit it trips. Length
   * limits apply only when `checkLengths`: a name a rule allows is answered by its own domain's
   * servers, which carry nothing to whoever would collect it (S3 buckets and preview deployments
   * have labels up to 63 characters); the rate limits apply to every name.
   */
  admit(name: string, longestLabel: number, checkLengths: boolean): GuardTrip | null;
}

/** Second-level labels under country TLDs that act as public suffixes (co.uk, com.au, ...). */
const SECOND_LEVEL_SUFFIXES = new Set(['co', 'com', 'net', 'org', 'gov', 'ac', 'edu', 'ne', 'or', 'go']);

/**
 * The registrable domain, approximated without the Public Suffix List: the last two labels, or the
 * last three under a two-letter TLD with a common second-level suffix. Good enough to group
 * `<payload>.evil.example` under one key, which is all the guard needs.
 */
export function registeredDomain(name: string): string {
  const lastDot = name.lastIndexOf('.');
  if (lastDot === -1) return name;
  const secondDot = name.lastIndexOf('.', lastDot - 1);
  if (secondDot === -1) return name;
  const tldIsCountry = name.length - lastDot - 1 === 2;
  if (!tldIsCountry || !SECOND_LEVEL_SUFFIXES.has(name.slice(secondDot + 1, lastDot))) return name.slice(secondDot + 1);
  return name.slice(name.lastIndexOf('.', secondDot - 1) + 1);
}

export function createExfiltrationGuard(limits: ExfiltrationLimits, now: () => number = Date.now): ExfiltrationGuard {
  let tokens = limits.burst;
  let refilledAt = now();
  let windowStart = refilledAt;
  let namesInWindow = new Set<string>();
  let perDomainInWindow = new Map<string, number>();

  return {
    admit(name, longestLabel, checkLengths) {
      if (checkLengths && name.length > limits.maxNameLength) return 'name_length';
      if (checkLengths && longestLabel > limits.maxLabelLength) return 'label_length';

      const at = now();
      tokens = Math.min(limits.burst, tokens + ((at - refilledAt) / 1000) * limits.queriesPerSecond);
      refilledAt = at;
      if (tokens < 1) return 'query_rate';
      tokens -= 1;

      if (at - windowStart >= 1000) {
        windowStart = at;
        namesInWindow = new Set();
        perDomainInWindow = new Map();
      }
      if (namesInWindow.has(name)) return null;
      if (namesInWindow.size >= limits.distinctNamesPerSecond) return 'distinct_names';
      const domain = registeredDomain(name);
      const underDomain = perDomainInWindow.get(domain) ?? 0;
      if (underDomain >= limits.distinctNamesPerDomainPerSecond) return 'distinct_names_domain';
      namesInWindow.add(name);
      perDomainInWindow.set(domain, underDomain + 1);
      return null;
    },
  };
}
