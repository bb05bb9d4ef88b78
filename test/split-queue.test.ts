/**
 * Device-side split virtqueue, driven byte by byte by the DriverQueue mock
 * over a plain ArrayBuffer wrapped as GuestMemory.
 */
import { describe, it, expect } from 'vitest';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { DriverQueue } from '../src/virtio/driver-queue.js';
import { type ChainDropReason, DescriptorChain, MAX_CHAIN_DESCRIPTORS, SplitQueue } from '../src/virtio/split-queue.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_SIZE, VIRTQ_MAX_SIZE, VIRTQ_USED_F_NO_NOTIFY } from '../src/virtio/features.js';

const BASE = 0x4000_0000;
const MEM_SIZE = 1 << 20;
const DATA = BASE + 0x8000; // buffers live from here on

interface Rig {
  bytes: Uint8Array;
  memory: GuestMemory;
  drv: DriverQueue;
  q: SplitQueue;
  chain: DescriptorChain;
  broken: string[];
  dropped: ChainDropReason[];
}

interface RigOptions {
  size?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  start?: number;
  maxChainBytes?: number;
  maxChainDescriptors?: number;
  /** Guest memory size (default 1 MiB) and where the rings go (default BASE + 0x100, below DATA). */
  memSize?: number;
  ringAt?: number;
}

function rig(opts: RigOptions = {}): Rig {
  const size = opts.size ?? 8;
  const memSize = opts.memSize ?? MEM_SIZE;
  const bytes = new Uint8Array(new ArrayBuffer(memSize));
  const memory = new GuestMemory([{ guestAddr: BASE, size: memSize, userAddr: 0x7f00_0000_0000, bytes }]);
  const l = DriverQueue.layout(size, opts.ringAt ?? BASE + 0x100);
  const drv = new DriverQueue(bytes, { size, ...l }, { base: BASE, eventIdx: opts.eventIdx ?? false, startIndex: opts.start ?? 0 });
  const broken: string[] = [];
  const dropped: ChainDropReason[] = [];
  const q = new SplitQueue(
    {
      size,
      ...l,
      nextAvail: opts.start ?? 0,
      eventIdx: opts.eventIdx ?? false,
      indirect: opts.indirect ?? true,
      maxChainBytes: opts.maxChainBytes,
      maxChainDescriptors: opts.maxChainDescriptors,
      onBroken: (r) => broken.push(r),
      onDropped: (r) => dropped.push(r),
    },
    memory,
  );
  return { bytes, memory, drv, q, chain: new DescriptorChain(), broken, dropped };
}

const off = (gpa: number): number => gpa - BASE;

describe('DriverQueue.layout', () => {
  it('aligns desc 16, avail right after the table, used 4', () => {
    const l = DriverQueue.layout(256, 0x1003);
    expect(l.descAddr).toBe(0x1010);
    expect(l.availAddr).toBe(0x1010 + 256 * 16);
    expect(l.usedAddr % 4).toBe(0);
    expect(l.usedAddr).toBeGreaterThanOrEqual(l.availAddr + 6 + 2 * 256);
    expect(l.end).toBe(l.usedAddr + 6 + 8 * 256);
  });
});

describe('SplitQueue: chains', () => {
  it('pops a direct chain as views aliasing guest memory, readable first', () => {
    const r = rig();
    r.bytes.set([1, 2, 3, 4], off(DATA));
    const head = r.drv.add([[DATA, 4], [DATA + 100, 10]], [[DATA + 200, 64]]);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(head);
    expect(r.chain.count).toBe(3);
    expect(r.chain.readableCount).toBe(2);
    expect(r.chain.readableBytes).toBe(14);
    expect(r.chain.writableBytes).toBe(64);
    const s0 = r.chain.segments[0]!;
    expect(s0.buffer).toBe(r.bytes.buffer);
    expect(s0.byteOffset).toBe(off(DATA));
    expect([...s0]).toEqual([1, 2, 3, 4]);
    // Writing through the writable view writes guest memory.
    r.chain.segments[2]![0] = 0xab;
    expect(r.bytes[off(DATA + 200)]).toBe(0xab);
    expect(r.q.pop(r.chain)).toBe(false);
    r.q.pushUsed(r.chain.head, 1);
    expect(r.q.publishUsed()).toBe(true);
    expect(r.drv.takeUsed()).toEqual([{ id: head, len: 1 }]);
    expect(r.drv.freeCount).toBe(8);
  });

  it('pops an indirect chain (one ring descriptor)', () => {
    const r = rig();
    const head = r.drv.addIndirect(DATA + 0x1000, [[DATA, 12], [DATA + 12, 20]], [[DATA + 64, 100]]);
    expect(r.drv.freeCount).toBe(7);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(head);
    expect(r.chain.indirect).toBe(true);
    expect(r.chain.count).toBe(3);
    expect(r.chain.readableBytes).toBe(32);
    expect(r.chain.writableBytes).toBe(100);
    expect(r.chain.segments[2]!.byteOffset).toBe(off(DATA + 64));
  });

  it('accepts direct descriptors followed by one indirect descriptor (spec-valid layout)', () => {
    const r = rig();
    // desc 0 (readable) -> desc 1 (indirect with 2 entries: readable, writable)
    r.drv.writeDescriptor(0, DATA, 10, VIRTQ_DESC_F_NEXT, 1);
    r.drv.writeDescriptor(1, DATA + 0x1000, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    r.drv.writeDescriptorAt(DATA + 0x1000, DATA + 10, 5, VIRTQ_DESC_F_NEXT, 1);
    r.drv.writeDescriptorAt(DATA + 0x1010, DATA + 100, 50, VIRTQ_DESC_F_WRITE, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.count).toBe(3);
    expect(r.chain.readableBytes).toBe(15);
    expect(r.chain.writableBytes).toBe(50);
  });

  it('wraps 16-bit indices (start near 65535)', () => {
    const r = rig({ size: 4, start: 65533 });
    const seen: Array<{ id: number; len: number }> = [];
    let expectedLen = 0;
    for (let round = 0; round < 10; round++) {
      const heads: number[] = [];
      for (let k = 0; k < 3; k++) {
        const h = r.drv.add([], [[DATA + k * 100, 100]]);
        expect(h).not.toBeNull();
        heads.push(h!);
      }
      r.drv.publish();
      const popped: number[] = [];
      while (r.q.pop(r.chain)) {
        popped.push(r.chain.head);
        r.q.pushUsed(r.chain.head, ++expectedLen);
      }
      expect(popped).toEqual(heads);
      r.q.publishUsed();
      const used = r.drv.takeUsed();
      expect(used.map((u) => u.id)).toEqual(heads);
      seen.push(...used);
    }
    expect(seen.map((u) => u.len)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(r.q.nextAvail).toBe((65533 + 30) & 0xffff);
    expect(r.drv.readUsedIdx()).toBe((65533 + 30) & 0xffff);
    expect(r.q.isBroken).toBe(false);
  });

  it('unpop puts chains back to be popped again', () => {
    const r = rig();
    const a = r.drv.add([], [[DATA, 10]])!;
    const b = r.drv.add([], [[DATA + 10, 10]])!;
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.q.pop(r.chain)).toBe(true);
    r.q.unpop(2);
    expect(r.q.inFlight).toBe(0);
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(a);
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(b);
  });

  it('unpop never rewinds over a chain already returned (dropped inside pop, or pushUsed)', () => {
    const r = rig({ maxChainDescriptors: 2 });
    const a = r.drv.add([], [[DATA, 10]])!;
    const tooMany = r.drv.add([], [[DATA, 1], [DATA, 1], [DATA, 1]])!;
    const b = r.drv.add([], [[DATA + 10, 10]])!;
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true); // a
    expect(r.q.pop(r.chain)).toBe(true); // tooMany handed back, then b
    expect(r.chain.head).toBe(b);
    expect(r.q.unpop(2)).toBe(1); // only b: rewinding further would offer tooMany again
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(b);
    r.q.pushUsed(b, 0);
    expect(r.q.unpop(1)).toBe(0); // b was returned: nothing to put back
    r.q.pushUsed(a, 0);
    r.q.publishUsed();
    expect(r.drv.takeUsed()).toEqual([
      { id: tooMany, len: 0 },
      { id: b, len: 0 },
      { id: a, len: 0 },
    ]);
    expect(r.drv.badUsed).toBe(0);
    expect(r.q.pop(r.chain)).toBe(false);
  });
});

describe('SplitQueue: descriptor cap per chain', () => {
  /** Write a table of `n` chained descriptors of `len` bytes at `gpa`. */
  function writeTable(r: Rig, gpa: number, n: number, len: number, flags = 0): void {
    for (let k = 0; k < n; k++) {
      const last = k === n - 1;
      r.drv.writeDescriptorAt(gpa + k * VIRTQ_DESC_SIZE, DATA, len, flags | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : k + 1);
    }
  }

  it(`a chain of ${MAX_CHAIN_DESCRIPTORS} buffers through an indirect table passes (Windows NetKVM's largest); one more is handed back and counted`, () => {
    const r = rig({ size: 512 });
    const ok = DATA + 0x1000;
    const over = DATA + 0x4000;
    writeTable(r, ok, MAX_CHAIN_DESCRIPTORS, 4);
    writeTable(r, over, MAX_CHAIN_DESCRIPTORS + 1, 4);
    r.drv.writeDescriptor(0, over, (MAX_CHAIN_DESCRIPTORS + 1) * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.writeDescriptor(1, ok, MAX_CHAIN_DESCRIPTORS * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.pushAvail(0);
    r.drv.pushAvail(1);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(1);
    expect(r.chain.count).toBe(MAX_CHAIN_DESCRIPTORS);
    expect(r.chain.readableBytes).toBe(4 * MAX_CHAIN_DESCRIPTORS);
    expect(r.q.droppedTooManyDescriptors).toBe(1);
    expect(r.q.droppedChains).toBe(1);
    expect(r.dropped).toEqual(['too_many_descriptors']);
    // Walked: the dropped chain up to the first buffer over the cap, the good one whole (each + its INDIRECT descriptor).
    expect(r.q.descriptorsWalked).toBe(MAX_CHAIN_DESCRIPTORS + 2 + MAX_CHAIN_DESCRIPTORS + 1);
    r.q.pushUsed(1, 0);
    r.q.publishUsed();
    expect(r.drv.takeUsed()).toEqual([
      { id: 0, len: 0 },
      { id: 1, len: 0 },
    ]);
    expect(r.q.isBroken).toBe(false);
  });

  it('direct descriptors count too, and with the indirect ones after them', () => {
    const r = rig({ size: 64, maxChainDescriptors: 8 });
    // 9 direct descriptors: over.
    for (let i = 0; i < 9; i++) r.drv.writeDescriptor(i, DATA, 1, i < 8 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
    // 4 direct + an indirect table of 5: over.
    for (let i = 10; i < 14; i++) r.drv.writeDescriptor(i, DATA, 1, VIRTQ_DESC_F_NEXT, i + 1);
    r.drv.writeDescriptor(14, DATA + 0x1000, 5 * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
    writeTable(r, DATA + 0x1000, 5, 1);
    // 4 direct + an indirect table of 4: exactly the cap.
    for (let i = 20; i < 24; i++) r.drv.writeDescriptor(i, DATA, 1, VIRTQ_DESC_F_NEXT, i + 1);
    r.drv.writeDescriptor(24, DATA + 0x2000, 4 * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
    writeTable(r, DATA + 0x2000, 4, 1);
    for (const head of [0, 10, 20]) r.drv.pushAvail(head);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(20);
    expect(r.chain.count).toBe(8);
    expect(r.q.droppedTooManyDescriptors).toBe(2);
    expect(r.q.isBroken).toBe(false);
  });

  it('a loop longer than the cap (in a queue bigger than the cap) is handed back, not walked to the queue size', () => {
    const r = rig({ size: 1024, memSize: 2 << 20, ringAt: BASE + 0x100000 });
    r.drv.writeDescriptor(0, DATA, 1, VIRTQ_DESC_F_NEXT, 1);
    r.drv.writeDescriptor(1, DATA, 1, VIRTQ_DESC_F_NEXT, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(false);
    expect(r.q.descriptorsWalked).toBe(MAX_CHAIN_DESCRIPTORS + 1);
    expect(r.q.droppedTooManyDescriptors).toBe(1);
    expect(r.q.isBroken).toBe(false);
  });

  it(`the amplification ring: ${VIRTQ_MAX_SIZE} chains naming one indirect table of ${VIRTQ_MAX_SIZE} zero-length descriptors`, () => {
    // Largest queue, rings above the table (the table: 512 KiB from DATA + 0x1000).
    const size = VIRTQ_MAX_SIZE;
    const r = rig({ size, memSize: 2 << 20, ringAt: BASE + 0x100000 });
    const table = DATA + 0x1000;
    writeTable(r, table, size, 0);
    for (let i = 0; i < size; i++) {
      r.drv.writeDescriptor(i, table, size * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      r.drv.pushAvail(i);
    }
    r.drv.publish();
    // Pop with a walk budget, as the device does once per event-loop turn.
    const walkBudget = 4096;
    const perCall: number[] = [];
    for (let calls = 0; r.q.nextAvail !== (size & 0xffff) && calls < size; calls++) {
      const before = r.q.descriptorsWalked;
      expect(r.q.pop(r.chain, walkBudget)).toBe(false); // no chain is good
      perCall.push(r.q.descriptorsWalked - before);
    }
    expect(r.q.nextAvail).toBe(size & 0xffff);
    expect(r.q.droppedTooManyDescriptors).toBe(size);
    expect(r.q.isBroken).toBe(false);
    // Each chain: its INDIRECT descriptor and MAX_CHAIN_DESCRIPTORS + 1 entries, not the whole table.
    expect(r.q.descriptorsWalked).toBe(size * (MAX_CHAIN_DESCRIPTORS + 2));
    // Each call stops starting chains at the budget: at most one chain over it.
    expect(Math.max(...perCall)).toBeLessThanOrEqual(walkBudget + MAX_CHAIN_DESCRIPTORS + 2);
    expect(perCall.length).toBeGreaterThan(1);
    // Every chain goes back to the guest, used length 0.
    r.q.publishUsed();
    const used = r.drv.takeUsed();
    expect(used).toHaveLength(size);
    expect(used.every((u, i) => u.id === i && u.len === 0)).toBe(true);
  });
});

describe('SplitQueue: corrupt rings break the queue', () => {
  function expectBroken(r: Rig, pattern: RegExp): void {
    expect(r.q.pop(r.chain)).toBe(false);
    expect(r.q.isBroken).toBe(true);
    expect(r.q.brokenReason).toMatch(pattern);
    expect(r.broken).toHaveLength(1);
    // Stays stopped, never publishes.
    const usedBefore = r.drv.readUsedIdx();
    r.drv.add([], [[DATA, 1]]);
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(false);
    r.q.pushUsed(0, 0);
    expect(r.q.publishUsed()).toBe(false);
    expect(r.drv.readUsedIdx()).toBe(usedBefore);
    expect(r.broken).toHaveLength(1);
  }

  it('descriptor loop', () => {
    const r = rig();
    r.drv.writeDescriptor(0, DATA, 10, VIRTQ_DESC_F_NEXT, 1);
    r.drv.writeDescriptor(1, DATA, 10, VIRTQ_DESC_F_NEXT, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /loop/);
  });

  it('self-loop inside an indirect table', () => {
    const r = rig();
    r.drv.writeDescriptor(0, DATA + 0x1000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.writeDescriptorAt(DATA + 0x1000, DATA, 10, VIRTQ_DESC_F_NEXT, 1);
    r.drv.writeDescriptorAt(DATA + 0x1010, DATA, 10, VIRTQ_DESC_F_NEXT, 1);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /indirect descriptor chain loops/);
  });

  it('buffer address outside guest memory', () => {
    const r = rig();
    r.drv.add([[BASE + MEM_SIZE - 4, 8]], []);
    r.drv.publish();
    expectBroken(r, /outside guest memory/);
  });

  it('buffer address beyond 2^53', () => {
    const r = rig();
    r.drv.writeDescriptor(0, 2 ** 60, 8, 0, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /outside guest memory/);
  });

  it('nested indirect', () => {
    const r = rig();
    r.drv.writeDescriptor(0, DATA + 0x1000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.writeDescriptorAt(DATA + 0x1000, DATA + 0x2000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /inside an indirect table/);
  });

  it.each([
    ['zero-length', 0],
    ['odd length', 24],
    ['longer than the queue', 16 * 9],
  ])('indirect table %s', (_name, len) => {
    const r = rig();
    r.drv.writeDescriptor(0, DATA + 0x1000, len, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /indirect table length/);
  });

  it('indirect table outside memory', () => {
    const r = rig();
    r.drv.writeDescriptor(0, BASE + MEM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /indirect table outside/);
  });

  it('indirect descriptor when INDIRECT_DESC was not negotiated', () => {
    const r = rig({ indirect: false });
    r.drv.addIndirect(DATA + 0x1000, [[DATA, 10]], []);
    r.drv.publish();
    expectBroken(r, /not negotiated/);
  });

  it('readable descriptor after a writable one', () => {
    const r = rig();
    r.drv.writeDescriptor(0, DATA, 10, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    r.drv.writeDescriptor(1, DATA + 10, 10, 0, 0);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /readable descriptor after/);
  });

  it('next out of range (indirect table)', () => {
    const r = rig();
    r.drv.writeDescriptor(0, DATA + 0x1000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    r.drv.writeDescriptorAt(DATA + 0x1000, DATA, 10, VIRTQ_DESC_F_NEXT, 2);
    r.drv.pushAvail(0);
    r.drv.publish();
    expectBroken(r, /next 2 out of range/);
  });

  it('head out of range', () => {
    const r = rig();
    r.drv.pushAvail(8);
    r.drv.publish();
    expectBroken(r, /names descriptor 8/);
  });

  it('avail idx jumping more than size ahead', () => {
    const r = rig({ start: 65530 });
    r.drv.setAvailIdx((65530 + 9) & 0xffff);
    expectBroken(r, /ahead/);
  });

  it('avail idx exactly size ahead is fine', () => {
    const r = rig({ start: 65530 });
    for (let i = 0; i < 8; i++) r.drv.add([[DATA, 1]], []);
    r.drv.publish();
    let n = 0;
    while (r.q.pop(r.chain)) n++;
    expect(n).toBe(8);
    expect(r.q.isBroken).toBe(false);
  });

  it('misaligned ring addresses are refused at start', () => {
    const bytes = new Uint8Array(MEM_SIZE);
    const memory = new GuestMemory([{ guestAddr: BASE, size: MEM_SIZE, userAddr: 0, bytes }]);
    const l = DriverQueue.layout(8, BASE + 0x100);
    const odd = new SplitQueue({ size: 8, ...l, availAddr: l.availAddr + 1, nextAvail: 0, eventIdx: false, indirect: true }, memory);
    expect(odd.isBroken).toBe(true);
    expect(odd.brokenReason).toMatch(/available ring .* not 2-aligned/);
    const used2 = new SplitQueue({ size: 8, ...l, usedAddr: l.usedAddr + 2, nextAvail: 0, eventIdx: false, indirect: true }, memory);
    expect(used2.isBroken).toBe(true);
    expect(used2.brokenReason).toMatch(/used ring .* not 4-aligned/);
    const c = new DescriptorChain();
    expect(odd.pop(c)).toBe(false);
  });

  it('rings outside memory are refused; a bad size too', () => {
    const bytes = new Uint8Array(MEM_SIZE);
    const memory = new GuestMemory([{ guestAddr: BASE, size: MEM_SIZE, userAddr: 0, bytes }]);
    const l = DriverQueue.layout(8, BASE + MEM_SIZE - 64);
    const q = new SplitQueue({ size: 8, ...l, nextAvail: 0, eventIdx: false, indirect: true }, memory);
    expect(q.brokenReason).toMatch(/outside guest memory/);
    const q2 = new SplitQueue({ size: 12, ...DriverQueue.layout(12, BASE), nextAvail: 0, eventIdx: false, indirect: true }, memory);
    expect(q2.brokenReason).toMatch(/power of two/);
  });

  it('rings ending exactly at the end of memory: the event fields count only with EVENT_IDX', () => {
    // Avail ring of 8 entries without used_event: 4 + 16 = 20 bytes, ending at the last byte.
    const bytes = new Uint8Array(MEM_SIZE);
    const memory = new GuestMemory([{ guestAddr: BASE, size: MEM_SIZE, userAddr: 0, bytes }]);
    const end = BASE + MEM_SIZE;
    const availAtEnd = { descAddr: BASE + 0x100, availAddr: end - 20, usedAddr: end - 0x200 };
    const usedAtEnd = { descAddr: BASE + 0x100, availAddr: end - 0x100, usedAddr: end - 68 };
    const plain = new SplitQueue({ size: 8, ...availAtEnd, nextAvail: 0, eventIdx: false, indirect: true }, memory);
    expect(plain.brokenReason).toBeNull();
    expect(plain.enableNotifications()).toBe(false);
    expect(plain.publishUsed()).toBe(false);
    const plain2 = new SplitQueue({ size: 8, ...usedAtEnd, nextAvail: 0, eventIdx: false, indirect: true }, memory);
    expect(plain2.brokenReason).toBeNull();
    // With EVENT_IDX the same places are two bytes short.
    const ev = new SplitQueue({ size: 8, ...availAtEnd, nextAvail: 0, eventIdx: true, indirect: true }, memory);
    expect(ev.brokenReason).toMatch(/available ring outside/);
    const ev2 = new SplitQueue({ size: 8, ...usedAtEnd, nextAvail: 0, eventIdx: true, indirect: true }, memory);
    expect(ev2.brokenReason).toMatch(/used ring outside/);
  });
});

describe('SplitQueue: oversized chains', () => {
  it('hands back a chain over maxChainBytes with used len 0 and goes on', () => {
    const r = rig({ maxChainBytes: 1000 });
    const big = r.drv.add([[DATA, 600], [DATA + 600, 600]], [])!;
    const ok = r.drv.add([[DATA, 600]], [])!;
    r.drv.publish();
    expect(r.q.pop(r.chain)).toBe(true);
    expect(r.chain.head).toBe(ok);
    expect(r.q.droppedChains).toBe(1);
    r.q.pushUsed(ok, 0);
    r.q.publishUsed();
    expect(r.drv.takeUsed()).toEqual([
      { id: big, len: 0 },
      { id: ok, len: 0 },
    ]);
    expect(r.q.isBroken).toBe(false);
  });
});

describe('SplitQueue: pushUsed never runs ahead of pop', () => {
  it('refuses a used entry with nothing in flight', () => {
    const r = rig();
    r.q.pushUsed(0, 10);
    expect(r.q.usedOverflow).toBe(1);
    expect(r.q.publishUsed()).toBe(false);
    expect(r.drv.readUsedIdx()).toBe(0);
  });
});

describe('SplitQueue: notification suppression', () => {
  it('VRING_AVAIL_F_NO_INTERRUPT suppresses interrupts (no EVENT_IDX)', () => {
    const r = rig();
    r.drv.add([[DATA, 1]], []);
    r.drv.add([[DATA, 1]], []);
    r.drv.publish();
    r.drv.disableInterrupts();
    r.q.pop(r.chain);
    r.q.pushUsed(r.chain.head, 0);
    expect(r.q.publishUsed()).toBe(false);
    r.drv.enableInterrupts();
    r.q.pop(r.chain);
    r.q.pushUsed(r.chain.head, 0);
    expect(r.q.publishUsed()).toBe(true);
  });

  it('used_event: interrupt only when the used index passes it', () => {
    const r = rig({ eventIdx: true, size: 16 });
    for (let i = 0; i < 10; i++) r.drv.add([[DATA, 1]], []);
    r.drv.publish();
    const step = (): boolean => {
      r.q.pop(r.chain);
      r.q.pushUsed(r.chain.head, 0);
      return r.q.publishUsed();
    };
    // First publish always signals (nothing signalled yet).
    expect(step()).toBe(true); // used idx 1
    r.drv.setUsedEvent(4); // "interrupt me when entry 4 is written" -> used idx reaching 5
    expect(step()).toBe(false); // 2
    expect(step()).toBe(false); // 3
    expect(step()).toBe(false); // 4
    expect(step()).toBe(true); // 5: entry 4 written
    expect(step()).toBe(false); // 6
    // A batch that jumps over the event index signals once.
    r.drv.setUsedEvent(7);
    for (let i = 0; i < 3; i++) {
      r.q.pop(r.chain);
      r.q.pushUsed(r.chain.head, 0);
    }
    expect(r.q.publishUsed()).toBe(true); // 6 -> 9 passes 7
    // disableInterrupts puts used_event behind: no more interrupts.
    r.drv.takeUsed();
    r.drv.disableInterrupts();
    expect(step()).toBe(false);
  });

  it('avail_event / NO_NOTIFY: the driver kicks only when the device asked', () => {
    const r = rig({ eventIdx: true });
    // Initially avail_event = 0: the first entry (index 0) needs a kick.
    r.drv.add([[DATA, 1]], []);
    r.drv.publish();
    expect(r.drv.needsKick()).toBe(true);
    r.drv.add([[DATA, 1]], []);
    r.drv.publish();
    expect(r.drv.needsKick()).toBe(false); // avail_event still 0
    while (r.q.pop(r.chain)) r.q.pushUsed(r.chain.head, 0);
    expect(r.q.enableNotifications()).toBe(false); // avail_event = 2, nothing pending
    expect(r.drv.readAvailEvent()).toBe(2);
    r.drv.add([[DATA, 1]], []);
    r.drv.publish();
    expect(r.drv.needsKick()).toBe(true);
    // Re-check after enable sees entries added meanwhile.
    expect(r.q.enableNotifications()).toBe(true);
    expect(r.drv.needsKick()).toBe(false); // nothing new published

    const p = rig({ eventIdx: false });
    p.q.disableNotifications();
    expect(p.drv.readUsedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
    p.drv.add([[DATA, 1]], []);
    p.drv.publish();
    expect(p.drv.needsKick()).toBe(false);
    expect(p.q.enableNotifications()).toBe(true);
    expect(p.drv.readUsedFlags()).toBe(0);
    p.drv.add([[DATA, 1]], []);
    p.drv.publish();
    expect(p.drv.needsKick()).toBe(true);
  });
});

describe('SplitQueue: memory table changes', () => {
  it('re-resolves rings on a new table, pauses on null, breaks when rings vanish', () => {
    const r = rig();
    r.drv.add([[DATA, 4]], []);
    r.drv.publish();
    expect(r.q.setMemory(null)).toBe(true);
    expect(r.q.pop(r.chain)).toBe(false);
    expect(r.q.isBroken).toBe(false);
    // Same bytes, different frontend address: rings resolve again.
    const again = new GuestMemory([{ guestAddr: BASE, size: MEM_SIZE, userAddr: 0x1000_0000, bytes: r.bytes }]);
    expect(r.q.setMemory(again)).toBe(true);
    expect(r.q.pop(r.chain)).toBe(true);
    // A table that no longer covers the rings: broken.
    const small = new GuestMemory([{ guestAddr: BASE + 0x10000, size: 0x1000, userAddr: 0, bytes: new Uint8Array(0x1000) }]);
    expect(r.q.setMemory(small)).toBe(false);
    expect(r.q.brokenReason).toMatch(/outside guest memory/);
  });
});
