/**
 * The one place the C++ addon is loaded, and the whole of its surface.
 *
 * The addon does only what JavaScript cannot: AF_UNIX messages carrying file
 * descriptors (SCM_RIGHTS), mmap/munmap of guest memory exposed as
 * ArrayBuffers, eventfds (created, signalled, and watched with uv_poll_t on
 * Node's own loop), generic fd readiness watchers, memfd creation (and seals)
 * for our own test frontend, ICMP "ping" sockets (SOCK_DGRAM/IPPROTO_ICMP),
 * and RLIMIT_NOFILE (Node has no setrlimit).
 *
 * Conventions:
 * - fds are plain numbers. Every fd the addon returns is O_CLOEXEC and, for
 *   sockets, O_NONBLOCK.
 * - Failures throw an Error with `code` set to the errno name (e.g. 'EAGAIN',
 *   'ENOENT'), `errno` to its number negated as in Node's own system errors
 *   (ENOENT -> -2, so `util.getSystemErrorName(err.errno)` works) and
 *   `syscall`, except where a function documents a `null` return for "would
 *   block".
 * - Arguments are checked strictly and never coerced: a wrong type throws a
 *   TypeError, a number that is not an integer or is out of range a
 *   RangeError.
 * - No function blocks the event loop (sockets are read and written with
 *   MSG_DONTWAIT; `unixConnect` is a non-blocking local connect).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/**
 * A readiness watcher on one fd (uv_poll_t on Node's loop). While open and
 * not paused it keeps the event loop alive. Keep a reference to it: a watcher
 * that is garbage-collected without close() is closed by its finalizer (its
 * callback stops).
 */
export interface FdWatcher {
  /**
   * Change the events watched: 'r', 'w', 'rw' ('' pauses without closing;
   * after an 'error' callback the poll is stopped, and this restarts it).
   * Watchers from watchEventfd take only '' or 'r' (TypeError otherwise).
   * A no-op once the watcher is closed.
   */
  setEvents(events: '' | 'r' | 'w' | 'rw'): void;
  /** Stop and close the uv handle. Must be called before the fd is closed. Idempotent. */
  close(): void;
}

/** A mapping of guest memory. `buffer` is detached by `munmap`. */
export interface Mapping {
  readonly buffer: ArrayBuffer;
  readonly size: number;
}

/** What unixListen created: the listening fd and the socket file's identity. */
export interface ListeningSocket {
  fd: number;
  /** st_dev and st_ino of the socket file, as node:fs reports them with `{ bigint: true }`. */
  dev: bigint;
  ino: bigint;
}

export interface ReceivedMessage {
  /** Bytes read (0 means the peer closed the connection). */
  bytes: number;
  /** File descriptors that came with these bytes (SCM_RIGHTS). The receiver owns them. */
  fds: number[];
  /** True if fds were lost: more than maxFds came (the extras were closed), or the kernel could not install them (see fdsError). Treat as a protocol error unless fdsError says otherwise. */
  fdsTruncated: boolean;
  /**
   * The errno name ('EMFILE', 'ENFILE') when the kernel could not install
   * the fds that came with these bytes because this process is out of file
   * descriptors (MSG_CTRUNC, and a probe right after cannot open one
   * either); null otherwise. The fds are gone: the peer did nothing wrong.
   */
  fdsError: string | null;
}

/** RLIMIT_NOFILE; RLIM_INFINITY is Infinity. */
export interface FdLimit {
  soft: number;
  hard: number;
}

/** Seal bits of fcntl(F_ADD_SEALS/F_GET_SEALS) (linux/fcntl.h). */
export const Seal = { SEAL: 0x1, SHRINK: 0x2, GROW: 0x4, WRITE: 0x8 } as const;

/** One entry of a UDP socket's error queue (`struct sock_extended_err`, see ip(7) IP_RECVERR). */
export interface UdpQueuedError {
  /** Where the offending datagram was sent (msg_name): address as text ('' if the kernel gave none) and port. */
  address: string;
  port: number;
  /** ee_origin: SO_EE_ORIGIN_LOCAL 1, SO_EE_ORIGIN_ICMP 2, SO_EE_ORIGIN_ICMP6 3. */
  origin: number;
  /** ee_type/ee_code: the ICMP type and code (for origin 2 or 3). */
  type: number;
  code: number;
  /** ee_errno: the (positive) errno the error stands for, e.g. 111 for ECONNREFUSED. */
  errno: number;
  /** ee_info: the next-hop MTU for "fragmentation needed" / "packet too big", else 0. */
  info: number;
  /** SO_EE_OFFENDER: the source of the ICMP message as text ('' when none). */
  offender: string;
}

export interface NativeAddon {
  // ---- AF_UNIX stream sockets -------------------------------------------
  /**
   * socket+bind+listen on a path where nothing exists yet (EADDRINUSE
   * otherwise: nothing is ever unlinked here; see vhost-user/listen-socket.ts
   * for replacing a stale socket). The socket file is created with mode 0600
   * and nobody can connect before it has that mode. Returns the listening fd
   * and the identity (st_dev, st_ino) of the file created, so exactly that
   * file can be removed later.
   */
  unixListen(path: string, backlog: number): ListeningSocket;
  /** accept4 a connection (non-blocking, close-on-exec); null if none is pending. */
  unixAccept(listenFd: number): number | null;
  /**
   * Connect to a listening path (a non-blocking local connect: completes at
   * once or throws e.g. ENOENT/ECONNREFUSED, or EAGAIN if the listener's
   * backlog is full).
   */
  unixConnect(path: string): number;
  /**
   * Whether the peer of connected stream socket `fd` has closed its end
   * (poll reports POLLHUP or POLLERR right now), without reading anything. A
   * peer that only shut down its sending side may still read: false. Throws
   * EBADF for an fd that is not open.
   */
  socketPeerClosed(fd: number): boolean;
  /** socketpair(AF_UNIX, SOCK_STREAM) – for tests. */
  unixSocketPair(): [number, number];
  /**
   * recvmsg up to `into.byteLength` bytes into `into`, accepting up to `maxFds` fds.
   * Returns null if it would block. Throws on error (ECONNRESET etc).
   * `into` must be a non-empty Uint8Array (RangeError if empty or detached);
   * maxFds is 0..253. Received fds are close-on-exec (MSG_CMSG_CLOEXEC).
   */
  recvMsg(fd: number, into: Uint8Array, maxFds: number): ReceivedMessage | null;
  /**
   * sendmsg the bytes with the fds attached (SCM_RIGHTS). Returns bytes sent,
   * or null if it would block (then nothing, fds included, was sent). Uses
   * MSG_NOSIGNAL (a closed peer throws EPIPE, no SIGPIPE). At most 253 fds;
   * with fds, data must not be empty. The fds stay owned by the caller.
   */
  sendMsg(fd: number, data: Uint8Array, fds: number[]): number | null;
  /** close(2). Throws only for EBADF. */
  close(fd: number): void;

  // ---- readiness --------------------------------------------------------
  /**
   * Watch an fd for readability/writability with uv_poll_t on Node's loop
   * (this sets O_NONBLOCK on the fd). The callback gets the ready events; on
   * a poll error (POLLERR) it gets 'error' and the poll stops. One watcher
   * per fd: a second one, even while the first is paused, throws EEXIST
   * (watch 'rw' on one watcher instead). Regular files throw EPERM. An
   * exception thrown by the callback becomes an uncaught exception.
   */
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
   * If the fd hangs up (EOF, POLLERR/POLLHUP) or reading keeps failing,
   * `onSignal()` is called once more and the watcher stops polling (it does
   * not spin); close it as usual.
   */
  watchEventfd(fd: number, onSignal: () => void): FdWatcher;

  // ---- guest memory -----------------------------------------------------
  /**
   * mmap(NULL, size, PROT_READ|PROT_WRITE, MAP_SHARED, fd, offset). `offset`
   * need not be page aligned (the addon aligns down and hides the slack).
   * size and offset are JS numbers (< 2^53). Throws on failure. A size Node
   * cannot expose as one ArrayBuffer (Node 20: more than
   * buffer.constants.MAX_LENGTH = 4 GiB) throws a RangeError, nothing stays
   * mapped. If the Mapping is never munmap-ed, the memory is unmapped when
   * its ArrayBuffer is garbage-collected (the buffer alone keeps it mapped).
   */
  mmap(fd: number, size: number, offset: number): Mapping;
  /**
   * Detach the ArrayBuffer (every view over it becomes length 0) and munmap.
   * Idempotent. Anything but a Mapping from mmap() throws a TypeError.
   */
  munmap(mapping: Mapping): void;
  /**
   * memfd_create(name, MFD_CLOEXEC) and ftruncate to size. For our own
   * frontend. With `seals` (Seal bits, default 0) it is created with
   * MFD_ALLOW_SEALING and sealed after the ftruncate, as QEMU's
   * memory-backend-memfd does (seal=on: GROW|SHRINK|SEAL).
   */
  memfdCreate(name: string, size: number, seals?: number): number;
  /** fstat(fd).st_size, to validate region sizes against the backing file. Returns -1 if not a regular/memfd file. */
  fdSize(fd: number): number;
  /**
   * fcntl(fd, F_GET_SEALS): the Seal bits, or -1 when the file cannot carry
   * seals (not on shmem/hugetlbfs). A memfd made without MFD_ALLOW_SEALING,
   * and a plain tmpfs file, report Seal.SEAL alone. Throws e.g. EBADF.
   */
  fdSeals(fd: number): number;

  // ---- ICMP ping sockets (SOCK_DGRAM, IPPROTO_ICMP / IPPROTO_ICMPV6) ----
  /** socket(family, SOCK_DGRAM|NONBLOCK|CLOEXEC, IPPROTO_ICMP{,V6}). Throws EACCES when net.ipv4.ping_group_range excludes us. */
  pingSocket(family: 4 | 6): number;
  /**
   * sendto an ICMP echo message (type/code/checksum/id/seq + data; the kernel
   * rewrites id and checksum). Returns bytes or null if it would block.
   * `address` is parsed for the socket's family (IPv6 may carry a %scope);
   * an unparsable address throws a TypeError.
   */
  pingSend(fd: number, message: Uint8Array, address: string): number | null;
  /** recvfrom into `into`; returns { bytes, address } (the source, as text) or null if it would block. */
  pingRecv(fd: number, into: Uint8Array): { bytes: number; address: string } | null;

  // ---- UDP sockets with ICMP error reporting (IP_RECVERR) ---------------
  /**
   * socket(AF_INET/AF_INET6, SOCK_DGRAM|NONBLOCK|CLOEXEC, IPPROTO_UDP) with
   * IP_RECVERR on (family 6: IPV6_RECVERR and IP_RECVERR, for IPv4-mapped
   * peers), NOT bound. Hand it to node:dgram with
   * `dgramSocket.bind({ fd, exclusive: true })` (from then on node:dgram owns
   * and closes the fd), then bind it with `udpBind` before the first send.
   * An ICMP error for a datagram the socket sent then fails the socket's next
   * receive (node:dgram emits 'error', e.g. ECONNREFUSED) or, if a send comes
   * first, that send (the datagram is not sent); the error itself waits in
   * the error queue (read it with udpReadErrorQueue), and while the queue is
   * not empty the fd stays in POLLERR: a caller must drain it on each such
   * 'error' and failed send, or libuv's poll spins.
   */
  udpSocket(family: 4 | 6): number;
  /**
   * setsockopt SO_REUSEADDR and SO_REUSEPORT off (libuv turns SO_REUSEADDR
   * on for an fd node:dgram adopts), then bind(address, port) (port 0: an
   * ephemeral port). Returns the bound port. `address` is parsed for the
   * socket's family (TypeError if it does not parse).
   */
  udpBind(fd: number, address: string, port: number): number;
  /**
   * recvmsg(MSG_ERRQUEUE|MSG_DONTWAIT) until the queue is empty or `max`
   * (1..1024) entries were read; [] when empty. Throws (e.g. ENOTSOCK) only
   * when the first read fails. Reading the last entry clears the socket's
   * pending error; the quoted payload is not returned.
   */
  udpReadErrorQueue(fd: number, max: number): UdpQueuedError[];

  /** Number of fds this process has open (for leak tests and the fd budget). */
  openFdCount(): number;
  /** getrlimit(RLIMIT_NOFILE). */
  getFdLimit(): FdLimit;
  /** setrlimit(RLIMIT_NOFILE): integers or Infinity; throws EINVAL (soft above hard) or EPERM (raising hard unprivileged). */
  setFdLimit(soft: number, hard: number): void;
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
