// Image progress as a terminal shows it: one line, redrawn in place, erased before the command's output.
import { describe, expect, it } from 'vitest';
import { progressLine, progressUpdate } from '../../src/cli/progress.js';

const DIGEST = 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';

describe('image progress', () => {
  it.each([
    [{ kind: 'resolve', reference: 'docker.io/library/alpine:3.19' }, 'image docker.io/library/alpine:3.19: resolving'],
    [{ kind: 'cached', digest: DIGEST }, 'image 0123456789ab: cached'],
    [{ kind: 'layer', index: 2, count: 3, digest: DIGEST, bytes: 5 * 2 ** 20, totalBytes: 12.25 * 2 ** 20 }, 'image layer 2/3 0123456789ab: 5.0 of 12.3 MiB'],
    [{ kind: 'filesystem', digest: DIGEST }, 'image 0123456789ab: building the root filesystem'],
    [{ kind: 'done', digest: DIGEST, cached: false }, ''],
  ] as const)('%j reads %j', (event, line) => {
    expect(progressLine(event)).toBe(line);
  });

  it('redraws in place, within the terminal\'s width, and erases itself when done', () => {
    expect(progressUpdate({ kind: 'cached', digest: DIGEST }, 80)).toBe('\r\x1b[Kimage 0123456789ab: cached');
    expect(progressUpdate({ kind: 'resolve', reference: 'x'.repeat(200) }, 40)).toBe(`\r\x1b[K${'image xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'.slice(0, 39)}`);
    expect(progressUpdate({ kind: 'done', digest: DIGEST, cached: true }, 80)).toBe('\r\x1b[K');
  });
});
