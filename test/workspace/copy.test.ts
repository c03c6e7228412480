/** `microagent cp`'s two ends: NAME:PATH in a workspace, anything else on the host. */
import { describe, expect, it } from 'vitest';
import { parseCopyEnd } from '../../src/vm/workspace/copy.js';

describe('parseCopyEnd', () => {
  it.each([
    ['dev:/work', { workspace: 'dev', path: '/work' }],
    ['dev:/', { workspace: 'dev', path: '/' }],
    ['./src', { workspace: null, path: './src' }],
    ['/tmp/out', { workspace: null, path: '/tmp/out' }],
    // A host path with a colon: anything with a slash before the colon is a path, never a workspace name.
    ['./a:b', { workspace: null, path: './a:b' }],
    ['dir/a:b', { workspace: null, path: 'dir/a:b' }],
    [':x', { workspace: null, path: ':x' }],
  ])('%s', (text, end) => expect(parseCopyEnd(text)).toEqual(end));

  it('refuses a relative path in a workspace, showing the absolute one', () => {
    expect(() => parseCopyEnd('dev:work')).toThrow(expect.objectContaining({ message: '"dev:work": a path in a workspace must be absolute', remediation: 'write it as dev:/work' }));
  });
});
