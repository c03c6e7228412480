/**
 * The fixed vocabulary of decision reasons and signals. Every audit record's `reason` and `signals`
 * come from here, so auditors can rely on a closed, documented set (docs/audit.md lists them with
 * their meaning). Add a code here and to the docs together; never build a reason from free text.
 */

export const REASONS = {
  // Decided by the policy engine (src/policy).
  rule_allow: 'an allow, passthrough or inject rule matched',
  rule_deny: 'a deny rule matched',
  unlisted: 'no rule matched; guarded mode allows unlisted public destinations',
  default_deny: 'no rule matched; strict mode denies everything not allowed',
  internal_address: 'the destination is an internal address, and no rule that names it exactly (host or CIDR) allows this connection or request',
  mediation_off: 'egress mediation is off; nothing was checked',
  invalid_target: 'the host, address or port could not be parsed strictly',
  // Decided by the egress proxy and resolver (src/proxy) on top of the policy.
  identity_mismatch: 'CONNECT authority, SNI, Host and URL do not name the same destination',
  doh_denied: 'DNS-over-HTTPS/TLS resolver not allowed by a rule',
  resolve_failed: 'the destination name did not resolve',
  upstream_unreachable: 'the checked upstream address could not be reached',
  upstream_cert_invalid: 'the upstream TLS certificate failed verification',
  upstream_bad_response: 'the upstream answered with a malformed or ambiguous HTTP response, which was not passed on',
  limit_exceeded: 'a configured limit (size, count, time or bytes) was exceeded',
  bad_request: 'the request was malformed or ambiguous (e.g. request smuggling)',
  secret_echo: 'the response echoed an injected secret and was withheld',
  unscannable_response: 'a response that must be scanned for an injected secret could not be decoded, and was withheld',
  secret_unavailable: 'a secret an inject rule references is not configured on the host',
  rate_limited: 'a query rate or exfiltration guard tripped',
  audit_unavailable: 'the audit log could not be written, so the decision failed closed',
  // Mediation broker (src/mediation).
  target_unreachable: 'the mediation target could not be reached',
  channel_severed: 'the workspace was quarantined; its channels are closed',
  // Policy lifecycle.
  reload_ok: 'the policy file changed and was swapped in',
  reload_invalid: 'the changed policy file is invalid, or gone; the previous policy stays in force',
} as const;
export type Reason = keyof typeof REASONS;

export const SIGNALS = {
  unlisted: 'allowed without a matching rule (guarded mode)',
  would_deny: 'report-only: the policy would have denied this',
  internal_address: 'an internal address was involved (denied, stripped or explicitly allowed)',
  identity_mismatch: 'names for one connection disagreed (domain fronting)',
  rebinding: 'a name resolved to an internal address after resolving to a public one',
  answer_stripped: 'DNS answers pointing at internal addresses were removed',
  https_record_stripped: 'HTTPS/SVCB records were removed (ECH would hide the SNI)',
  exfiltration_guard: 'label length, query rate or distinct-name limit tripped',
  secret_injected: 'a secret header was added on the host side',
  smuggling: 'framing a server could read differently: conflicting or invalid Content-Length/Transfer-Encoding, bad chunk sizes, malformed header lines (obsolete line folding, bare LF)',
  slow_client: 'the client was cut off by an idle or total timeout',
  mediation_off: 'traffic flowed with egress mediation off',
  client_rejected_ca: "the guest's TLS client rejected the workspace CA's certificate (it does not trust the CA)",
} as const;
export type Signal = keyof typeof SIGNALS;
