/**
 * Direct-boot kernel images without QEMU: synthetic bzImages around synthetic ELFs, compressed with
 * gzip in process and with the host's real lz4/xz/zstd the way the kernel build does (payload, then
 * its decompressed size as u32 LE). A payload that does not unpack to exactly that size, an ELF
 * with a segment past its end, or one without the PVH note never becomes a direct-boot image.
 */
import { spawnSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { bzImagePayload, directBootImage, isKernelImage, isPvhElf, virtioDiscoveryOfImage } from '../../src/vm/kernel-image.js';

/** An ELF64 LE image with one PT_NOTE segment holding a note named `noteName` of type `noteType`. */
function elf(noteName = 'Xen', noteType = 18, truncateBy = 0): Buffer {
  const name = Buffer.alloc(Math.ceil((noteName.length + 1) / 4) * 4);
  name.write(noteName, 'latin1');
  const note = Buffer.concat([Buffer.alloc(12), name, Buffer.alloc(4)]);
  note.writeUInt32LE(noteName.length + 1, 0);
  note.writeUInt32LE(4, 4);
  note.writeUInt32LE(noteType, 8);
  const head = Buffer.alloc(64 + 56);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(head);
  head.writeBigUInt64LE(64n, 0x20); // e_phoff
  head.writeUInt16LE(56, 0x36); // e_phentsize
  head.writeUInt16LE(1, 0x38); // e_phnum
  head.writeUInt32LE(4, 64); // p_type PT_NOTE
  head.writeBigUInt64LE(BigInt(head.length), 64 + 8); // p_offset
  head.writeBigUInt64LE(BigInt(note.length), 64 + 32); // p_filesz
  const whole = Buffer.concat([head, note, Buffer.alloc(4096, 0x90)]);
  return whole.subarray(0, whole.length - truncateBy - (truncateBy > 0 ? 4096 : 0));
}

/** A bzImage (boot protocol 2.15, 2 setup sectors) whose payload is `payload`. */
function bzImage(payload: Buffer): Buffer {
  const setup = Buffer.alloc(3 * 512);
  setup[0x1f1] = 2;
  setup.write('HdrS', 0x202, 'latin1');
  setup.writeUInt16LE(0x20f, 0x206);
  setup.writeUInt32LE(16, 0x248); // payload_offset from the protected-mode code
  setup.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([setup, Buffer.alloc(16), payload, Buffer.alloc(32)]);
}

function withSize(compressed: Buffer, size: number): Buffer {
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(size);
  return Buffer.concat([compressed, tail]);
}

function compress(tool: string, args: string[], data: Buffer): Buffer {
  const out = spawnSync(tool, args, { input: data, encoding: 'buffer' });
  if (out.status !== 0) throw new Error(`${tool} failed: ${out.stderr}`);
  return out.stdout;
}

describe('isPvhElf', () => {
  it.each([
    ['a complete ELF with the Xen PHYS32_ENTRY note', elf(), true],
    ['another Xen note only', elf('Xen', 5), false],
    ['the right type under another name', elf('GNU', 18), false],
    ['a segment past the end of the file', elf('Xen', 18, 8), false],
    ['not an ELF', Buffer.from('MZ not a kernel'), false],
  ])('%s', (_, image, expected) => {
    expect(isPvhElf(image)).toBe(expected);
  });
});

describe('bzImagePayload', () => {
  it('finds the payload and names its compressor', () => {
    const payload = gzipSync(elf());
    expect(bzImagePayload(bzImage(payload))).toEqual({ compressor: 'gzip', data: payload });
  });

  it('is null for a boot protocol without payload fields, a payload past the end, or an unknown compressor', () => {
    const old = bzImage(gzipSync(elf()));
    old.writeUInt16LE(0x207, 0x206);
    expect(bzImagePayload(old)).toBeNull();
    const long = bzImage(gzipSync(elf()));
    long.writeUInt32LE(1 << 20, 0x24c);
    expect(bzImagePayload(long)).toBeNull();
    expect(bzImagePayload(bzImage(Buffer.from('BZh91AY&SY')))).toBeNull();
  });
});

describe('directBootImage', () => {
  it('unpacks gzip in process', () => {
    const r = directBootImage(bzImage(gzipSync(elf())));
    expect(r).toEqual({ format: 'pvh-elf', elf: elf() });
  });

  it.each([
    ['lz4', ['-l', '-c1']],
    ['xz', ['--check=crc32', '-c']],
    ['zstd', ['-c', '-q']],
  ])('unpacks %s with the host tool and checks the appended size', (tool, args) => {
    const kernel = elf();
    const packed = compress(tool, args, kernel);
    expect(directBootImage(bzImage(withSize(packed, kernel.length)))).toEqual({ format: 'pvh-elf', elf: kernel });
    const wrongSize = directBootImage(bzImage(withSize(packed, kernel.length + 1)));
    expect(wrongSize).toMatchObject({ format: 'bzimage', why: expect.stringContaining(`${kernel.length} bytes`) });
    const corrupt = Buffer.from(packed);
    corrupt.fill(0x55, 12, 40);
    expect(directBootImage(bzImage(withSize(corrupt, kernel.length)))).toMatchObject({ format: 'bzimage' });
  });

  it('keeps the bzImage when the kernel inside has no PVH entry', () => {
    expect(directBootImage(bzImage(gzipSync(elf('Xen', 5))))).toMatchObject({ format: 'bzimage', why: expect.stringContaining('PVH') });
  });

  it('takes a PVH ELF as it is and refuses other ELFs and unknown files', () => {
    expect(directBootImage(elf())).toEqual({ format: 'pvh-elf', elf: elf() });
    expect(directBootImage(elf('GNU', 1))).toMatchObject({ format: 'unknown' });
    expect(directBootImage(Buffer.alloc(4096))).toMatchObject({ format: 'unknown' });
  });
});

describe('virtioDiscoveryOfImage', () => {
  const image = (...strings: string[]) => Buffer.concat([elf(), Buffer.from(strings.join('\0'), 'latin1')]);
  it.each([
    ['command-line devices, no ACPI (a microVM kernel)', image('virtio-mmio: Registering device virtio-mmio.%d at 0x%llx'), 'cmdline'],
    ['ACPI and command-line devices', image('ACPI: Core revision %08x', 'Registering device virtio-mmio.%d'), 'acpi'],
    ['ACPI, virtio-mmio as a module (a distribution kernel)', image('ACPI: Core revision %08x'), 'acpi'],
    ['neither', image('Linux version %s'), 'acpi'],
  ] as const)('%s: %s', (_what, kernel, expected) => {
    expect(virtioDiscoveryOfImage(kernel)).toBe(expected);
  });

  it('isKernelImage takes an ELF or a bzImage and nothing else', () => {
    const bz = Buffer.alloc(0x300);
    bz.write('HdrS', 0x202, 'latin1');
    expect([isKernelImage(elf()), isKernelImage(bz), isKernelImage(Buffer.from('root:x:0:0:root:/root:/bin/bash\n'.repeat(40)))]).toEqual([true, true, false]);
  });
});
