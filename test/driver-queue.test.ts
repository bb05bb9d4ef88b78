/**
 * The driver side of a split ring: byte layout of what it writes, its free
 * list, and used-ring consumption (checked against raw bytes, then against
 * the device side).
 */
import { describe, it, expect } from 'vitest';
import { DriverQueue } from '../src/virtio/driver-queue.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../src/virtio/features.js';

const BASE = 0x10000;

function make(size = 4, eventIdx = false) {
  const bytes = new Uint8Array(0x10000);
  const l = DriverQueue.layout(size, BASE);
  const drv = new DriverQueue(bytes, { size, ...l }, { base: BASE, eventIdx });
  const dv = new DataView(bytes.buffer);
  const desc = (i: number) => {
    const o = l.descAddr - BASE + i * 16;
    return {
      addr: Number(dv.getBigUint64(o, true)),
      len: dv.getUint32(o + 8, true),
      flags: dv.getUint16(o + 12, true),
      next: dv.getUint16(o + 14, true),
    };
  };
  const availIdx = () => dv.getUint16(l.availAddr - BASE + 2, true);
  const availRing = (slot: number) => dv.getUint16(l.availAddr - BASE + 4 + 2 * slot, true);
  const pushUsed = (id: number, len: number) => {
    const idx = dv.getUint16(l.usedAddr - BASE + 2, true);
    const o = l.usedAddr - BASE + 4 + 8 * (idx % size);
    dv.setUint32(o, id, true);
    dv.setUint32(o + 4, len, true);
    dv.setUint16(l.usedAddr - BASE + 2, (idx + 1) & 0xffff, true);
  };
  return { bytes, l, drv, dv, desc, availIdx, availRing, pushUsed };
}

describe('DriverQueue', () => {
  it('writes a chain as little-endian descriptors, readable then writable, and publishes the index last', () => {
    const t = make();
    const head = t.drv.add([[0x1_2345_6789, 10]], [[0x2000, 20]]);
    expect(head).toBe(0);
    expect(t.desc(0)).toEqual({ addr: 0x1_2345_6789, len: 10, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    expect(t.desc(1)).toEqual({ addr: 0x2000, len: 20, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    expect(t.availRing(0)).toBe(0);
    expect(t.availIdx()).toBe(0); // not yet published
    t.drv.publish();
    expect(t.availIdx()).toBe(1);
    expect(t.drv.freeCount).toBe(2);
  });

  it('returns null when descriptors run out, and frees chains from the used ring', () => {
    const t = make();
    const a = t.drv.add([[0x1000, 1], [0x1001, 1]], [])!;
    const b = t.drv.add([[0x1002, 1]], [[0x1003, 1]])!;
    expect(t.drv.add([[0x1004, 1]], [])).toBeNull();
    expect(t.drv.add([], [])).toBeNull();
    expect(t.drv.freeCount).toBe(0);
    t.drv.publish();
    t.pushUsed(b, 7);
    expect(t.drv.takeUsed()).toEqual([{ id: b, len: 7 }]);
    expect(t.drv.freeCount).toBe(2);
    const c = t.drv.add([[0x1005, 1], [0x1006, 1]], []);
    expect(c).toBe(b);
    t.pushUsed(a, 0);
    t.pushUsed(3, 0); // not a head in flight
    expect(t.drv.takeUsed().map((u) => u.id)).toEqual([a, 3]);
    expect(t.drv.badUsed).toBe(1);
    expect(t.drv.freeCount).toBe(2);
  });

  it('addIndirect writes the table and uses one descriptor', () => {
    const t = make();
    const table = BASE + 0x8000;
    const head = t.drv.addIndirect(table, [[0x3000, 12]], [[0x4000, 1500], [0x5000, 100]])!;
    expect(t.desc(head)).toEqual({ addr: table, len: 48, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    const o = table - BASE;
    expect(t.dv.getUint32(o + 8, true)).toBe(12);
    expect(t.dv.getUint16(o + 12, true)).toBe(VIRTQ_DESC_F_NEXT);
    expect(t.dv.getUint16(o + 14, true)).toBe(1);
    expect(t.dv.getUint16(o + 16 + 12, true)).toBe(VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE);
    expect(t.dv.getUint16(o + 32 + 12, true)).toBe(VIRTQ_DESC_F_WRITE);
    expect(t.drv.freeCount).toBe(3);
  });

  it('needsKick respects used.flags and avail_event', () => {
    const t = make(4, false);
    t.drv.add([[0x1000, 1]], []);
    t.drv.publish();
    expect(t.drv.needsKick()).toBe(true);
    expect(t.drv.needsKick()).toBe(false); // nothing new
    t.dv.setUint16(t.l.usedAddr - BASE, 1, true); // NO_NOTIFY
    t.drv.add([[0x1000, 1]], []);
    t.drv.publish();
    expect(t.drv.needsKick()).toBe(false);

    const e = make(4, true);
    const availEventOff = e.l.usedAddr - BASE + 4 + 8 * 4;
    e.dv.setUint16(availEventOff, 1, true); // kick when entry 1 is written
    e.drv.add([[0x1000, 1]], []);
    e.drv.publish();
    expect(e.drv.needsKick()).toBe(false); // wrote entry 0
    e.drv.add([[0x1000, 1]], []);
    e.drv.publish();
    expect(e.drv.needsKick()).toBe(true); // wrote entry 1
  });

  it('starts at an arbitrary index and wraps the ring slot', () => {
    const bytes = new Uint8Array(0x10000);
    const l = DriverQueue.layout(4, BASE);
    const drv = new DriverQueue(bytes, { size: 4, ...l }, { base: BASE, startIndex: 65535 });
    const dv = new DataView(bytes.buffer);
    expect(dv.getUint16(l.availAddr - BASE + 2, true)).toBe(65535);
    expect(dv.getUint16(l.usedAddr - BASE + 2, true)).toBe(65535);
    drv.add([[0x1000, 1]], []);
    drv.add([[0x1000, 1]], []);
    drv.publish();
    expect(dv.getUint16(l.availAddr - BASE + 2, true)).toBe(1);
    expect(dv.getUint16(l.availAddr - BASE + 4 + 2 * 3, true)).toBe(0); // slot 65535 % 4 = 3
    expect(dv.getUint16(l.availAddr - BASE + 4 + 2 * 0, true)).toBe(1); // slot 0
  });

  it('refuses rings outside its memory', () => {
    const bytes = new Uint8Array(0x1000);
    expect(() => new DriverQueue(bytes, { size: 256, ...DriverQueue.layout(256, 0) })).toThrow(RangeError);
    expect(() => new DriverQueue(bytes, { size: 3, ...DriverQueue.layout(3, 0) })).toThrow(RangeError);
  });
});
