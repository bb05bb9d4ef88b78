/**
 * A virtio-net driver for our test frontend: moves Ethernet frames through a
 * vhost-user virtio-net backend the way a guest's virtio_net driver would.
 *
 * Theory of operation. Queue 0 is receive, queue 1 transmit (virtio 1.2
 * §5.1.2). Every frame carries the virtio-net header in front: 12 bytes when
 * VERSION_1 or MRG_RXBUF was negotiated, 10 otherwise; we send it all zero
 * (no offloads) and, on receive, read `num_buffers` (offset 10) to gather a
 * frame the device spread over several receive buffers (MRG_RXBUF).
 *
 * Receive: at start every receive buffer (fixed size, allocated in guest
 * memory) is posted as one device-writable descriptor. When the rx call
 * eventfd fires (native.watchEventfd), used entries are collected, frames
 * copied out (buffers are reused at once), buffers re-posted, the device
 * kicked if its suppression asks for it, and interrupts re-armed
 * (used_event) followed by a re-check so nothing is stranded. Frames go to a
 * callback (`onFrame`) or a queue read by `receive()` / `for await`.
 *
 * Transmit: `send(frames)` copies each frame behind a zero header into a
 * free transmit buffer, adds it as one device-readable descriptor, publishes
 * the batch with one avail-index store and kicks once (if needed). Frames
 * that do not fit (no free buffer or descriptor) wait in a backlog that is
 * drained as the device returns transmit buffers. `drained()` resolves when
 * every frame handed to `send` has been consumed by the device.
 *
 * The ring mechanics are DriverQueue's (src/virtio/driver-queue.ts).
 */
import { native, type FdWatcher } from '../native/index.js';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF } from '../virtio/features.js';
import type { FrontendQueue, VhostUserFrontend } from './frontend.js';

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;

export interface NetDriverOptions {
  /** Receive buffers posted (default: the queue size). */
  rxBuffers?: number;
  /** Bytes per receive buffer, header included (default 2048). */
  rxBufferSize?: number;
  /** Transmit buffers (default: the queue size). */
  txBuffers?: number;
  /** Bytes per transmit buffer, header included (default 2048): the largest frame sendable is this minus the header. */
  txBufferSize?: number;
}

export interface NetDriverStats {
  rxFrames: number;
  rxBytes: number;
  /** Frames that spanned more than one receive buffer. */
  rxMerged: number;
  /** Received entries that made no sense (bad num_buffers, length beyond buffer). */
  rxErrors: number;
  txFrames: number;
  txBytes: number;
  kicks: number;
  interrupts: number;
}

export class NetDriver {
  readonly headerLength: number;
  readonly mergeable: boolean;
  readonly stats: NetDriverStats = { rxFrames: 0, rxBytes: 0, rxMerged: 0, rxErrors: 0, txFrames: 0, txBytes: 0, kicks: 0, interrupts: 0 };

  private readonly rx: FrontendQueue;
  private readonly tx: FrontendQueue;
  private readonly rxBufferSize: number;
  private readonly txBufferSize: number;
  /** Descriptor head id -> buffer address. */
  private readonly rxById = new Map<number, number>();
  private readonly txById = new Map<number, number>();
  private readonly rxFree: number[] = [];
  private readonly txFree: number[] = [];
  private readonly backlog: Uint8Array[] = [];
  private txInFlight = 0;
  private watchers: FdWatcher[] = [];
  private frameCallback: ((frame: Uint8Array) => void) | null = null;
  private readonly frames: Uint8Array[] = [];
  private readonly receivers: Array<(f: Uint8Array) => void> = [];
  private readonly drainWaiters: Array<() => void> = [];
  /** Receive entries of a frame still being gathered (MRG_RXBUF). */
  private partial: { parts: Uint8Array[]; remaining: number } | null = null;
  private running = false;

  constructor(
    private readonly fe: VhostUserFrontend,
    options: NetDriverOptions = {},
  ) {
    fe.prepareQueues();
    if (fe.queues.length < 2) throw new RangeError('virtio-net needs two queues');
    this.rx = fe.queues[RX_QUEUE]!;
    this.tx = fe.queues[TX_QUEUE]!;
    const acked = fe.ackedFeatures;
    this.mergeable = (acked & VIRTIO_NET_F_MRG_RXBUF) !== 0n;
    this.headerLength = this.mergeable || (acked & VIRTIO_F_VERSION_1) !== 0n ? 12 : 10;
    this.rxBufferSize = options.rxBufferSize ?? 2048;
    this.txBufferSize = options.txBufferSize ?? 2048;
    if (this.rxBufferSize <= this.headerLength || this.txBufferSize <= this.headerLength) throw new RangeError('buffers too small');
    const rxCount = Math.min(options.rxBuffers ?? this.rx.size, this.rx.size);
    const txCount = Math.min(options.txBuffers ?? this.tx.size, this.tx.size);
    for (let i = 0; i < rxCount; i++) this.rxFree.push(fe.alloc.alloc(this.rxBufferSize, 64));
    for (let i = 0; i < txCount; i++) this.txFree.push(fe.alloc.alloc(this.txBufferSize, 64));
    // The frontend's eventfds die with it: stop watching them first.
    fe.onRelease(() => this.stop());
  }

  /** Largest frame `send` accepts. */
  get maxFrame(): number {
    return this.txBufferSize - this.headerLength;
  }

  /** Post every receive buffer and start watching both call eventfds. Call after the frontend started the rings. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.watchers.push(native.watchEventfd(this.rx.callFd, () => this.onRxInterrupt()));
    this.watchers.push(native.watchEventfd(this.tx.callFd, () => this.onTxInterrupt()));
    this.rx.driver.enableInterrupts();
    this.tx.driver.enableInterrupts();
    this.postRx();
  }

  /** Stop watching (the frontend still owns the eventfds and memory). */
  stop(): void {
    this.running = false;
    for (const w of this.watchers.splice(0)) w.close();
  }

  // ---- transmit ----------------------------------------------------------------

  /** Queue frames for transmission (copied); as many as fit go out now with one kick. */
  send(frames: Uint8Array[]): void {
    for (const f of frames) {
      if (f.byteLength > this.maxFrame) throw new RangeError(`frame of ${f.byteLength} bytes above ${this.maxFrame}`);
      this.backlog.push(f.slice());
    }
    this.pushTx();
  }

  /** Resolves when every frame given to send() has been consumed by the device. */
  drained(): Promise<void> {
    this.reapTx();
    if (this.backlog.length === 0 && this.txInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Frames not yet handed to the ring, and handed but not yet returned. */
  get txPending(): number {
    return this.backlog.length + this.txInFlight;
  }

  private pushTx(): void {
    const q = this.tx.driver;
    let added = 0;
    while (this.backlog.length > 0 && this.txFree.length > 0 && q.freeCount > 0) {
      const frame = this.backlog.shift()!;
      const gpa = this.txFree.pop()!;
      const buf = this.fe.view(gpa, this.headerLength + frame.byteLength);
      buf.fill(0, 0, this.headerLength);
      buf.set(frame, this.headerLength);
      const id = q.add([[gpa, buf.byteLength]], []);
      if (id === null) {
        // Cannot happen (freeCount checked); keep the frame.
        this.txFree.push(gpa);
        this.backlog.unshift(frame);
        break;
      }
      this.txById.set(id, gpa);
      this.txInFlight++;
      this.stats.txFrames++;
      this.stats.txBytes += frame.byteLength;
      added++;
    }
    if (added > 0) {
      q.publish();
      if (q.needsKick()) {
        native.eventfdSignal(this.tx.kickFd);
        this.stats.kicks++;
      }
    }
  }

  private reapTx(): void {
    const q = this.tx.driver;
    for (;;) {
      for (const u of q.takeUsed()) {
        const gpa = this.txById.get(u.id);
        if (gpa === undefined) continue;
        this.txById.delete(u.id);
        this.txFree.push(gpa);
        this.txInFlight--;
      }
      q.enableInterrupts();
      // Re-check after re-arming so an entry used in between is not stranded.
      if (q.readUsedIdx() === q.lastUsed) break;
    }
  }

  private onTxInterrupt(): void {
    this.stats.interrupts++;
    this.reapTx();
    this.pushTx();
    if (this.backlog.length === 0 && this.txInFlight === 0) {
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }

  // ---- receive -----------------------------------------------------------------

  /** Deliver every received frame to `cb` (instead of the receive() queue). */
  onFrame(cb: ((frame: Uint8Array) => void) | null): void {
    this.frameCallback = cb;
    if (cb !== null) for (const f of this.frames.splice(0)) cb(f);
  }

  /** The next received frame (Ethernet header first, virtio-net header removed); Infinity waits forever. */
  receive(timeoutMs = 5000): Promise<Uint8Array> {
    const f = this.frames.shift();
    if (f !== undefined) return Promise.resolve(f);
    return new Promise((resolve, reject) => {
      const timer = Number.isFinite(timeoutMs)
        ? setTimeout(() => {
            const i = this.receivers.indexOf(deliver);
            if (i >= 0) this.receivers.splice(i, 1);
            reject(new Error(`no frame received within ${timeoutMs} ms`));
          }, timeoutMs)
        : null;
      const deliver = (frame: Uint8Array): void => {
        if (timer !== null) clearTimeout(timer);
        resolve(frame);
      };
      this.receivers.push(deliver);
    });
  }

  /** Frames received and not yet taken. */
  get rxQueued(): number {
    return this.frames.length;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    while (this.running) yield await this.receive(Infinity);
  }

  private postRx(): void {
    const q = this.rx.driver;
    let added = 0;
    while (this.rxFree.length > 0 && q.freeCount > 0) {
      const gpa = this.rxFree.pop()!;
      const id = q.add([], [[gpa, this.rxBufferSize]]);
      if (id === null) {
        this.rxFree.push(gpa);
        break;
      }
      this.rxById.set(id, gpa);
      added++;
    }
    if (added > 0) {
      q.publish();
      if (q.needsKick()) {
        native.eventfdSignal(this.rx.kickFd);
        this.stats.kicks++;
      }
    }
  }

  private onRxInterrupt(): void {
    this.stats.interrupts++;
    const q = this.rx.driver;
    for (;;) {
      for (const u of q.takeUsed()) this.rxEntry(u.id, u.len);
      q.enableInterrupts();
      if (q.readUsedIdx() === q.lastUsed) break;
    }
    this.postRx();
  }

  private rxEntry(id: number, len: number): void {
    const gpa = this.rxById.get(id);
    if (gpa === undefined) {
      this.stats.rxErrors++;
      return;
    }
    this.rxById.delete(id);
    this.rxFree.push(gpa);
    if (len > this.rxBufferSize) {
      this.stats.rxErrors++;
      this.partial = null;
      return;
    }
    const bytes = this.fe.view(gpa, len);
    if (this.partial !== null) {
      this.partial.parts.push(bytes.slice());
      if (--this.partial.remaining === 0) this.finishPartial();
      return;
    }
    if (len < this.headerLength) {
      this.stats.rxErrors++;
      return;
    }
    const numBuffers = this.mergeable ? new DataView(bytes.buffer, bytes.byteOffset + 10, 2).getUint16(0, true) : 1;
    if (numBuffers === 0) {
      this.stats.rxErrors++;
      return;
    }
    const first = bytes.slice(this.headerLength);
    if (numBuffers === 1) {
      this.deliver(first);
      return;
    }
    this.partial = { parts: [first], remaining: numBuffers - 1 };
  }

  private finishPartial(): void {
    const parts = this.partial!.parts;
    this.partial = null;
    let total = 0;
    for (const p of parts) total += p.byteLength;
    const frame = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      frame.set(p, at);
      at += p.byteLength;
    }
    this.stats.rxMerged++;
    this.deliver(frame);
  }

  private deliver(frame: Uint8Array): void {
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.byteLength;
    if (this.frameCallback !== null) {
      this.frameCallback(frame);
      return;
    }
    const r = this.receivers.shift();
    if (r !== undefined) r(frame);
    else this.frames.push(frame);
  }
}
