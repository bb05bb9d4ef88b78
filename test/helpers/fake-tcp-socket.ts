/**
 * A host-side TCP socket with no network behind it, for driving the TCP
 * translator frame by frame: the test (or fuzz target) decides when it
 * connects, what data arrives, when writes complete, and how it ends. It
 * implements the part of net.Socket the translator uses (write with a
 * completion callback, end, destroy, resetAndDestroy, pause/resume,
 * setTimeout, writableLength, the 'connect', 'data', 'end', 'drain',
 * 'error' and 'close' events, and the `onread` buffer of net.connect).
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
    return this;
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

  /** Data from the host peer (ignored while paused, closed or still connecting), through `onread` as net.connect delivers it. */
  receive(data: Uint8Array): void {
    if (this.connecting || this.destroyed || this.paused || data.length === 0) return;
    const onread = this.options.onread as { buffer: Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } | undefined;
    if (onread === undefined) {
      this.emit('data', Buffer.from(data));
      return;
    }
    for (let off = 0; off < data.length; ) {
      const n = Math.min(onread.buffer.length, data.length - off);
      onread.buffer.set(data.subarray(off, off + n));
      onread.callback(n, onread.buffer);
      off += n;
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
