/**
 * A host-side TCP socket with no network behind it, for driving the TCP
 * translator frame by frame: the test (or fuzz target) decides when it
 * connects, what data arrives, when writes complete, and how it ends. It
 * implements the part of net.Socket the translator uses (write with a
 * completion callback, end, destroy, resetAndDestroy, pause/resume and
 * read(0) (which starts an onread socket's reads), setTimeout,
 * writableLength, the 'connect', 'data', 'end', 'drain', 'error' and 'close'
 * events, and the `onread` buffer of net.connect, a Buffer or a function
 * called before every read for the buffer to read into). Host data that
 * arrives while reads are stopped waits, as in the kernel's socket buffer,
 * until they start again.
 * Events a real socket emits later ('close' after destroy) are queued as
 * microtasks.
 */
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';

export class FakeTcpSocket extends EventEmitter {
  connecting = true;
  destroyed = false;
  writableEnded = false;
  paused = false;
  /** Bytes written by the translator, in order. */
  readonly written: Uint8Array[] = [];
  private readonly pendingWrites: Array<{ n: number; done?: () => void }> = [];
  private timeout: (() => void) | null = null;
  /** Host data not yet delivered (reads stopped, or the onread callback asked to stop). */
  private unread: Uint8Array[] = [];

  constructor(readonly options: net.TcpNetConnectOpts) {
    super();
  }

  get writableLength(): number {
    return this.pendingWrites.reduce((s, w) => s + w.n, 0);
  }

  write(data: Uint8Array, done?: () => void): boolean {
    if (this.destroyed || this.writableEnded) throw new Error('FakeTcpSocket: write after end');
    this.written.push(Uint8Array.from(data));
    this.pendingWrites.push({ n: data.length, ...(done ? { done } : {}) });
    return true;
  }

  end(): this {
    this.writableEnded = true;
    return this;
  }

  destroy(): this {
    this.close(false);
    return this;
  }

  resetAndDestroy(): this {
    this.close(true);
    return this;
  }

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    this.paused = false;
    this.deliverLater();
    return this;
  }

  /** read(0) on an onread socket: start reading (without making a stream flow). */
  read(_size?: number): null {
    this.paused = false;
    this.deliverLater();
    return null;
  }

  setTimeout(_ms: number, callback?: () => void): this {
    this.timeout = callback ?? null;
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  // ---- what the host side does -----------------------------------------------

  /** The connection is established. */
  connect(): void {
    if (!this.connecting || this.destroyed) return;
    this.connecting = false;
    this.emit('connect');
  }

  /** Data from the host peer (ignored once closed or while still connecting; kept while reads are stopped), through `onread` as net.connect delivers it. */
  receive(data: Uint8Array): void {
    if (this.connecting || this.destroyed || data.length === 0) return;
    this.unread.push(Uint8Array.from(data));
    this.deliver();
  }

  private deliverLater(): void {
    if (this.unread.length > 0) queueMicrotask(() => this.deliver());
  }

  private deliver(): void {
    const onread = this.options.onread as { buffer: Uint8Array | (() => Uint8Array); callback: (n: number, buf: Uint8Array) => boolean | void } | undefined;
    while (!this.paused && !this.destroyed && this.unread.length > 0) {
      const data = this.unread[0]!;
      if (onread === undefined) {
        this.unread.shift();
        this.emit('data', Buffer.from(data));
        continue;
      }
      const buf = typeof onread.buffer === 'function' ? onread.buffer() : onread.buffer;
      const n = Math.min(buf.length, data.length);
      if (n === 0) return;
      buf.set(data.subarray(0, n));
      if (n === data.length) this.unread.shift();
      else this.unread[0] = data.subarray(n);
      if (onread.callback(n, buf) === false) this.paused = true;
    }
  }

  /** Every write so far completes; 'drain' follows. */
  flushWrites(): void {
    const done = this.pendingWrites.splice(0);
    for (const w of done) w.done?.();
    if (done.length > 0 && !this.destroyed) this.emit('drain');
  }

  /** The host peer half-closes. */
  peerEnd(): void {
    if (!this.connecting && !this.destroyed) this.emit('end');
  }

  /** The connection fails with `code` (then closes). */
  fail(code: string): void {
    if (this.destroyed) return;
    this.emit('error', Object.assign(new Error(code), { code }));
    this.close(true);
  }

  /** The idle timer set with setTimeout fires. */
  fireTimeout(): void {
    this.timeout?.();
  }

  private close(hadError: boolean): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.connecting = false;
    queueMicrotask(() => this.emit('close', hadError));
  }

  asSocket(): net.Socket {
    return this as unknown as net.Socket;
  }
}
