/**
 * Shared fixtures for the microVM tests: a state directory reused across runs (the kernel install
 * and agent build are slow-ish), a tiny busybox ext4 root filesystem built here (independent of
 * src/vm/rootfs), and short run directories for sockets.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, symlinkSync, copyFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { installKernel, loadKernel, type InstalledKernel } from '../../src/vm/index.js';

export const TEST_STATE_DIR = join(tmpdir(), 'microagent-vm-test-state');

/** Installs the Debian cloud kernel once per machine; later runs reuse the verified install. */
export async function testKernel(): Promise<InstalledKernel> {
  try {
    return loadKernel(TEST_STATE_DIR);
  } catch {
    return installKernel({ stateDir: TEST_STATE_DIR });
  }
}

const APPLETS = ['sh', 'uname', 'cat', 'env', 'ls', 'nc', 'wget', 'nslookup', 'echo', 'sleep', 'hostname', 'sync', 'id', 'pwd', 'true', 'timeout', 'ip', 'ifconfig', 'route', 'dd', 'wc', 'head', 'nproc'];

const created: string[] = [];

/** Copies a dynamically linked host binary and the libraries `ldd` names into the image tree. */
function copyWithLibraries(binary: string, root: string): void {
  const libs = execFileSync('ldd', [binary]).toString().match(/\/[^\s()]+/g) ?? [];
  for (const file of [binary, ...libs]) {
    mkdirSync(join(root, dirname(file)), { recursive: true });
    copyFileSync(file, join(root, file));
  }
}

/** Removes the images and run directories this test file made (call from afterAll). */
export function removeTestDirs(): void {
  for (const dir of created.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** A 64 MiB ext4 image with busybox-static and its applet links; a fresh copy per call. */
export function testRootfs(): string {
  const cached = join(TEST_STATE_DIR, 'test-rootfs-v5.img');
  if (!existsSync(cached)) {
    const dir = mkdtempSync(join(tmpdir(), 'ma-rootfs-'));
    for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'run', 'root']) mkdirSync(join(dir, d));
    copyFileSync('/bin/busybox', join(dir, 'bin/busybox'));
    for (const a of APPLETS) symlinkSync('busybox', join(dir, 'bin', a));
    // socat: the only way to reach the guest's Unix-socket mediation endpoint from a shell.
    copyWithLibraries('/usr/bin/socat', dir);
    mkdirSync(TEST_STATE_DIR, { recursive: true });
    const tmp = `${cached}.${process.pid}`;
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', dir, tmp, '64M']);
    renameSync(tmp, cached);
    rmSync(dir, { recursive: true, force: true });
  }
  const dir = mkdtempSync(join(tmpdir(), 'ma-img-'));
  created.push(dir);
  const copy = join(dir, 'root.img');
  copyFileSync(cached, copy);
  return copy;
}

/** Short run directory: Unix socket paths must stay under 108 bytes. */
export function runDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mavm-'));
  created.push(dir);
  return dir;
}
