/**
 * The device side of a split virtqueue (virtio 1.2 §2.7) over GuestMemory.
 *
 * Theory of operation.
 *
 * Rings. At start (and whenever the memory table changes) the three ring
 * areas are resolved once through `GuestMemory.view`: descriptor table
 * (16*size bytes), available ring (4+2*size, 6+2*size with EVENT_IDX), used
 * ring (4+8*size, 6+8*size with EVENT_IDX): the same sizes the vhost-user
 * session checks SET_VRING_ADDR against. Each must
 * lie wholly inside one memory region. The available ring must be 2-aligned
 * and the used ring 4-aligned (spec alignments; the index fields are then
 * 2-aligned in our ArrayBuffer too, which Atomics on a Uint16Array require).
 * The descriptor table is read through a DataView, so its 16-byte alignment is
 * not enforced. A ring that cannot be resolved makes the queue broken.
 *
 * Memory ordering. The guest writes the available ring and the descriptors
 * and then bumps avail.idx; we read avail.idx with `Atomics.load` and only
 * then the ring entries and descriptors. We write used elements with plain
 * DataView stores and then publish used.idx with `Atomics.store`, once per
 * batch. Atomics are sequentially consistent in V8 (a full fence on store),
 * which also gives the store->load barrier the notification protocols need
 * (publish used.idx, then read used_event/flags; write avail_event, then
 * re-read avail.idx). Atomics work on typed arrays over non-shared
 * ArrayBuffers, including the external ArrayBuffers the addon's mmap returns.
 * Index fields go through Atomics on a native-endian Uint16Array: we run only
 * on little-endian hosts (checked when features.ts loads); every other field
 * is read with DataView and the little-endian flag spelled out.
 *
 * Popping a chain. `pop(chain)` takes the next head from the available ring
 * and walks its descriptors into a reusable `DescriptorChain` (views over
 * guest memory, device-readable ones first). Per the spec, an INDIRECT
 * descriptor ends the direct part of a chain (zero or more direct
 * descriptors, then one indirect one); its NEXT flag is ignored and its WRITE
 * flag too. Errors that mean the ring itself is corrupt stop the queue for
 * good ("broken"): head or `next` out of range, a loop (at most `size`
 * descriptors in the direct chain, at most once per entry of an indirect
 * table), an indirect descriptor inside an indirect table, an indirect
 * descriptor when INDIRECT_DESC was not negotiated, a bad indirect table
 * length (a non-zero multiple of 16, at most `size` entries), a buffer or
 * table outside guest memory, a readable descriptor after a writable one,
 * avail.idx more than `size` ahead of the last index consumed.
 *
 * Malformed chains. Two kinds of chain are not corruption but cannot be
 * real traffic; each is handed straight back (used length 0), counted in
 * `droppedChains` and reported through `onDropped`, and the queue goes on:
 *  - more than `maxChainDescriptors` buffer descriptors (default
 *    MAX_CHAIN_DESCRIPTORS = 256; the INDIRECT descriptor itself is not a
 *    buffer): the walk stops at the first descriptor over the cap. Without
 *    the cap one indirect table of 32768 zero-length descriptors, named by
 *    every chain of a 32768-entry ring, costs 2^30 descriptor reads per ring.
 *    A loop longer than the cap (in a queue bigger than the cap) ends here
 *    too, as a dropped chain rather than a broken ring;
 *  - a total length over `maxChainBytes` (the walk goes on, within the cap,
 *    to check the chain's structure).
 *
 * Work. `descriptorsWalked` counts every descriptor read (the INDIRECT one
 * included), so a chain costs at most maxChainDescriptors + 2 reads. Owners
 * budget their event-loop turns in descriptors: `pop(chain, walkBudget)`
 * starts another chain only while fewer than `walkBudget` descriptors were
 * walked in that call (dropped chains are skipped inside pop, so a ring full
 * of them would otherwise be walked in one call).
 *
 * Putting chains back. `unpop(n)` rewinds the available index over the last
 * n chains popped, but never over a chain already returned: a chain dropped
 * inside pop, or any pushUsed, ends what can be rewound (`unpop` returns how
 * many it put back; the owner returns the others itself, used length 0).
 *
 * A broken queue touches the rings no more: pop returns false, pushUsed and
 * publishUsed do nothing. Nothing here throws for guest-controlled input.
 *
 * Notifications. `disableNotifications()` / `enableNotifications()`
 * implement the device's kick suppression (VIRTQ_USED_F_NO_NOTIFY, or with
 * EVENT_IDX the avail_event field); `enableNotifications()` returns whether
 * entries arrived meanwhile, so the caller runs the classic
 * disable -> drain -> enable -> re-check loop. `publishUsed()` returns
 * whether the driver wants an interrupt for what was just published
 * (VIRTQ_AVAIL_F_NO_INTERRUPT, or vring_need_event against used_event and
 * the index last signalled).
 */
import type { GuestMemory } from './guest-memory.js';
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

const TWO_32 = 0x1_0000_0000;

/** Default cap on a chain's total length (readable + writable bytes). */
export const DEFAULT_MAX_CHAIN_BYTES = 1 << 20;

/**
 * Default cap on the buffer descriptors of one chain, indirect table entries
 * included. Real drivers stay well within it: Linux virtio_net uses at most
 * MAX_SKB_FRAGS + 2 (19, or 47 with CONFIG_MAX_SKB_FRAGS=45) per packet and
 * one descriptor per mergeable receive buffer; FreeBSD vtnet at most 64
 * (VTNET_TX_SEGS_MAX); Windows NetKVM at most 256 (its scatter-gather table,
 * MAX_FRAGMENTS_IN_ONE_NB); DPDK's vhost backend maps at most 256 buffers
 * per chain (BUF_VECTOR_MAX), so drivers that run on it stay there. QEMU
 * stops the device beyond 1024 (VIRTQUEUE_MAX_SIZE).
 */
export const MAX_CHAIN_DESCRIPTORS = 256;

/** Why a chain was handed back unused. */
export type ChainDropReason = 'too_many_descriptors' | 'too_many_bytes';

export interface SplitQueueConfig {
  /** Queue size: a power of two, 1..32768. */
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** Next available-ring index to consume (SET_VRING_BASE). */
  nextAvail: number;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Chains longer than this (in total) are returned unused and counted. Default 1 MiB. */
  maxChainBytes?: number;
  /** Chains with more buffer descriptors than this are returned unused and counted. Default MAX_CHAIN_DESCRIPTORS. */
  maxChainDescriptors?: number;
  /** Called once when the queue becomes broken. Must not throw. */
  onBroken?: (reason: string) => void;
  /** Called for every chain handed back unused (rare: malformed chains only). Must not throw. */
  onDropped?: (reason: ChainDropReason) => void;
}

/**
 * One descriptor chain as views over guest memory, reused from pop to pop.
 * Segments [0, readableCount) are device-readable, [readableCount, count)
 * device-writable. Views are valid until the memory table changes.
 */
export class DescriptorChain {
  /** Head descriptor id (what goes into the used ring). */
  head = 0;
  /** Number of segments. */
  count = 0;
  readableCount = 0;
  readableBytes = 0;
  writableBytes = 0;
  /** Whether any descriptor came from an indirect table. */
  indirect = false;
  /** Segment views; only [0, count) are meaningful. */
  readonly segments: Uint8Array[] = [];

  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readableCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.indirect = false;
  }

  push(view: Uint8Array, writable: boolean): void {
    if (this.count === this.segments.length) this.segments.push(view);
    else this.segments[this.count] = view;
    this.count++;
    if (writable) this.writableBytes += view.byteLength;
    else {
      this.readableCount++;
      this.readableBytes += view.byteLength;
    }
  }

  /** Drop the references to guest memory (after the memory table changed). */
  clear(): void {
    for (let i = 0; i < this.segments.length; i++) this.segments[i] = EMPTY;
    this.count = 0;
  }
}

const EMPTY = new Uint8Array(0);

/** Internal walk results. */
const WALK_OK = 0;
const WALK_BROKEN = 1;
const WALK_TOO_MANY_BYTES = 2;
const WALK_TOO_MANY_DESCRIPTORS = 3;

type QueueState = 'running' | 'paused' | 'broken';

export class SplitQueue {
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly maxChainBytes: number;
  readonly maxChainDescriptors: number;

  private memory: GuestMemory | null = null;
  private state: QueueState = 'paused';
  private reason: string | null = null;
  private readonly onBroken: ((reason: string) => void) | undefined;
  private readonly onDropped: ((reason: ChainDropReason) => void) | undefined;

  // Ring views (resolved per memory table).
  private descDv: DataView = new DataView(new ArrayBuffer(0));
  private availDv: DataView = new DataView(new ArrayBuffer(0));
  private availU16: Uint16Array = new Uint16Array(0);
  private usedDv: DataView = new DataView(new ArrayBuffer(0));
  private usedU16: Uint16Array = new Uint16Array(0);
  /** A DataView over the whole ArrayBuffer of the last indirect table (reused while the buffer is the same). */
  private tableBuf: ArrayBufferLike | null = null;
  private tableDv: DataView = new DataView(new ArrayBuffer(0));

  // Indices (16-bit, wrapping).
  private nextAvailIdx: number;
  /** avail.idx as last read. */
  private availSeen: number;
  /** used.idx as written by us (published or not). */
  private usedShadow: number;
  /** used.idx as published. */
  private usedPublished = 0;
  /** Whether used.idx was read from the ring yet. */
  private usedKnown = false;
  private signalledUsed = 0;
  private signalledValid = false;
  /** How many of the last chains popped unpop may put back (none past a chain already returned). */
  private rewindable = 0;

  // Counters.
  /** Chains popped (including dropped ones) since start. */
  popped = 0;
  /** Used entries written since start. */
  usedCount = 0;
  /** Chains handed back unused: over maxChainBytes or maxChainDescriptors. */
  droppedChains = 0;
  /** Of those, chains over maxChainDescriptors. */
  droppedTooManyDescriptors = 0;
  /** Descriptors read from the descriptor table and indirect tables since start. */
  descriptorsWalked = 0;
  /** pushUsed calls refused because no popped chain was outstanding (a device bug). */
  usedOverflow = 0;

  constructor(config: SplitQueueConfig, memory: GuestMemory | null) {
    this.size = config.size;
    this.descAddr = config.descAddr;
    this.availAddr = config.availAddr;
    this.usedAddr = config.usedAddr;
    this.eventIdx = config.eventIdx;
    this.indirect = config.indirect;
    this.maxChainBytes = config.maxChainBytes ?? DEFAULT_MAX_CHAIN_BYTES;
    this.maxChainDescriptors = config.maxChainDescriptors ?? MAX_CHAIN_DESCRIPTORS;
    this.onBroken = config.onBroken;
    this.onDropped = config.onDropped;
    this.nextAvailIdx = config.nextAvail & 0xffff;
    this.availSeen = this.nextAvailIdx;
    // The used index is read from the ring when it is first resolved (as
    // libvhost-user does); until then assume it equals the available base,
    // which holds whenever every consumed chain was completed.
    this.usedShadow = this.nextAvailIdx;
    this.usedPublished = this.nextAvailIdx;
    const s = config.size;
    if (!(Number.isInteger(s) && s >= 1 && s <= VIRTQ_MAX_SIZE && (s & (s - 1)) === 0)) {
      this.fail(`queue size ${s} is not a power of two in 1..${VIRTQ_MAX_SIZE}`);
      return;
    }
    this.setMemory(memory);
  }

  /** Why the queue broke, or null. */
  get brokenReason(): string | null {
    return this.reason;
  }
  get isBroken(): boolean {
    return this.state === 'broken';
  }
  /** Running: rings resolved and not broken. */
  get isReady(): boolean {
    return this.state === 'running';
  }
  /** Next available index to consume (what GET_VRING_BASE returns). */
  get nextAvail(): number {
    return this.nextAvailIdx;
  }
  /** avail.idx as last read from the ring (the queue re-reads it only when it has consumed up to it). */
  get availIdxSeen(): number {
    return this.availSeen;
  }
  /** used.idx as published. */
  get usedIdx(): number {
    return this.usedPublished;
  }
  /** Used entries written but not yet published. */
  get pendingUsed(): number {
    return (this.usedShadow - this.usedPublished) & 0xffff;
  }
  /** Chains popped and not yet returned through pushUsed. */
  get inFlight(): number {
    return this.popped - this.usedCount;
  }

  /**
   * Replace the memory table: resolve the ring views again (null pauses the
   * queue). Returns false if the queue is (now) broken.
   */
  setMemory(memory: GuestMemory | null): boolean {
    if (this.state === 'broken') return false;
    this.memory = memory;
    this.tableBuf = null;
    if (memory === null) {
      this.state = 'paused';
      return true;
    }
    const size = this.size;
    if (this.availAddr % 2 !== 0) return this.fail(`available ring address 0x${this.availAddr.toString(16)} not 2-aligned`) === WALK_OK;
    if (this.usedAddr % 4 !== 0) return this.fail(`used ring address 0x${this.usedAddr.toString(16)} not 4-aligned`) === WALK_OK;
    const desc = memory.view(this.descAddr, size * VIRTQ_DESC_SIZE);
    if (desc === null) return this.fail('descriptor table outside guest memory') === WALK_OK;
    // used_event / avail_event (the last u16 of each ring) exist only with EVENT_IDX.
    const eventBytes = this.eventIdx ? 0 : 2;
    const avail = memory.view(this.availAddr, availRingBytes(size) - eventBytes);
    if (avail === null) return this.fail('available ring outside guest memory') === WALK_OK;
    const used = memory.view(this.usedAddr, usedRingBytes(size) - eventBytes);
    if (used === null) return this.fail('used ring outside guest memory') === WALK_OK;
    if (avail.byteOffset % 2 !== 0 || used.byteOffset % 4 !== 0) {
      // Only possible when a region's mapping is not aligned like its guest address.
      return this.fail('ring not aligned in the mapping (Atomics need 2-byte alignment)') === WALK_OK;
    }
    this.descDv = new DataView(desc.buffer, desc.byteOffset, desc.byteLength);
    this.availDv = new DataView(avail.buffer, avail.byteOffset, avail.byteLength);
    this.availU16 = new Uint16Array(avail.buffer, avail.byteOffset, avail.byteLength >>> 1);
    this.usedDv = new DataView(used.buffer, used.byteOffset, used.byteLength);
    this.usedU16 = new Uint16Array(used.buffer, used.byteOffset, used.byteLength >>> 1);
    if (!this.usedKnown) {
      this.usedKnown = true;
      this.usedShadow = this.usedPublished = Atomics.load(this.usedU16, 1);
    }
    this.state = 'running';
    return true;
  }

  /** Stop the queue for good with a reason (also used by the owner, e.g. on an unexpected exception). */
  fail(reason: string): number {
    if (this.state !== 'broken') {
      this.state = 'broken';
      this.reason = reason;
      this.memory = null;
      this.tableBuf = null;
      if (this.onBroken !== undefined) {
        try {
          this.onBroken(reason);
        } catch {
          // The owner's callback must not break the per-kick path.
        }
      }
    }
    return WALK_BROKEN;
  }

  /**
   * Entries the driver has made available and we have not consumed (reads
   * avail.idx). Breaks the queue (returns 0) if avail.idx is more than `size`
   * ahead.
   */
  available(): number {
    if (this.state !== 'running') return 0;
    const idx = Atomics.load(this.availU16, 1);
    const pending = (idx - this.nextAvailIdx) & 0xffff;
    if (pending > this.size) {
      this.fail(`avail idx ${idx} is ${pending} ahead of ${this.nextAvailIdx} (queue size ${this.size})`);
      return 0;
    }
    this.availSeen = idx;
    return pending;
  }

  /**
   * Pop the next available chain into `chain`. Returns false when none is
   * available, the queue is not running (paused, broken — possibly just
   * now), or `walkBudget` descriptors were walked in this call without
   * finding a good chain (the caller sees that in `descriptorsWalked`).
   * Malformed chains (over `maxChainDescriptors` or `maxChainBytes`) are
   * handed back (used length 0) and skipped.
   */
  pop(chain: DescriptorChain, walkBudget = Infinity): boolean {
    const walkedBefore = this.descriptorsWalked;
    for (;;) {
      if (this.state !== 'running') return false;
      if (this.descriptorsWalked - walkedBefore >= walkBudget) return false;
      if (this.availSeen === this.nextAvailIdx && this.available() === 0) return false;
      const slot = this.nextAvailIdx & (this.size - 1);
      const head = this.availDv.getUint16(4 + 2 * slot, true);
      this.nextAvailIdx = (this.nextAvailIdx + 1) & 0xffff;
      this.popped++;
      const r = this.walk(head, chain);
      if (r === WALK_OK) {
        this.rewindable++;
        return true;
      }
      if (r === WALK_BROKEN) return false;
      // Malformed: give it back unused and go on.
      this.droppedChains++;
      const reason: ChainDropReason = r === WALK_TOO_MANY_DESCRIPTORS ? 'too_many_descriptors' : 'too_many_bytes';
      if (r === WALK_TOO_MANY_DESCRIPTORS) this.droppedTooManyDescriptors++;
      this.pushUsed(head, 0);
      if (this.onDropped !== undefined) {
        try {
          this.onDropped(reason);
        } catch {
          // The owner's callback must not break the per-kick path.
        }
      }
    }
  }

  /**
   * Put back the last `n` popped chains (not yet returned with pushUsed):
   * they will be popped again. For a reservation that was not used. Chains
   * popped before one that was already returned (dropped inside pop, or
   * given to pushUsed) cannot be put back: rewinding would offer the
   * returned one again. Returns how many of the last `n` were put back; the
   * caller must return the others (the first n - result) with pushUsed.
   */
  unpop(n: number): number {
    if (n <= 0) return 0;
    if (n > this.rewindable) n = this.rewindable;
    this.nextAvailIdx = (this.nextAvailIdx - n) & 0xffff;
    this.popped -= n;
    this.rewindable -= n;
    return n;
  }

  private walk(head: number, chain: DescriptorChain): number {
    const size = this.size;
    if (head >= size) return this.fail(`available ring entry names descriptor ${head} (queue size ${size})`);
    const memory = this.memory!;
    chain.reset(head);
    let dv = this.descDv;
    let base = 0;
    let tableLen = size;
    let budget = size;
    let inIndirect = false;
    let seenWritable = false;
    let total = 0;
    let tooLong = false;
    let buffers = 0;
    let i = head;
    for (;;) {
      if (budget === 0) {
        return this.fail(inIndirect ? 'indirect descriptor chain loops' : `descriptor chain loops or is longer than the queue size (head ${head})`);
      }
      budget--;
      this.descriptorsWalked++;
      const off = base + i * VIRTQ_DESC_SIZE;
      const addr = dv.getUint32(off, true) + dv.getUint32(off + 4, true) * TWO_32;
      const len = dv.getUint32(off + 8, true);
      const flags = dv.getUint16(off + 12, true);
      const next = dv.getUint16(off + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (inIndirect) return this.fail('indirect descriptor inside an indirect table');
        if (!this.indirect) return this.fail('indirect descriptor but INDIRECT_DESC not negotiated');
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0 || len > size * VIRTQ_DESC_SIZE) {
          return this.fail(`indirect table length ${len} not a multiple of 16 in 16..${size * VIRTQ_DESC_SIZE}`);
        }
        const table = memory.view(addr, len);
        if (table === null) return this.fail('indirect table outside guest memory');
        if (table.buffer !== this.tableBuf) {
          this.tableBuf = table.buffer;
          this.tableDv = new DataView(table.buffer);
        }
        dv = this.tableDv;
        base = table.byteOffset;
        tableLen = len / VIRTQ_DESC_SIZE;
        budget = tableLen;
        inIndirect = true;
        chain.indirect = true;
        i = 0;
        continue; // an indirect descriptor ends the direct chain: its NEXT is ignored
      }
      if (++buffers > this.maxChainDescriptors) return WALK_TOO_MANY_DESCRIPTORS;
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) seenWritable = true;
      else if (seenWritable) return this.fail('device-readable descriptor after a device-writable one');
      total += len;
      if (total > this.maxChainBytes) tooLong = true;
      if (!tooLong) {
        const view = memory.view(addr, len);
        if (view === null) return this.fail(`descriptor buffer [0x${addr.toString(16)}, +${len}) outside guest memory`);
        chain.push(view, writable);
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (next >= tableLen) return this.fail(`descriptor next ${next} out of range ${tableLen}`);
      i = next;
    }
    return tooLong ? WALK_TOO_MANY_BYTES : WALK_OK;
  }

  /**
   * Write a used element for chain `head` with `len` bytes written. Not
   * visible to the driver until publishUsed(). Refused (counted) when no
   * popped chain is outstanding, so used.idx can never run ahead of what was
   * consumed.
   */
  pushUsed(head: number, len: number): void {
    if (this.state === 'broken') return;
    if (this.usedCount >= this.popped) {
      this.usedOverflow++;
      return;
    }
    if (this.state !== 'running') return;
    const off = 4 + 8 * (this.usedShadow & (this.size - 1));
    this.usedDv.setUint32(off, head, true);
    this.usedDv.setUint32(off + 4, len >>> 0, true);
    this.usedShadow = (this.usedShadow + 1) & 0xffff;
    this.usedCount++;
    this.rewindable = 0;
  }

  /**
   * Publish the used entries written since the last call (one Atomics.store
   * of used.idx). Returns true if the driver should be interrupted for them.
   */
  publishUsed(): boolean {
    if (this.state !== 'running' || this.usedShadow === this.usedPublished) return false;
    const newIdx = this.usedShadow;
    Atomics.store(this.usedU16, 1, newIdx);
    this.usedPublished = newIdx;
    const oldIdx = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (this.eventIdx) {
      if (!valid) return true;
      const usedEvent = Atomics.load(this.availU16, 2 + this.size);
      return vringNeedEvent(usedEvent, newIdx, oldIdx);
    }
    return (Atomics.load(this.availU16, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Ask the driver not to kick (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX, avail_event is simply left behind). */
  disableNotifications(): void {
    if (this.state !== 'running' || this.eventIdx) return;
    Atomics.store(this.usedU16, 0, VIRTQ_USED_F_NO_NOTIFY);
  }

  /**
   * Ask the driver to kick for the next entry it adds (avail_event =
   * nextAvail, or clear NO_NOTIFY), then re-check: returns true if entries
   * are already available (the caller must process them, or it may wait
   * forever for a kick that will not come).
   */
  enableNotifications(): boolean {
    if (this.state !== 'running') return false;
    if (this.eventIdx) Atomics.store(this.usedU16, 2 + 4 * this.size, this.nextAvailIdx);
    else Atomics.store(this.usedU16, 0, 0);
    return this.available() > 0;
  }
}
