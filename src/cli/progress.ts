/**
 * Image pull and build progress as one line a terminal can redraw in place (`\r` + erase line). Pure:
 * run.ts decides whether to show it (a terminal, human mode) and writes it.
 */
import type { ImageProgressEvent } from '../vm/rootfs/progress.js';

const MiB = 2 ** 20;

/** `sha256:0123456789ab…` -> `0123456789ab`, as docker prints digests. */
function short(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1, digest.indexOf(':') + 13);
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1);
}

/** The line for an event; empty for `done` (the line is erased before the command's output). */
export function progressLine(e: ImageProgressEvent): string {
  switch (e.kind) {
    case 'resolve':
      return `image ${e.reference}: resolving`;
    case 'cached':
      return `image ${short(e.digest)}: cached`;
    case 'layer':
      return `image layer ${e.index}/${e.count} ${short(e.digest)}: ${mib(e.bytes)} of ${mib(e.totalBytes)} MiB`;
    case 'filesystem':
      return `image ${short(e.digest)}: building the root filesystem`;
    case 'done':
      return '';
    default: {
      const never: never = e;
      return never;
    }
  }
}

/** What to write to a terminal for the event: the line, redrawn in place, cut to the terminal's width. */
export function progressUpdate(e: ImageProgressEvent, columns: number): string {
  return `\r\x1b[K${progressLine(e).slice(0, Math.max(columns - 1, 0))}`;
}
