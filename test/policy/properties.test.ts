// Property tests: normalisation is idempotent and spelling-blind, CIDR membership is exact, the
// compiled matcher agrees with a naive scan of every rule, and no input makes the loader throw
// anything but a positioned policy.invalid error.
import { isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decide, isPolicyInvalidError, lintPolicy, normalizeHost, parseIpLiteral, parsePolicy, type DecisionInput, type HostPattern, type Policy } from '../../src/policy/index.js';

const label = fc.constantFrom('a', 'b', 'api', 'cdn', 'x-1', 'github', 'example', 'com', 'org', 'io');
const name = fc.array(label, { minLength: 1, maxLength: 5 }).map((ls) => ls.join('.'));
const spelling = fc.tuple(name, fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }), fc.boolean()).map(([n, upper, dot]) =>
  [...n].map((c, i) => (upper[i] ? c.toUpperCase() : c)).join('') + (dot ? '.' : ''),
);

describe('normalisation', () => {
  it('is idempotent on any string', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.domain(), spelling, fc.anything()), (raw) => {
        const once = normalizeHost(raw as string);
        if (once !== null) expect(normalizeHost(once)).toBe(once);
      }),
      { numRuns: 2000 },
    );
  });

  it('only ever returns lowercase ASCII without a trailing dot', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.domain(), fc.string({ unit: 'grapheme' })), (raw) => {
        const n = normalizeHost(raw);
        if (n !== null) expect(n).toMatch(/^[a-z0-9._:-]+$/);
        if (n !== null) expect(n.endsWith('.')).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('IPv4 and IPv6 text round-trips through the canonical form and agrees with node:net', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (ip) => {
        const canonical = parseIpLiteral(ip);
        expect(canonical).not.toBeNull();
        expect(parseIpLiteral(canonical as string)).toBe(canonical);
        expect(isIPv4(canonical as string) || isIPv6(canonical as string)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects the extended IPv4 forms node:net also rejects', () => {
    fc.assert(
      fc.property(fc.ipV4Extended(), (ip) => {
        if (!isIPv4(ip)) expect(parseIpLiteral(ip)).toBeNull();
      }),
    );
  });
});

const wildcardPolicy = parsePolicy(
  'version: 1\nmode: strict\nrules:\n  - {id: d, action: deny, hosts: [x-1.api.example.com]}\n  - {id: e, action: allow, hosts: [api.github.com, "*.cdn.io", .example.com, "a.*.org"]}\n',
  'p.yaml',
);

describe('decide never throws', () => {
  it('whatever a JavaScript caller passes, the answer is a decision', () => {
    const field = fc.oneof(fc.anything(), fc.string(), fc.constantFrom('https', 'dns', 'GET', '/', 'a.example', '127.1', '::1', 443));
    fc.assert(
      fc.property(fc.record({ protocol: field, host: field, ip: field, port: field, method: field, path: field }, { requiredKeys: [] }), (input) => {
        const d = decide(wildcardPolicy, input as unknown as DecisionInput);
        expect(['allow', 'deny', 'would_deny']).toContain(d.verdict);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('decisions are spelling-blind', () => {
  it('a host decides like its upper-case, trailing-dot variants', () => {
    fc.assert(
      fc.property(spelling, (raw) => {
        const canonical = normalizeHost(raw) as string;
        const a = decide(wildcardPolicy, { protocol: 'https', host: raw, port: 443 });
        const b = decide(wildcardPolicy, { protocol: 'https', host: canonical, port: 443 });
        expect(a).toEqual(b);
      }),
      { numRuns: 1000 },
    );
  });
});

const v4Text = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

describe('CIDR membership', () => {
  it('an IPv4 address inside a CIDR rule matches it, one outside does not', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 32 }), fc.nat({ max: 2 ** 32 - 1 }), (net, bits, probe) => {
        const mask = bits === 0 ? 0 : (2 ** 32 - 2 ** (32 - bits)) >>> 0;
        const network = (net & mask) >>> 0;
        const policy = parsePolicy(`version: 1\nmode: strict\nrules:\n  - {id: net, action: allow, cidrs: ["${v4Text(network)}/${bits}"]}\n`, 'c.yaml');
        const inside = ((probe & mask) >>> 0) === network;
        const d = decide(policy, { protocol: 'tcp', ip: v4Text(probe), port: 1 });
        expect(d.rule).toBe(inside ? 'net' : null);
        expect(d.verdict).toBe(inside ? 'allow' : 'deny');
      }),
      { numRuns: 1000 },
    );
  });

  it('an IPv6 address inside a CIDR rule matches it, one outside does not', () => {
    const bigint128 = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });
    const hex = (v: bigint) => v.toString(16).padStart(32, '0').match(/.{4}/g)!.join(':');
    fc.assert(
      fc.property(bigint128, fc.integer({ min: 0, max: 128 }), bigint128, fc.boolean(), (net, bits, probe, near) => {
        const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(128 - bits);
        const network = net & mask;
        // Half the probes share the prefix so "inside" is not vanishingly rare.
        const address = near ? network | (probe & ~mask & ((1n << 128n) - 1n)) : probe;
        const policy = parsePolicy(`version: 1\nmode: strict\nrules:\n  - {id: net, action: allow, cidrs: ["${hex(network)}/${bits}"]}\n`, 'c.yaml');
        const inside = (address & mask) === network;
        expect(decide(policy, { protocol: 'tcp', ip: hex(address), port: 1 }).rule).toBe(inside ? 'net' : null);
      }),
      { numRuns: 500 },
    );
  });
});

// The reference: every rule, in file order, tested the obvious way.
function naiveHost(p: HostPattern, host: string): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'exact':
      return host === p.name;
    case 'subdomains':
      return host.endsWith('.' + p.suffix);
    case 'apex':
      return host === p.suffix || host.endsWith('.' + p.suffix);
    case 'glob': {
      const ls = host.split('.');
      return ls.length === p.labels.length && p.labels.every((l, i) => l === null || l === ls[i]);
    }
  }
}

function naiveDecide(policy: Policy, host: string | undefined, ip: number | undefined, port: number) {
  const matched: string[] = [];
  for (const rule of policy.rules) {
    const byHost = host !== undefined && (rule.hosts ?? []).some((p) => naiveHost(p, host));
    const byCidr =
      ip !== undefined &&
      (rule.cidrs ?? []).some((c) => c.ip.family === 4 && (c.bits === 0 || ip >>> (32 - c.bits) === c.ip.v4 >>> (32 - c.bits)));
    const portOk = rule.ports === null || rule.ports.some(([lo, hi]) => port >= lo && port <= hi);
    if ((byHost || byCidr) && portOk) matched.push(rule.id);
  }
  const rules = new Map(policy.rules.map((r) => [r.id, r]));
  const deny = matched.find((id) => rules.get(id)?.action === 'deny');
  const allow = matched.find((id) => rules.get(id)?.action !== 'deny');
  return { matched, rule: deny ?? allow ?? null };
}

/** Rule and query generators over a given vocabulary: small vocabularies make overlaps common. */
function generators(nameGen: fc.Arbitrary<string>, labelGen: fc.Arbitrary<string>, v4Gen: fc.Arbitrary<number>, bitsGen: fc.Arbitrary<number>) {
  const hostPattern = fc.oneof(
    nameGen,
    nameGen.map((n) => `"*.${n}"`),
    nameGen.map((n) => `.${n}`),
    fc.tuple(labelGen, nameGen).map(([l, n]) => `"${l}.*.${n}"`),
    labelGen.map((l) => `"${l}.*"`),
  );
  const cidrText = fc.tuple(v4Gen, bitsGen).map(([ip, bits]) => {
    const mask = (2 ** 32 - 2 ** (32 - bits)) >>> 0;
    return `${v4Text((ip & mask) >>> 0)}/${bits}`;
  });
  const rule = fc.record({
    action: fc.constantFrom('allow', 'deny', 'passthrough'),
    hosts: fc.option(fc.array(hostPattern, { minLength: 1, maxLength: 3 }), { nil: undefined }),
    cidrs: fc.option(fc.array(cidrText, { minLength: 1, maxLength: 2 }), { nil: undefined }),
    ports: fc.option(fc.constantFrom('[443]', '[80, "8000-8100"]'), { nil: undefined }),
  });
  const queries = fc.array(fc.tuple(fc.option(nameGen, { nil: undefined }), fc.option(v4Gen, { nil: undefined }), fc.constantFrom(443, 80, 8050, 22)), { minLength: 1, maxLength: 20 });
  return { rule, queries };
}

// Public ranges only, so the internal-address rule never interferes with the comparison.
const publicV4 = fc.tuple(fc.integer({ min: 11, max: 99 }), fc.nat(255), fc.nat(255), fc.nat(255)).map(([a, b, c, d]) => ((a * 2 ** 24 + b * 65536 + c * 256 + d) >>> 0));
const wide = generators(name, label, publicV4, fc.integer({ min: 4, max: 32 }));
const tinyLabel = fc.constantFrom('a', 'b');
const narrow = generators(
  fc.array(tinyLabel, { minLength: 1, maxLength: 3 }).map((ls) => ls.join('.')),
  tinyLabel,
  fc.constantFrom(11 * 2 ** 24, 11 * 2 ** 24 + 65536, 12 * 2 ** 24 + 5),
  fc.constantFrom(8, 16, 32),
);


function randomPolicy(rules: { action: string; hosts: string[] | undefined; cidrs: string[] | undefined; ports: string | undefined }[]): Policy {
  const yaml = rules
    .map((r, i) => {
      const hosts = r.hosts ?? (r.cidrs === undefined ? ['"*"'] : undefined);
      return [
        `  - id: r${i}`,
        `    action: ${r.action}`,
        hosts === undefined ? '' : `    hosts: [${hosts.join(', ')}]`,
        r.cidrs === undefined ? '' : `    cidrs: [${r.cidrs.join(', ')}]`,
        r.ports === undefined ? '' : `    ports: ${r.ports}`,
      ].filter((l) => l !== '').join('\n');
    })
    .join('\n');
  return parsePolicy(`version: 1\nmode: strict\nrules:\n${yaml}\n`, 'random.yaml');
}


function inputOf(host: string | undefined, ip: number | undefined, port: number): DecisionInput {
  return { protocol: 'tcp', port, ...(host === undefined ? {} : { host }), ...(ip === undefined ? {} : { ip: v4Text(ip) }) };
}

describe('lint coverage is sound', () => {
  it('whenever a rule lint calls covered matches, the covering rule matches too', () => {
    let checked = 0;
    fc.assert(
      fc.property(fc.array(narrow.rule, { minLength: 2, maxLength: 8 }), narrow.queries, (rules, queries) => {
        const policy = randomPolicy(rules);
        const covered = lintPolicy(policy).filter((w) => w.kind === 'never_decides' || w.kind === 'shadowed_by_deny');
        for (const warning of covered) {
          const by = /rule (\S+) \(line/.exec(warning.message.replace(`rule ${warning.rule} `, ''))?.[1];
          expect(by).toBeDefined();
          for (const [host, ip, port] of queries) {
            if (host === undefined && ip === undefined) continue;
            const matched = decide(policy, inputOf(host, ip, port)).matched;
            if (!matched.includes(warning.rule)) continue;
            expect(matched).toContain(by);
            checked++;
          }
        }
      }),
      { numRuns: 300 },
    );
    // The property must actually have been exercised, not vacuously true.
    expect(checked).toBeGreaterThan(0);
  });
});

describe('request paths', () => {
  const segment = fc.stringMatching(/^[a-z0-9]{1,6}$/);
  it('dot segments and escaped unreserved characters cannot dodge a path deny', () => {
    const policy = parsePolicy('version: 1\nrules:\n  - {id: no-admin, action: deny, hosts: [a.example], paths: ["/admin/**"]}\n', 'p.yaml');
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 4 }), fc.array(segment, { maxLength: 3 }), fc.boolean(), (detour, rest, escape) => {
        const admin = escape ? '%61dmin' : 'admin';
        const path = '/' + [...detour.flatMap((d) => [d, '..']), admin, ...rest].join('/');
        const d = decide(policy, { protocol: 'https', host: 'a.example', port: 443, method: 'GET', path });
        expect(d.rule).toBe('no-admin');
      }),
    );
  });
});

describe('compiled matcher', () => {
  it('agrees with a naive scan of every rule on random rule sets', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.array(wide.rule, { minLength: 1, maxLength: 25 }), fc.array(narrow.rule, { minLength: 1, maxLength: 12 })),
        fc.oneof(wide.queries, narrow.queries),
        (rules, queries) => {
          const policy = randomPolicy(rules);
          for (const [host, ip, port] of queries) {
            if (host === undefined && ip === undefined) continue;
            const expected = naiveDecide(policy, host, ip, port);
            const d = decide(policy, inputOf(host, ip, port));
            expect(d.matched).toEqual(expected.matched);
            expect(d.rule).toBe(expected.rule);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('loader robustness', () => {
  const fragments = fc.constantFrom('version: 1\n', 'rules:\n', '  - id: a\n', '    action: allow\n', '    hosts: [a.example]\n', '    ports: [443]\n', 'mode: strict\n', '  -\n', ':\n', '[', '"', '*x', '    cidrs: [10.0.0.0/8]\n', 'tests:\n', '  - target: https://a.example/\n', '    expect: deny\n');
  it('returns a policy or throws a positioned policy.invalid error, nothing else', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.array(fragments, { maxLength: 12 }).map((f) => f.join(''))), (text) => {
        try {
          parsePolicy(text, 'fuzz.yaml');
        } catch (err) {
          expect(isPolicyInvalidError(err)).toBe(true);
          if (isPolicyInvalidError(err)) {
            expect(err.issues.length).toBeGreaterThan(0);
            for (const issue of err.issues) {
              expect(issue.line).toBeGreaterThanOrEqual(1);
              expect(issue.column).toBeGreaterThanOrEqual(1);
              expect(issue.fix.length).toBeGreaterThan(0);
            }
          }
        }
      }),
      { numRuns: 1500 },
    );
  });
});
