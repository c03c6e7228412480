/**
 * Pure parts of the microVM layer, no guest needed: the frame splitter (any cut of a valid stream
 * splits to the same frames), the cpio writer (checked by the real cpio tool), module resolution
 * from modules.dep, what a kernel's config tells the boot, the kernel build's source lookup and
 * config check, and the QEMU command line per network mode and kernel.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { findKernelSource, isCurrentBuild, microvmConfigPath, parseConfigFragment, unmetSettings } from '../../src/vm/kernel-build.js';
import { virtioDiscovery } from '../../src/vm/kernel.js';
import { encodeCpio, initramfsEntries } from '../../src/vm/initramfs.js';
import { moduleSignaturesEnforced, resolveModules, withoutSignature } from '../../src/vm/modules.js';
import { decodeTlv, encodeExec, encodeFrame, FRAME_MAX_PAYLOAD, splitFrames, type Frame } from '../../src/vm/protocol.js';
import { buildQemuArgs, kernelCommandLine, netdevArgs } from '../../src/vm/qemu-args.js';
import type { BootSpec } from '../../src/vm/backend.js';

describe('frame splitting', () => {
  it('gives the same frames for every way of cutting the byte stream', () => {
    const frame = fc.record({ type: fc.integer({ min: 0, max: 255 }), stream: fc.nat(), payload: fc.uint8Array({ maxLength: 64 }) });
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 5 }), (frames, cuts) => {
        const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.stream, Buffer.from(f.payload))));
        const points = [...new Set(cuts.map((c) => (wire.length ? c % wire.length : 0)))].sort((a, b) => a - b);
        const got: Frame[] = [];
        let pending = Buffer.alloc(0);
        let last = 0;
        for (const p of [...points, wire.length]) {
          pending = Buffer.concat([pending, wire.subarray(last, p)]);
          last = p;
          const split = splitFrames(pending);
          if (split.kind !== 'frames') throw new Error(split.message);
          got.push(...split.frames);
          pending = Buffer.from(split.rest);
        }
        expect(pending.length).toBe(0);
        expect(got.map((f) => [f.type, f.stream, Buffer.from(f.payload).toString('hex')])).toEqual(
          frames.map((f) => [f.type, f.stream, Buffer.from(f.payload).toString('hex')]),
        );
      }),
    );
  });

  it('rejects a length over the limit instead of waiting for it', () => {
    const head = Buffer.alloc(9);
    head.writeUInt32BE(FRAME_MAX_PAYLOAD + 1, 0);
    expect(splitFrames(head)).toMatchObject({ kind: 'error' });
  });
});

describe('exec request numbers', () => {
  it('encode as 32 bits, and one that does not fit is refused, never wrapped', () => {
    const fields = decodeTlv(encodeExec({ argv: ['true'], timeoutMs: 0xffffffff })) ?? [];
    expect(fields.at(-1)?.[1].readUInt32BE(0)).toBe(0xffffffff);
    for (const timeoutMs of [2 ** 32 + 704, -1, 1.5, Number.NaN]) {
      expect(() => encodeExec({ argv: ['true'], timeoutMs })).toThrow(expect.objectContaining({ code: 'vm.protocol_range' }));
    }
  });
});

describe('initramfs cpio', () => {
  it('is read back by the cpio tool with modes, device node and contents', () => {
    const archive = encodeCpio(initramfsEntries(Buffer.from('#!agent'), [{ name: 'virtio_blk.ko', data: Buffer.from('ko') }]));
    const listing = execFileSync('cpio', ['-itv', '--quiet'], { input: archive }).toString();
    expect(listing).toMatch(/^-rwxr-xr-x .* init$/m);
    expect(listing).toMatch(/^crw------- .* 5, +1 .* dev\/console$/m);
    expect(listing).toMatch(/lib\/modules\/virtio_blk\.ko$/m);
    const list = execFileSync('cpio', ['-i', '--quiet', '--to-stdout', 'etc/modules.list'], { input: archive }).toString();
    expect(list).toBe('virtio_blk.ko\n');
  });
});

describe('module signatures', () => {
  const marker = Buffer.from('~Module signature appended~\n');
  const signed = (code: Buffer, signature: Buffer, declared = signature.length) => {
    const info = Buffer.alloc(12);
    info.writeUInt32BE(declared, 8);
    return Buffer.concat([code, signature, info, marker]);
  };
  const code = Buffer.from('\x7fELF module code');

  it.each([
    ['a signed module loses signature, info and marker', signed(code, Buffer.alloc(415, 7)), code],
    ['an unsigned module is unchanged', code, code],
    ['a declared length past the start is left for the kernel to judge', signed(code, Buffer.alloc(8), 4096), signed(code, Buffer.alloc(8), 4096)],
    ['a file shorter than the signature trailer is unchanged', marker.subarray(3), marker.subarray(3)],
  ])('%s', (_, input, expected) => {
    expect(withoutSignature(input).equals(expected)).toBe(true);
  });

  it.each([
    ['Debian cloud: signed, not forced, no forced lockdown', '# CONFIG_MODULE_SIG_FORCE is not set\nCONFIG_LOCK_DOWN_KERNEL_FORCE_NONE=y\n', false],
    ['signatures forced', 'CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_FORCE=y\n', true],
    ['integrity lockdown forced', '# CONFIG_MODULE_SIG_FORCE is not set\nCONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY=y\n', true],
    ['confidentiality lockdown forced', 'CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY=y\n', true],
    ['a commented-out force is not a force', '# CONFIG_MODULE_SIG_FORCE=y is a comment\n', false],
    ['no config shipped: keep them', null, true],
  ])('signatures enforced? %s', (_, config, enforced) => {
    expect(moduleSignaturesEnforced(config)).toBe(enforced);
  });
});

describe('virtio device discovery from the kernel config', () => {
  it.each([
    ['microagent build: no ACPI, built-in command-line devices', '# CONFIG_ACPI is not set\nCONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n', 'cmdline'],
    ['Debian cloud: ACPI, virtio-mmio a module', 'CONFIG_ACPI=y\nCONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n', 'acpi'],
    ['no ACPI but virtio-mmio a module (it could not read the command line)', 'CONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n', 'acpi'],
    ['no ACPI and no command-line devices', 'CONFIG_VIRTIO_MMIO=y\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\n', 'acpi'],
    ['both ACPI and command-line devices: ACPI stays on', 'CONFIG_ACPI=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n', 'acpi'],
    ['no config (a bare image): ACPI', null, 'acpi'],
  ] as const)('%s', (_, config, expected) => {
    expect(virtioDiscovery(config)).toBe(expected);
  });
});

describe('kernel build: config check', () => {
  it.each([
    ['built from the shipped fragment', (h: string) => `build:linux-source-6.1.tar.xz+microvm.config@${h}`, true],
    ['built from an older fragment', () => 'build:linux-source-6.1.tar.xz+microvm.config@000000000000', false],
    ['a distribution kernel', () => 'debian:linux-image-6.1.0-56-cloud-amd64', false],
    ['a kernel the user gave', () => 'path:/boot/vmlinuz-6.1', false],
  ])('tells a current build: %s', (_, source, current) => {
    const shipped = createHash('sha256').update(readFileSync(microvmConfigPath())).digest('hex').slice(0, 12);
    expect(isCurrentBuild(source(shipped))).toBe(current);
  });

  const fragment = parseConfigFragment('# comment\nCONFIG_A=y\nCONFIG_B=n\n# CONFIG_C is not set\nCONFIG_D="-microagent"\nCONFIG_E=16\n');

  it('reads set, =n and "is not set" lines, and skips comments', () => {
    expect([...fragment]).toEqual([['CONFIG_A', 'y'], ['CONFIG_B', 'n'], ['CONFIG_C', 'n'], ['CONFIG_D', '"-microagent"'], ['CONFIG_E', '16']]);
  });

  it.each([
    ['everything held (absent means n)', 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D="-microagent"\nCONFIG_E=16\n', []],
    ['a y that Kconfig dropped', '# CONFIG_A is not set\nCONFIG_D="-microagent"\nCONFIG_E=16\n', ['CONFIG_A=y (got n)']],
    ['an n that a dependency forced on', 'CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_D="-microagent"\nCONFIG_E=16\n', ['CONFIG_B=n (got y)', 'CONFIG_C=n (got m)']],
    ['a changed value', 'CONFIG_A=y\nCONFIG_D=""\nCONFIG_E=8\n', ['CONFIG_D="-microagent" (got "")', 'CONFIG_E=16 (got 8)']],
  ])('%s', (_, final, unmet) => {
    expect(unmetSettings(fragment, parseConfigFragment(final))).toEqual(unmet);
  });
});

describe('kernel build: source lookup', () => {
  const layout = (files: readonly string[]): string => {
    const root = mkdtempSync(join(tmpdir(), 'ma-usrsrc-'));
    for (const f of files) {
      mkdirSync(join(root, f, '..'), { recursive: true });
      writeFileSync(join(root, f), '');
    }
    return root;
  };

  it.each([
    ['Debian: the tarball in /usr/src', ['linux-source-6.1.tar.xz', 'linux-config-6.1/config.amd64_none_amd64.xz'], 'linux-source-6.1.tar.xz'],
    ['Ubuntu: the tarball in its own directory', ['linux-source-6.8.0/linux-source-6.8.0.tar.bz2', 'linux-source-6.8.0/debian/rules'], 'linux-source-6.8.0/linux-source-6.8.0.tar.bz2'],
    ['the newest version wins, compared as numbers', ['linux-source-6.9.tar.xz', 'linux-source-6.10.tar.xz', 'linux-source-6.1.tar.xz'], 'linux-source-6.10.tar.xz'],
  ])('%s', (_, files, expected) => {
    const root = layout(files);
    try {
      expect(findKernelSource(root)).toBe(join(root, expected));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('says which package to install when there is none', () => {
    const root = layout(['linux-headers-6.1/Makefile', 'linux-source-6.1.tar.xz.partial']);
    try {
      expect(() => findKernelSource(root)).toThrow(expect.objectContaining({ kind: 'not_found', code: 'vm.kernel_source_missing', remediation: expect.stringContaining('linux-source') }));
      expect(() => findKernelSource(join(root, 'absent'))).toThrow(expect.objectContaining({ code: 'vm.kernel_source_missing' }));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('module resolution', () => {
  const dep = [
    'kernel/drivers/virtio/virtio_ring.ko:',
    'kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko',
    'kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko',
    'kernel/fs/jbd2/jbd2.ko:',
    'kernel/fs/mbcache.ko:',
  ].join('\n');

  it('orders dependencies first, skips built-ins, and takes optional drivers that exist', () => {
    const order = resolveModules(dep, 'kernel/fs/ext4/ext4.ko\n');
    expect(order).toEqual([
      'kernel/drivers/virtio/virtio_ring.ko', 'kernel/drivers/virtio/virtio.ko', 'kernel/drivers/virtio/virtio_mmio.ko',
      'kernel/drivers/block/virtio_blk.ko.xz', 'kernel/drivers/char/virtio_console.ko', 'kernel/drivers/char/hw_random/virtio-rng.ko',
    ]);
    expect(resolveModules(dep, '')).toContain('kernel/fs/jbd2/jbd2.ko');
  });

  it('refuses a kernel without a required driver', () => {
    expect(() => resolveModules('kernel/drivers/virtio/virtio.ko:', '')).toThrow(expect.objectContaining({ code: 'vm.kernel_unsuitable' }));
  });
});

describe('QEMU command line', () => {
  const spec: BootSpec = {
    kernelPath: '/k/vmlinuz', initramfsPath: '/k/initrd', rootfsPath: '/r/root,1.img', memoryMiB: 256, cpus: 1,
    network: { mode: 'isolated' }, runDir: '/run/x', accelerator: 'tcg',
  };
  const paths = { agentSocket: '/run/x/agent.sock', qmpSocket: '/run/x/qmp.sock', serialLog: '/run/x/serial.log' };

  it('has no network device in isolated mode and escapes commas in paths', () => {
    const args = buildQemuArgs(spec, paths, { tscKhz: 2_000_000 });
    expect(args.join(' ')).not.toContain('netdev');
    expect(args).toContain('id=root,file=/r/root,,1.img,format=raw,if=none');
    expect(args[args.indexOf('-append') + 1]).toContain('tsc_early_khz=2000000');
    expect(args).toContain('tcg,thread=multi');
  });

  it('restricts user networking to the forwarded proxy and DNS sockets, named from the run directory', () => {
    // The state directory's path may hold what socat cannot parse (a comma, a colon, a quote).
    const run = "/state, it's:here/run";
    const [flag, netdev] = netdevArgs({ mode: 'user', proxySocket: `${run}/proxy.sock`, dnsSocket: `${run}/dns.sock`, publish: [{ hostPort: 8080, guestPort: 80 }] }, run);
    expect(flag).toBe('-netdev');
    expect(netdev).toContain('restrict=on');
    expect(netdev).toContain('guestfwd=tcp:10.0.2.100:3128-cmd:socat STDIO UNIX-CONNECT:proxy.sock');
    expect(netdev).toContain('guestfwd=tcp:10.0.2.100:53-cmd:socat STDIO UNIX-CONNECT:dns.sock');
    expect(netdev).toContain('hostfwd=tcp:127.0.0.1:8080-:80');
    expect(netdevArgs({ mode: 'user', proxySocket: '/state, it\'s:here/proxy.sock', dnsSocket: `${run}/dns.sock` }, run)[1]).toContain('UNIX-CONNECT:../proxy.sock');
    expect(() => netdevArgs({ mode: 'user', proxySocket: "/elsewhere, it's/proxy.sock", dnsSocket: `${run}/dns.sock` }, run)).toThrow(expect.objectContaining({ code: 'vm.socket_path' }));
  });

  it('opens the root disk read-only, its writes in a throwaway file, only when asked to', () => {
    const driveOf = (args: string[]) => args[args.indexOf('-drive') + 1];
    expect(driveOf(buildQemuArgs(spec, paths))).toBe('id=root,file=/r/root,,1.img,format=raw,if=none');
    expect(driveOf(buildQemuArgs({ ...spec, rootfsWritesTo: '/w/ws' }, paths))).toBe('id=root,file=/r/root,,1.img,format=raw,if=none,snapshot=on');
  });

  it('adds a vhost-vsock device only when a valid CID is given', () => {
    expect(buildQemuArgs(spec, paths).join(' ')).not.toContain('vsock');
    expect(buildQemuArgs({ ...spec, vsockCid: 7 }, paths)).toContain('vhost-vsock-device,guest-cid=7');
    expect(() => buildQemuArgs({ ...spec, vsockCid: 2 }, paths)).toThrow(expect.objectContaining({ kind: 'invalid' }));
  });

  it('turns ACPI off only for a kernel that finds its devices on the command line', () => {
    const machineOf = (args: string[]) => args[args.indexOf('-M') + 1];
    expect(machineOf(buildQemuArgs(spec, paths))).toBe('microvm,x-option-roms=off,rtc=on');
    expect(machineOf(buildQemuArgs({ ...spec, virtioDiscovery: 'acpi' }, paths))).toBe('microvm,x-option-roms=off,rtc=on');
    expect(machineOf(buildQemuArgs({ ...spec, virtioDiscovery: 'cmdline' }, paths))).toBe('microvm,x-option-roms=off,rtc=on,acpi=off');
  });

  it('skips the local APIC timer calibration only under TCG on the machine without ACPI', () => {
    const words = (s: BootSpec) => kernelCommandLine(s, {}).split(' ');
    expect(words({ ...spec, virtioDiscovery: 'cmdline' })).toContain('nolapic_timer');
    expect(words({ ...spec, virtioDiscovery: 'cmdline', accelerator: 'kvm' })).not.toContain('nolapic_timer');
    expect(words({ ...spec, virtioDiscovery: 'acpi' })).not.toContain('nolapic_timer');
    expect(words(spec)).not.toContain('nolapic_timer');
  });

  it('leaves restrict off only in egress-off mode', () => {
    expect(netdevArgs({ mode: 'off' }, '/r')[1]).not.toContain('restrict');
    expect(() => netdevArgs({ mode: 'off', publish: [{ hostPort: 0, guestPort: 80 }] }, '/r')).toThrow(expect.objectContaining({ kind: 'invalid' }));
  });
});
