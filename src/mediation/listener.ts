/**
 * The broker's listening sockets: the private socket directory, binding `<port>.sock`, and removing it
 * again. Never replaces a file that is not a socket, nor a socket something still answers on (that
 * would hijack another broker's guest channel).
 */
import { chmod, lstat, stat, unlink } from 'node:fs/promises';
import { connect, type Server } from 'node:net';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { MAX_UNIX_PATH_BYTES } from './target.js';
import { makeDirs } from '../make-dirs.js';

/** Creates the socket directory (0700) or checks an existing one is private; refuses paths sun_path cannot hold. */
export async function prepareSocketDir(dir: string): Promise<void> {
  // The longest socket name is "4294967295.sock"; past sun_path the listen would fail obscurely.
  if (Buffer.byteLength(join(dir, '4294967295.sock')) > MAX_UNIX_PATH_BYTES) {
    throw new MicroagentError('invalid', `mediation socket directory ${dir} is too long for Unix socket paths`, {
      code: 'mediation.socket_dir',
      remediation: `use a directory path of at most ${MAX_UNIX_PATH_BYTES - 16} bytes`,
    });
  }
  const created = makeDirs(dir, 0o700);
  if (created !== undefined) {
    // The umask can only narrow 0700; chmod makes the mode exact on the directory we made.
    await chmod(dir, 0o700);
    return;
  }
  // An existing directory is never loosened or tightened for us: a shared one (say /tmp) would let
  // other local users connect to the channel sockets and speak to the host as this workspace.
  const info = await stat(dir);
  if (!info.isDirectory() || (info.mode & 0o077) !== 0 || info.uid !== process.getuid?.()) {
    throw new MicroagentError('invalid', `mediation socket directory ${dir} is not a private directory of this user (mode ${(info.mode & 0o777).toString(8)})`, {
      code: 'mediation.socket_dir',
      remediation: `choose a new path (it is created with mode 0700) or run "chmod 700 ${dir}" if only you use it`,
    });
  }
}

/** Listens on `path`, replacing a stale socket file but never a live one or a non-socket. */
export async function listenOn(server: Server, path: string): Promise<void> {
  const existing = await lstat(path).catch(() => null);
  if (existing !== null) {
    if (!existing.isSocket()) {
      throw new MicroagentError('conflict', `${path} exists and is not a socket; the mediation broker will not replace it`, {
        code: 'mediation.socket_path',
        remediation: 'remove the file or choose another --socket-dir',
      });
    }
    if (await isAnswering(path)) {
      throw new MicroagentError('conflict', `${path} is already served by another process`, {
        code: 'mediation.socket_in_use',
        remediation: 'stop the other broker for this workspace, or choose another --socket-dir',
      });
    }
    // A socket left by a broker that died: nothing answers on it, so replacing it is safe.
    await unlink(path);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function isAnswering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** Stops accepting and removes the socket file, so a guest reconnecting finds nothing to answer. */
export async function closeListener(server: Server, path: string): Promise<void> {
  // Only ours to remove if we were listening on it: a failed start must not delete another broker's socket.
  if (!server.listening) return;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await unlink(path).catch(() => {});
}
