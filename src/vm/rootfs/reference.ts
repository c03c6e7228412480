/**
 * Image references, parsed strictly and purely: registry names (`[host[:port]/]path[:tag][@sha256:...]`),
 * `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`, and plain paths (starting with `/` or `.`).
 * Never touches the filesystem or network; whether a plain path is a directory or a file is decided later.
 */
import { MicroagentError } from '../../errors.js';
import { checkDigest } from './digest.js';

export type ImageReference =
  | {
      readonly kind: 'registry';
      /** host[:port] as written, `docker.io` when omitted. */
      readonly registry: string;
      readonly repository: string;
      readonly tag: string | undefined;
      readonly digest: string | undefined;
    }
  | { readonly kind: 'layout'; readonly path: string; readonly tag: string | undefined }
  | { readonly kind: 'archive'; readonly format: 'docker-archive' | 'oci-archive'; readonly path: string; readonly tag: string | undefined }
  | { readonly kind: 'path'; readonly path: string };

export const DEFAULT_REGISTRY = 'docker.io';

const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$/;

/**
 * A registry as `--insecure-registry` names it: `HOST[:PORT]`, lower-cased as image references are.
 * A URL (`http://host:5000`) is refused rather than kept: it would never equal a reference's registry,
 * so the flag would silently do nothing.
 */
export function parseRegistryHost(raw: string): string {
  if (HOST.test(raw)) return raw.toLowerCase();
  const bare = raw.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  throw new MicroagentError('invalid', `--insecure-registry ${JSON.stringify(raw)} is not a registry HOST[:PORT]`, {
    code: 'usage',
    remediation: HOST.test(bare) ? `give it without the scheme or path: --insecure-registry ${bare.toLowerCase()}` : 'give the registry as HOST[:PORT], e.g. --insecure-registry registry.local:5000',
  });
}

function invalid(raw: string, detail: string): MicroagentError {
  return new MicroagentError('invalid', `image reference ${JSON.stringify(raw)} is invalid: ${detail}`, {
    code: 'image.reference_invalid',
    remediation: 'Write NAME[:TAG][@sha256:DIGEST] (e.g. debian:12, localhost:5000/team/app@sha256:...), oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, or a path starting with / or ./',
  });
}

/** Splits `PATH[:TAG]`: a trailing `:word` that could be a tag (no `/`) is taken as the tag. */
function splitPathTag(raw: string, body: string): { path: string; tag: string | undefined } {
  const colon = body.lastIndexOf(':');
  const candidate = colon === -1 ? undefined : body.slice(colon + 1);
  const hasTag = candidate !== undefined && TAG.test(candidate);
  const path = hasTag ? body.slice(0, colon) : body;
  if (path === '') throw invalid(raw, 'the path is empty');
  return { path, tag: hasTag ? candidate : undefined };
}

function isPath(raw: string): boolean {
  return raw.startsWith('/') || raw === '.' || raw === '..' || raw.startsWith('./') || raw.startsWith('../');
}

function parseRegistryReference(raw: string): ImageReference {
  if (raw.length > 1024) throw invalid(raw, 'longer than 1024 characters');
  const at = raw.indexOf('@');
  const digest = at === -1 ? undefined : checkDigest(raw.slice(at + 1), `image reference ${JSON.stringify(raw)}`);
  let remainder = at === -1 ? raw : raw.slice(0, at);
  let tag: string | undefined;
  const lastColon = remainder.lastIndexOf(':');
  if (lastColon > remainder.lastIndexOf('/')) {
    tag = remainder.slice(lastColon + 1);
    if (!TAG.test(tag)) throw invalid(raw, `tag ${JSON.stringify(tag)} is not a valid tag`);
    remainder = remainder.slice(0, lastColon);
  }
  const parts = remainder.split('/');
  let registry = DEFAULT_REGISTRY;
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    if (!HOST.test(first)) throw invalid(raw, `registry host ${JSON.stringify(first)} is not a valid host[:port]`);
    registry = first.toLowerCase();
    parts.shift();
  }
  for (const part of parts) {
    if (!PATH_COMPONENT.test(part)) {
      throw invalid(raw, `name component ${JSON.stringify(part)} must be lowercase letters and digits, separated by ".", "_", "__" or "-"`);
    }
  }
  if (registry === DEFAULT_REGISTRY && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw invalid(raw, 'the repository name is longer than 255 characters');
  return { kind: 'registry', registry, repository, tag: tag ?? (digest === undefined ? 'latest' : undefined), digest };
}

export function parseImageReference(raw: string): ImageReference {
  if (raw.trim() !== raw || raw === '') throw invalid(raw, 'empty or surrounded by whitespace');
  if (raw.startsWith('oci:')) return { kind: 'layout', ...splitPathTag(raw, raw.slice('oci:'.length)) };
  if (raw.startsWith('oci-archive:')) return { kind: 'archive', format: 'oci-archive', ...splitPathTag(raw, raw.slice('oci-archive:'.length)) };
  if (raw.startsWith('docker-archive:')) {
    const path = raw.slice('docker-archive:'.length);
    if (path === '') throw invalid(raw, 'the path is empty');
    return { kind: 'archive', format: 'docker-archive', path, tag: undefined };
  }
  if (isPath(raw)) return { kind: 'path', path: raw };
  return parseRegistryReference(raw);
}

/** The canonical text of a reference, for messages and records. */
export function formatImageReference(ref: ImageReference): string {
  switch (ref.kind) {
    case 'registry':
      return `${ref.registry}/${ref.repository}${ref.tag === undefined ? '' : `:${ref.tag}`}${ref.digest === undefined ? '' : `@${ref.digest}`}`;
    case 'layout':
      return `oci:${ref.path}${ref.tag === undefined ? '' : `:${ref.tag}`}`;
    case 'archive':
      return `${ref.format}:${ref.path}${ref.tag === undefined ? '' : `:${ref.tag}`}`;
    case 'path':
      return ref.path;
    default: {
      const never: never = ref;
      return never;
    }
  }
}
