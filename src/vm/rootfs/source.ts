/**
 * What every image source (OCI layout, image archive, registry) offers the build: the top-level document,
 * manifests and blobs by descriptor, each verified against its digest as it streams. `selectImageManifest`
 * walks indexes down to the one image manifest for the guest platform. Sources never apply layers.
 */
import { MicroagentError } from '../../errors.js';
import { sha256Digest } from './digest.js';
import { parseManifestDocument, selectFromIndex, type Descriptor, type ImageManifest } from './oci.js';

export interface RootDocument {
  readonly bytes: Buffer;
  /** The verified digest of these bytes when they are content-addressed (not a layout's index.json). */
  readonly digest: string | undefined;
  readonly mediaType: string | undefined;
}

export interface ImageSource {
  /** For messages: "registry localhost:5000/app:1", "OCI layout /path". */
  readonly description: string;
  /** The tag to select inside an index that holds several images (layouts). */
  readonly tag: string | undefined;
  root(): Promise<RootDocument>;
  /** A manifest or index by descriptor, verified. */
  manifest(descriptor: Descriptor): Promise<Buffer>;
  /** A blob's bytes by descriptor, verified while streaming (errors surface at the end at the latest). */
  blob(descriptor: Descriptor, what: string, cap: number): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

export interface SelectedManifest {
  readonly digest: string;
  readonly manifest: ImageManifest;
}

const MAX_INDEX_DEPTH = 4;

/** Resolves the source's top-level document to the image manifest for the guest platform. */
export async function selectImageManifest(source: ImageSource): Promise<SelectedManifest> {
  const root = await source.root();
  let doc = parseManifestDocument(root.bytes, source.description, root.mediaType);
  let digest = root.digest ?? sha256Digest(root.bytes);
  for (let depth = 0; doc.kind === 'index'; depth++) {
    if (depth >= MAX_INDEX_DEPTH) {
      throw new MicroagentError('invalid', `${source.description}: indexes nested more than ${MAX_INDEX_DEPTH} deep`, {
        code: 'image.manifest_invalid',
        remediation: 'Re-push the image with a flat index.',
      });
    }
    const chosen = selectFromIndex(doc.manifests, source.description, depth === 0 ? source.tag : undefined);
    const bytes = await source.manifest(chosen);
    doc = parseManifestDocument(bytes, `${source.description} (${chosen.digest})`, chosen.mediaType);
    digest = chosen.digest;
  }
  return { digest, manifest: doc.manifest };
}
