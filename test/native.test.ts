/**
 * Tests of the C++ addon (src/native/index.ts is its contract). Everything
 * runs for real: sockets, fds, mmaps, the event loop. A few cases that could
 * take the process down (uncaught exceptions from callbacks, worker teardown,
 * GC of open watchers) run in a child `node`.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { native, errnoCode, Seal, type Mapping } from '../src/native/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const PAGE = 4096;

/** The open-file flags of an fd, from /proc/self/fdinfo. */
function fdFlags(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s*([0-7]+)$/m.exec(info);
  if (!m) throw new Error(`no flags in fdinfo of ${fd}`);
  return parseInt(m[1]!, 8);
}

function isOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

/** Lines of /proc/self/maps that map the memfd called `name`. */
function mapsOf(name: string): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${name} `) || l.endsWith(`/memfd:${name}`)).length;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(pred: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(2);
  }
  return pred();
}

/** Collects garbage until `pred` holds (finalizers run from immediates). */
async function gcUntil(pred: () => boolean, rounds = 50): Promise<boolean> {
  for (let i = 0; i < rounds; i++) {
    gc();
    await tick();
    await sleep(1);
    if (pred()) return true;
  }
  return pred();
}

function expectSysError(fn: () => unknown, code: string): Error & { code: string; errno: number; syscall: string } {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(Error);
  const err = thrown as Error & { code: string; errno: number; syscall: string };
  expect(err.code).toBe(code);
  expect(typeof err.errno).toBe('number');
  expect(err.errno).toBe(-(os.constants.errno as Record<string, number>)[code]!);
  expect(typeof err.syscall).toBe('string');
  return err;
}

/** Runs a CommonJS script in a child node with the addon as `native`. */
function runChild(body: string, args: string[] = [], timeout = 20000) {
  const prelude = `const native = require(${JSON.stringify(path.join(root, 'node_modules', 'node-gyp-build'))})(${JSON.stringify(root)});\n`;
  return spawnSync(process.execPath, [...args, '-e', prelude + body], { encoding: 'utf8', timeout });
}

let fdsAtStart = 0;
beforeAll(() => {
  fdsAtStart = native.openFdCount();
});
afterAll(async () => {
  // Everything the tests opened has been closed again.
  expect(native.openFdCount()).toBe(fdsAtStart);
});

describe('surface', () => {
  it('exports exactly the functions of NativeAddon', () => {
    const names = [
      'unixListen', 'unixAccept', 'unixConnect', 'unixSocketPair', 'socketPeerClosed', 'recvMsg', 'sendMsg', 'close',
      'watch', 'eventfdCreate', 'eventfdSignal', 'eventfdDrain', 'watchEventfd',
      'mmap', 'munmap', 'memfdCreate', 'fdSize', 'fdSeals', 'pingSocket', 'pingSend', 'pingRecv', 'openFdCount',
      'getFdLimit', 'setFdLimit', 'udpSocket', 'udpBind', 'udpReadErrorQueue',
      // raw host sockets (test/native-host-sockets.test.ts)
      'tcpSocket', 'socketBind', 'socketListen', 'socketConnect', 'socketError', 'socketAccept', 'socketShutdown',
      'setSocketOption', 'getSocketOption', 'tcpInfo', 'readv', 'writev', 'discard', 'recvmmsg', 'sendmmsg', 'pollSet',
    ];
    expect(Object.keys(native).sort()).toEqual([...names].sort());
    for (const n of names) expect(typeof (native as unknown as Record<string, unknown>)[n]).toBe('function');
  });

  it('openFdCount follows open and close', () => {
    const before = native.openFdCount();
    const [a, b] = native.unixSocketPair();
    expect(native.openFdCount()).toBe(before + 2);
    native.close(a);
    native.close(b);
    expect(native.openFdCount()).toBe(before);
    expect(before).toBe(fs.readdirSync('/proc/self/fd').length - 1);
  });
});

describe('errors and validation', () => {
  it('system errors carry code, errno and syscall', () => {
    const [a, b] = native.unixSocketPair();
    native.close(a);
    native.close(b);
    const err = expectSysError(() => native.close(a), 'EBADF');
    expect(err.syscall).toBe('close');
    expect(errnoCode(err)).toBe('EBADF');
    expectSysError(() => native.fdSize(b), 'EBADF');
  });

  it('wrong types throw TypeError, bad numbers RangeError, and nothing crashes', () => {
    const [a, b] = native.unixSocketPair();
    const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
    const typeErrors: Array<[string, unknown[]]> = [
      ['recvMsg', [a, 'x', 1]],
      ['recvMsg', [a, new Uint16Array(4), 1]],
      ['recvMsg', [a, new DataView(new ArrayBuffer(4)), 1]],
      ['recvMsg', ['3', new Uint8Array(4), 1]],
      ['recvMsg', [a, new Uint8Array(4)]],
      ['sendMsg', [a, new Uint8Array(1), 'nope']],
      ['sendMsg', [a, new Uint8Array(1), ['1']]],
      ['sendMsg', [a, 'bytes', []]],
      ['unixListen', [42, 1]],
      ['unixListen', ['/tmp/x\0y', 1]],
      ['unixConnect', [{}]],
      ['watch', [a, 'x', () => {}]],
      ['watch', [a, '', () => {}]],
      ['watch', [a, 'r', 'not a function']],
      ['watchEventfd', [a, undefined]],
      ['mmap', ['1', 10, 0]],
      ['mmap', [a, 10n, 0]],
      ['munmap', [{}]],
      ['munmap', [{ buffer: new ArrayBuffer(8), size: 8 }]],
      ['munmap', [null]],
      ['memfdCreate', [1, 10]],
      ['pingSocket', ['4']],
      ['pingSend', [a, [1, 2], '127.0.0.1']],
      ['udpSocket', ['4']],
      ['udpBind', [a, 1, 0]],
      ['udpBind', [a, '0.0.0.0', '0']],
      ['udpReadErrorQueue', ['1', 1]],
      ['udpReadErrorQueue', [a]],
      ['close', [undefined]],
    ];
    for (const [fn, args] of typeErrors) {
      expect(() => n[fn]!(...args), `${fn}(${String(args)})`).toThrow(TypeError);
    }
    const rangeErrors: Array<[string, unknown[]]> = [
      ['recvMsg', [a, new Uint8Array(4), 254]],
      ['recvMsg', [a, new Uint8Array(4), -1]],
      ['recvMsg', [a, new Uint8Array(4), 1.5]],
      ['recvMsg', [a, new Uint8Array(0), 1]],
      ['sendMsg', [a, new Uint8Array(0), [b]]],
      ['sendMsg', [a, new Uint8Array(1), new Array(254).fill(b)]],
      ['close', [-1]],
      ['close', [NaN]],
      ['mmap', [a, 0, 0]],
      ['mmap', [a, 10, -1]],
      ['mmap', [a, 2 ** 53, 0]],
      ['pingSocket', [5]],
      ['udpSocket', [5]],
      ['udpBind', [a, '0.0.0.0', 65536]],
      ['udpBind', [a, '0.0.0.0', -1]],
      ['udpReadErrorQueue', [a, 0]],
      ['udpReadErrorQueue', [a, 1025]],
    ];
    for (const [fn, args] of rangeErrors) {
      expect(() => n[fn]!(...args), `${fn}(${String(args)})`).toThrow(RangeError);
    }

    // Objects that only look like the addon's own.
    const memfd = native.memfdCreate('vun-fake', PAGE);
    const m = native.mmap(memfd, PAGE, 0);
    expect(() => native.munmap(Object.create(m) as Mapping)).toThrow(TypeError);
    expect(() => native.munmap(new Proxy(m, {}))).toThrow(TypeError);
    expect(m.buffer.byteLength).toBe(PAGE); // still mapped
    native.munmap(m);
    native.close(memfd);
    const w = native.watch(a, 'r', () => {});
    const Ctor = Object.getPrototypeOf(w).constructor as new (...args: unknown[]) => unknown;
    expect(() => new Ctor()).toThrow(TypeError);
    expect(() => new Ctor(1)).toThrow(TypeError);
    expect(() => w.close.call({})).toThrow();
    expect(() => w.setEvents.call(undefined as never, 'r')).toThrow();
    w.close();

    native.close(a);
    native.close(b);
  });
});

describe('AF_UNIX messages with fds', () => {
  it('socketpair fds are non-blocking and close-on-exec', () => {
    const [a, b] = native.unixSocketPair();
    for (const fd of [a, b]) {
      expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);
      expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
    }
    native.close(a);
    native.close(b);
  });

  it('passes a memfd; both ends map the same memory', () => {
    const [a, b] = native.unixSocketPair();
    const memfd = native.memfdCreate('vun-pass', 2 * PAGE);
    expect(native.fdSize(memfd)).toBe(2 * PAGE);
    expect(native.sendMsg(a, new Uint8Array([7, 8, 9]), [memfd])).toBe(3);

    const into = new Uint8Array(64);
    const msg = native.recvMsg(b, into, 8);
    expect(msg).not.toBeNull();
    expect(msg!.bytes).toBe(3);
    expect([...into.subarray(0, 3)]).toEqual([7, 8, 9]);
    expect(msg!.fds).toHaveLength(1);
    expect(msg!.fdsTruncated).toBe(false);
    const received = msg!.fds[0]!;
    expect(received).not.toBe(memfd);
    expect(fdFlags(received) & O_CLOEXEC).toBe(O_CLOEXEC); // MSG_CMSG_CLOEXEC
    expect(native.fdSize(received)).toBe(2 * PAGE);

    const mine = native.mmap(memfd, 2 * PAGE, 0);
    const theirs = native.mmap(received, 2 * PAGE, 0);
    const x = new Uint8Array(mine.buffer);
    const y = new Uint8Array(theirs.buffer);
    x[0] = 0xab;
    x[2 * PAGE - 1] = 0xcd;
    expect(y[0]).toBe(0xab);
    expect(y[2 * PAGE - 1]).toBe(0xcd);
    y[PAGE] = 0x42;
    expect(x[PAGE]).toBe(0x42);

    native.munmap(mine);
    native.munmap(theirs);
    for (const fd of [a, b, memfd, received]) native.close(fd);
  });

  it('recvMsg returns null when nothing is pending and bytes 0 when the peer closed', () => {
    const [a, b] = native.unixSocketPair();
    const into = new Uint8Array(16);
    expect(native.recvMsg(b, into, 4)).toBeNull();
    expect(native.sendMsg(a, new Uint8Array([1]), [])).toBe(1);
    expect(native.recvMsg(b, into, 4)).toEqual({ bytes: 1, fds: [], fdsTruncated: false, fdsError: null });
    expect(native.recvMsg(b, into, 4)).toBeNull();
    native.close(a);
    expect(native.recvMsg(b, into, 4)).toEqual({ bytes: 0, fds: [], fdsTruncated: false, fdsError: null });
    native.close(b);
  });

  it('closes fds beyond maxFds and reports fdsTruncated, leaking nothing', () => {
    const before = native.openFdCount();
    const [a, b] = native.unixSocketPair();
    const sent = Array.from({ length: 5 }, () => native.eventfdCreate());
    expect(native.sendMsg(a, new Uint8Array([1, 2]), sent)).toBe(2);
    for (const fd of sent) native.close(fd);
    const afterSend = native.openFdCount(); // a, b + 5 in flight (not counted)
    expect(afterSend).toBe(before + 2);

    const msg = native.recvMsg(b, new Uint8Array(8), 2)!;
    expect(msg.bytes).toBe(2);
    expect(msg.fds).toHaveLength(2);
    expect(msg.fdsTruncated).toBe(true);
    // Only the two returned fds are new: the other three were closed.
    expect(native.openFdCount()).toBe(before + 4);
    for (const fd of msg.fds) expect(isOpen(fd)).toBe(true);
    for (const fd of msg.fds) native.close(fd);

    // maxFds 0 with an fd attached: still truncated, nothing leaks.
    const one = native.eventfdCreate();
    native.sendMsg(a, new Uint8Array([3]), [one]);
    native.close(one);
    const none = native.recvMsg(b, new Uint8Array(8), 0)!;
    expect(none).toEqual({ bytes: 1, fds: [], fdsTruncated: true, fdsError: null });

    native.close(a);
    native.close(b);
    expect(native.openFdCount()).toBe(before);
  });

  it('reports EMFILE when the kernel cannot install the fds of a message (MSG_CTRUNC at RLIMIT_NOFILE)', () => {
    const [a, b] = native.unixSocketPair();
    const sent = [native.eventfdCreate(), native.eventfdCreate()];
    expect(native.sendMsg(a, new Uint8Array([1]), sent)).toBe(1);
    for (const fd of sent) native.close(fd);
    const limit = native.getFdLimit();
    // No free fd slot below the soft limit: fill the holes, then put the
    // limit just above the highest fd. Synchronous: nothing else runs in
    // this process until the limit is restored.
    const numbers = () => fs.readdirSync('/proc/self/fd').map(Number);
    const highest = Math.max(...numbers());
    const fillers: number[] = [];
    for (;;) {
      const fd = native.eventfdCreate();
      fillers.push(fd);
      if (fd > highest) break;
    }
    const top = fillers.pop()!;
    native.close(top);
    let msg;
    native.setFdLimit(highest + 1, limit.hard);
    try {
      msg = native.recvMsg(b, new Uint8Array(4), 8)!;
    } finally {
      native.setFdLimit(limit.soft, limit.hard);
    }
    expect(msg).toEqual({ bytes: 1, fds: [], fdsTruncated: true, fdsError: 'EMFILE' });
    for (const fd of [...fillers, a, b]) native.close(fd);
  });

  it('passes up to 253 fds in one message', () => {
    const before = native.openFdCount();
    const [a, b] = native.unixSocketPair();
    const memfd = native.memfdCreate('vun-many', 1);
    const many = new Array(253).fill(memfd) as number[];
    expect(native.sendMsg(a, new Uint8Array([1]), many)).toBe(1);
    const msg = native.recvMsg(b, new Uint8Array(4), 253)!;
    expect(msg.fds).toHaveLength(253);
    expect(msg.fdsTruncated).toBe(false);
    expect(new Set(msg.fds).size).toBe(253);
    for (const fd of msg.fds) native.close(fd);
    for (const fd of [a, b, memfd]) native.close(fd);
    expect(native.openFdCount()).toBe(before);
  });

  it('sendMsg returns null when the socket is full and throws EPIPE (no SIGPIPE) after the peer closed', () => {
    const [a, b] = native.unixSocketPair();
    const chunk = new Uint8Array(65536);
    let total = 0;
    let result: number | null = 0;
    for (let i = 0; i < 10000 && result !== null; i++) {
      result = native.sendMsg(a, chunk, []);
      if (result !== null) total += result;
    }
    expect(result).toBeNull();
    expect(total).toBeGreaterThan(0);
    native.close(b);
    expectSysError(() => native.sendMsg(a, chunk, []), 'EPIPE');
    native.close(a);
  });
});

describe('AF_UNIX listen/accept/connect', () => {
  it('listens, accepts (null when none pending), connects, and talks', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vun-'));
    const sock = path.join(dir, 's.sock');
    const { fd: listenFd, dev, ino } = native.unixListen(sock, 4);
    const st = fs.lstatSync(sock, { bigint: true });
    expect(st.isSocket()).toBe(true);
    // The identity of the file it created, and mode 0600 whatever the umask.
    expect([st.dev, st.ino]).toEqual([dev, ino]);
    expect(Number(st.mode) & 0o777).toBe(0o600);
    expect(fdFlags(listenFd) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    expect(native.unixAccept(listenFd)).toBeNull();

    const client = native.unixConnect(sock);
    expect(fdFlags(client) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    const server = native.unixAccept(listenFd);
    expect(server).not.toBeNull();
    expect(fdFlags(server!) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    expect(native.unixAccept(listenFd)).toBeNull();

    expect(native.sendMsg(client, new TextEncoder().encode('hello'), [])).toBe(5);
    const into = new Uint8Array(16);
    expect(native.recvMsg(server!, into, 0)!.bytes).toBe(5);
    expect(new TextDecoder().decode(into.subarray(0, 5))).toBe('hello');

    native.close(client);
    native.close(server!);
    native.close(listenFd);

    // The socket file is stale now: connecting is refused, and listening
    // there again fails: the addon never unlinks (listen-socket.ts decides).
    expect(fs.existsSync(sock)).toBe(true);
    expectSysError(() => native.unixConnect(sock), 'ECONNREFUSED');
    expectSysError(() => native.unixListen(sock, 1), 'EADDRINUSE');
    fs.unlinkSync(sock);
    const again = native.unixListen(sock, 1).fd;
    const c2 = native.unixConnect(sock);
    const s2 = native.unixAccept(again);
    expect(s2).not.toBeNull();
    for (const fd of [c2, s2!, again]) native.close(fd);

    // Nor is a regular file.
    const file = path.join(dir, 'file');
    fs.writeFileSync(file, 'keep me');
    expectSysError(() => native.unixListen(file, 1), 'EADDRINUSE');
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');

    expectSysError(() => native.unixConnect(path.join(dir, 'missing.sock')), 'ENOENT');
    expectSysError(() => native.unixListen(path.join(dir, 'x'.repeat(120)), 1), 'ENAMETOOLONG');
    fs.rmSync(dir, { recursive: true });
  });

  it('connect fails with EAGAIN instead of blocking when the backlog is full', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vun-'));
    const sock = path.join(dir, 'b.sock');
    const listenFd = native.unixListen(sock, 0).fd;
    const clients: number[] = [];
    let error: unknown;
    for (let i = 0; i < 64 && error === undefined; i++) {
      try {
        clients.push(native.unixConnect(sock));
      } catch (e) {
        error = e;
      }
    }
    expect(errnoCode(error)).toBe('EAGAIN');
    for (const fd of clients) native.close(fd);
    native.close(listenFd);
    fs.rmSync(dir, { recursive: true });
  });

  it('socketPeerClosed: false while the peer is open or only half-closed, true once it closed, without reading', async () => {
    const [a, b] = native.unixSocketPair();
    expect(native.socketPeerClosed(a)).toBe(false);
    const peer = new net.Socket({ fd: b, readable: true, writable: true });
    // end(): one byte, then shutdown(SHUT_WR); the peer can still read.
    await new Promise<void>((resolve) => peer.end(Buffer.of(7), resolve));
    expect(native.socketPeerClosed(a)).toBe(false);
    await new Promise<void>((resolve) => peer.destroy().once('close', () => resolve()));
    expect(native.socketPeerClosed(a)).toBe(true);
    // Nothing was read: the byte is still there, then the end of stream.
    const into = new Uint8Array(4);
    expect(native.recvMsg(a, into, 0)!.bytes).toBe(1);
    expect(native.recvMsg(a, into, 0)!.bytes).toBe(0);
    native.close(a);
    expectSysError(() => native.socketPeerClosed(a), 'EBADF');
  });
});

describe('watch()', () => {
  it("fires 'r' when data arrives, stops when paused, and close is idempotent", async () => {
    const [a, b] = native.unixSocketPair();
    const seen: string[] = [];
    const w = native.watch(b, 'r', (ready) => {
      seen.push(ready);
      native.recvMsg(b, new Uint8Array(64), 0); // consume, or it fires again
    });
    await sleep(20);
    expect(seen).toEqual([]);
    native.sendMsg(a, new Uint8Array([1]), []);
    expect(await waitFor(() => seen.length === 1)).toBe(true);
    expect(seen).toEqual(['r']);

    w.setEvents('');
    native.sendMsg(a, new Uint8Array([2]), []);
    await sleep(30);
    expect(seen).toEqual(['r']);
    w.setEvents('r');
    expect(await waitFor(() => seen.length === 2)).toBe(true);

    w.close();
    w.close();
    w.setEvents('r'); // a no-op once closed
    native.sendMsg(a, new Uint8Array([3]), []);
    await sleep(30);
    expect(seen).toEqual(['r', 'r']);
    native.close(a);
    native.close(b);
  });

  it("reports 'w' and 'rw', and a second watcher on the same fd is refused", async () => {
    const [a, b] = native.unixSocketPair();
    const seen: string[] = [];
    const w = native.watch(a, 'w', (ready) => {
      seen.push(ready);
      w.setEvents('');
    });
    expectSysError(() => native.watch(a, 'r', () => {}), 'EEXIST');
    expect(await waitFor(() => seen.length === 1)).toBe(true);
    expect(seen).toEqual(['w']);
    // Still refused while the first one is paused (not closed).
    expectSysError(() => native.watchEventfd(a, () => {}), 'EEXIST');

    native.sendMsg(b, new Uint8Array([1]), []);
    w.setEvents('rw');
    expect(await waitFor(() => seen.length === 2)).toBe(true);
    expect(seen[1]).toBe('rw');
    expect(() => w.setEvents('x' as never)).toThrow(TypeError);
    w.close();
    // Once closed, the fd can be watched again.
    const w2 = native.watch(a, 'r', () => {});
    w2.close();
    native.close(a);
    native.close(b);
  });

  it("reports 'error' (and stops) on POLLERR: a FIFO's write end without readers", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vun-'));
    const fifo = path.join(dir, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const { O_RDONLY, O_WRONLY, O_NONBLOCK: NB } = fs.constants;
    for (const kind of ['watch', 'watchEventfd'] as const) {
      const reader = fs.openSync(fifo, O_RDONLY | NB);
      const writer = fs.openSync(fifo, O_WRONLY | NB);
      fs.closeSync(reader); // now the write end polls POLLERR
      const seen: string[] = [];
      const w =
        kind === 'watch'
          ? native.watch(writer, 'w', (ready) => seen.push(ready))
          : native.watchEventfd(writer, () => seen.push('signal'));
      expect(await waitFor(() => seen.length > 0)).toBe(true);
      await sleep(30);
      expect(seen).toEqual([kind === 'watch' ? 'error' : 'signal']); // once: the poll stopped
      w.close();
      fs.closeSync(writer);
    }
    fs.rmSync(dir, { recursive: true });
  });

  it('refuses fds that cannot be polled', () => {
    const file = path.join(os.tmpdir(), `vun-regular-${process.pid}`);
    fs.writeFileSync(file, 'x');
    const fd = fs.openSync(file, 'r');
    expectSysError(() => native.watch(fd, 'r', () => {}), 'EPERM');
    fs.closeSync(fd);
    fs.rmSync(file);
    const [a, b] = native.unixSocketPair();
    native.close(a);
    native.close(b);
    expectSysError(() => native.watch(a, 'r', () => {}), 'EBADF');
  });

  it('runs the callback inside a callback scope (microtasks run after it)', async () => {
    const e = native.eventfdCreate();
    const order: string[] = [];
    const w = native.watchEventfd(e, () => {
      order.push('callback');
      void Promise.resolve().then(() => order.push('microtask'));
      process.nextTick(() => order.push('tick'));
    });
    native.eventfdSignal(e);
    expect(await waitFor(() => order.length === 3)).toBe(true);
    expect(order).toEqual(['callback', 'tick', 'microtask']);
    w.close();
    native.close(e);
  });
});

describe('eventfds', () => {
  it('signal, drain, saturate', () => {
    const e = native.eventfdCreate();
    expect(fdFlags(e) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    expect(native.eventfdDrain(e)).toBe(0);
    expect(native.eventfdSignal(e)).toBe(true);
    expect(native.eventfdSignal(e)).toBe(true);
    expect(native.eventfdSignal(e)).toBe(true);
    expect(native.eventfdDrain(e)).toBe(3);
    expect(native.eventfdDrain(e)).toBe(0);
    native.close(e);
  });

  it('signalling a blocking, saturated eventfd from a peer returns false instead of blocking', async () => {
    // A hostile frontend controls O_NONBLOCK on the call fds it hands us.
    // python3 makes a *blocking* eventfd at its maximum count and sends it.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vun-efd-'));
    const sockPath = path.join(dir, 's');
    const listener = native.unixListen(sockPath, 1).fd;
    const script = [
      'import os, socket, sys',
      'e = os.eventfd(0)',
      'os.eventfd_write(e, 0xfffffffffffffffe)',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      's.connect(sys.argv[1])',
      'socket.send_fds(s, [b"x"], [e])',
      's.recv(1)',
    ].join('\n');
    const child = spawn('python3', ['-c', script, sockPath], { stdio: 'ignore' });
    try {
      let conn: number | null = null;
      expect(await waitFor(() => (conn = native.unixAccept(listener)) !== null, 5000)).toBe(true);
      const buf = new Uint8Array(1);
      let got: ReturnType<typeof native.recvMsg> = null;
      expect(await waitFor(() => (got = native.recvMsg(conn!, buf, 1)) !== null, 5000)).toBe(true);
      const efd = got!.fds[0]!;
      expect(fdFlags(efd) & O_NONBLOCK).toBe(0);
      expect(native.eventfdSignal(efd)).toBe(false); // would block: refused, loop not stalled
      native.close(efd);
      native.close(conn!);
    } finally {
      child.kill();
      native.close(listener);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('watchEventfd drains in C++ and coalesces several signals into one callback', async () => {
    const e = native.eventfdCreate();
    let calls = 0;
    let pendingInCallback = -1;
    const w = native.watchEventfd(e, () => {
      calls++;
      pendingInCallback = native.eventfdDrain(e);
    });
    for (let i = 0; i < 5; i++) native.eventfdSignal(e);
    expect(await waitFor(() => calls > 0)).toBe(true);
    await sleep(30);
    expect(calls).toBe(1);
    expect(pendingInCallback).toBe(0); // already drained by the addon

    native.eventfdSignal(e);
    expect(await waitFor(() => calls === 2)).toBe(true);
    await sleep(20);
    expect(calls).toBe(2);

    w.setEvents('');
    native.eventfdSignal(e);
    await sleep(30);
    expect(calls).toBe(2);
    expect(() => w.setEvents('w')).toThrow(TypeError);
    w.setEvents('r');
    expect(await waitFor(() => calls === 3)).toBe(true);
    w.close();
    native.close(e);
  });

  it('watchEventfd calls back once and stops polling on a hung-up fd instead of spinning', async () => {
    // A stream whose peer is gone reads EOF forever (like a pipe whose writer
    // closed): one callback, then the watcher stops.
    const [a, b] = native.unixSocketPair();
    let calls = 0;
    const w = native.watchEventfd(b, () => {
      calls++;
    });
    native.close(a);
    expect(await waitFor(() => calls > 0)).toBe(true);
    await sleep(50);
    expect(calls).toBe(1);
    w.close();
    native.close(b);
  });
});

describe('RLIMIT_NOFILE', () => {
  it('getFdLimit reads and setFdLimit changes the soft limit; the soft limit cannot pass the hard one', () => {
    const limit = native.getFdLimit();
    expect(limit.soft).toBeGreaterThan(0);
    expect(limit.soft).toBeLessThanOrEqual(limit.hard);
    const text = () => fs.readFileSync('/proc/self/limits', 'utf8').match(/^Max open files\s+(\d+)\s+(\d+)/m)!;
    expect(Number(text()[1])).toBe(limit.soft);
    expect(Number(text()[2])).toBe(limit.hard);
    native.setFdLimit(limit.soft - 1, limit.hard);
    try {
      expect(native.getFdLimit()).toEqual({ soft: limit.soft - 1, hard: limit.hard });
      expect(Number(text()[1])).toBe(limit.soft - 1);
      expectSysError(() => native.setFdLimit(limit.hard + 1, limit.hard), 'EINVAL');
    } finally {
      native.setFdLimit(limit.soft, limit.hard);
    }
    expect(native.getFdLimit()).toEqual(limit);
    expect(() => native.setFdLimit(-1, limit.hard)).toThrow(RangeError);
    expect(() => native.setFdLimit(1.5, limit.hard)).toThrow(RangeError);
    expect(() => native.setFdLimit('1' as unknown as number, limit.hard)).toThrow(TypeError);
  });
});

describe('memfd seals', () => {
  it("memfdCreate seals like QEMU's memory-backend-memfd when asked; fdSeals reads the seals", () => {
    const sealed = native.memfdCreate('vun-sealed', 2 * PAGE, Seal.GROW | Seal.SHRINK | Seal.SEAL);
    expect(native.fdSeals(sealed)).toBe(Seal.GROW | Seal.SHRINK | Seal.SEAL);
    expect(native.fdSize(sealed)).toBe(2 * PAGE);
    expect(() => fs.ftruncateSync(sealed, PAGE)).toThrow(/EPERM/);
    expect(native.fdSize(sealed)).toBe(2 * PAGE);

    const plain = native.memfdCreate('vun-plain', 2 * PAGE);
    expect(native.fdSeals(plain)).toBe(Seal.SEAL); // no MFD_ALLOW_SEALING: sealed against seals only
    fs.ftruncateSync(plain, PAGE);
    expect(native.fdSize(plain)).toBe(PAGE);

    const shrinkOnly = native.memfdCreate('vun-shrink', PAGE, Seal.SHRINK);
    expect(native.fdSeals(shrinkOnly)).toBe(Seal.SHRINK);

    const [a, b] = native.unixSocketPair();
    expect(native.fdSeals(a)).toBe(-1); // a socket cannot carry seals
    expectSysError(() => native.fdSeals(0x7ffffff0), 'EBADF');
    expectSysError(() => native.memfdCreate('vun-bad', PAGE, 0x8000), 'EINVAL');
    for (const fd of [sealed, plain, shrinkOnly, a, b]) native.close(fd);
  });
});

describe('guest memory', () => {
  it('maps at a non-page-aligned offset, hiding the slack', () => {
    const memfd = native.memfdCreate('vun-offset', 3 * PAGE);
    const whole = native.mmap(memfd, 3 * PAGE, 0);
    const all = new Uint8Array(whole.buffer);
    for (let i = 0; i < all.length; i++) all[i] = i % 251;

    const part = native.mmap(memfd, 100, PAGE + 123);
    expect(part.size).toBe(100);
    expect(part.buffer.byteLength).toBe(100);
    const view = new Uint8Array(part.buffer);
    expect(view[0]).toBe((PAGE + 123) % 251);
    expect(view[99]).toBe((PAGE + 222) % 251);
    view[0] = 0xee;
    expect(all[PAGE + 123]).toBe(0xee);

    // Read-only properties.
    expect(() => {
      (part as { size: number }).size = 5;
    }).toThrow(TypeError);
    expect(part.size).toBe(100);

    native.munmap(part);
    native.munmap(whole);
    native.close(memfd);
  });

  it('munmap detaches the buffer (views become empty) and is idempotent', () => {
    const memfd = native.memfdCreate('vun-detach', PAGE);
    const m = native.mmap(memfd, PAGE, 0);
    const buffer = m.buffer;
    const view = new Uint8Array(buffer);
    const dv = new DataView(buffer);
    view[5] = 9;
    expect(mapsOf('vun-detach')).toBe(1);
    native.munmap(m);
    expect(buffer.byteLength).toBe(0);
    expect(m.buffer.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(view[5]).toBeUndefined();
    expect(() => dv.getUint8(0)).toThrow(TypeError);
    expect(mapsOf('vun-detach')).toBe(0);
    native.munmap(m);
    native.munmap(m);
    expect(m.size).toBe(PAGE);
    native.close(memfd);
  });

  it('unmaps when a mapping is garbage-collected, and a munmap-ed one survives GC', async () => {
    const memfd = native.memfdCreate('vun-gc', PAGE);
    (() => {
      for (let i = 0; i < 3; i++) new Uint8Array(native.mmap(memfd, PAGE, 0).buffer)[0] = i;
      for (let i = 0; i < 3; i++) native.munmap(native.mmap(memfd, PAGE, 0));
    })();
    expect(mapsOf('vun-gc')).toBe(3);
    expect(await gcUntil(() => mapsOf('vun-gc') === 0)).toBe(true);

    // The buffer alone keeps the memory mapped, even after the Mapping
    // object is gone. (Held in an object and touched only inside inner
    // functions, so no stale interpreter register of this async function
    // keeps it alive.)
    const holder: { buffer?: ArrayBuffer } = {};
    (() => {
      holder.buffer = native.mmap(memfd, PAGE, 0).buffer;
    })();
    await gcUntil(() => false, 5);
    expect(mapsOf('vun-gc')).toBe(1);
    (() => {
      new Uint8Array(holder.buffer!)[10] = 1;
      holder.buffer = undefined;
    })();
    expect(await gcUntil(() => mapsOf('vun-gc') === 0)).toBe(true);
    native.close(memfd);
  });

  it('maps 512 MiB', () => {
    const size = 512 * 1024 * 1024;
    const memfd = native.memfdCreate('vun-big', size);
    expect(native.fdSize(memfd)).toBe(size);
    const a = native.mmap(memfd, size, 0);
    const b = native.mmap(memfd, PAGE, size - PAGE);
    expect(a.buffer.byteLength).toBe(size);
    const va = new Uint8Array(a.buffer);
    va[size - 1] = 0x5a;
    va[0] = 0xa5;
    expect(new Uint8Array(b.buffer)[PAGE - 1]).toBe(0x5a);
    native.munmap(a);
    native.munmap(b);
    expect(va.length).toBe(0);
    native.close(memfd);
  });

  it('beyond what an ArrayBuffer can hold: works, or throws a RangeError and leaves nothing mapped', () => {
    const size = 5 * 1024 * 1024 * 1024;
    const memfd = native.memfdCreate('vun-huge', size);
    let mapping: Mapping | undefined;
    let error: unknown;
    try {
      mapping = native.mmap(memfd, size, 0);
    } catch (e) {
      error = e;
    }
    if (mapping) {
      expect(mapping.buffer.byteLength).toBe(size);
      native.munmap(mapping);
    } else {
      expect(error).toBeInstanceOf(RangeError);
      expect(String((error as Error).message)).toMatch(/ArrayBuffer/);
    }
    expect(mapsOf('vun-huge')).toBe(0);
    native.close(memfd);
  });

  it('mmap errors are system errors', () => {
    const [a, b] = native.unixSocketPair();
    expectSysError(() => native.mmap(a, PAGE, 0), 'ENODEV');
    expect(native.fdSize(a)).toBe(-1);
    native.close(a);
    native.close(b);
    expectSysError(() => native.mmap(a, PAGE, 0), 'EBADF');
  });
});

describe('ICMP ping sockets', () => {
  it('either opens a ping socket or throws EACCES (ping_group_range)', () => {
    let fd: number | undefined;
    let code: string | undefined;
    try {
      fd = native.pingSocket(4);
    } catch (e) {
      code = errnoCode(e);
    }
    expect(fd !== undefined || code === 'EACCES').toBe(true);
    expect(fd === undefined || code === undefined).toBe(true);
    if (fd !== undefined) {
      expect(fdFlags(fd) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
      native.close(fd);
    }
  });

  it('pings 127.0.0.1 when allowed', async () => {
    let fd: number;
    try {
      fd = native.pingSocket(4);
    } catch (e) {
      expect(errnoCode(e)).toBe('EACCES');
      return;
    }
    // type 8 (echo request), code 0, checksum 0 (kernel), id 0 (kernel), seq 1, data
    const msg = new Uint8Array([8, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
    expect(native.pingSend(fd, msg, '127.0.0.1')).toBe(msg.length);
    expect(() => native.pingSend(fd, msg, 'not an address')).toThrow(TypeError);
    const into = new Uint8Array(64);
    let reply: { bytes: number; address: string } | null = null;
    await waitFor(() => (reply = native.pingRecv(fd, into)) !== null);
    expect(reply).not.toBeNull();
    expect(reply!.address).toBe('127.0.0.1');
    expect(into[0]).toBe(0); // echo reply
    native.close(fd);
  });

  it('IPv6 behaves the same (or the family is unavailable)', () => {
    let fd: number | undefined;
    let code: string | undefined;
    try {
      fd = native.pingSocket(6);
    } catch (e) {
      code = errnoCode(e);
    }
    expect(fd !== undefined || code === 'EACCES' || code === 'EAFNOSUPPORT').toBe(true);
    if (fd !== undefined) native.close(fd);
  });
});

describe('UDP sockets with IP_RECVERR', () => {
  const ECONNREFUSED = os.constants.errno.ECONNREFUSED;
  const open: dgram.Socket[] = [];
  afterAll(() => {
    for (const s of open.splice(0)) s.close();
  });

  /** A UDP port on `address` that nothing listens on (bound, then closed). */
  async function closedPort(type: 'udp4' | 'udp6', address: string): Promise<number> {
    const s = dgram.createSocket(type);
    await new Promise<void>((resolve, reject) => {
      s.once('error', (err) => {
        s.close();
        reject(err);
      });
      s.bind(0, address, resolve);
    });
    const port = s.address().port;
    await new Promise<void>((resolve) => s.close(resolve));
    return port;
  }

  /** An addon socket adopted by node:dgram and bound with udpBind, as src/net/udp.ts does. */
  function adopted(family: 4 | 6, address: string): { fd: number; socket: dgram.Socket; port: number } {
    const fd = native.udpSocket(family);
    const socket = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
    socket.bind({ fd, exclusive: true });
    open.push(socket);
    const port = native.udpBind(fd, address, 0);
    return { fd, socket, port };
  }

  function nextError(socket: dgram.Socket): Promise<NodeJS.ErrnoException> {
    return new Promise((resolve) => socket.once('error', resolve));
  }

  it('makes an unbound non-blocking close-on-exec socket that node:dgram adopts; udpBind binds it without SO_REUSEADDR', async () => {
    const fd = native.udpSocket(4);
    expect(fdFlags(fd) & (O_NONBLOCK | O_CLOEXEC)).toBe(O_NONBLOCK | O_CLOEXEC);
    const socket = dgram.createSocket('udp4');
    socket.bind({ fd, exclusive: true });
    open.push(socket);
    expect(socket.address().port).toBe(0); // not bound yet
    const port = native.udpBind(fd, '127.0.0.1', 0);
    expect(port).toBeGreaterThan(0);
    expect(socket.address()).toMatchObject({ address: '127.0.0.1', port });
    // libuv turned SO_REUSEADDR on when it adopted the fd; udpBind turned it
    // off before binding, so nobody can bind the port, not even with reuse.
    for (const reuseAddr of [false, true]) {
      const other = dgram.createSocket({ type: 'udp4', reuseAddr });
      const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
        other.once('error', resolve);
        other.bind(port, '127.0.0.1', () => resolve(null));
      });
      other.close();
      expect(err?.code, `reuseAddr ${reuseAddr}`).toBe('EADDRINUSE');
    }
    expectSysError(() => native.udpBind(fd, '127.0.0.1', 0), 'EINVAL'); // already bound
    expect(() => native.udpBind(fd, 'nope', 0)).toThrow(TypeError);
    const [a, b] = native.unixSocketPair();
    expectSysError(() => native.udpBind(a, '127.0.0.1', 0), 'EAFNOSUPPORT');
    native.close(a);
    native.close(b);
  });

  it('queues one error entry for a datagram to a closed port on 127.0.0.1, and node:dgram emits the error', async () => {
    const closed = await closedPort('udp4', '127.0.0.1');
    const { fd, socket } = adopted(4, '0.0.0.0');
    expect(native.udpReadErrorQueue(fd, 16)).toEqual([]);
    const error = nextError(socket);
    socket.send('anyone?', closed, '127.0.0.1');
    // The ICMP error fails the next receive: Node 20's dgram reports it as 'error'.
    const err = await error;
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.syscall).toBe('recvmsg');
    expect(native.udpReadErrorQueue(fd, 16)).toEqual([
      { address: '127.0.0.1', port: closed, origin: 2, type: 3, code: 3, errno: ECONNREFUSED, info: 0, offender: '127.0.0.1' },
    ]);
    expect(native.udpReadErrorQueue(fd, 16)).toEqual([]);
  });

  it('a pending error fails the next send instead (the entry stays queued), and max bounds a read', async () => {
    const closed = await closedPort('udp4', '127.0.0.1');
    const { fd, socket } = adopted(4, '0.0.0.0');
    const results: (string | undefined)[] = [];
    await new Promise<void>((resolve) => {
      socket.send('one', closed, '127.0.0.1', (e) => results.push((e as NodeJS.ErrnoException | null)?.code));
      socket.send('two', closed, '127.0.0.1', (e) => {
        results.push((e as NodeJS.ErrnoException | null)?.code);
        resolve();
      });
    });
    expect(results).toEqual([undefined, 'ECONNREFUSED']);
    const entries = native.udpReadErrorQueue(fd, 16);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ port: closed, type: 3, code: 3 });

    // Two entries queued (a receive takes the first error, the second send
    // goes out), read one at a time.
    const other = await closedPort('udp4', '127.0.0.1');
    let error = nextError(socket);
    socket.send('a', closed, '127.0.0.1');
    await error;
    error = nextError(socket);
    socket.send('b', other, '127.0.0.1');
    await error;
    expect(native.udpReadErrorQueue(fd, 1).map((e) => e.port)).toEqual([closed]);
    expect(native.udpReadErrorQueue(fd, 1).map((e) => e.port)).toEqual([other]);
    expect(native.udpReadErrorQueue(fd, 1)).toEqual([]);
    const efd = native.eventfdCreate();
    expectSysError(() => native.udpReadErrorQueue(efd, 1), 'ENOTSOCK');
    native.close(efd);
  });

  it('IPv6: ICMPv6 port unreachable from ::1 (or the family is unavailable)', async () => {
    let fd: number;
    try {
      fd = native.udpSocket(6);
    } catch (e) {
      expect(errnoCode(e)).toBe('EAFNOSUPPORT');
      return;
    }
    native.close(fd);
    let closed: number;
    try {
      closed = await closedPort('udp6', '::1');
    } catch (e) {
      expect(errnoCode(e)).toBe('EADDRNOTAVAIL'); // no ::1 on this host
      return;
    }
    const v6 = adopted(6, '::');
    const error = nextError(v6.socket);
    v6.socket.send('anyone?', closed, '::1');
    expect((await error).code).toBe('ECONNREFUSED');
    expect(native.udpReadErrorQueue(v6.fd, 16)).toEqual([
      { address: '::1', port: closed, origin: 3, type: 1, code: 4, errno: ECONNREFUSED, info: 0, offender: '::1' },
    ]);
  });
});

describe('watchers and the process (child node)', () => {
  it('an exception thrown by a callback is an uncaught exception, not a crash', () => {
    const handled = runChild(`
      const e = native.eventfdCreate();
      const w = native.watchEventfd(e, () => { throw new Error('boom from callback'); });
      process.on('uncaughtException', (err) => {
        console.log('caught: ' + err.message);
        w.close();
        native.close(e);
      });
      native.eventfdSignal(e);
    `);
    expect(handled.signal).toBeNull();
    expect(handled.status).toBe(0);
    expect(handled.stdout.trim()).toBe('caught: boom from callback');

    const unhandled = runChild(`
      const [a, b] = native.unixSocketPair();
      native.watch(a, 'w', () => { throw new Error('boom unhandled'); });
    `);
    expect(unhandled.signal).toBeNull();
    expect(unhandled.status).toBe(1);
    expect(unhandled.stderr).toContain('boom unhandled');
  });

  it('an open watcher keeps the loop alive; closing it lets the process exit', () => {
    const r = runChild(`
      const e = native.eventfdCreate();
      globalThis.w = native.watchEventfd(e, () => {
        console.log('fired');
        globalThis.w.close();
        native.close(e);
      });
      // An unref'd timer alone would not keep the process alive.
      setTimeout(() => native.eventfdSignal(e), 100).unref();
    `);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('fired');
  });

  it('a watcher that is garbage-collected without close() is closed (the process can exit)', () => {
    const r = runChild(
      `
      const e = native.eventfdCreate();
      let calls = 0;
      (() => { native.watchEventfd(e, () => { calls++; }); })();
      setImmediate(async () => {
        for (let i = 0; i < 10; i++) { gc(); await new Promise((r) => setImmediate(r)); }
        native.eventfdSignal(e);
        setTimeout(() => console.log('calls=' + calls), 50);
      });
    `,
      ['--expose-gc'],
      10000,
    );
    expect(r.signal).toBeNull(); // not killed by the timeout
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('calls=0');
  });

  it('a poll set: an exception from onReady is uncaught; one garbage-collected without close() lets the process exit', () => {
    const thrown = runChild(`
      const [a, b] = native.unixSocketPair();
      const set = native.pollSet(new Uint32Array(2), () => { throw new Error('boom from batch'); });
      process.on('uncaughtException', (err) => {
        console.log('caught: ' + err.message);
        set.close();
        native.close(a);
        native.close(b);
      });
      set.add(a, 4 /* Poll.OUT */, 1);
    `);
    expect(thrown.signal).toBeNull();
    expect(thrown.status).toBe(0);
    expect(thrown.stdout.trim()).toBe('caught: boom from batch');

    const collected = runChild(
      `
      const [a, b] = native.unixSocketPair();
      let calls = 0;
      (() => { native.pollSet(new Uint32Array(2), () => { calls++; }); })();
      setImmediate(async () => {
        for (let i = 0; i < 10; i++) { gc(); await new Promise((r) => setImmediate(r)); }
        setTimeout(() => console.log('calls=' + calls), 50);
      });
    `,
      ['--expose-gc'],
      10000,
    );
    expect(collected.signal).toBeNull(); // not killed by the timeout: the set no longer holds the loop
    expect(collected.status).toBe(0);
    expect(collected.stdout.trim()).toBe('calls=0');
  });

  it('a worker thread can exit with open watchers and live mappings', () => {
    const r = runChild(`
      const { Worker } = require('node:worker_threads');
      const code = ${JSON.stringify(`
        const native = require(${JSON.stringify(path.join(root, 'node_modules', 'node-gyp-build'))})(${JSON.stringify(root)});
        const { parentPort } = require('node:worker_threads');
        const e = native.eventfdCreate();
        globalThis.w = native.watchEventfd(e, () => {});
        const [a, b] = native.unixSocketPair();
        globalThis.w2 = native.watch(a, 'r', () => {});
        globalThis.set = native.pollSet(new Uint32Array(2), () => {});
        globalThis.set.add(b, 4, 1);
        const m = native.memfdCreate('vun-worker', 4096);
        globalThis.map = native.mmap(m, 4096, 0);
        new Uint8Array(globalThis.map.buffer)[0] = 1;
        parentPort.postMessage('ready');
      `)};
      const worker = new Worker(code, { eval: true });
      worker.on('message', async () => {
        await worker.terminate();
        const second = new Worker(code, { eval: true });
        second.on('message', () => second.terminate().then(() => console.log('terminated')));
      });
    `);
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('terminated');
  });
});
