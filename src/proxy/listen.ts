/**
 * Listening on an address or a Unix socket path for the egress proxy and the DNS server, with a failure
 * turned into a typed error that says what could not be listened on and how to fix it (a port in use,
 * a privileged port, an address this host does not have, a socket directory that is missing), and
 * whether a listener is reachable from other machines (the CLIs warn).
 */
import { isIPv4, isIPv6, type Server } from 'node:net';
import { MicroagentError, type ErrorKind } from '../errors.js';

export type ListenAddress = { readonly host: string; readonly port: number } | { readonly path: string };

export function describeListenAddress(where: ListenAddress): string {
  if ('path' in where) return where.path;
  return `${where.host.includes(':') ? `[${where.host}]` : where.host}:${where.port}`;
}

/**
 * Whether a listener on `host` answers other machines: anything but a loopback address. The proxy and
 * the resolver carry no client authentication, so such a listener serves whoever reaches it.
 */
export function reachableBeyondHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return false;
  if (isIPv4(h)) return !h.startsWith('127.');
  if (isIPv6(h)) return h !== '::1' && !h.startsWith('::ffff:127.');
  return true; // a name: whatever it resolves to
}

/** Why listening on `where` failed, as an error of `code` (e.g. proxy.listen_failed) for `what` (e.g. "the proxy"). */
export function listenError(what: string, where: ListenAddress, cause: unknown, code: string): MicroagentError {
  const errno = (cause as NodeJS.ErrnoException).code ?? '';
  const [kind, remediation]: [ErrorKind, string] =
    errno === 'EADDRINUSE'
      ? ['conflict', 'something else listens there: stop it, or choose another port (0 picks a free one) or socket path']
      : 'path' in where
        ? ['invalid', 'give a socket path in an existing directory this user may write to']
        : errno === 'EACCES' || errno === 'EPERM'
          ? ['invalid', 'ports below 1024 need root: choose a higher port (0 picks a free one)']
          : ['invalid', 'listen on an address of this host, e.g. 127.0.0.1 (a name must resolve to one)'];
  return new MicroagentError(kind, `cannot listen for ${what} on ${describeListenAddress(where)}: ${errno || (cause as Error).message}`, { code, remediation, cause });
}

/** server.listen as a promise that rejects with listenError. */
export function listenOn(server: Server, where: ListenAddress, what: string, code: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => reject(listenError(what, where, err, code));
    server.once('error', failed);
    server.listen(where, () => {
      server.off('error', failed);
      resolve();
    });
  });
}
