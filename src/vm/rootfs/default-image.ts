/**
 * The default image, so the quick start works offline: busybox (static) with its applet symlinks, curl
 * and the shared libraries it needs, and the Mozilla CA bundle, all from Debian packages (downloaded once
 * with `apt-get download` into a package cache), written as an OCI layout tagged microagent/default:latest.
 * Reproducible: entries sorted, owner root, fixed mtimes, deterministic gzip. Never installs anything on the host.
 */
import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { MicroagentError } from '../../errors.js';
import { toolFailure } from '../host-tools.js';
import { sha256Digest } from './digest.js';
import { MEDIA_TYPES } from './oci.js';
import type { ProgressListener } from './progress.js';
import { resolveImage, type ResolvedImage } from './resolve.js';
import { tarEntryBytes, TAR_END, type TarWriteEntry } from './tar-writer.js';
import { makeDirs } from '../../make-dirs.js';

const execFileP = promisify(execFile);

export const DEFAULT_IMAGE_NAME = 'microagent/default:latest';
/** 2024-01-01T00:00:00Z: every file's mtime, and the config's `created`. */
const FIXED_MTIME = 1704067200;
/** Package docs, manuals, translations and iconv modules: not needed to run a shell and curl. */
const PRUNED = ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'usr/share/lintian', 'usr/lib/x86_64-linux-gnu/gconv'];

const FILES: Readonly<Record<string, string>> = {
  'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  'etc/group': 'root:x:0:\nnogroup:x:65534:\n',
  'etc/nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n',
  'etc/hosts': '127.0.0.1 localhost\n::1 localhost\n',
};
const DIRECTORIES: Readonly<Record<string, number>> = { tmp: 0o1777, 'var/tmp': 0o1777, root: 0o700, proc: 0o755, sys: 0o755, dev: 0o755, run: 0o755, home: 0o755 };

function setupError(detail: string, cause?: unknown): MicroagentError {
  return new MicroagentError('unsupported', `cannot build the default image: ${detail}`, {
    code: 'image.default_build',
    remediation: 'Run scripts/setup.sh on a Debian/Ubuntu host with access to its package mirror (it downloads busybox-static, curl and their libraries once).',
    cause,
  });
}

/** busybox-static, ca-certificates (its files only) and curl with its run-time dependency closure. */
async function packageList(): Promise<string[]> {
  const { stdout } = await execFileP('apt-cache', ['depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', 'curl']);
  const closure = stdout.split('\n').filter((line) => /^[a-z0-9][a-z0-9.+-]*$/.test(line));
  return [...new Set(['busybox-static', 'ca-certificates', ...closure])].sort();
}

interface PlannedDeb {
  readonly file: string;
  readonly sha256: string;
}

/** The exact .deb files (and their SHA256) apt would fetch now; from the local package lists, no network. */
async function planDebs(packages: readonly string[]): Promise<PlannedDeb[]> {
  const { stdout } = await execFileP('apt-get', ['download', '--print-uris', ...packages], { cwd: '/', maxBuffer: 16 << 20 });
  return stdout.split('\n').filter(Boolean).map((line) => {
    const [, file, , hash] = line.split(' ');
    if (file === undefined || hash === undefined || !hash.startsWith('SHA256:')) throw setupError(`unexpected apt-get output: ${line}`);
    return { file, sha256: hash.slice('SHA256:'.length) };
  });
}

async function fileSha256(path: string): Promise<string | null> {
  const data = await readFile(path).catch(() => null);
  return data === null ? null : sha256Digest(data).slice('sha256:'.length);
}

/** Downloads the packages not already in debDir (verified against apt's SHA256) and returns their paths. */
async function ensureDebs(debDir: string): Promise<string[]> {
  makeDirs(debDir);
  let planned: PlannedDeb[];
  try {
    planned = await planDebs(await packageList());
  } catch (err) {
    throw setupError('apt cannot list busybox-static, curl and its libraries (run apt-get update)', err);
  }
  const missing: string[] = [];
  for (const deb of planned) {
    if ((await fileSha256(join(debDir, deb.file))) !== deb.sha256) missing.push(deb.file.split('_')[0] as string);
  }
  if (missing.length > 0) {
    try {
      await execFileP('apt-get', ['-q', '-o', 'APT::Sandbox::User=root', 'download', ...missing], { cwd: debDir, maxBuffer: 16 << 20 });
    } catch (err) {
      // apt's own words ("E: ...") say why: a mirror out of reach, or a full disk, which the generic fix would hide.
      const stderr = (err as { stderr?: string }).stderr ?? '';
      const failure = toolFailure('downloading the default image\'s packages', stderr, 'image.default_build', debDir, err);
      if (failure.kind === 'transient') throw failure;
      const said = stderr.split('\n').filter((l) => l.startsWith('E:')).join(' ');
      throw setupError(`apt-get download ${missing.join(' ')} failed${said === '' ? '' : `: ${said}`}`, err);
    }
  }
  for (const deb of planned) {
    if ((await fileSha256(join(debDir, deb.file))) !== deb.sha256) throw setupError(`${deb.file} does not match the SHA256 apt lists for it`);
  }
  return planned.map((deb) => join(debDir, deb.file)).sort();
}

async function assembleRoot(root: string, debs: readonly string[]): Promise<void> {
  for (const deb of debs) {
    await execFileP('dpkg-deb', ['-x', deb, root]).catch((err: unknown) => {
      throw toolFailure(`unpacking ${deb}`, (err as { stderr?: string }).stderr ?? String(err), 'image.default_build', root, err);
    });
  }
  for (const path of PRUNED) await rm(join(root, path), { recursive: true, force: true });
  const { stdout } = await execFileP(join(root, 'bin/busybox'), ['--list-full']);
  for (const applet of stdout.split('\n').filter(Boolean).sort()) {
    const path = join(root, applet);
    if (await lstat(path).then(() => true, () => false)) continue;
    makeDirs(join(path, '..'));
    await symlink('/bin/busybox', path);
  }
  for (const [path, content] of Object.entries(FILES)) await writeFile(join(root, path), content, { mode: 0o644 });
  for (const [path, mode] of Object.entries(DIRECTORIES)) {
    makeDirs(join(root, path));
    await chmod(join(root, path), mode);
  }
  const certDir = join(root, 'usr/share/ca-certificates/mozilla');
  const certs = (await readdir(certDir)).filter((f) => f.endsWith('.crt')).sort();
  const bundle = await Promise.all(certs.map((f) => readFile(join(certDir, f))));
  makeDirs(join(root, 'etc/ssl/certs'));
  await writeFile(join(root, 'etc/ssl/certs/ca-certificates.crt'), Buffer.concat(bundle), { mode: 0o644 });
}

/** The root tree as sorted tar entries, root-owned with fixed mtimes; repeated inodes become hardlinks. */
async function layerTar(root: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  const seen = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const info = await lstat(join(root, path));
      const base = { path, mode: info.mode & 0o7777, mtime: FIXED_MTIME, uid: 0, gid: 0 };
      let entry: TarWriteEntry;
      if (info.isDirectory()) entry = { ...base, path: `${path}/`, type: 'directory' };
      else if (info.isSymbolicLink()) entry = { ...base, type: 'symlink', linkname: await readlink(join(root, path)) };
      else {
        const key = `${info.dev}:${info.ino}`;
        const first = seen.get(key);
        if (first === undefined) seen.set(key, path);
        entry = first !== undefined ? { ...base, type: 'hardlink', linkname: first } : { ...base, type: 'file', content: await readFile(join(root, path)) };
      }
      parts.push(tarEntryBytes(entry));
      if (info.isDirectory()) await walk(path);
    }
  };
  await walk('');
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

async function writeBlob(layoutDir: string, data: Buffer): Promise<string> {
  const digest = sha256Digest(data);
  await writeFile(join(layoutDir, 'blobs/sha256', digest.slice('sha256:'.length)), data);
  return digest;
}

/** Builds the default image's OCI layout at layoutDir (replaced atomically); debs are cached in debDir. */
export async function buildDefaultImageLayout(layoutDir: string, debDir: string): Promise<{ manifestDigest: string; layerBytes: number }> {
  const debs = await ensureDebs(debDir);
  makeDirs(dirname(layoutDir));
  const work = await mkdtemp(`${layoutDir}.build-`);
  try {
    const root = join(work, 'root');
    await mkdir(root, { mode: 0o755 });
    await assembleRoot(root, debs);
    const tar = await layerTar(root);
    const layer = gzipSync(tar, { level: 9 });
    const out = join(work, 'layout');
    makeDirs(join(out, 'blobs/sha256'));
    const layerDigest = await writeBlob(out, layer);
    const config = Buffer.from(JSON.stringify({
      created: new Date(FIXED_MTIME * 1000).toISOString(),
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'], WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [sha256Digest(tar)] },
    }));
    const configDigest = await writeBlob(out, config);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: configDigest, size: config.length },
      layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, digest: layerDigest, size: layer.length }],
    }));
    const manifestDigest = await writeBlob(out, manifest);
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: [{
        mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest, size: manifest.length,
        annotations: { 'org.opencontainers.image.ref.name': 'latest', 'io.containerd.image.name': DEFAULT_IMAGE_NAME },
      }],
    };
    await writeFile(join(out, 'index.json'), JSON.stringify(index));
    await writeFile(join(out, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await rm(layoutDir, { recursive: true, force: true });
    await rename(out, layoutDir);
    return { manifestDigest, layerBytes: layer.length };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * True for references naming the default image (`microagent/default[:latest]`), which lives in the
 * state directory, not on Docker Hub: callers resolve those with ensureDefaultImage.
 */
export function isDefaultImageReference(raw: string): boolean {
  return ['microagent/default', DEFAULT_IMAGE_NAME, `docker.io/${DEFAULT_IMAGE_NAME}`].includes(raw);
}

export function defaultLayoutDir(stateDir: string): string {
  return join(stateDir, 'images', 'default-layout');
}

/** The default image, built from its layout (which is built first if setup has not done it). */
export async function ensureDefaultImage(stateDir: string, opts: { onProgress?: ProgressListener } = {}): Promise<ResolvedImage> {
  const layoutDir = defaultLayoutDir(stateDir);
  if (!(await lstat(join(layoutDir, 'index.json')).then(() => true, () => false))) {
    await buildDefaultImageLayout(layoutDir, join(stateDir, 'images', 'default-debs'));
  }
  return resolveImage({ kind: 'layout', path: layoutDir, tag: 'latest' }, { stateDir, ...(opts.onProgress === undefined ? {} : { onProgress: opts.onProgress }) });
}
