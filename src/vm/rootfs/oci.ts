/**
 * OCI and Docker v2 manifest documents: strict parsing of indexes and image manifests into plain data,
 * and the choice of one image from an index for the platform microagent guests run (linux/amd64).
 * Pure functions over bytes; a document that does not have the shape we rely on is refused, not guessed at.
 */
import { MicroagentError } from '../../errors.js';
import { checkDigest } from './digest.js';

export const MEDIA_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

const INDEX_TYPES = new Set<string>([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerList]);
const MANIFEST_TYPES = new Set<string>([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);

/** The Accept header for manifest requests, most specific first. */
export const MANIFEST_ACCEPT = [...MANIFEST_TYPES, ...INDEX_TYPES].join(', ');

/** Largest manifest or index accepted (registries cap at 4 MiB too). */
export const MANIFEST_CAP = 4 << 20;

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: Platform;
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface ImageManifest {
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
}

export type ManifestDocument =
  | { readonly kind: 'index'; readonly manifests: readonly Descriptor[] }
  | { readonly kind: 'manifest'; readonly manifest: ImageManifest };

/** The platform guests run: QEMU guests of the host's architecture, always Linux. */
export const GUEST_PLATFORM: Platform = {
  os: 'linux',
  architecture: process.arch === 'x64' ? 'amd64' : process.arch,
};

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

function malformed(where: string, detail: string): MicroagentError {
  return new MicroagentError('invalid', `${where}: malformed manifest: ${detail}`, {
    code: 'image.manifest_invalid',
    remediation: 'The image source serves a manifest microagent cannot read; rebuild or re-push the image.',
  });
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function parseDescriptor(raw: unknown, where: string): Descriptor {
  const obj = asRecord(raw);
  if (obj === undefined) throw malformed(where, 'descriptor is not an object');
  const { mediaType, digest, size, platform, annotations } = obj;
  if (typeof mediaType !== 'string') throw malformed(where, 'descriptor without mediaType');
  if (typeof digest !== 'string') throw malformed(where, 'descriptor without digest');
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw malformed(where, `descriptor ${digest} has no valid size`);
  const base = { mediaType, digest: checkDigest(digest, where), size };
  const plat = asRecord(platform);
  const notes = asRecord(annotations);
  return {
    ...base,
    ...(plat !== undefined && typeof plat['os'] === 'string' && typeof plat['architecture'] === 'string'
      ? {
          platform: {
            os: plat['os'],
            architecture: plat['architecture'],
            ...(typeof plat['variant'] === 'string' ? { variant: plat['variant'] } : {}),
          },
        }
      : {}),
    ...(notes !== undefined
      ? { annotations: Object.fromEntries(Object.entries(notes).filter((e): e is [string, string] => typeof e[1] === 'string')) }
      : {}),
  };
}

/** Parses an index or image manifest. `declaredType` (a Content-Type or descriptor mediaType) is a fallback. */
export function parseManifestDocument(bytes: Buffer, where: string, declaredType?: string): ManifestDocument {
  let doc: Record<string, unknown> | undefined;
  try {
    doc = asRecord(JSON.parse(bytes.toString('utf8')));
  } catch {
    throw malformed(where, 'not JSON');
  }
  if (doc === undefined) throw malformed(where, 'not a JSON object');
  const mediaType = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : (declaredType ?? '');
  if (doc['schemaVersion'] !== 2) {
    throw new MicroagentError('unsupported', `${where}: manifest schemaVersion ${String(doc['schemaVersion'])} is not supported`, {
      code: 'image.manifest_schema',
      remediation: 'Re-push the image with a current tool; only schema 2 (Docker v2 / OCI) manifests are read.',
    });
  }
  if (INDEX_TYPES.has(mediaType) || (Array.isArray(doc['manifests']) && !MANIFEST_TYPES.has(mediaType))) {
    if (!Array.isArray(doc['manifests'])) throw malformed(where, 'index without manifests');
    return { kind: 'index', manifests: doc['manifests'].map((d) => parseDescriptor(d, where)) };
  }
  if (!Array.isArray(doc['layers'])) throw malformed(where, 'manifest without layers');
  return {
    kind: 'manifest',
    manifest: { config: parseDescriptor(doc['config'], where), layers: doc['layers'].map((d) => parseDescriptor(d, where)) },
  };
}

export function platformError(where: string, found: readonly string[]): MicroagentError {
  const want = `${GUEST_PLATFORM.os}/${GUEST_PLATFORM.architecture}`;
  return new MicroagentError('unsupported', `${where} is built for ${found.join(', ') || 'no known platform'}, not ${want}`, {
    code: 'image.platform',
    remediation: `Use an image (or a multi-platform tag) that includes ${want}.`,
  });
}

function tagOf(descriptor: Descriptor): string | undefined {
  const name = descriptor.annotations?.['org.opencontainers.image.ref.name'];
  const full = descriptor.annotations?.['io.containerd.image.name'];
  return name ?? (full === undefined ? undefined : full.slice(full.lastIndexOf(':') + 1));
}

/**
 * Picks the entry for GUEST_PLATFORM from an index. Entries without a platform (typical of on-disk
 * layouts) are candidates; `tag` narrows by the ref-name annotation of layouts.
 */
export function selectFromIndex(manifests: readonly Descriptor[], where: string, tag?: string): Descriptor {
  let candidates = manifests.filter((d) => INDEX_TYPES.has(d.mediaType) || MANIFEST_TYPES.has(d.mediaType));
  if (tag !== undefined) {
    candidates = candidates.filter((d) => tagOf(d) === tag || d.annotations?.['io.containerd.image.name']?.endsWith(`:${tag}`));
    if (candidates.length === 0) {
      throw new MicroagentError('not_found', `${where} has no image tagged "${tag}"`, {
        code: 'image.tag_not_found',
        remediation: `Tags present: ${manifests.map(tagOf).filter((t) => t !== undefined).join(', ') || 'none'}.`,
      });
    }
  }
  const matching = candidates.filter(
    (d) => d.platform === undefined || (d.platform.os === GUEST_PLATFORM.os && d.platform.architecture === GUEST_PLATFORM.architecture),
  );
  const chosen = matching[0];
  if (chosen === undefined) {
    throw platformError(where, candidates.map((d) => (d.platform === undefined ? 'unknown' : `${d.platform.os}/${d.platform.architecture}`)));
  }
  const unplatformed = matching.filter((d) => d.platform === undefined);
  if (tag === undefined && unplatformed.length > 1) {
    throw new MicroagentError('invalid', `${where} holds ${unplatformed.length} images; say which one`, {
      code: 'image.ambiguous',
      remediation: `Name a tag: oci:PATH:TAG (tags: ${unplatformed.map(tagOf).filter((t) => t !== undefined).join(', ') || 'none'}).`,
    });
  }
  return chosen;
}
