/**
 * Claiming and giving back a listening socket path (src/vhost-user/
 * listen-socket.ts) with real sockets: stale files replaced, live ones and
 * non-sockets refused, mode 0600, and only our own file removed at close.
 * The same rules end to end, with two backend processes, are in cli.test.ts.
 */
import { describe, it, expect } from 'vitest';
import { lstatSync, mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { native, errnoCode } from '../src/native/index.js';
import { SocketPathInUseError, UnixListener } from '../src/vhost-user/listen-socket.js';
import { socketScratch } from './helpers/vhost-user.js';

const { cleanups, socketPath } = socketScratch('vun-listen-');

function open(path: string, backlog = 4): UnixListener {
  const l = UnixListener.open(path, backlog);
  cleanups.push(() => void l.close());
  return l;
}

describe('UnixListener', () => {
  it('creates the socket 0600, accepts connections, and removes its file at close', () => {
    const path = socketPath();
    const l = open(path);
    expect(lstatSync(path).mode & 0o777).toBe(0o600);
    expect(l.ownsPath()).toBe(true);
    expect(connects(path, l)).toBe(true);
    expect(l.close()).toBe('removed');
    expect(lstatSync(path, { throwIfNoEntry: false })).toBeUndefined();
    expect(l.close()).toBe('gone');
  });

  it('replaces a stale socket file (nobody listens)', () => {
    const path = socketPath();
    native.close(native.unixListen(path, 1).fd); // a backend that died without cleaning up
    expect(errnoCode(catching(() => native.unixConnect(path)))).toBe('ECONNREFUSED');
    const l = open(path);
    expect(connects(path, l)).toBe(true);
  });

  it('refuses a live socket, even one whose backlog is full, and leaves it as it is', () => {
    const path = socketPath();
    const live = open(path, 0);
    const inode = lstatSync(path).ino;
    const err = catching(() => UnixListener.open(path, 4));
    expect(err).toBeInstanceOf(SocketPathInUseError);
    expect((err as Error).message).toBe(`socket ${path} is in use by another backend`);
    // The probe connection waits in the live listener's queue: take it, then fill the queue.
    native.close(native.unixAccept(live.fd)!);
    const queued: number[] = [];
    for (let i = 0; i < 64; i++) {
      try {
        queued.push(native.unixConnect(path));
      } catch (e) {
        expect(errnoCode(e)).toBe('EAGAIN');
        break;
      }
    }
    expect(catching(() => UnixListener.open(path, 4))).toBeInstanceOf(SocketPathInUseError);
    for (const fd of queued) native.close(fd);
    expect(lstatSync(path).ino).toBe(inode);
    expect(live.ownsPath()).toBe(true);
  });

  it('refuses a path that is not a socket (file, directory, symlink to a socket) and never removes it', () => {
    const file = socketPath();
    writeFileSync(file, 'keep me');
    const dir = socketPath();
    mkdirSync(dir);
    const target = socketPath();
    native.close(native.unixListen(target, 1).fd);
    const link = socketPath();
    symlinkSync(target, link);
    for (const path of [file, dir, link]) {
      expect((catching(() => UnixListener.open(path, 4)) as Error).message).toBe(`${path} exists and is not a socket: refusing to replace it`);
    }
    expect(readFileSync(file, 'utf8')).toBe('keep me');
    expect(lstatSync(dir).isDirectory()).toBe(true);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
  });

  it('close leaves alone a socket another listener has bound at the path since', () => {
    const path = socketPath();
    const first = open(path);
    unlinkSync(path);
    const second = open(path);
    expect(first.ownsPath()).toBe(false);
    expect(first.close()).toBe('replaced');
    expect(second.ownsPath()).toBe(true);
    expect(connects(path, second)).toBe(true);
    expect(second.close()).toBe('removed');
  });
});

/** A connection to `path` reaches `listener` (both ends closed again). */
function connects(path: string, listener: UnixListener): boolean {
  const c = native.unixConnect(path);
  const s = native.unixAccept(listener.fd);
  native.close(c);
  if (s === null) return false;
  native.close(s);
  return true;
}

/** The error `fn` throws (fails the test if it does not throw). */
function catching(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected an exception');
}
