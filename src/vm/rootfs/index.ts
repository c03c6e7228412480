/**
 * Root filesystems from OCI images: the public API of src/vm/rootfs (see docs/images.md).
 *
 *   const image = await resolveImage('localhost:5000/app:1', { stateDir, onProgress });
 *   await prepareWorkspaceDisk(image.rootfsPath, `${workspaceDir}/rootfs.ext4`);
 *   const spec = imageRunSpec(image.config, argsAfterDoubleDash);   // argv, env, cwd, uid, gid
 *
 * `ensureDefaultImage(stateDir)` gives the offline default image (busybox + curl); references for which
 * `isDefaultImageReference(ref)` is true (`microagent/default[:latest]`) mean that image.
 */
export { parseImageReference, formatImageReference, type ImageReference } from './reference.js';
export { resolveImage, type ResolveImageOptions, type ResolvedImage } from './resolve.js';
export { prepareWorkspaceDisk, type WorkspaceDiskOptions } from './ext4.js';
export { imageRunSpec, type ImageConfig, type RunSpec } from './image-config.js';
export type { ImageProgressEvent, ProgressListener } from './progress.js';
export type { RegistryCredentials } from './registry-auth.js';
export { dockerConfigPath, readDockerCredentials } from './docker-credentials.js';
export { ensureDefaultImage, buildDefaultImageLayout, isDefaultImageReference, defaultLayoutDir, DEFAULT_IMAGE_NAME } from './default-image.js';
