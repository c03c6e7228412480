// A command's stdin on its way to the guest (src/vm/stdin-flow.ts), without a guest: never more than
// the window on the channel before a credit, bytes in order and intact, the end after the last byte,
// and the high-water signal a caller holds its source on.
import { describe, expect, it } from 'vitest';
import { MSG } from '../../src/vm/protocol.js';
import { StdinFlow } from '../../src/vm/stdin-flow.js';

function recorder() {
  const frames: { type: number; payload: Buffer | undefined }[] = [];
  const sentBytes = () => frames.filter((f) => f.type === MSG.STDIN).reduce((n, f) => n + (f.payload?.length ?? 0), 0);
  return { frames, sentBytes, send: (type: number, payload?: Buffer) => void frames.push({ type, payload }) };
}

describe('stdin to the guest', () => {
  it.each([
    ['one small write', [10], 10],
    ['a write larger than the window', [300], 100],
    ['many writes past the window', [40, 40, 40], 100],
  ])('%s: at most the window goes out before a credit', (_, sizes, expected) => {
    const r = recorder();
    const flow = new StdinFlow(r.send, 1000, 100);
    for (const size of sizes) flow.write(Buffer.alloc(size, 1));
    expect(r.sentBytes()).toBe(expected);
    expect(flow.queued).toBe(sizes.reduce((a, b) => a + b, 0) - expected);
  });

  it('credits release the rest in order, byte for byte, and the end goes out after the last byte', () => {
    const r = recorder();
    const flow = new StdinFlow(r.send, 1000, 100);
    const input = Buffer.from(Array.from({ length: 250 }, (_, i) => i % 256));
    flow.write(input.subarray(0, 70));
    flow.write(input.subarray(70));
    flow.end();
    expect(r.frames.some((f) => f.type === MSG.STDIN_EOF)).toBe(false);
    flow.credit(100);
    flow.credit(100);
    expect(r.frames.at(-1)?.type).toBe(MSG.STDIN_EOF);
    expect(Buffer.concat(r.frames.filter((f) => f.type === MSG.STDIN).map((f) => f.payload as Buffer))).toEqual(input);
    expect(r.frames.filter((f) => f.type === MSG.STDIN_EOF)).toHaveLength(1);
  });

  it('says false past the high-water mark and calls the drain listener once the queue is back under it', () => {
    const r = recorder();
    const flow = new StdinFlow(r.send, 50, 100);
    expect(flow.write(Buffer.alloc(120))).toBe(true); // 100 out, 20 waiting
    expect(flow.write(Buffer.alloc(60))).toBe(false); // 80 waiting
    let drained = 0;
    flow.drained(() => drained++);
    expect(drained).toBe(0);
    flow.credit(40); // 40 more out, 40 waiting
    expect(drained).toBe(1);
    flow.drained(() => drained++); // already under: at once
    expect(drained).toBe(2);
  });

  it('writes after the end, and empty writes, send nothing', () => {
    const r = recorder();
    const flow = new StdinFlow(r.send, 1000, 100);
    flow.write(Buffer.alloc(0));
    flow.end();
    flow.write(Buffer.alloc(5));
    expect(r.frames.map((f) => f.type)).toEqual([MSG.STDIN_EOF]);
  });
});
