/**
 * UDP flow sockets on the addon's raw calls (the default flow socket when
 * the addon loads; see src/net/udp.ts for what a flow does with it).
 *
 * Theory of operation.
 *
 * A `RawUdpSocket` owns one fd from `udpSocket` (IP_RECVERR on, bound with
 * `udpBind` to an ephemeral port, SO_REUSEADDR off) and offers the small
 * dgram-like surface the UDP module uses: `send` (one sendmmsg record,
 * straight from the caller's bytes, no copy; its callback runs before
 * `send` returns), `close`, `address`, and the events 'message' (one per
 * datagram) and 'error' (a receive failed: with IP_RECVERR, an ICMP error
 * waits in the error queue; the module drains it).
 *
 * Receiving: every RawUdpSocket of a `UdpBatchReader` is a member of the
 * reader's one `pollSet` (token: the socket's slot index in the reader,
 * level-triggered, EPOLLIN). The addon calls back once per batch of ready
 * tokens; for each token (slot checked: a socket closed earlier in the same
 * batch is skipped) the reader drains the socket with recvmmsg into a reused
 * set of RECV_BATCH buffers of RECV_BUFFER bytes (at most DRAIN_ROUNDS calls
 * per socket per batch: what is left is reported again next turn; a failed
 * receive, or EPOLLERR with nothing to receive, emits 'error') and emits
 * 'message' for each datagram with a view into those buffers (valid only
 * during the listener's call). A datagram that did not fit is dropped
 * (RECV_BUFFER holds the largest UDP payload, so it cannot happen). After
 * the whole batch the reader runs, once each, the `afterBatch` callbacks
 * registered during it (the UDP module's flush: replies are published to
 * the guest once per batch) and counts `batches`.
 *
 * The reader closes its pollSet when its last socket leaves (an open set
 * keeps Node's event loop alive) and makes a new one for the next socket.
 * A socket is removed from the set before its fd is closed.
 */
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';
import {
  DATAGRAM_RECORD, DATAGRAM_TRUNCATED, DatagramField, Poll, type NativeAddon, type PollSet,
} from '../native/index.js';
import { inanyToString, parseInAny } from './inany.js';

/** Datagrams per recvmmsg call and bytes per datagram buffer (the largest UDP payload fits). */
export const RECV_BATCH = 32;
export const RECV_BUFFER = 65536;
/** recvmmsg calls per ready socket per batch (level-triggered: the rest comes next turn). */
const DRAIN_ROUNDS = 4;
/** Ready (token, events) pairs per poll batch. */
const READY_PAIRS = 256;

/** errno number -> code ('ECONNREFUSED'...). */
const ERRNO_CODES = new Map<number, string>(Object.entries(osConstants.errno).map(([code, n]) => [n, code]));

function errnoError(negErrno: number, syscall: string): NodeJS.ErrnoException {
  const code = ERRNO_CODES.get(-negErrno) ?? `E${-negErrno}`;
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno: negErrno, syscall });
}

/** What a 'message' listener gets besides the bytes. */
export interface RawRemoteInfo {
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
  size: number;
  /** The reader that delivered it, for `afterBatch`. */
  batch: UdpBatchReader;
}

/** One readiness set for many flow sockets, and the receive buffers they share. */
export class UdpBatchReader {
  private poll: PollSet | null = null;
  private readonly ready = new Uint32Array(READY_PAIRS * 2);
  private readonly slots: (RawUdpSocket | null)[] = [];
  private readonly freeSlots: number[] = [];
  private members = 0;
  private buffers: Uint8Array[] | null = null;
  private readonly records = new Uint32Array(RECV_BATCH * DATAGRAM_RECORD);
  private readonly recordBytes = new Uint8Array(this.records.buffer);
  private readonly pending = new Set<() => void>();
  /** Poll batches that delivered at least one datagram, and datagrams delivered. */
  batches = 0;
  datagrams = 0;

  constructor(readonly native: NativeAddon) {
    for (let i = 0; i < RECV_BATCH; i++) this.records[i * DATAGRAM_RECORD + DatagramField.segments] = 1;
  }

  /** Run `fn` once after the current batch (callers: 'message' listeners). */
  afterBatch(fn: () => void): void {
    this.pending.add(fn);
  }

  /** Add an open fd; returns its slot. Throws what epoll_ctl throws. */
  add(socket: RawUdpSocket): number {
    if (!this.poll) this.poll = this.native.pollSet(this.ready, (count) => this.onReady(count));
    const slot = this.freeSlots.pop() ?? this.slots.length;
    this.poll.add(socket.fd, Poll.IN, slot);
    this.slots[slot] = socket;
    this.members++;
    return slot;
  }

  /** Remove before closing the fd. */
  remove(socket: RawUdpSocket, slot: number): void {
    if (this.slots[slot] !== socket) return;
    this.slots[slot] = null;
    this.freeSlots.push(slot);
    this.members--;
    try {
      this.poll?.remove(socket.fd);
    } catch {
      /* not in the set */
    }
    if (this.members === 0 && this.poll) {
      this.poll.close();
      this.poll = null;
    }
  }

  private onReady(count: number): void {
    if (count < 0) {
      // The set stopped (see NativeAddon.pollSet): tell every member, they cannot receive any more.
      for (const socket of this.slots) socket?.emit('error', errnoError(count, 'epoll_wait'));
      return;
    }
    const before = this.datagrams;
    for (let i = 0; i < count; i++) {
      const socket = this.slots[this.ready[i * 2]!];
      if (socket) this.drain(socket, this.ready[i * 2 + 1]!);
    }
    if (this.datagrams > before) this.batches++;
    const callbacks = [...this.pending];
    this.pending.clear();
    for (const fn of callbacks) fn();
  }

  private drain(socket: RawUdpSocket, events: number): void {
    const buffers = (this.buffers ??= Array.from({ length: RECV_BATCH }, () => new Uint8Array(RECV_BUFFER)));
    const records = this.records;
    for (let round = 0; round < DRAIN_ROUNDS && !socket.closed; round++) {
      const n = this.native.recvmmsg(socket.fd, buffers, RECV_BATCH, records);
      if (n < 0) {
        // EPOLLERR with nothing to receive: an error-queue entry is still waiting (it would be reported forever).
        if (n !== -osConstants.errno.EAGAIN || (round === 0 && events & Poll.ERR)) socket.emit('error', errnoError(n, 'recvmmsg'));
        return;
      }
      for (let i = 0; i < n && !socket.closed; i++) {
        const r = i * DATAGRAM_RECORD;
        const length = records[r + DatagramField.length]!;
        if (records[r + DatagramField.flags]! & DATAGRAM_TRUNCATED) continue;
        const family = records[r + DatagramField.family]!;
        const at = (r + DatagramField.address) * 4;
        const b = this.recordBytes;
        const address = family === 6
          ? inanyToString(b.slice(at, at + 16))
          : `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
        this.datagrams++;
        socket.emit('message', buffers[i]!.subarray(0, length), {
          address, family: family === 6 ? 'IPv6' : 'IPv4', port: records[r + DatagramField.port]!, size: length, batch: this,
        } satisfies RawRemoteInfo);
      }
      if (n < RECV_BATCH) return;
    }
  }
}

/** One flow socket on a raw fd (see the theory of operation). */
export class RawUdpSocket extends EventEmitter {
  readonly fd: number;
  readonly port: number;
  closed = false;
  private readonly slot: number;
  private readonly sendRecord = new Uint32Array(DATAGRAM_RECORD);
  private readonly sendAddress = new Uint8Array(this.sendRecord.buffer, DatagramField.address * 4, 16);
  private readonly sendViews: Uint8Array[] = [new Uint8Array(0)];

  /** Make, bind and register the socket; throws (and leaks no fd) if any step fails. */
  constructor(private readonly reader: UdpBatchReader, family: 4 | 6) {
    super();
    const native = reader.native;
    const fd = native.udpSocket(family);
    try {
      this.port = native.udpBind(fd, family === 6 ? '::' : '0.0.0.0', 0);
      this.fd = fd;
      this.slot = reader.add(this);
    } catch (err) {
      native.close(fd);
      throw err;
    }
    this.sendRecord[DatagramField.segments] = 1;
  }

  /** Send one datagram now (no copy); `done` runs before this returns. */
  send(data: Uint8Array, port: number, address: string, done?: (err: Error | null) => void): void {
    if (this.closed) throw Object.assign(new Error('Not running'), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    const parsed = parseInAny(address);
    if (parsed === null) {
      done?.(Object.assign(new Error(`bad address ${address}`), { code: 'EINVAL' }));
      return;
    }
    const record = this.sendRecord;
    this.sendAddress.fill(0);
    if (typeof parsed === 'number') {
      record[DatagramField.family] = 4;
      this.sendAddress[0] = parsed >>> 24;
      this.sendAddress[1] = (parsed >>> 16) & 0xff;
      this.sendAddress[2] = (parsed >>> 8) & 0xff;
      this.sendAddress[3] = parsed & 0xff;
    } else {
      record[DatagramField.family] = 6;
      this.sendAddress.set(parsed);
    }
    record[DatagramField.port] = port;
    this.sendViews[0] = data;
    const n = this.reader.native.sendmmsg(this.fd, this.sendViews, 1, record);
    this.sendViews[0] = EMPTY;
    done?.(n < 0 ? errnoError(n, 'sendmmsg') : null);
  }

  address(): { address: string; family: string; port: number } {
    return { address: '0.0.0.0', family: 'IPv4', port: this.port };
  }

  close(): void {
    if (this.closed) throw Object.assign(new Error('Not running'), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    this.closed = true;
    this.reader.remove(this, this.slot);
    this.reader.native.close(this.fd);
    queueMicrotask(() => this.emit('close'));
  }
}

const EMPTY = new Uint8Array(0);
