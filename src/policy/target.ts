/**
 * Turns a human-written TARGET (a URL, host[:port], [v6]:port or a bare IP) into a DecisionInput for
 * `policy explain` and policy test cases. The host is passed on raw: decide() does the strict parsing,
 * so `http://127.1/` explains as invalid_target instead of being "fixed" here like a URL parser would.
 * A URL is a request (method defaults to GET); anything else is a connection.
 */
import { bad, ok, type Checked } from './patterns.js';
import type { DecisionInput, Protocol } from './types.js';

export interface TargetOptions {
  readonly method?: string | undefined;
  readonly protocol?: Protocol | undefined;
  readonly ip?: string | undefined;
}

const FIX = 'write a URL (https://host/path), host:port, [v6]:port or an IP address';

function splitAuthority(authority: string): Checked<{ host: string; port: number | undefined }> {
  let host = authority;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close === -1) return bad(`"${authority}" has an unclosed "["`, FIX);
    host = authority.slice(0, close + 1);
    const rest = authority.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return bad(`unexpected "${rest}" after ${host}`, FIX);
      portText = rest.slice(1);
    }
  } else if (authority.indexOf(':') !== authority.lastIndexOf(':')) {
    host = authority; // a bare IPv6 literal
  } else if (authority.includes(':')) {
    host = authority.slice(0, authority.indexOf(':'));
    portText = authority.slice(authority.indexOf(':') + 1);
  }
  if (host === '') return bad('the target has no host', FIX);
  if (portText === undefined) return ok({ host, port: undefined });
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    return bad(`"${portText}" is not a port 1-65535`, FIX);
  }
  return ok({ host, port: Number(portText) });
}

function withIp(input: DecisionInput, ip: string | undefined): DecisionInput {
  return ip === undefined ? input : { ...input, ip };
}

export function targetInput(target: string, options: TargetOptions = {}): Checked<DecisionInput> {
  const text = target.trim();
  const url = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(text);
  if (url !== null) {
    const scheme = (url[1] as string).toLowerCase();
    if (scheme !== 'http' && scheme !== 'https') return bad(`scheme "${scheme}" is not http or https`, FIX);
    const authority = url[2] as string;
    if (authority.includes('@')) return bad('the URL carries user info ("user@host")', 'drop the user info; policies match the host only');
    const split = splitAuthority(authority);
    if (!split.ok) return split;
    const rest = url[3] as string;
    const path = rest === '' || rest.startsWith('?') || rest.startsWith('#') ? '/' + rest : rest;
    const input: DecisionInput = {
      protocol: scheme,
      host: split.value.host,
      port: split.value.port ?? (scheme === 'https' ? 443 : 80),
      method: options.method ?? 'GET',
      path,
    };
    return ok(withIp(input, options.ip));
  }
  if (/[/?#\s]/.test(text)) return bad(`"${target}" is not a URL or host[:port]`, FIX);
  const split = splitAuthority(text);
  if (!split.ok) return split;
  const { host, port } = split.value;
  const protocol: Protocol = options.protocol ?? (port === undefined || port === 443 ? 'https' : port === 80 ? 'http' : 'tcp');
  const defaultPort = protocol === 'http' ? 80 : protocol === 'https' ? 443 : undefined;
  const resolvedPort = port ?? defaultPort;
  // A tcp target without a port stays portless so decide() reports it as invalid_target.
  const base: DecisionInput = protocol === 'dns' || resolvedPort === undefined ? { protocol, host } : { protocol, host, port: resolvedPort };
  if (options.method !== undefined && (protocol === 'http' || protocol === 'https')) {
    return ok(withIp({ ...base, method: options.method, path: '/' }, options.ip));
  }
  return ok(withIp(base, options.ip));
}
