/**
 * Answers one DNS message for one workspace: parse, admit (query-step.ts), forward through the
 * workspace resolver (a question that leaves the host is first recorded durably as `dns.forward`),
 * filter, write the `dns.query` record, and only then return the response bytes.
 * Transport-neutral: the UDP and TCP drivers (server.ts) call it and send what it returns.
 * It must never forward a name the policy refused or a question unrecorded, never answer before the
 * answer's record is in the audit file, and never throw: anything unexpected becomes REFUSED (fail
 * closed). The answer waits for the write, not the fdatasync: it goes only to the guest, and the sync
 * follows within 2 ms (a host crash in between takes the VM that got the answer with it).
 */
import { decisionFields, type AuditSink, type DnsForwardEvent, type DnsQueryEvent } from '../../audit/record.js';
import type { Policy } from '../../policy/index.js';
import type { Reason, Signal } from '../../policy/reasons.js';
import { childLog } from '../../log.js';
import type { ExfiltrationGuard } from './guard.js';
import { admitQuery, filterAnswer, type Admission, type NameDecider, type QueryVerdict } from './query-step.js';
import type { ResolvedAnswer, UpstreamAnswer, WorkspaceResolver } from './resolver.js';
import {
  buildHeaderOnlyError,
  buildResponse,
  CLASSIC_UDP_PAYLOAD,
  encodeRecords,
  MAX_STREAM_MESSAGE,
  NO_RECORDS,
  parseQuery,
  qtypeName,
  RCODE,
  type EncodedRecords,
  type ParsedQuery,
} from './wire.js';

const log = childLog('dns');

export type Transport = 'udp' | 'tcp';

export interface AnswerContext {
  readonly policy: () => Policy;
  readonly audit: AuditSink;
  readonly resolver: WorkspaceResolver;
  readonly guard: ExfiltrationGuard;
  readonly decideName: NameDecider;
  /** Filtered, encoded answers per cached upstream answer (see prepareAnswer). */
  readonly prepared: WeakMap<UpstreamAnswer, PreparedAnswer>;
}

/**
 * An upstream answer filtered for this workspace under one policy, encoded once. Cached answers are
 * immutable, so while the policy object is the same, every client asking gets these bytes (TTLs
 * patched); a reload makes a new policy object and the next query re-filters.
 */
export interface PreparedAnswer {
  readonly policy: Policy;
  readonly signals: readonly Signal[];
  readonly answers: EncodedRecords;
  readonly authority: EncodedRecords;
}

const RCODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(RCODE).map(([name, value]) => [value, name]),
);

function rcodeName(rcode: number): string {
  return RCODE_NAMES[rcode] ?? `RCODE${rcode}`;
}

interface Outcome {
  readonly verdict: QueryVerdict;
  readonly rcode: number;
  readonly answers: number;
  readonly upstreamMs: number | null;
  readonly cached: boolean;
}

function auditEvent(name: string, qtype: string, transport: Transport, outcome: Outcome): DnsQueryEvent {
  const { verdict } = outcome;
  return {
    event: 'dns.query',
    name,
    qtype,
    transport,
    ...decisionFields(verdict),
    answers: outcome.answers,
    upstream_ms: outcome.upstreamMs === null ? null : Math.round(outcome.upstreamMs * 1000) / 1000,
    cached: outcome.cached,
    rcode: rcodeName(outcome.rcode),
  };
}

function forwardEvent(name: string, qtype: string, transport: Transport, verdict: QueryVerdict): DnsForwardEvent {
  return { event: 'dns.forward', name, qtype, transport, ...decisionFields(verdict) };
}

/** Writes the outcome's record; false when the audit log could not take it (the caller refuses). */
async function record(ctx: AnswerContext, event: DnsQueryEvent): Promise<boolean> {
  try {
    await ctx.audit.append(event, 'written');
    return true;
  } catch (err) {
    log.error({ err, name: event.name }, 'audit append failed; refusing DNS answers (fail closed)');
    return false;
  }
}

function deniedVerdict(policy: Policy, reason: Reason, signals: readonly Signal[] = []): QueryVerdict {
  return { verdict: 'deny', rule: null, reason, signals, mode: policy.mode, policyHash: policy.hash };
}

/**
 * The response to one message, or null when nothing could be parsed (the datagram is dropped).
 * Over UDP the client's advertised payload size caps the response; over a stream, the 2-byte length.
 */
export async function answerMessage(ctx: AnswerContext, message: Buffer, transport: Transport): Promise<Buffer | null> {
  const parsed = parseQuery(message);
  switch (parsed.kind) {
    case 'drop':
      return null;
    case 'formerr':
    case 'notimp': {
      const outcome: Outcome = {
        verdict: deniedVerdict(ctx.policy(), 'bad_request'),
        rcode: parsed.kind === 'formerr' ? RCODE.FORMERR : RCODE.NOTIMP,
        answers: 0,
        upstreamMs: null,
        cached: false,
      };
      // Nothing is forwarded and the error is itself a refusal, so it goes out even if the record failed.
      await record(ctx, auditEvent('', '', transport, outcome));
      return buildHeaderOnlyError(parsed);
    }
    case 'query':
      try {
        return await answerQuery(ctx, parsed, transport);
      } catch (err) {
        log.error({ err, name: parsed.name }, 'DNS query handling failed; answering REFUSED');
        return respondEmpty(parsed, RCODE.REFUSED, transport);
      }
  }
}

function respondEmpty(query: ParsedQuery, rcode: number, transport: Transport): Buffer {
  return buildResponse({ query, rcode, answers: NO_RECORDS, ttl: 0, ...sizeCap(query, transport) });
}

/** Longer responses go out empty with TC (answers are re-encoded uncompressed, so they can grow). */
function sizeCap(query: ParsedQuery, transport: Transport): { maxLength: number } {
  return { maxLength: transport === 'udp' ? (query.ednsPayload ?? CLASSIC_UDP_PAYLOAD) : MAX_STREAM_MESSAGE };
}

async function answerQuery(ctx: AnswerContext, query: ParsedQuery, transport: Transport): Promise<Buffer> {
  const policy = ctx.policy();
  const qtype = qtypeName(query.qtype);
  const finish = async (outcome: Outcome, response: () => Buffer): Promise<Buffer> => {
    const recorded = await record(ctx, auditEvent(query.name, qtype, transport, outcome));
    return recorded ? response() : respondEmpty(query, RCODE.REFUSED, transport);
  };

  const admission = admitQuery(ctx.decideName(policy, query.name), ctx.guard, query);
  const recordForward = (): Promise<void> => ctx.audit.append(forwardEvent(query.name, qtype, transport, admission.verdict));
  if (admission.kind === 'answer_empty') {
    const outcome = { verdict: admission.verdict, rcode: admission.rcode, answers: 0, upstreamMs: null, cached: false };
    return finish(outcome, () => respondEmpty(query, admission.rcode, transport));
  }
  // The sink stays failed after one failure: do not let a question leave the host unrecorded.
  if (!ctx.audit.healthy) {
    const outcome = { verdict: deniedVerdict(policy, 'audit_unavailable'), rcode: RCODE.REFUSED, answers: 0, upstreamMs: null, cached: false };
    return finish(outcome, () => respondEmpty(query, RCODE.REFUSED, transport));
  }

  let resolved: ResolvedAnswer;
  try {
    resolved = ctx.resolver.cached(query.name, query.qtype) ?? (await ctx.resolver.query(query.name, query.qtype, recordForward));
  } catch (err) {
    if (!ctx.audit.healthy) {
      // The dns.forward record failed: the question never left the host.
      const outcome = { verdict: deniedVerdict(policy, 'audit_unavailable'), rcode: RCODE.REFUSED, answers: 0, upstreamMs: null, cached: false };
      return finish(outcome, () => respondEmpty(query, RCODE.REFUSED, transport));
    }
    log.warn({ err, name: query.name }, 'upstream resolvers failed; answering SERVFAIL');
    const verdict = { ...admission.verdict, reason: 'upstream_unreachable' as const };
    return finish({ verdict, rcode: RCODE.SERVFAIL, answers: 0, upstreamMs: null, cached: false }, () =>
      respondEmpty(query, RCODE.SERVFAIL, transport),
    );
  }

  const prepared = prepareAnswer(ctx, policy, query.name, admission, resolved);
  const rcode = resolved.upstream.rcode;
  const outcome: Outcome = {
    verdict: { ...admission.verdict, signals: prepared.signals },
    rcode,
    answers: prepared.answers.count,
    upstreamMs: resolved.upstreamMs,
    cached: resolved.cached,
  };
  return finish(outcome, () =>
    buildResponse({ query, rcode, answers: prepared.answers, authority: prepared.authority, ttl: resolved.ttl, ...sizeCap(query, transport) }),
  );
}

function prepareAnswer(
  ctx: AnswerContext,
  policy: Policy,
  name: string,
  admission: Extract<Admission, { kind: 'forward' }>,
  resolved: ResolvedAnswer,
): PreparedAnswer {
  const memo = ctx.prepared.get(resolved.upstream);
  if (memo !== undefined && memo.policy === policy) return memo;
  const filtered = admission.filter
    ? filterAnswer(policy, ctx.resolver.memory, name, resolved.upstream, resolved.ttl * 1000, admission.verdict)
    : { answers: resolved.upstream.answers, signals: admission.verdict.signals };
  const answers = encodeRecords(filtered.answers);
  // The SOA of a negative answer tells the client how long to cache the absence (RFC 2308).
  const authority = answers.count === 0 ? encodeRecords(resolved.upstream.authorities) : NO_RECORDS;
  const prepared: PreparedAnswer = { policy, signals: filtered.signals, answers, authority };
  ctx.prepared.set(resolved.upstream, prepared);
  return prepared;
}
