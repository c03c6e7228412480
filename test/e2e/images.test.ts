/**
 * `microagent run IMAGE` from a local docker-registry (distribution, plain HTTP on loopback) with a real
 * QEMU guest: the default image's layers pushed under a new config, pulled and booted; a second run of
 * the same image reuses the cached root filesystem. And bad input: unknown image, an image for another
 * architecture, a corrupt layer, a state directory without a kernel, a PATH without QEMU: each a clear
 * message and a non-zero exit code, never a stack trace.
 */
import { existsSync, readdirSync, readFileSync, statSync, symlinkSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Digest } from '../../src/vm/rootfs/digest.js';
import { blobDataPath, pushImage, startRegistry, type RunningRegistry } from '../rootfs/helpers/registry.js';
import { dir as dirEntry, file, makeImage, makeLayer, type BuiltImage, type BuiltLayer } from '../rootfs/helpers/image.js';
import { cli, cliJson, E2E_STATE_DIR, expectNoStackTrace, tempDir, VM_TIMEOUT } from './helpers.js';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/**
 * The default image (built by global-setup) re-tagged with an extra Env and `architecture`, without a
 * command if `commandless`, and with `extra` layers on top.
 */
function defaultImageVariant(env: string, architecture = 'amd64', commandless = false, extra: readonly BuiltLayer[] = []): BuiltImage {
  const layout = join(E2E_STATE_DIR, 'images', 'default-layout');
  const blob = (digest: string) => readFileSync(join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)));
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const manifest = JSON.parse(blob((index.manifests[0] as Descriptor).digest).toString()) as { config: Descriptor; layers: Descriptor[] };
  const config = JSON.parse(blob(manifest.config.digest).toString()) as { architecture: string; config: { Env?: string[]; Cmd?: string[]; Entrypoint?: string[] }; rootfs: { diff_ids: string[] } };
  config.architecture = architecture;
  config.rootfs.diff_ids.push(...extra.map((l) => l.diffId));
  config.config.Env = [...(config.config.Env ?? []), env];
  if (commandless) {
    delete config.config.Cmd;
    delete config.config.Entrypoint;
  }
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = sha256Digest(configBytes);
  const extraDescriptors = extra.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.blob.length }));
  const manifestBytes = Buffer.from(
    JSON.stringify({ ...manifest, config: { ...manifest.config, digest: configDigest, size: configBytes.length }, layers: [...manifest.layers, ...extraDescriptors] }),
  );
  const layers = [
    ...manifest.layers.map((l) => {
      const data = blob(l.digest);
      return { tar: data, blob: data, digest: l.digest, diffId: l.digest, mediaType: l.mediaType };
    }),
    ...extra,
  ];
  return { config: configBytes, configDigest, manifest: manifestBytes, manifestDigest: sha256Digest(manifestBytes), layers };
}

/** Identity of the cached root filesystem of one image (its cache folder is named after the manifest digest). */
function cachedRootfs(manifestDigest: string): string {
  const path = join(E2E_STATE_DIR, 'images', manifestDigest.replace(':', '-'), 'rootfs.ext4');
  const s = statSync(path);
  return `${s.ino}:${s.mtimeMs}`;
}

describe.sequential('images from a registry, and bad input', () => {
  let dir: string;
  let registry: RunningRegistry;
  let pulled: BuiltImage;

  beforeAll(async () => {
    dir = tempDir('images');
    registry = await startRegistry(dir);
    pulled = defaultImageVariant(`E2E_PULLED=from-${process.pid}`);
    await pushImage(registry.host, 'e2e/default', 'v1', pulled);
  }, VM_TIMEOUT);
  afterAll(async () => {
    await registry?.close();
  });

  it('pulls an image from the registry and runs it; a second run reuses the cached root filesystem', { timeout: VM_TIMEOUT }, async () => {
    const ref = `${registry.host}/e2e/default:v1`;
    const first = await cliJson<{ exitCode: number; stdout: string }>(['run', ref, '--profile', 'tiny', '--', 'sh', '-c', 'uname -s; echo "$E2E_PULLED"']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.json.stdout).toBe(`Linux\nfrom-${process.pid}\n`);
    const cached = cachedRootfs(pulled.manifestDigest);

    const second = await cliJson<{ exitCode: number; stdout: string }>(['run', ref, '--profile', 'tiny', '--', 'uname', '-s']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.json.stdout).toBe('Linux\n');
    expect(cachedRootfs(pulled.manifestDigest)).toBe(cached);
  });

  it('an image with OpenSSH\'s ssh_config.d gets ssh routed through the proxy (microagent-connect); an isolated guest does not', { timeout: VM_TIMEOUT }, async () => {
    // Its microagent.conf is a symlink to another file: replaced, never written through.
    const withSsh = defaultImageVariant('E2E_SSH=1', 'amd64', false, [
      makeLayer([
        dirEntry('etc/ssh'),
        dirEntry('etc/ssh/ssh_config.d'),
        file('etc/keep-me', 'untouched\n'),
        { path: 'etc/ssh/ssh_config.d/microagent.conf', type: 'symlink', linkname: '/etc/keep-me' },
      ]),
    ]);
    await pushImage(registry.host, 'e2e/ssh', 'v1', withSsh);
    const ref = `${registry.host}/e2e/ssh:v1`;
    const show = 'cat /etc/ssh/ssh_config.d/microagent.conf || echo absent';
    const routed = await cliJson<{ stdout: string }>(['run', ref, '--profile', 'tiny', '--', 'sh', '-c', `${show}; cat /etc/keep-me; if test -L /etc/ssh/ssh_config.d/microagent.conf; then echo still-a-link; fi`]);
    expect(routed.code, routed.stderr).toBe(0);
    expect(routed.json.stdout).toContain('Host * !localhost !127.0.0.1 !::1\n  ProxyCommand /run/microagent/bin/microagent-connect %h %p\n');
    expect(routed.json.stdout.endsWith('%h %p\nuntouched\n')).toBe(true);
    const isolated = await cliJson<{ stdout: string }>(['run', ref, '--profile', 'tiny', '--network', 'isolated', '--', 'sh', '-c', `${show} 2>/dev/null`]);
    expect(isolated.code, isolated.stderr).toBe(0);
    // Nothing written: the image's own entry (the symlink) still reads through to its target.
    expect(isolated.json.stdout).toBe('untouched\n');
  });

  it('an unknown image is not_found with a clear message', { timeout: VM_TIMEOUT }, async () => {
    const fromRegistry = await cliJson<{ ok: false; error: { kind: string; message: string } }>(['--mode=ax', 'run', `${registry.host}/e2e/nope:1`, '--', 'true']);
    expect(fromRegistry.code).not.toBe(0);
    expect(fromRegistry.json.error.kind).toBe('not_found');
    expect(fromRegistry.json.error.message).toContain('e2e/nope');
    expectNoStackTrace(fromRegistry);

    const path = await cli(['run', join(dir, 'no-such-layout'), '--', 'true']);
    expect(path.code).toBe(1);
    expect(path.stderr).toContain(`image path ${join(dir, 'no-such-layout')} does not exist`);
    expectNoStackTrace(path);
  });

  it('an image for another architecture is refused before anything boots', { timeout: VM_TIMEOUT }, async () => {
    await pushImage(registry.host, 'e2e/arm', 'v1', defaultImageVariant('X=1', 'arm64'));
    const r = await cli(['run', `${registry.host}/e2e/arm:v1`, '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('is built for linux/arm64, not linux/amd64');
    expectNoStackTrace(r);
  });

  it('an image with no command, run without one, is refused before anything boots and leaves nothing behind', { timeout: VM_TIMEOUT }, async () => {
    await pushImage(registry.host, 'e2e/commandless', 'v1', defaultImageVariant('X=1', 'amd64', true));
    // A state directory of its own (no kernel needed: nothing boots), so other files' runs do not show in it.
    const stateDir = join(dir, 'commandless-state');
    const r = await cli(['run', `${registry.host}/e2e/commandless:v1`], { stateDir });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('the image defines no Entrypoint or Cmd, and no command was given');
    expect(r.stderr).toContain('give a command after "--"');
    expectNoStackTrace(r);
    // Neither the throwaway workspace nor the supervisor spawned for it remains; the supervisor, told
    // to give up, removes its pending log as it exits.
    const root = join(stateDir, 'workspaces');
    const left = () => readdirSync(root);
    for (let i = 0; i < 200 && left().length > 0; i++) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(left()).toEqual([]);
  });

  it('a corrupt layer is refused with a digest mismatch', { timeout: VM_TIMEOUT }, async () => {
    const image = makeImage({ layers: [makeLayer([file('etc/e2e', 'corrupt me')])], config: { Cmd: ['/bin/true'] } });
    await pushImage(registry.host, 'e2e/corrupt', 'v1', image);
    const layer = image.layers[0]?.blob as Buffer;
    const broken = Buffer.from(layer);
    broken[broken.length - 5] = (broken[broken.length - 5] as number) ^ 0xff;
    writeFileSync(blobDataPath(registry.storage, image.layers[0]?.digest as string), broken);
    const r = await cli(['run', `${registry.host}/e2e/corrupt:v1`, '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${image.layers[0]?.digest}: content hashes to sha256:`);
    expect(r.stderr).toContain('corrupt or was tampered with');
    expectNoStackTrace(r);
  });

  it('a state directory without a kernel says how to install one', { timeout: VM_TIMEOUT }, async () => {
    const empty = tempDir('nokernel');
    const r = await cli(['run', `${registry.host}/e2e/default:v1`, '--profile', 'tiny', '--', 'true'], { stateDir: empty });
    expect(r.code).toBe(1); // not_found: retrying will not help
    expect(r.stderr).toMatch(/kernel/);
    expect(r.stderr).toContain('kernel install');
    expectNoStackTrace(r);
    // The failed run is thrown away; its logs are kept under runs/, and the message says where. No guest
    // ran, so no mediator started and nothing was decided: there is no audit log.
    expect(readdirSync(join(empty, 'workspaces'))).toEqual([]);
    const [run] = readdirSync(join(empty, 'runs'));
    expect(readdirSync(join(empty, 'runs', run as string))).toEqual(['supervisor.log']);
    expect(r.stderr).toContain(join(empty, 'runs', run as string, 'supervisor.log'));
  });

  it('a PATH without qemu-system-x86_64 says QEMU is missing', { timeout: VM_TIMEOUT }, async () => {
    const bin = join(dir, 'bin-without-qemu');
    mkdirSync(bin);
    for (const d of ['/usr/local/bin', '/usr/bin', '/usr/sbin', '/sbin']) {
      for (const f of readdirSync(d)) {
        if (f.startsWith('qemu-system')) continue;
        try {
          symlinkSync(join(d, f), join(bin, f));
        } catch {
          // first directory on the usual PATH wins
        }
      }
    }
    const r = await cli(['run', '--profile', 'tiny', '--', 'true'], { env: { PATH: bin } });
    expect(r.code).toBe(1); // unsupported, not transient
    expect(r.stderr).toContain('qemu-system-x86_64 was not found on PATH');
    expect(r.stderr).toContain('apt-get install qemu-system-x86');
    expectNoStackTrace(r);
    // Other e2e files share the state directory: check this run's own workspace is gone and its logs kept.
    const name = /workspace "(run-[0-9a-f]+)"/.exec(r.stderr)?.[1] as string;
    expect(name).toBeDefined();
    expect(existsSync(join(E2E_STATE_DIR, 'workspaces', name))).toBe(false);
    expect(existsSync(join(E2E_STATE_DIR, 'runs', name, 'supervisor.log'))).toBe(true);
  });
});
