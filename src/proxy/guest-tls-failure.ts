/**
 * Why the guest's side of an intercepted TLS handshake failed, said so that whoever reads the close
 * record can act on it. The common case is a client that does not trust the workspace CA: it answers
 * our certificate with an alert, which OpenSSL reports as a multi-line internal string. Pure.
 */
import type { Signal } from '../policy/reasons.js';

export interface GuestTlsFailure {
  readonly error: string;
  readonly signals: readonly Signal[];
}

/**
 * The alerts a client sends when it will not accept the certificate it was shown (RFC 8446 6.2),
 * as node names them in `err.code`: OpenSSL calls the TLS 1.0+ ones "TLSV1" and the older ones "SSLV3".
 */
const CERTIFICATE_REJECTED = new Map([
  ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', 'unknown_ca'],
  ['ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'bad_certificate'],
  ['ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN', 'certificate_unknown'],
  ['ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE', 'unsupported_certificate'],
]);

/**
 * A guest that hangs up before the handshake completes, without an alert. Node's TLS client checks the
 * certificate only once the handshake is done and then just closes: no alert says why.
 */
export const GUEST_LEFT_HANDSHAKE: GuestTlsFailure = {
  error:
    'the guest closed the connection during the TLS handshake, without an alert. A client that does not trust the ' +
    'workspace CA may do this (node without NODE_EXTRA_CA_CERTS)',
  signals: [],
};

export function guestTlsFailure(err: Error & { code?: string; reason?: string }, host: string): GuestTlsFailure {
  const alert = err.code === undefined ? undefined : CERTIFICATE_REJECTED.get(err.code);
  if (alert !== undefined) {
    return {
      error:
        `the guest's TLS client rejected the certificate for ${host} (alert ${alert}): it does not trust the workspace CA. ` +
        'A client with its own trust store (Python certifi, Java cacerts, a pinned certificate) must be given the CA certificate',
      signals: ['client_rejected_ca'],
    };
  }
  // OpenSSL's own text ends in a newline and names its source files; its reason phrase is the part that says anything.
  const said = err.reason ?? err.message.split('\n')[0]?.trim() ?? '';
  return { error: `TLS handshake with the guest failed: ${said === '' ? (err.code ?? 'unknown error') : said}`, signals: [] };
}
