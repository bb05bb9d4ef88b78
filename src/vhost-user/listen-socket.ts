/**
 * A listening AF_UNIX socket at a path: how a process claims the path, and
 * how it gives it back without harming anyone else's socket.
 *
 * Theory of operation. Claiming PATH (`UnixListener.open`):
 *
 * - nothing at PATH: bind there.
 * - a socket file: probe it with a connect. ECONNREFUSED means nobody
 *   listens (a process died without cleaning up): the stale file is removed
 *   and we bind. A connect that succeeds, or EAGAIN (a listener whose backlog
 *   is full), means a live listener: another backend serving VMs there.
 *   Replacing its file would send new VMs to us and leave it unreachable, so
 *   we refuse with a SocketPathInUseError. The probe connection is closed at
 *   once without a byte sent (the listener sees a connection that closes
 *   before saying anything; VhostUserServer does not count that as a
 *   frontend). Any other probe error (EACCES: someone else's socket) is
 *   refused too: we cannot tell, so we leave it.
 * - anything else (regular file, directory, symlink): refused, never removed.
 *
 * The file is created with mode 0600 (the owner only may connect) before it
 * accepts connections, and its identity (st_dev, st_ino) is recorded.
 * Giving back (`close`): the fd is closed and PATH is removed only if it is
 * still that very file. If someone removed it and another process bound a
 * new socket there, that socket is left alone.
 *
 * The probe and the removal are not one atomic step: two backends started
 * at the same instant on the same stale file can both see it stale; the
 * later bind then fails (EADDRINUSE), or, in the narrowest interleaving, the
 * later process takes the path. The identity check keeps even that case from
 * unlinking the other's socket at exit.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { native, errnoCode } from '../native/index.js';
import { closeQuietly } from './connection.js';

/** PATH is a socket with a live listener (a connect to it succeeded). */
export class SocketPathInUseError extends Error {
  constructor(readonly path: string) {
    super(`socket ${path} is in use by another backend`);
  }
}

/** What `UnixListener.close` did with the socket file. */
export type SocketFileFate = 'removed' | 'gone' | 'replaced';

export class UnixListener {
  private closed = false;

  private constructor(
    readonly path: string,
    readonly fd: number,
    private readonly dev: bigint,
    private readonly ino: bigint,
  ) {}

  /**
   * Listen on `path` (mode 0600), replacing a stale socket file there.
   * Throws SocketPathInUseError for a live one, and an Error for a path that
   * is not a socket or cannot be probed; system errors of bind/listen as
   * thrown by the addon.
   */
  static open(path: string, backlog: number): UnixListener {
    removeStaleSocket(path);
    const { fd, dev, ino } = native.unixListen(path, backlog);
    return new UnixListener(path, fd, dev, ino);
  }

  /** True while PATH is still the socket file this listener created. */
  ownsPath(): boolean {
    const st = lstatSync(this.path, { bigint: true, throwIfNoEntry: false });
    return st !== undefined && st.dev === this.dev && st.ino === this.ino;
  }

  /**
   * Close the fd (close any watcher on it first) and remove the socket file
   * if it is still ours. Idempotent; returns what happened to the file.
   */
  close(): SocketFileFate {
    if (this.closed) return 'gone';
    closeQuietly(this.fd);
    return this.releasePath();
  }

  /**
   * Remove the socket file if it is still ours, leaving the fd alone: for a
   * listener whose fd was handed to another owner that closes it (Node's
   * net.Server, for the control endpoint). Idempotent with `close`.
   */
  releasePath(): SocketFileFate {
    if (this.closed) return 'gone';
    this.closed = true;
    if (!this.ownsPath()) {
      return lstatSync(this.path, { throwIfNoEntry: false }) === undefined ? 'gone' : 'replaced';
    }
    try {
      unlinkSync(this.path);
      return 'removed';
    } catch {
      return 'gone';
    }
  }
}

/** The probe described above: returns when PATH is free (nothing there, or a stale socket now removed). */
function removeStaleSocket(path: string): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket: refusing to replace it`);
  let probe: number;
  try {
    probe = native.unixConnect(path);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT') return; // removed meanwhile
    if (code === 'EAGAIN') throw new SocketPathInUseError(path);
    if (code !== 'ECONNREFUSED') {
      throw new Error(`cannot tell whether socket ${path} is in use (connect: ${code ?? String(e)}): refusing to replace it`);
    }
    try {
      unlinkSync(path);
    } catch (u) {
      if (errnoCode(u) !== 'ENOENT') throw u;
    }
    return;
  }
  closeQuietly(probe);
  throw new SocketPathInUseError(path);
}
