/**
 * The driver for the connection step: performs its actions (resolve through the HostResolver, each
 * question it sends recorded first; append to the audit log; hand back the dial permission or the deny
 * answer) and feeds the results back in.
 * It adds no decisions of its own; everything it may do is an action the step returned.
 */
import type { Decision } from '../policy/index.js';
import type { DenyAnswer } from './answers.js';
import type { CheckedTarget } from './checked-target.js';
import { stepConnection, type ConnectionEvent, type ConnectionState } from './connection-step.js';
import type { ProxyRuntime } from './runtime.js';

export type FlowOutcome =
  /** `recorded`: true once the allow is durable (a per-request flow is opened before that), false if it failed. */
  /** `protocol`: what the flow was allowed as (a CONNECT on a non-TLS port may open as tcp alone). */
  | { readonly kind: 'open'; readonly target: CheckedTarget; readonly decision: Decision; readonly protocol: 'http' | 'https' | 'tcp'; readonly recorded: Promise<boolean> }
  | { readonly kind: 'denied'; readonly answer: DenyAnswer };

export async function decideFlow(rt: ProxyRuntime, first: ConnectionEvent): Promise<FlowOutcome> {
  const policy = rt.policy();
  let state: ConnectionState = { phase: 'start' };
  let event: ConnectionEvent | null = first;
  let recorded = Promise.resolve(true);
  while (event !== null) {
    const result = stepConnection(policy, state, event);
    state = result.state;
    event = null;
    for (const action of result.actions) {
      switch (action.type) {
        case 'resolve': {
          let recordFailed = false;
          const recordQuestion = (qtype: 'A' | 'AAAA') =>
            rt.audit.append({ ...action.forward, qtype }).catch((err: unknown) => {
              recordFailed = true;
              throw err;
            });
          try {
            const ips = await rt.resolver.lookup(action.host, recordQuestion);
            // One family's record failed while the other was answered from cache: the sink is down all the same.
            event = recordFailed ? { type: 'audit_failed', detail: 'a dns.forward record could not be written' } : { type: 'resolved', ips };
          } catch (err) {
            event = { type: recordFailed ? 'audit_failed' : 'resolve_failed', detail: (err as Error).message };
          }
          break;
        }
        case 'audit':
          if (!action.wait) {
            recorded = rt.appendInBackground(action.record);
            break;
          }
          try {
            await rt.audit.append(action.record);
            event = { type: 'audited' };
          } catch (err) {
            event = { type: 'audit_failed', detail: (err as Error).message };
          }
          break;
        case 'dial':
        case 'serve_requests':
          return { kind: 'open', target: action.target, decision: action.decision, protocol: action.protocol, recorded };
        case 'deny':
          rt.counters.denied++;
          return { kind: 'denied', answer: action.answer };
        default: {
          const never: never = action;
          return never;
        }
      }
    }
  }
  throw new Error(`connection step stopped without an outcome in phase ${state.phase}`);
}
