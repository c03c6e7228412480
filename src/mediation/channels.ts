/**
 * Mediation channel declarations: what a workspace says about its guest->host channels, validated
 * into the normalised `MediationChannel` the broker runs. Pure: no sockets, no files. Validation is
 * strict (unknown keys are refused) and reports every problem at once, each naming the channel and
 * field, so a misspelt `failClosed` can never silently fall back to a default.
 */
import { MicroagentError } from '../errors.js';
import { formatTarget, parseTarget, type MediationTarget } from './target.js';

export interface ChannelLimits {
  /** Live guest connections on this channel; the next one is closed at once (never queued). */
  readonly maxConnections: number;
  /** Bytes relayed per connection, both directions together; past it the connection is closed. */
  readonly maxBytesPerConnection: number;
  /** A connection with no byte in either direction for this long is closed. */
  readonly idleTimeoutMs: number;
  /** How long one dial of the target may take before the target counts as unreachable. */
  readonly connectTimeoutMs: number;
}

/** The declaration as written in a workspace config (or built from the CLI form `N=TARGET`). */
export interface ChannelDeclaration {
  readonly port: number;
  readonly target: string;
  readonly required?: boolean;
  readonly failClosed?: boolean;
  readonly proxyProtocol?: boolean;
  readonly limits?: Partial<ChannelLimits>;
}

/** A validated channel with every default applied. */
export interface MediationChannel {
  /** The guest-side channel (vsock) port. */
  readonly port: number;
  readonly target: MediationTarget;
  /** `formatTarget(target)`, computed once for audit records. */
  readonly targetText: string;
  /** The workspace does not start while this channel's target is unreachable. */
  readonly required: boolean;
  /** Target unreachable: close the guest connection at once. Off: retry the dial until connectTimeoutMs. */
  readonly failClosed: boolean;
  /** Start each target connection with a PROXY protocol v2 header (docs/mediation.md). */
  readonly proxyProtocol: boolean;
  readonly limits: ChannelLimits;
}

export const DEFAULT_LIMITS: ChannelLimits = {
  maxConnections: 32,
  maxBytesPerConnection: 1024 ** 3,
  idleTimeoutMs: 5 * 60_000,
  connectTimeoutMs: 2_000,
};

/** Inclusive bounds per limit; outside them a value is a typo or a way to turn the limit off. */
const LIMIT_BOUNDS: { readonly [K in keyof ChannelLimits]: readonly [number, number] } = {
  maxConnections: [1, 4096],
  maxBytesPerConnection: [1, Number.MAX_SAFE_INTEGER],
  idleTimeoutMs: [100, 24 * 3_600_000],
  connectTimeoutMs: [10, 60_000],
};

/** vsock ports are 32-bit. */
export const MAX_CHANNEL_PORT = 2 ** 32 - 1;

const DECLARATION_KEYS = new Set(['port', 'target', 'required', 'failClosed', 'proxyProtocol', 'limits']);
const REMEDIATION =
  'declare each channel as {port, target, required?, failClosed?, proxyProtocol?, limits?} (docs/mediation.md), ' +
  'or on the command line as PORT=HOST:PORT, PORT=[IPV6]:PORT or PORT=/abs/path.sock';

/**
 * Parses the CLI form `N=TARGET` (one string per channel) and validates the result like a config.
 * `proxyProtocol` applies to every channel parsed here (the CLI's `--no-proxy-protocol`).
 */
export function parseChannelDeclarations(
  specs: readonly string[],
  options: { readonly proxyProtocol?: boolean } = {},
): MediationChannel[] {
  const problems: string[] = [];
  const declarations: ChannelDeclaration[] = [];
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const portText = eq < 0 ? '' : spec.slice(0, eq);
    // No leading zeros, as target ports refuse them: 05000 is not read as 5000 on one side only.
    if (eq < 0 || !/^(?:0|[1-9]\d*)$/.test(portText)) {
      problems.push(`mediation channel "${spec}": expected PORT=TARGET, e.g. 5000=127.0.0.1:8080`);
      continue;
    }
    const declaration: ChannelDeclaration = { port: Number(portText), target: spec.slice(eq + 1) };
    declarations.push(options.proxyProtocol === undefined ? declaration : { ...declaration, proxyProtocol: options.proxyProtocol });
  }
  if (problems.length > 0) throw invalid(problems);
  return validateChannels(declarations);
}

/** Validates declarations from any source (parsed YAML/JSON is `unknown`) into channels. */
export function validateChannels(input: unknown): MediationChannel[] {
  if (!Array.isArray(input)) throw invalid(['mediation channels: expected a list of channel declarations']);
  const problems: string[] = [];
  const channels: MediationChannel[] = [];
  const seenPorts = new Map<number, number>();
  input.forEach((raw: unknown, index) => {
    const channel = validateOne(raw, index, problems);
    // A port declared twice is a problem of its own, whether or not an entry has others.
    const port = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>)['port'] : undefined;
    if (isChannelPort(port)) {
      const earlier = seenPorts.get(port);
      if (earlier !== undefined) {
        problems.push(`mediation channel ${port}: field port: declared twice (entries ${earlier + 1} and ${index + 1})`);
        return;
      }
      seenPorts.set(port, index);
    }
    if (channel !== null) channels.push(channel);
  });
  if (problems.length > 0) throw invalid(problems);
  return channels;
}

function validateOne(raw: unknown, index: number, problems: string[]): MediationChannel | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push(`mediation channel #${index + 1}: expected an object with port and target`);
    return null;
  }
  const record = raw as Record<string, unknown>;
  const portValue = record['port'];
  const name = isChannelPort(portValue) ? `mediation channel ${portValue}` : `mediation channel #${index + 1}`;
  const before = problems.length;
  const problem = (field: string, what: string) => problems.push(`${name}: field ${field}: ${what}`);

  for (const key of Object.keys(record)) {
    if (!DECLARATION_KEYS.has(key)) problem(key, 'unknown field');
  }
  if (!isChannelPort(portValue)) problem('port', `must be an integer from 1 to ${MAX_CHANNEL_PORT} (a vsock port), got ${show(portValue)}`);

  let target: MediationTarget | null = null;
  const targetValue = record['target'];
  if (typeof targetValue !== 'string') {
    problem('target', `must be HOST:PORT, [IPV6]:PORT or an absolute Unix socket path, got ${show(targetValue)}`);
  } else {
    const parsed = parseTarget(targetValue);
    if (parsed.ok) target = parsed.target;
    else problem('target', parsed.problem);
  }

  const flag = (field: string): boolean => {
    const value = record[field];
    if (value === undefined) return true;
    if (typeof value === 'boolean') return value;
    problem(field, `must be true or false, got ${show(value)}`);
    return true;
  };
  const required = flag('required');
  const failClosed = flag('failClosed');
  const proxyProtocol = flag('proxyProtocol');
  if (required && !failClosed) {
    problem('failClosed', 'a required channel must fail closed; set failClosed: true or required: false');
  }
  const limits = validateLimits(record['limits'], problem);

  if (problems.length > before || target === null || !isChannelPort(portValue)) return null;
  return { port: portValue, target, targetText: formatTarget(target), required, failClosed, proxyProtocol, limits };
}

function validateLimits(value: unknown, problem: (field: string, what: string) => void): ChannelLimits {
  if (value === undefined) return DEFAULT_LIMITS;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problem('limits', `must be an object, got ${show(value)}`);
    return DEFAULT_LIMITS;
  }
  const limits: { -readonly [K in keyof ChannelLimits]: number } = { ...DEFAULT_LIMITS };
  for (const [key, raw] of Object.entries(value as Record<string, unknown>)) {
    if (!isLimitName(key)) {
      problem(`limits.${key}`, `unknown limit; the limits are ${Object.keys(LIMIT_BOUNDS).join(', ')}`);
      continue;
    }
    const [min, max] = LIMIT_BOUNDS[key];
    if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < min || raw > max) {
      problem(`limits.${key}`, `must be an integer from ${min} to ${max}, got ${show(raw)}`);
    } else {
      limits[key] = raw;
    }
  }
  return limits;
}

function isLimitName(key: string): key is keyof ChannelLimits {
  return Object.hasOwn(LIMIT_BOUNDS, key);
}

function isChannelPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= MAX_CHANNEL_PORT;
}

function show(value: unknown): string {
  return value === undefined ? 'nothing' : JSON.stringify(value);
}

function invalid(problems: readonly string[]): MicroagentError {
  const message = problems.length === 1 ? (problems[0] as string) : `invalid mediation channels:\n  ${problems.join('\n  ')}`;
  return new MicroagentError('invalid', message, { code: 'mediation.invalid', remediation: REMEDIATION });
}
