/**
 * A NetLink for frame-by-frame tests of the stack: frames the stack sends are
 * captured in `sent`; back-pressure can be switched on and off.
 */
import type { FrameOffload, NetLink } from '../../src/net/link.js';

export class FakeLink implements NetLink {
  readonly sent: Uint8Array[] = [];
  readonly offloads: (FrameOffload | undefined)[] = [];
  mtu = 1500;
  rxOffloads = { csum: false, tso4: false, tso6: false };
  /** When true, reserve() returns null (the guest posted no buffers). */
  full = false;
  /** Remaining frames the guest has room for (Infinity = unlimited). */
  room = Infinity;
  flushes = 0;
  private open: Uint8Array | null = null;
  private writable: (() => void) | null = null;

  reserve(length: number): Uint8Array | null {
    if (this.open) throw new Error('FakeLink: reservation already open');
    if (this.full || this.room <= 0) return null;
    this.open = new Uint8Array(length);
    return this.open;
  }

  commit(length: number, offload?: FrameOffload): void {
    if (!this.open) throw new Error('FakeLink: commit without reserve');
    if (length > this.open.length) throw new Error('FakeLink: commit longer than reserved');
    this.sent.push(this.open.slice(0, length));
    this.offloads.push(offload);
    this.open = null;
    this.room--;
  }

  abort(): void {
    this.open = null;
  }

  send(frame: Uint8Array): boolean {
    const view = this.reserve(frame.length);
    if (!view) return false;
    view.set(frame);
    this.commit(frame.length);
    return true;
  }

  flush(): void {
    this.flushes++;
  }

  onWritable(callback: () => void): void {
    this.writable = callback;
  }

  /** Make room again and fire the writable callback, as the device does when the guest posts buffers. */
  makeWritable(room = Infinity): void {
    this.full = false;
    this.room = room;
    const cb = this.writable;
    this.writable = null;
    cb?.();
  }

  /** Take (and clear) what was sent so far. */
  take(): Uint8Array[] {
    const frames = this.sent.splice(0);
    this.offloads.splice(0);
    return frames;
  }
}
