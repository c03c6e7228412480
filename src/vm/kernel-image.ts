/**
 * Kernel images for direct boot. A distribution ships a bzImage: a real-mode stub plus a compressed
 * kernel that unpacks itself at boot, which under TCG (no KVM) costs a few hundred milliseconds of
 * emulated decompression on every start. When the kernel inside has a PVH entry point (an ELF note
 * Xen and QEMU's loader understand), QEMU can load that ELF directly and skip the whole step, on KVM
 * as well. This file unpacks the bzImage payload once, at install, with the host's own decompressor,
 * and checks the result is a complete PVH-capable ELF; anything else keeps the bzImage. It never
 * accepts a truncated or mismatched payload.
 */
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { findExecutable } from './host-tools.js';

/** Payload compressors a distribution kernel uses, by magic; gzip is unpacked in process. */
const COMPRESSORS = [
  { magic: [0x1f, 0x8b], tool: 'gzip' },
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], tool: 'xz' },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], tool: 'zstd' },
  { magic: [0x02, 0x21, 0x4c, 0x18], tool: 'lz4' },
] as const;

export type Compressor = (typeof COMPRESSORS)[number]['tool'];

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point QEMU's ELF loader looks for. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

function startsWith(buf: Buffer, magic: readonly number[], at = 0): boolean {
  return buf.length >= at + magic.length && magic.every((b, i) => buf[at + i] === b);
}

/**
 * How a kernel given without its config finds virtio-mmio devices, read from its own strings (the
 * uncompressed ELF): one built without ACPI but with command-line devices, as microVM kernels often
 * are (Firecracker's, `microagent kernel build`'s), has the message the command-line registration
 * prints and none of ACPI's. Anything else is taken to use ACPI, as a distribution kernel does.
 */
export function virtioDiscoveryOfImage(elf: Buffer): 'acpi' | 'cmdline' {
  const acpi = elf.includes('ACPI: Core revision');
  const cmdlineDevices = elf.includes('Registering device virtio-mmio.');
  return !acpi && cmdlineDevices ? 'cmdline' : 'acpi';
}

/** Whether `image` can be a Linux kernel QEMU boots: an ELF (vmlinux) or a bzImage (its "HdrS" boot header). */
export function isKernelImage(image: Buffer): boolean {
  return startsWith(image, ELF_MAGIC) || (image.length >= 0x206 && image.toString('latin1', 0x202, 0x206) === 'HdrS');
}

/** The compressed kernel inside a bzImage (boot protocol 2.08+), or null when it is not one. */
export function bzImagePayload(image: Buffer): { compressor: Compressor; data: Buffer } | null {
  if (image.length < 0x250 || image.toString('latin1', 0x202, 0x206) !== 'HdrS' || image.readUInt16LE(0x206) < 0x208) return null;
  const setupSectors = image[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (start + length > image.length) return null;
  const data = image.subarray(start, start + length);
  const found = COMPRESSORS.find((c) => startsWith(data, c.magic));
  return found === undefined ? null : { compressor: found.tool, data };
}

/** True for a complete ELF64 little-endian image (every segment's bytes present) with a PVH note. */
export function isPvhElf(elf: Buffer): boolean {
  if (elf.length < 64 || !startsWith(elf, ELF_MAGIC) || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  if (phentsize < 56 || phoff + phnum * phentsize > elf.length) return false;
  let pvh = false;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = elf.readUInt32LE(ph);
    const offset = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 32));
    if (offset + size > elf.length) return false;
    if (type === PT_NOTE) pvh ||= hasPhys32EntryNote(elf.subarray(offset, offset + size));
  }
  return pvh;
}

function hasPhys32EntryNote(notes: Buffer): boolean {
  const align4 = (n: number) => (n + 3) & ~3;
  for (let at = 0; at + 12 <= notes.length;) {
    const namesz = notes.readUInt32LE(at);
    const descsz = notes.readUInt32LE(at + 4);
    const type = notes.readUInt32LE(at + 8);
    const name = notes.toString('latin1', at + 12, at + 12 + Math.max(0, namesz - 1));
    if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
    at += 12 + align4(namesz) + align4(descsz);
  }
  return false;
}

/**
 * Unpacks a bzImage's payload. The kernel build appends the decompressed size (u32 LE) to every
 * payload but gzip's (whose trailer already holds it); the result must match it exactly.
 */
function decompress(payload: { compressor: Compressor; data: Buffer }): Buffer | string {
  if (payload.compressor === 'gzip') {
    try { return gunzipSync(payload.data); } catch (err) { return `gzip: ${(err as Error).message}`; }
  }
  if (findExecutable(payload.compressor) === undefined) return `${payload.compressor} is not installed`;
  const stream = payload.data.subarray(0, payload.data.length - 4);
  const expected = payload.data.readUInt32LE(payload.data.length - 4);
  const out = spawnSync(payload.compressor, ['-dc'], { input: stream, maxBuffer: expected + 1, encoding: 'buffer' });
  if (out.error !== undefined) return `${payload.compressor}: ${out.error.message}`;
  if (out.status !== 0) return `${payload.compressor} exited ${out.status}: ${out.stderr.toString().trim()}`;
  if (out.stdout.length !== expected) return `${payload.compressor} produced ${out.stdout.length} bytes, the image says ${expected}`;
  return out.stdout;
}

export type DirectBootImage =
  | { readonly format: 'pvh-elf'; readonly elf: Buffer }
  | { readonly format: 'bzimage' | 'unknown'; readonly why: string };

/** The PVH ELF to boot directly for a kernel image file's bytes, or why the image must boot as it is. */
export function directBootImage(image: Buffer): DirectBootImage {
  if (startsWith(image, ELF_MAGIC)) {
    return isPvhElf(image) ? { format: 'pvh-elf', elf: image } : { format: 'unknown', why: 'the ELF kernel has no PVH entry note' };
  }
  const payload = bzImagePayload(image);
  if (payload === null) return { format: 'unknown', why: 'not a bzImage with a known payload compression' };
  const elf = decompress(payload);
  if (typeof elf === 'string') return { format: 'bzimage', why: elf };
  return isPvhElf(elf) ? { format: 'pvh-elf', elf } : { format: 'bzimage', why: 'the kernel has no PVH entry point' };
}
