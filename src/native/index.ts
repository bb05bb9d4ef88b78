/**
 * The one place the C++ addon is loaded, and the whole of its surface.
 *
 * The addon does only what JavaScript cannot: AF_UNIX messages carrying file
 * descriptors (SCM_RIGHTS), mmap/munmap of guest memory exposed as
 * ArrayBuffers, eventfds (created, signalled, and watched with uv_poll_t on
 * Node's own loop), generic fd readiness watchers, memfd creation (and seals)
 * for our own test frontend, ICMP "ping" sockets (SOCK_DGRAM/IPPROTO_ICMP),
 * RLIMIT_NOFILE (Node has no setrlimit), and the groundwork for host sockets
 * without Node streams (issue 8): raw non-blocking TCP sockets, one epoll
 * readiness set behind one uv_poll handing ready sockets to JS as a batch,
 * and data movers (recvmsg/sendmsg, recvmmsg/sendmmsg) that read and write
 * straight through Uint8Array views, e.g. of guest memory. The NAT's flows
 * do not use these yet.
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
 * - Raw host sockets (tcpSocket ... sendmmsg): the calls of the per-event
 *   path return a negative errno (-EAGAIN, -ECONNRESET, -EPIPE...) instead
 *   of throwing (compare with `-os.constants.errno.EAGAIN`).
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

/**
 * epoll event bits for PollSet.add/modify and the batches it hands over
 * (sys/epoll.h). ERR and HUP are always reported, whether asked for or not.
 */
export const Poll = { IN: 0x001, PRI: 0x002, OUT: 0x004, ERR: 0x008, HUP: 0x010, RDHUP: 0x2000 } as const;

/** readv's one flag: look without consuming (MSG_PEEK; with SO_PEEK_OFF set, from the peek offset on). */
export const MSG_PEEK = 2;

/** socketShutdown's `how` (SHUT_RD, SHUT_WR, SHUT_RDWR). */
export const Shutdown = { READ: 0, WRITE: 1, BOTH: 2 } as const;

/** The options setSocketOption/getSocketOption take (an index into the addon's table, not the C value). */
export const SocketOption = {
  TCP_NODELAY: 0, SO_PEEK_OFF: 1, SO_RCVBUF: 2, SO_SNDBUF: 3, IPV6_V6ONLY: 4, SO_REUSEADDR: 5, SO_KEEPALIVE: 6,
  TCP_NOTSENT_LOWAT: 7,
} as const;
export type SocketOption = (typeof SocketOption)[keyof typeof SocketOption];

/**
 * The fields `tcpInfo` writes into its Uint32Array (TCP_INFO, and the queue
 * ioctls SIOCOUTQ/SIOCOUTQNSD/SIOCINQ), by index; the array needs
 * TCP_INFO_FIELDS elements.
 */
export const TcpInfoField = {
  /** tcpi_state: 1 ESTABLISHED ... 7 CLOSE, 8 CLOSE_WAIT, 10 LISTEN. */
  state: 0,
  sndMss: 1,
  rcvMss: 2,
  /** Segments sent and not acknowledged; on a listener, the connections waiting in its accept queue. */
  unackedSegments: 3,
  rttMicros: 4,
  /** Congestion window, in segments. */
  sndCwnd: 5,
  rcvSpace: 6,
  /** The peer's advertised window after scaling, in bytes (Linux >= 5.19; 0 before, see infoLength). */
  sndWnd: 7,
  notSentBytes: 8,
  /** SIOCOUTQ: bytes in the send queue not yet acknowledged (sent or not). */
  outq: 9,
  /** SIOCOUTQNSD: bytes in the send queue not yet sent. */
  outqNotSent: 10,
  /** SIOCINQ: bytes that can be read now. */
  inq: 11,
  /** How many bytes of struct tcp_info the kernel filled (older kernels fill less; the missing fields are 0). */
  infoLength: 12,
} as const;
export const TCP_INFO_FIELDS = 13;

/**
 * A datagram batch for recvmmsg/sendmmsg is described by records of
 * DATAGRAM_RECORD Uint32 words each, in one Uint32Array; the fields by index:
 * - segments (in): how many consecutive entries of `views` make this
 *   datagram (the views are consumed in order across records);
 * - length (out): bytes received (the datagram's real length, larger than
 *   the views when truncated) or sent;
 * - flags (out, receive): DATAGRAM_TRUNCATED when it did not fit;
 * - family (receive: out; send: in): 4 or 6, 0 for none (send: a connected
 *   socket). An IPv4-mapped peer on an IPv6 socket is reported as 4, and a
 *   4 on an IPv6 socket is sent to the mapped address;
 * - port (same direction as family);
 * - address: 4 words holding the 16 address bytes in network order as
 *   they lie in memory (IPv4: the first 4 bytes); read or write them through
 *   a Uint8Array over the same buffer at byte offset
 *   (record * DATAGRAM_RECORD + DatagramField.address) * 4.
 */
export const DatagramField = { segments: 0, length: 1, flags: 2, family: 3, port: 4, address: 5 } as const;
export const DATAGRAM_RECORD = 9;
export const DATAGRAM_TRUNCATED = 1;
/** Most datagrams per recvmmsg/sendmmsg call, and most views per call (readv/writev, or all datagrams together). */
export const MAX_DATAGRAMS = 256;
export const MAX_VIEWS = 1024;

/** One connection socketAccept took. */
export interface AcceptedSocket {
  /** Non-blocking, close-on-exec. */
  fd: number;
  /** The peer's address as text (an IPv4-mapped peer on an IPv6 listener as plain IPv4) and port. */
  address: string;
  port: number;
}

/**
 * One epoll set watched by one uv_poll on Node's loop; see `pollSet`.
 * Level-triggered. The sockets in it stay the caller's.
 */
export interface PollSet {
  /**
   * epoll_ctl(ADD) `fd` for `events` (Poll bits; EPOLLET/ONESHOT are refused
   * with a RangeError) reporting `token` (a u32 of the caller's, e.g. a flow
   * slot). Throws EEXIST when already in the set, EBADF/EPERM for a bad fd.
   */
  add(fd: number, events: number, token: number): void;
  /** epoll_ctl(MOD): new events and token. Throws ENOENT when not in the set. */
  modify(fd: number, events: number, token: number): void;
  /**
   * epoll_ctl(DEL). Remove an fd BEFORE closing it: epoll watches the open
   * file, so a closed fd with a dup still open would stay in the set.
   * Throws ENOENT when not in the set.
   */
  remove(fd: number): void;
  /** Stop the uv_poll, close it, then the epoll fd (members stay open). Idempotent; add/modify/remove then throw EBADF. */
  close(): void;
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

  // ---- raw host sockets (issue 8 groundwork) ------------------------------
  /** socket(AF_INET/AF_INET6, SOCK_STREAM|NONBLOCK|CLOEXEC). Throws (EMFILE...). */
  tcpSocket(family: 4 | 6): number;
  /**
   * bind(address, port) for the socket's family (port 0: an ephemeral port);
   * returns the bound port. Unlike udpBind it changes no option (set
   * SO_REUSEADDR first for a listener that must rebind at once). Throws.
   */
  socketBind(fd: number, address: string, port: number): number;
  /** listen(backlog 1..65535). Throws. */
  socketListen(fd: number, backlog: number): void;
  /**
   * A non-blocking connect: 0 when connected at once, -EINPROGRESS (wait for
   * Poll.OUT, then read socketError), or another -errno. The address is
   * parsed for the socket's family (TypeError when it does not parse).
   */
  socketConnect(fd: number, address: string, port: number): number;
  /** getsockopt(SO_ERROR), which clears it: 0, or the pending error as -errno (-ECONNREFUSED after a refused connect). */
  socketError(fd: number): number;
  /**
   * accept4 up to `max` (1..1024) pending connections (non-blocking,
   * close-on-exec); [] when none is pending. A connection reset before it
   * was taken (ECONNABORTED) is skipped. Other errors (EMFILE) throw when
   * nothing was accepted yet, else come back on the next call.
   */
  socketAccept(fd: number, max: number): AcceptedSocket[];
  /** shutdown(how): 0 or -errno (-ENOTCONN). */
  socketShutdown(fd: number, how: (typeof Shutdown)[keyof typeof Shutdown]): number;
  /** setsockopt(option, int value). Throws (e.g. EOPNOTSUPP: SO_PEEK_OFF on a TCP socket before Linux 6.10). */
  setSocketOption(fd: number, option: SocketOption, value: number): void;
  /** getsockopt(option) as an int (SO_SNDBUF/SO_RCVBUF: the kernel's doubled value). Throws. */
  getSocketOption(fd: number, option: SocketOption): number;
  /** Fill `into` (at least TCP_INFO_FIELDS elements) by TcpInfoField; 0 or -errno. */
  tcpInfo(fd: number, into: Uint32Array): number;
  /**
   * recvmsg(flags|MSG_DONTWAIT) scattered over views[0..count) (count <=
   * MAX_VIEWS and <= views.length; each a Uint8Array, used at its
   * byteOffset for its byteLength and never beyond). flags: 0 or MSG_PEEK.
   * Returns bytes (0: EOF, the peer shut down its sending side, unless the
   * views hold no room at all: a detached view has length 0) or -errno
   * (-EAGAIN: nothing to read, -ECONNRESET). A bad argument throws
   * (TypeError/RangeError) before any system call.
   */
  readv(fd: number, views: readonly Uint8Array[], count: number, flags: number): number;
  /**
   * sendmsg(MSG_DONTWAIT|MSG_NOSIGNAL) gathered from views[0..count): the
   * bytes the kernel took (fewer than offered when the send buffer fills),
   * or -errno (-EAGAIN: none fit, -EPIPE/-ECONNRESET: the peer is gone; no
   * SIGPIPE).
   */
  writev(fd: number, views: readonly Uint8Array[], count: number): number;
  /**
   * Drop up to `length` bytes from the head of a TCP receive queue without
   * copying (recv(MSG_TRUNC)): acknowledged data that was read with
   * MSG_PEEK. A dropped byte moves SO_PEEK_OFF back by one. Bytes dropped,
   * 0 at EOF, or -errno (-EAGAIN when nothing is queued).
   */
  discard(fd: number, length: number): number;
  /**
   * recvmmsg(MSG_DONTWAIT) of up to `count` (<= MAX_DATAGRAMS) datagrams,
   * record i receiving into its `segments` views (see DatagramField); fills
   * each received record's length, flags, family, port and address. Returns
   * how many were received, or -errno (-EAGAIN when none is queued; on a
   * udpSocket, a queued ICMP error such as -ECONNREFUSED: read the error
   * queue).
   */
  recvmmsg(fd: number, views: readonly Uint8Array[], count: number, records: Uint32Array): number;
  /**
   * sendmmsg(MSG_DONTWAIT|MSG_NOSIGNAL) of `count` datagrams, record i sent
   * from its `segments` views to its family/address/port (family 0: the
   * connected peer). Returns how many were sent (from the first; their
   * `length` filled in), or -errno if the first failed (-EAFNOSUPPORT: an
   * IPv6 destination on an IPv4 socket, before anything was sent).
   */
  sendmmsg(fd: number, views: readonly Uint8Array[], count: number, records: Uint32Array): number;
  /**
   * A readiness set: epoll_create1 plus one uv_poll_t on Node's loop. When
   * members are ready the addon writes (token, events) pairs into `ready`
   * (its length / 2 pairs, at most 1024, per batch) and calls `onReady(count)`
   * once per batch; more ready members are reported on the next loop
   * iteration. Level-triggered: a member that stays ready is reported again
   * every iteration until it is served or parked (modify to fewer events, or
   * remove). A token in a batch may belong to an fd removed earlier in the
   * same callback: check it. A negative count (-EINVAL: `ready` was detached,
   * or -errno of epoll_wait) means the set stopped; close it. An open set
   * keeps the event loop alive; an exception from onReady becomes an
   * uncaught exception. Keep a reference (a set garbage-collected without
   * close() is closed by its finalizer).
   */
  pollSet(ready: Uint32Array, onReady: (count: number) => void): PollSet;

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
