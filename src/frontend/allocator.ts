/**
 * A guest-memory allocator for our test frontend: a bump pointer over
 * [start, end) plus per-size free lists, so buffers of a fixed size (rx/tx
 * buffers) can be recycled. Addresses are guest-physical. Nothing here is
 * shared with the backend; it only decides where the frontend puts rings and
 * buffers.
 */
export class GuestAllocator {
  private next: number;
  private readonly free = new Map<number, number[]>();

  constructor(
    readonly start: number,
    readonly end: number,
  ) {
    this.next = start;
  }

  /** Bytes never handed out yet. */
  get remaining(): number {
    return this.end - this.next;
  }

  /** `size` bytes aligned to `align` (a power of two); throws RangeError when memory is exhausted. */
  alloc(size: number, align = 16): number {
    const list = this.free.get(size);
    if (list !== undefined && list.length > 0) {
      const reuse = list.findIndex((a) => a % align === 0);
      if (reuse >= 0) return list.splice(reuse, 1)[0]!;
    }
    const at = Math.ceil(this.next / align) * align;
    if (at + size > this.end) throw new RangeError(`guest memory exhausted (${size} bytes wanted, ${this.end - at} left)`);
    this.next = at + size;
    return at;
  }

  /** Return a block for reuse by a later alloc of the same size. */
  release(addr: number, size: number): void {
    let list = this.free.get(size);
    if (list === undefined) this.free.set(size, (list = []));
    list.push(addr);
  }
}
