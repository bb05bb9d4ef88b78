/**
 * The one place the C++ addon is loaded, and the whole of its surface.
 *
 * The addon does only what JavaScript cannot: AF_UNIX messages carrying file
 * descriptors (SCM_RIGHTS), mmap/munmap of guest memory exposed as
 * ArrayBuffers, eventfds (created, signalled, and watched with uv_poll_t on
 * Node's own loop), generic fd readiness watchers, memfd creation for our own
 * test frontend, and ICMP "ping" sockets (SOCK_DGRAM/IPPROTO_ICMP).
 *
 * Conventions:
 * - fds are plain numbers. Every fd the addon returns is O_CLOEXEC and, for
 *   sockets, O_NONBLOCK.
 * - Failures throw an Error with `code` set to the errno name (e.g. 'EAGAIN',
 *   'ENOENT') and `errno` to its number, except where a function documents a
 *   `null` return for "would block".
 * - No function blocks the event loop except `unixConnect` (a local connect).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** A readiness watcher on one fd (uv_poll_t on Node's loop). */
export interface FdWatcher {
  /** Change the events watched: 'r', 'w', 'rw' ('' pauses without closing). */
  setEvents(events: '' | 'r' | 'w' | 'rw'): void;
  /** Stop and close the uv handle. Must be called before the fd is closed. Idempotent. */
  close(): void;
}

/** A mapping of guest memory. `buffer` is detached by `munmap`. */
export interface Mapping {
  readonly buffer: ArrayBuffer;
  readonly size: number;
}

export interface ReceivedMessage {
  /** Bytes read (0 means the peer closed the connection). */
  bytes: number;
  /** File descriptors that came with these bytes (SCM_RIGHTS). The receiver owns them. */
  fds: number[];
  /** True if the kernel truncated control data (more fds than maxFds): those fds are lost, treat as a protocol error. */
  fdsTruncated: boolean;
}

export interface NativeAddon {
  // ---- AF_UNIX stream sockets -------------------------------------------
  /** socket+bind+listen on a path (an existing socket file at that path is unlinked first). Returns the listening fd. */
  unixListen(path: string, backlog: number): number;
  /** accept4 a connection; null if none is pending. */
  unixAccept(listenFd: number): number | null;
  /** Connect to a listening path (a local connect, completes at once or throws e.g. ENOENT/ECONNREFUSED). */
  unixConnect(path: string): number;
  /** socketpair(AF_UNIX, SOCK_STREAM) – for tests. */
  unixSocketPair(): [number, number];
  /**
   * recvmsg up to `into.byteLength` bytes into `into`, accepting up to `maxFds` fds.
   * Returns null if it would block. Throws on error (ECONNRESET etc).
   */
  recvMsg(fd: number, into: Uint8Array, maxFds: number): ReceivedMessage | null;
  /**
   * sendmsg the bytes with the fds attached (SCM_RIGHTS). Returns bytes sent,
   * or null if it would block. Uses MSG_NOSIGNAL.
   */
  sendMsg(fd: number, data: Uint8Array, fds: number[]): number | null;
  /** close(2). Throws only for EBADF. */
  close(fd: number): void;

  // ---- readiness --------------------------------------------------------
  /** Watch an fd for readability/writability with uv_poll_t on Node's loop. The callback gets the ready events; on a poll error it gets 'error'. */
  watch(fd: number, events: 'r' | 'w' | 'rw', onReady: (ready: 'r' | 'w' | 'rw' | 'error') => void): FdWatcher;

  // ---- eventfds ---------------------------------------------------------
  /** eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC). */
  eventfdCreate(): number;
  /** Add 1 to the eventfd (signal the other side). Returns false if EAGAIN (counter saturated), throws on other errors. */
  eventfdSignal(fd: number): boolean;
  /** Read and reset the counter; returns 0 if it was not signalled. */
  eventfdDrain(fd: number): number;
  /**
   * Watch an eventfd: each time it becomes readable, the addon drains it in C++
   * and then calls `onSignal()` once (coalescing any number of signals).
   * Works with any fd that behaves like an eventfd (a kick fd from the frontend).
   */
  watchEventfd(fd: number, onSignal: () => void): FdWatcher;

  // ---- guest memory -----------------------------------------------------
  /**
   * mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset). `offset`
   * need not be page aligned (the addon aligns down and hides the slack).
   * size and offset are JS numbers (< 2^53). Throws on failure.
   */
  mmap(fd: number, size: number, offset: number): Mapping;
  /** Detach the ArrayBuffer (every view over it becomes length 0) and munmap. Idempotent. */
  munmap(mapping: Mapping): void;
  /** memfd_create(name, MFD_CLOEXEC) and ftruncate to size. For our own frontend. */
  memfdCreate(name: string, size: number): number;
  /** fstat(fd).st_size, to validate region sizes against the backing file. Returns -1 if not a regular/memfd file. */
  fdSize(fd: number): number;

  // ---- ICMP ping sockets (SOCK_DGRAM, IPPROTO_ICMP / IPPROTO_ICMPV6) ----
  /** socket(family, SOCK_DGRAM|NONBLOCK|CLOEXEC, IPPROTO_ICMP{,V6}). Throws EACCES when net.ipv4.ping_group_range excludes us. */
  pingSocket(family: 4 | 6): number;
  /** sendto an ICMP echo message (type/code/checksum/id/seq + data; the kernel rewrites id and checksum). Returns bytes or null if it would block. */
  pingSend(fd: number, message: Uint8Array, address: string): number | null;
  /** recvfrom into `into`; returns { bytes, address } or null if it would block. */
  pingRecv(fd: number, into: Uint8Array): { bytes: number; address: string } | null;
  /** Number of fds this process has open (for leak tests). */
  openFdCount(): number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function load(): NativeAddon {
  // node-gyp-build looks for prebuilds/ first, then build/Release. The package
  // root is one level above src/ (when run from source) or dist/ (compiled).
  const loadBinding = require('node-gyp-build') as (dir: string) => NativeAddon;
  return loadBinding(path.resolve(here, '..', '..'));
}

/** The loaded addon. */
export const native: NativeAddon = load();

/** An Error from the addon carries the errno name in `code`. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}
