/**
 * Per-flow byte ring for host -> guest data: everything read from the host
 * socket that the guest has not acknowledged yet (sent-but-unacked followed
 * by not-yet-sent). Offset 0 is always the byte at SND.UNA.
 *
 * Theory of operation. Host reads are copied in once (`append`), segments are
 * copied out of it straight into guest receive buffers (`copyOut`), and
 * acknowledged bytes are dropped from the front (`consume`) without moving
 * anything. Storage starts empty, is allocated on first use, and grows by
 * doubling up to `maxCapacity` (the hard per-flow cap), so an idle flow
 * costs nothing and a bulk flow costs at most the cap. Writers never append
 * more than `free` bytes: the bound is structural, not advisory.
 *
 * Memory is the allocation, not the bytes held: a ring that once grew to
 * 4 MiB keeps it after the guest ACKs everything. Every change of the
 * allocation is reported to `onResize` (old and new size, for the
 * translator's global budget), `capacityFor` tells beforehand what a write
 * would grow it to, and `trim` gives storage back (all of it when empty;
 * down to the smallest power-of-two size holding the bytes when `tight`),
 * which the owner calls from its timer.
 */

export class SendBuffer {
  private storage: Uint8Array = new Uint8Array(0);
  private head = 0;
  private used = 0;

  constructor(
    readonly maxCapacity: number,
    private readonly initialCapacity = 16 * 1024,
    private readonly onResize: (from: number, to: number) => void = () => {},
  ) {}

  /** Bytes held (from SND.UNA onward). */
  get length(): number {
    return this.used;
  }

  /** Bytes that may still be appended before the hard cap. */
  get free(): number {
    return this.maxCapacity - this.used;
  }

  /** Current allocation (for tests and memory accounting). */
  get capacity(): number {
    return this.storage.length;
  }

  /** Append as much of `bytes` as fits under the cap; returns the number of bytes taken. */
  append(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, this.free);
    if (n <= 0) return 0;
    if (this.used + n > this.storage.length) this.grow(this.used + n);
    const cap = this.storage.length;
    const tail = (this.head + this.used) % cap;
    const first = Math.min(n, cap - tail);
    this.storage.set(bytes.subarray(0, first), tail);
    if (first < n) this.storage.set(bytes.subarray(first, n), 0);
    this.used += n;
    return n;
  }

  /** Drop `n` bytes from the front (they were acknowledged). */
  consume(n: number): void {
    const k = Math.max(0, Math.min(n, this.used));
    if (k === 0) return;
    this.used -= k;
    this.head = this.used === 0 ? 0 : (this.head + k) % this.storage.length;
  }

  /** Copy `length` bytes starting `offset` bytes after the front into `dst` at `dstOffset`. Caller keeps offset + length <= this.length. */
  copyOut(offset: number, length: number, dst: Uint8Array, dstOffset: number): void {
    if (offset < 0 || length <= 0 || offset + length > this.used) return;
    const cap = this.storage.length;
    const start = (this.head + offset) % cap;
    const first = Math.min(length, cap - start);
    dst.set(this.storage.subarray(start, start + first), dstOffset);
    if (first < length) dst.set(this.storage.subarray(0, length - first), dstOffset + first);
  }

  /** Free the storage (flow closed). */
  release(): void {
    const had = this.storage.length;
    this.storage = new Uint8Array(0);
    this.head = 0;
    this.used = 0;
    if (had > 0) this.onResize(had, 0);
  }

  /** The allocation the ring would have after taking `n` more bytes (the current one if they fit). */
  capacityFor(n: number): number {
    const needed = Math.min(this.used + n, this.maxCapacity);
    if (needed <= this.storage.length) return this.storage.length;
    return this.targetCapacity(needed, this.storage.length);
  }

  /** Give storage back: all of it when empty; when `tight`, down to the smallest size holding the bytes. */
  trim(tight: boolean): void {
    if (this.storage.length === 0) return;
    if (this.used === 0) {
      this.release();
      return;
    }
    if (!tight) return;
    const cap = this.targetCapacity(this.used, 0);
    if (cap * 2 <= this.storage.length) this.reallocate(cap);
  }

  private targetCapacity(needed: number, from: number): number {
    let cap = Math.max(this.initialCapacity, from);
    while (cap < needed) cap *= 2;
    return Math.min(cap, this.maxCapacity);
  }

  private grow(needed: number): void {
    this.reallocate(this.targetCapacity(needed, this.storage.length));
  }

  private reallocate(cap: number): void {
    const had = this.storage.length;
    const next = new Uint8Array(cap);
    this.copyOut(0, this.used, next, 0);
    this.storage = next;
    this.head = 0;
    this.onResize(had, cap);
  }
}
