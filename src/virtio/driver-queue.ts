/**
 * The driver side of a split virtqueue (virtio 1.2 §2.7), over a plain byte
 * array standing for guest memory. Used by our own vhost-user frontend (which
 * plays the guest) and by tests that need to craft rings byte by byte, in the
 * manner of rust-vmm virtio-queue's MockSplitQueue.
 *
 * Theory of operation. The driver owns the descriptor table and the available
 * ring; the device owns the used ring. `add`/`addIndirect` take descriptors
 * from a free list kept in driver-private arrays (never re-read from shared
 * memory, so a misbehaving device cannot corrupt it), write them into the
 * table, and put the chain's head into the next available-ring slot. Nothing
 * is visible to the device until `publish()` stores the new available index
 * with `Atomics.store` (after the ring entries: Atomics are sequentially
 * consistent, so the entries are written before the index in program order
 * and neither the JIT nor the CPU may reorder them past it). `takeUsed()`
 * reads the used index with `Atomics.load`, then the elements, and returns
 * each chain's descriptors to the free list. `needsKick()` applies the
 * device's notification suppression (VIRTQ_USED_F_NO_NOTIFY, or with
 * EVENT_IDX the `avail_event` field) to everything published since the last
 * call.
 *
 * All multi-byte fields are little-endian. Index fields are read/written with
 * Atomics on a Uint16Array, which is native-endian: this module (like the
 * device side) runs only on little-endian hosts, checked when features.ts
 * loads.
 *
 * Raw members (`writeDescriptor`, `pushAvail`, `setAvailIdx`) bypass the free
 * list so that tests can build corrupt rings on purpose.
 */
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
  availRingBytes,
  usedRingBytes,
  vringNeedEvent,
} from './features.js';

export interface RingLayout {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

export interface DriverQueueOptions {
  /** VIRTIO_RING_F_EVENT_IDX negotiated (used_event/avail_event in use). */
  eventIdx?: boolean;
  /** Guest-physical address of memory[0] (default 0). */
  base?: number;
  /** Initial available/used index (default 0), e.g. 65530 to test 16-bit wraparound; the device must be started with nextAvail = this. */
  startIndex?: number;
  /** Zero-initialise the ring headers and events (default true). */
  init?: boolean;
}

const TWO_32 = 0x1_0000_0000;

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** A 16-bit ring field accessed atomically when aligned (DataView otherwise: only tests build misaligned rings). */
class U16Field {
  private readonly array: Uint16Array | null;
  private readonly index: number;
  constructor(
    private readonly dv: DataView,
    private readonly offset: number,
    memory: Uint8Array,
  ) {
    const abs = memory.byteOffset + offset;
    if (abs % 2 === 0) {
      this.array = new Uint16Array(memory.buffer, abs, 1);
      this.index = 0;
    } else {
      this.array = null;
      this.index = 0;
    }
  }
  load(): number {
    return this.array !== null ? Atomics.load(this.array, this.index) : this.dv.getUint16(this.offset, true);
  }
  store(v: number): void {
    if (this.array !== null) Atomics.store(this.array, this.index, v & 0xffff);
    else this.dv.setUint16(this.offset, v & 0xffff, true);
  }
}

export class DriverQueue {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  readonly eventIdx: boolean;
  readonly base: number;

  private readonly memory: Uint8Array;
  private readonly dv: DataView;
  private readonly availFlags: U16Field;
  private readonly availIdxField: U16Field;
  private readonly usedEventField: U16Field;
  private readonly usedFlags: U16Field;
  private readonly usedIdxField: U16Field;
  private readonly availEventField: U16Field;

  /** Free list: nextFree[i] is the free descriptor after i. */
  private readonly nextFree: Uint16Array;
  private freeHead = 0;
  private numFree: number;
  /** Per head: number of descriptors of its chain in the table (0 = not in flight). */
  private readonly chainLen: Uint32Array;

  /** Available index as written by the driver (published by publish()). */
  private shadowAvail: number;
  /** Available index at the last needsKick(). */
  private kickedAvail: number;
  private lastUsedIdx: number;
  /** Used entries whose id was not a chain in flight (a device bug). */
  badUsed = 0;

  constructor(memory: Uint8Array, layout: RingLayout, options: DriverQueueOptions = {}) {
    const { size, descAddr, availAddr, usedAddr } = layout;
    if (!isPowerOfTwo(size) || size > VIRTQ_MAX_SIZE) throw new RangeError(`bad queue size ${size}`);
    this.base = options.base ?? 0;
    this.size = size;
    this.descAddr = descAddr;
    this.availAddr = availAddr;
    this.usedAddr = usedAddr;
    this.eventIdx = options.eventIdx ?? false;
    this.memory = memory;
    this.dv = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
    this.checkRange(descAddr, size * VIRTQ_DESC_SIZE, 'descriptor table');
    this.checkRange(availAddr, availRingBytes(size), 'available ring');
    this.checkRange(usedAddr, usedRingBytes(size), 'used ring');
    const a = availAddr - this.base;
    const u = usedAddr - this.base;
    this.availFlags = new U16Field(this.dv, a, memory);
    this.availIdxField = new U16Field(this.dv, a + 2, memory);
    this.usedEventField = new U16Field(this.dv, a + 4 + 2 * size, memory);
    this.usedFlags = new U16Field(this.dv, u, memory);
    this.usedIdxField = new U16Field(this.dv, u + 2, memory);
    this.availEventField = new U16Field(this.dv, u + 4 + 8 * size, memory);

    this.nextFree = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.nextFree[i] = (i + 1) % size;
    this.numFree = size;
    this.chainLen = new Uint32Array(size);

    const start = (options.startIndex ?? 0) & 0xffff;
    this.shadowAvail = start;
    this.kickedAvail = start;
    this.lastUsedIdx = start;
    if (options.init ?? true) {
      this.availFlags.store(0);
      this.availIdxField.store(start);
      this.usedEventField.store(start);
      this.usedFlags.store(0);
      this.usedIdxField.store(start);
      this.availEventField.store(start);
    }
  }

  /**
   * Place a queue of `size` entries at guest address `at` with the standard
   * alignments: descriptor table 16, available ring 2 (it follows the table),
   * used ring 4. `end` is the first byte after the used ring.
   */
  static layout(size: number, at: number): { descAddr: number; availAddr: number; usedAddr: number; end: number } {
    const descAddr = Math.ceil(at / 16) * 16;
    const availAddr = descAddr + VIRTQ_DESC_SIZE * size;
    const usedAddr = Math.ceil((availAddr + availRingBytes(size)) / 4) * 4;
    return { descAddr, availAddr, usedAddr, end: usedAddr + usedRingBytes(size) };
  }

  /** Free descriptors in the table. */
  get freeCount(): number {
    return this.numFree;
  }
  /** The available index the driver has written (published or not). */
  get availIdx(): number {
    return this.shadowAvail;
  }
  /** The next used index the driver will read. */
  get lastUsed(): number {
    return this.lastUsedIdx;
  }

  private checkRange(gpa: number, len: number, what: string): void {
    const off = gpa - this.base;
    if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > this.memory.byteLength) {
      throw new RangeError(`${what} [0x${gpa.toString(16)}, +${len}) outside memory`);
    }
  }

  /**
   * Add a chain: device-readable buffers first, then device-writable ones.
   * Returns the head descriptor id, or null if there are not enough free
   * descriptors (or the chain would be empty).
   */
  add(readable: Array<[gpa: number, len: number]>, writable: Array<[gpa: number, len: number]>): number | null {
    const n = readable.length + writable.length;
    if (n === 0 || n > this.numFree) return null;
    const head = this.freeHead;
    let i = head;
    for (let k = 0; k < n; k++) {
      const [addr, len] = k < readable.length ? readable[k]! : writable[k - readable.length]!;
      const next = this.nextFree[i]!;
      let flags = k >= readable.length ? VIRTQ_DESC_F_WRITE : 0;
      if (k < n - 1) flags |= VIRTQ_DESC_F_NEXT;
      this.writeDescriptor(i, addr, len, flags, k < n - 1 ? next : 0);
      i = next;
    }
    this.freeHead = i;
    this.numFree -= n;
    this.chainLen[head] = n;
    this.pushAvail(head);
    return head;
  }

  /**
   * Add a chain through an indirect table written at guest address
   * `tableGpa` (16 bytes per buffer, readable then writable). Uses one
   * descriptor of the ring. Returns the head id, or null if none is free.
   */
  addIndirect(
    tableGpa: number,
    readable: Array<[gpa: number, len: number]>,
    writable: Array<[gpa: number, len: number]>,
  ): number | null {
    const n = readable.length + writable.length;
    if (n === 0 || this.numFree === 0) return null;
    this.checkRange(tableGpa, n * VIRTQ_DESC_SIZE, 'indirect table');
    const t = tableGpa - this.base;
    for (let k = 0; k < n; k++) {
      const [addr, len] = k < readable.length ? readable[k]! : writable[k - readable.length]!;
      let flags = k >= readable.length ? VIRTQ_DESC_F_WRITE : 0;
      if (k < n - 1) flags |= VIRTQ_DESC_F_NEXT;
      this.writeDescAt(t + k * VIRTQ_DESC_SIZE, addr, len, flags, k < n - 1 ? k + 1 : 0);
    }
    const head = this.freeHead;
    this.freeHead = this.nextFree[head]!;
    this.numFree -= 1;
    this.chainLen[head] = 1;
    this.writeDescriptor(head, tableGpa, n * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
    this.pushAvail(head);
    return head;
  }

  /** Make every chain added so far visible to the device (one Atomics.store of avail.idx). */
  publish(): void {
    this.availIdxField.store(this.shadowAvail);
  }

  /**
   * Collect the chains the device has returned (used.idx read with
   * Atomics.load), freeing their descriptors. Entries naming a descriptor
   * that is not the head of a chain in flight are returned but free nothing
   * (and counted in `badUsed`).
   */
  takeUsed(): Array<{ id: number; len: number }> {
    const out: Array<{ id: number; len: number }> = [];
    const usedIdx = this.usedIdxField.load();
    const ringOff = this.usedAddr - this.base + 4;
    while (this.lastUsedIdx !== usedIdx) {
      const slot = this.lastUsedIdx % this.size;
      const id = this.dv.getUint32(ringOff + slot * 8, true);
      const len = this.dv.getUint32(ringOff + slot * 8 + 4, true);
      out.push({ id, len });
      this.freeChain(id);
      this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    }
    return out;
  }

  private freeChain(head: number): void {
    if (head >= this.size || this.chainLen[head] === 0) {
      this.badUsed++;
      return;
    }
    // Walk our private copy of the chain: the free list links the chain's
    // descriptors in the order add() took them.
    const n = this.chainLen[head]!;
    let last = head;
    for (let k = 1; k < n; k++) last = this.nextFree[last]!;
    // Splice [head .. last] in front of the free list.
    this.nextFree[last] = this.freeHead;
    this.freeHead = head;
    this.numFree += n;
    this.chainLen[head] = 0;
  }

  /**
   * Whether the device wants a notification for what was published since the
   * last call: with EVENT_IDX, vring_need_event(avail_event, new, old);
   * otherwise unless used.flags has VIRTQ_USED_F_NO_NOTIFY. False when
   * nothing new was published.
   */
  needsKick(): boolean {
    const newIdx = this.availIdxField.load();
    const oldIdx = this.kickedAvail;
    this.kickedAvail = newIdx;
    if (newIdx === oldIdx) return false;
    if (this.eventIdx) return vringNeedEvent(this.availEventField.load(), newIdx, oldIdx);
    return (this.usedFlags.load() & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Ask for used-buffer notifications again (used_event = next used index, or clear NO_INTERRUPT). */
  enableInterrupts(): void {
    if (this.eventIdx) this.usedEventField.store(this.lastUsedIdx);
    else this.availFlags.store(0);
  }
  /** Ask the device not to interrupt (NO_INTERRUPT, or used_event set just behind the used index). */
  disableInterrupts(): void {
    if (this.eventIdx) this.usedEventField.store((this.lastUsedIdx - 1) & 0xffff);
    else this.availFlags.store(VIRTQ_AVAIL_F_NO_INTERRUPT);
  }
  /** Raw used_event store (EVENT_IDX): interrupt when the used ring entry at this index is written. */
  setUsedEvent(index: number): void {
    this.usedEventField.store(index);
  }
  /** Raw avail.flags store. */
  setAvailFlags(flags: number): void {
    this.availFlags.store(flags);
  }
  /** used.idx as the device last published it. */
  readUsedIdx(): number {
    return this.usedIdxField.load();
  }
  /** used.flags as the device wrote it. */
  readUsedFlags(): number {
    return this.usedFlags.load();
  }
  /** avail_event as the device wrote it. */
  readAvailEvent(): number {
    return this.availEventField.load();
  }

  /** Raw descriptor write into the table (for crafting rings). addr may exceed 2^32 (up to 2^53). */
  writeDescriptor(i: number, addr: number, len: number, flags: number, next: number): void {
    if (!(i >= 0 && i < this.size)) throw new RangeError(`descriptor ${i} outside table of ${this.size}`);
    this.writeDescAt(this.descAddr - this.base + i * VIRTQ_DESC_SIZE, addr, len, flags, next);
  }

  /** Raw descriptor write at a guest address (for crafting indirect tables). */
  writeDescriptorAt(gpa: number, addr: number, len: number, flags: number, next: number): void {
    this.checkRange(gpa, VIRTQ_DESC_SIZE, 'descriptor');
    this.writeDescAt(gpa - this.base, addr, len, flags, next);
  }

  private writeDescAt(off: number, addr: number, len: number, flags: number, next: number): void {
    this.dv.setUint32(off, addr % TWO_32 >>> 0, true);
    this.dv.setUint32(off + 4, Math.floor(addr / TWO_32) >>> 0, true);
    this.dv.setUint32(off + 8, len >>> 0, true);
    this.dv.setUint16(off + 12, flags & 0xffff, true);
    this.dv.setUint16(off + 14, next & 0xffff, true);
  }

  /** Raw: put `head` into the next available-ring slot (not published, not tracked by the free list). */
  pushAvail(head: number): void {
    const slot = this.shadowAvail % this.size;
    this.dv.setUint16(this.availAddr - this.base + 4 + slot * 2, head & 0xffff, true);
    this.shadowAvail = (this.shadowAvail + 1) & 0xffff;
  }

  /** Raw: store an arbitrary avail.idx (e.g. jump ahead by more than the queue size). */
  setAvailIdx(idx: number): void {
    this.shadowAvail = idx & 0xffff;
    this.availIdxField.store(idx);
  }
}
