/**
 * vhost-user message framing over a non-blocking AF_UNIX stream socket, with
 * file descriptors (SCM_RIGHTS). Used by both sides: the backend session
 * (receives requests) and our test frontend (receives replies).
 *
 * Theory of operation. Reading is a two-state machine per message:
 *
 *   HEADER  — read until exactly 12 bytes are in; validate the header
 *             (messages.decodeHeader). A bad header: close every fd received
 *             so far and close the connection (the stream can't be trusted).
 *   PAYLOAD — read until exactly `size` bytes are in, then deliver.
 *
 * We never ask the kernel for more than the rest of the current message, so
 * bytes of the next message are never consumed early and every fd that
 * arrives while one message is being read belongs to that message (the
 * frontend sends fds with a message's first bytes). Partial reads simply
 * wait for the next readiness callback. More fds than MAX_FDS_PER_MESSAGE
 * for one message — in one read (the kernel truncates and reports it) or
 * added up over the reads of one message (a frontend trickling the bytes of
 * one message, each byte with a handful of fds) — is a protocol error: the
 * connection is closed at once, so the fds we hold never exceed that bound.
 * When this process is out of file descriptors (RLIMIT_NOFILE) the kernel
 * cannot install the fds of a message and drops them (MSG_CTRUNC): the
 * message is lost, so the connection is closed too, but the reason says
 * "out of file descriptors (EMFILE)", not a protocol error of the peer.
 *
 * Fairness: one readiness callback delivers at most READ_BUDGET messages (and
 * makes at most 4 * READ_BUDGET reads) and then returns to the event loop (the poll is level-triggered, so the rest
 * is read on the next turn). A frontend that writes requests faster than we
 * answer them cannot starve timers, the NAT stack or the rings.
 *
 * Fd ownership: a delivered message's fds belong to the connection until the
 * handler takes one with `msg.takeFd(i)`; whatever was not taken when the
 * handler returns (or throws) is closed. The handler therefore cannot leak an
 * fd by forgetting it.
 *
 * Writing: `send` writes the whole message; if the socket would block (or
 * only part went out) the rest is queued and written when the socket becomes
 * writable (the watcher then asks for 'rw'). Fds travel with the first byte
 * of a message. The caller keeps ownership of fds it sends and must keep them
 * open until the message has been flushed (`pendingWrites === 0`): the
 * kernel duplicates them only when sendmsg succeeds.
 *
 * Back-pressure: a peer that sends requests but never reads our replies must
 * not make us buffer without bound. While more than MAX_QUEUED_BYTES are
 * queued we stop reading (the watcher asks for 'w' only); the peer's own
 * sends then block in its socket buffer. Reading resumes once the queue has
 * drained below the bound.
 *
 * Closing is idempotent: the watcher is closed before the fd, fds of a
 * half-read message are closed, queued writes are dropped, and `onClose`
 * runs exactly once (reason null for an orderly EOF or a local close()).
 */
import { native, errnoCode, type FdWatcher } from '../native/index.js';
import { HEADER_SIZE, MAX_FDS_PER_MESSAGE, decodeHeader, type MessageHeader } from './messages.js';

/** One received message. */
export interface ReceivedMessage {
  readonly header: MessageHeader;
  /** Exactly header.size bytes (owned by the message; safe to keep). */
  readonly payload: Uint8Array;
  /** How many fds arrived with the message. */
  readonly fdCount: number;
  /** Take ownership of fd number `i` (the connection will not close it). Throws if already taken or out of range. */
  takeFd(i: number): number;
  /** Look at fd number `i` without taking it (-1 if taken or out of range). */
  fdAt(i: number): number;
}

export interface ConnectionHandlers {
  /** A complete message. Fds not taken with takeFd are closed after this returns. */
  onMessage(msg: ReceivedMessage): void;
  /** The connection is gone: reason null on EOF or local close(), otherwise why. Called once. */
  onClose(reason: string | null): void;
}

/** Messages delivered per readiness callback before yielding to the event loop. */
export const READ_BUDGET = 64;
/** Queued reply bytes above which we stop reading requests (see Back-pressure). */
export const MAX_QUEUED_BYTES = 64 * 1024;

interface PendingWrite {
  data: Uint8Array;
  fds: number[];
}

class Message implements ReceivedMessage {
  constructor(
    readonly header: MessageHeader,
    readonly payload: Uint8Array,
    private readonly fds: number[],
  ) {}
  get fdCount(): number {
    return this.fds.length;
  }
  fdAt(i: number): number {
    return this.fds[i] ?? -1;
  }
  takeFd(i: number): number {
    const fd = this.fds[i];
    if (fd === undefined || fd < 0) throw new RangeError(`fd ${i} not available`);
    this.fds[i] = -1;
    return fd;
  }
  /** Close every fd not taken. */
  closeRest(): void {
    for (let i = 0; i < this.fds.length; i++) {
      const fd = this.fds[i]!;
      if (fd >= 0) {
        this.fds[i] = -1;
        closeQuietly(fd);
      }
    }
  }
}

/** close(2), ignoring errors (the fd is gone either way). */
export function closeQuietly(fd: number): void {
  if (fd < 0) return;
  try {
    native.close(fd);
  } catch {
    /* EBADF: already closed */
  }
}

export class Connection {
  private watcher: FdWatcher | null;
  private closed = false;
  private readonly headerBuf = new Uint8Array(HEADER_SIZE);
  private header: MessageHeader | null = null;
  private payload: Uint8Array = new Uint8Array(0);
  private filled = 0;
  private fds: number[] = [];
  private readonly queue: PendingWrite[] = [];
  private queuedBytes = 0;
  /** Events the watcher is set to ('r' normally, 'rw' while writes are queued, 'w' while reading is paused). */
  private events: 'r' | 'w' | 'rw' = 'r';

  /**
   * Take ownership of connected socket `fd` and start reading. `expect` is
   * the direction of incoming messages ('request' on the backend side,
   * 'reply' on the frontend side).
   */
  constructor(
    readonly fd: number,
    private readonly handlers: ConnectionHandlers,
    private readonly expect: 'request' | 'reply' = 'request',
  ) {
    this.watcher = native.watch(fd, 'r', (ready) => this.onReady(ready));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** True once the peer has closed its end (asked of the kernel now, before the end of stream is read), or when this side is closed. */
  get peerClosed(): boolean {
    if (this.closed) return true;
    try {
      return native.socketPeerClosed(this.fd);
    } catch {
      return true; // EBADF: the fd is gone
    }
  }

  /** Bytes queued but not yet written. */
  get pendingWrites(): number {
    return this.queuedBytes;
  }

  /** True while reading is paused because too many reply bytes are queued. */
  get readPaused(): boolean {
    return this.queuedBytes > MAX_QUEUED_BYTES;
  }

  /** Send one whole message (header included), with fds attached to its first byte. False if the connection is closed. */
  send(data: Uint8Array, fds: number[] = []): boolean {
    if (this.closed) return false;
    if (this.queue.length > 0) {
      this.enqueue({ data, fds });
      this.updateEvents();
      return true;
    }
    const rest = this.writeSome(data, fds);
    if (rest === undefined) return false; // closed by an error
    if (rest !== null) {
      this.enqueue(rest);
      this.updateEvents();
    }
    return true;
  }

  /** Close the connection (idempotent). `reason` is passed to onClose (null = orderly). */
  close(reason: string | null = null): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    for (const fd of this.fds) closeQuietly(fd);
    this.fds = [];
    this.queue.length = 0;
    this.queuedBytes = 0;
    closeQuietly(this.fd);
    this.handlers.onClose(reason);
  }

  // ---- writing -------------------------------------------------------------

  private enqueue(w: PendingWrite): void {
    this.queue.push(w);
    this.queuedBytes += w.data.byteLength;
  }

  /** Try to write; returns null when all was written, the remainder to queue, or undefined if the connection closed. */
  private writeSome(data: Uint8Array, fds: number[]): PendingWrite | null | undefined {
    let sent: number | null;
    try {
      sent = native.sendMsg(this.fd, data, fds);
    } catch (err) {
      this.close(`send failed: ${errnoCode(err) ?? String(err)}`);
      return undefined;
    }
    if (sent === null) return { data, fds };
    if (sent >= data.byteLength) return null;
    return { data: data.subarray(sent), fds: [] };
  }

  private flushQueue(): void {
    while (this.queue.length > 0 && !this.closed) {
      const head = this.queue[0]!;
      const rest = this.writeSome(head.data, head.fds);
      if (rest === undefined) return;
      if (rest !== null) {
        this.queuedBytes -= head.data.byteLength - rest.data.byteLength;
        this.queue[0] = rest;
        break;
      }
      this.queuedBytes -= head.data.byteLength;
      this.queue.shift();
    }
    this.updateEvents();
  }

  private updateEvents(): void {
    if (this.closed || this.watcher === null) return;
    const want = this.queue.length === 0 ? 'r' : this.readPaused ? 'w' : 'rw';
    if (want !== this.events) {
      this.events = want;
      this.watcher.setEvents(want);
    }
  }

  // ---- reading -------------------------------------------------------------

  private onReady(ready: 'r' | 'w' | 'rw' | 'error'): void {
    if (this.closed) return;
    if (ready === 'error') {
      // Let recvMsg report the actual error (or EOF) if there is one.
      this.readAvailable();
      if (!this.closed) this.close('poll error');
      return;
    }
    if (ready !== 'r') this.flushQueue();
    if (ready !== 'w') this.readAvailable();
  }

  private readAvailable(): void {
    let budget = READ_BUDGET;
    // Reads too: a message trickled in tiny pieces costs one read per piece.
    let reads = 4 * READ_BUDGET;
    while (!this.closed && budget > 0 && reads-- > 0 && !this.readPaused) {
      // Never empty: a message is delivered as soon as its last byte is in.
      const into = this.header === null ? this.headerBuf.subarray(this.filled) : this.payload.subarray(this.filled);
      let r;
      try {
        r = native.recvMsg(this.fd, into, MAX_FDS_PER_MESSAGE);
      } catch (err) {
        this.close(`receive failed: ${errnoCode(err) ?? String(err)}`);
        return;
      }
      if (r === null) return; // would block
      for (const fd of r.fds) this.fds.push(fd);
      if (r.fdsError !== null) {
        // The kernel dropped the message's fds: we are at our fd limit, not the peer at fault.
        this.close(`out of file descriptors (${r.fdsError}): the fds sent with a message could not be received`);
        return;
      }
      if (r.fdsTruncated || this.fds.length > MAX_FDS_PER_MESSAGE) {
        this.close('too many file descriptors in one message');
        return;
      }
      if (r.bytes === 0) {
        const midMessage = this.filled > 0 || this.header !== null;
        this.close(midMessage ? 'connection closed in the middle of a message' : null);
        return;
      }
      this.filled += r.bytes;
      if (this.header === null) {
        if (this.filled < HEADER_SIZE) continue;
        const h = decodeHeader(this.headerBuf, this.expect);
        if (!h.ok) {
          this.close(`bad message header: ${h.reason}`);
          return;
        }
        this.header = h.value;
        this.payload = new Uint8Array(h.value.size);
        this.filled = 0;
        if (h.value.size === 0) {
          this.deliver();
          budget--;
        }
      } else if (this.filled === this.payload.byteLength) {
        this.deliver();
        budget--;
      }
    }
  }

  private deliver(): void {
    const header = this.header!;
    const msg = new Message(header, this.payload, this.fds);
    this.header = null;
    this.payload = new Uint8Array(0);
    this.fds = [];
    this.filled = 0;
    try {
      this.handlers.onMessage(msg);
    } catch (err) {
      msg.closeRest();
      this.close(`message handler failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    msg.closeRest();
  }
}
