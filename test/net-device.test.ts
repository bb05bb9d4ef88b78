/**
 * The virtio-net device driven by DriverQueue mocks over real guest-memory
 * bytes, with real eventfds from the addon for kicks and calls (signals are
 * counted with eventfdDrain).
 */
import { describe, it, expect, afterEach } from 'vitest';
import { native } from '../src/native/index.js';
import { GuestMemory, type GuestMemoryRegion } from '../src/virtio/guest-memory.js';
import { DriverQueue } from '../src/virtio/driver-queue.js';
import { OFFERED_FEATURES, RX_QUEUE, TX_QUEUE, VirtioNetDevice } from '../src/virtio/net-device.js';
import type { FrameOffload, FrameSink } from '../src/net/link.js';
import type { Counters } from '../src/net/context.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_MQ,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  VIRTQ_DESC_F_NEXT,
} from '../src/virtio/features.js';

const BASE = 0x1_0000_0000; // above 4 GiB: descriptor addresses use both halves
const MEM_SIZE = 4 << 20;
const TXQ = BASE + 0x1000;
const RXQ = BASE + 0x10000;
const TXDATA = BASE + 0x100000;
const RXDATA = BASE + 0x200000;
const MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

class RecordingSink implements FrameSink {
  frames: Array<{ bytes: number[]; view: Uint8Array; offload: FrameOffload | null }> = [];
  batches = 0;
  receive(frame: Uint8Array, offload: FrameOffload | null): void {
    this.frames.push({ bytes: [...frame], view: frame, offload: offload === null ? null : { ...offload } });
  }
  batchEnd(): void {
    this.batches++;
  }
}

class MapCounters implements Counters {
  m = new Map<string, number>();
  count(name: string, n = 1): void {
    this.m.set(name, (this.m.get(name) ?? 0) + n);
  }
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.m);
  }
  get(name: string): number {
    return this.m.get(name) ?? 0;
  }
}

const openFds: number[] = [];
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
  for (const fd of openFds.splice(0)) native.close(fd);
});

function eventfd(): number {
  const fd = native.eventfdCreate();
  openFds.push(fd);
  return fd;
}

interface RigOptions {
  features?: bigint;
  size?: number;
  eventIdx?: boolean;
  kickFds?: boolean;
  mtu?: number;
  bytes?: Uint8Array;
}

function rig(opts: RigOptions = {}) {
  const size = opts.size ?? 16;
  const eventIdx = opts.eventIdx ?? false;
  const bytes = opts.bytes ?? new Uint8Array(MEM_SIZE);
  const region: GuestMemoryRegion = { guestAddr: BASE, size: bytes.length, userAddr: 0x7f00_0000_0000, bytes };
  const memory = new GuestMemory([region]);
  const sink = new RecordingSink();
  const counters = new MapCounters();
  const broken: Array<[number, string]> = [];
  const dev = new VirtioNetDevice({ mac: MAC, mtu: opts.mtu ?? 1500, sink, counters });
  dev.onBroken = (i, r) => broken.push([i, r]);
  dev.setAckedFeatures(opts.features ?? (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_RING_F_INDIRECT_DESC));
  dev.setMemory(memory);
  const rxLayout = { size, ...DriverQueue.layout(size, RXQ) };
  const txLayout = { size, ...DriverQueue.layout(size, TXQ) };
  const rx = new DriverQueue(bytes, rxLayout, { base: BASE, eventIdx });
  const tx = new DriverQueue(bytes, txLayout, { base: BASE, eventIdx });
  const rxCall = eventfd();
  const txCall = eventfd();
  const rxKick = opts.kickFds ? eventfd() : -1;
  const txKick = opts.kickFds ? eventfd() : -1;
  dev.startQueue(RX_QUEUE, { ...rxLayout, nextAvail: 0, kickFd: rxKick, callFd: rxCall, eventIdx, indirect: true });
  dev.startQueue(TX_QUEUE, { ...txLayout, nextAvail: 0, kickFd: txKick, callFd: txCall, eventIdx, indirect: true });
  cleanups.push(() => dev.reset());
  const off = (gpa: number): number => gpa - BASE;
  return { bytes, memory, sink, counters, broken, dev, rx, tx, rxCall, txCall, rxKick, txKick, off, size };
}

/** A recognisable frame of n bytes (Ethernet header first). */
function frame(n: number, seed = 1): Uint8Array {
  const f = new Uint8Array(n);
  for (let i = 0; i < n; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

function hdr(len = 12, init: Partial<{ flags: number; gso: number; csumStart: number; csumOffset: number }> = {}): Uint8Array {
  const h = new Uint8Array(len);
  const dv = new DataView(h.buffer);
  h[0] = init.flags ?? 0;
  h[1] = init.gso ?? 0;
  dv.setUint16(6, init.csumStart ?? 0, true);
  dv.setUint16(8, init.csumOffset ?? 0, true);
  return h;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('VirtioNetDevice: negotiation and config', () => {
  it('offers exactly the documented features: TCPv4 and TCPv6 offloads, never UFO/USO/MQ', () => {
    const expected =
      VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MTU | VIRTIO_NET_F_MRG_RXBUF |
      VIRTIO_RING_F_EVENT_IDX | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_NET_F_CTRL_VQ |
      VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_ECN |
      VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6;
    expect(OFFERED_FEATURES).toBe(expected);
    expect(OFFERED_FEATURES & (VIRTIO_NET_F_HOST_UFO | VIRTIO_NET_F_GUEST_UFO | VIRTIO_NET_F_MQ)).toBe(0n);
    const dev = new VirtioNetDevice({ mac: MAC, mtu: 1500, sink: new RecordingSink() });
    expect(dev.deviceFeatures).toBe(expected);
    expect(dev.maxQueues).toBe(2);
  });

  it('config space: mac, status LINK_UP, one queue pair, mtu (little-endian)', () => {
    const dev = new VirtioNetDevice({ mac: MAC, mtu: 9000, sink: new RecordingSink() });
    expect([...dev.configSpace()]).toEqual([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 1, 0, 9000 & 0xff, 9000 >> 8]);
  });

  it('header is 12 bytes with VERSION_1 or MRG_RXBUF, 10 otherwise', () => {
    const dev = new VirtioNetDevice({ mac: MAC, mtu: 1500, sink: new RecordingSink() });
    dev.setAckedFeatures(VIRTIO_F_VERSION_1);
    expect(dev.headerLength).toBe(12);
    dev.setAckedFeatures(VIRTIO_NET_F_MRG_RXBUF);
    expect(dev.headerLength).toBe(12);
    dev.setAckedFeatures(VIRTIO_NET_F_MAC);
    expect(dev.headerLength).toBe(10);
    // Bits we never offered are not taken.
    dev.setAckedFeatures(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_HOST_UFO | VIRTIO_NET_F_GUEST_UFO);
    expect(dev.ackedFeatures).toBe(VIRTIO_F_VERSION_1);
    // GUEST_TSO6 without GUEST_CSUM means nothing.
    dev.setAckedFeatures(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_TSO6);
    expect(dev.rxOffloads.tso6).toBe(false);
  });
});

describe('VirtioNetDevice: transmit', () => {
  it('delivers a single-descriptor frame as a view aliasing guest memory, returns it with len 0, signals once', () => {
    const r = rig();
    const f = frame(60);
    r.bytes.set(hdr(), r.off(TXDATA));
    r.bytes.set(f, r.off(TXDATA + 12));
    const head = r.tx.add([[TXDATA, 72]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(1);
    const got = r.sink.frames[0]!;
    expect(got.bytes).toEqual([...f]);
    expect(got.offload).toBeNull();
    expect(got.view.buffer).toBe(r.bytes.buffer);
    expect(got.view.byteOffset).toBe(r.off(TXDATA + 12));
    expect(r.sink.batches).toBe(1);
    expect(r.tx.takeUsed()).toEqual([{ id: head, len: 0 }]);
    expect(native.eventfdDrain(r.txCall)).toBe(1);
    expect(r.dev.stats.txGathered).toBe(0);
  });

  it('header in its own descriptor, frame in the next: still zero-copy', () => {
    const r = rig();
    const f = frame(100, 3);
    r.bytes.set(hdr(), r.off(TXDATA));
    r.bytes.set(f, r.off(TXDATA + 0x1000));
    r.tx.add([[TXDATA, 12], [TXDATA + 0x1000, 100]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames[0]!.bytes).toEqual([...f]);
    expect(r.sink.frames[0]!.view.buffer).toBe(r.bytes.buffer);
  });

  it('gathers a frame scattered over descriptors (header split too) into the bounce buffer', () => {
    const r = rig();
    const f = frame(1000, 5);
    const h = hdr();
    // header 8 + 4, frame 2 + 500 + 498
    r.bytes.set(h.subarray(0, 8), r.off(TXDATA));
    r.bytes.set(h.subarray(8), r.off(TXDATA + 0x100));
    r.bytes.set(f.subarray(0, 2), r.off(TXDATA + 0x100 + 4));
    r.bytes.set(f.subarray(2, 502), r.off(TXDATA + 0x1000));
    r.bytes.set(f.subarray(502), r.off(TXDATA + 0x2000));
    r.tx.addIndirect(TXDATA + 0x8000, [[TXDATA, 8], [TXDATA + 0x100, 6], [TXDATA + 0x1000, 500], [TXDATA + 0x2000, 498]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(1);
    expect(r.sink.frames[0]!.bytes).toEqual([...f]);
    expect(r.sink.frames[0]!.view.buffer).not.toBe(r.bytes.buffer);
    expect(r.dev.stats.txGathered).toBe(1);
    expect(r.counters.get('virtio_net.tx.gathered')).toBe(1);
  });

  it('drops runts and over-MTU frames (counted), accepts MTU+14+4, returns every chain', () => {
    const r = rig({ mtu: 1500 });
    const add = (len: number, at: number): void => {
      r.bytes.set(hdr(), r.off(at));
      r.bytes.set(frame(len), r.off(at + 12));
      r.tx.add([[at, 12 + len]], []);
    };
    add(13, TXDATA);
    add(1519, TXDATA + 0x1000);
    add(1518, TXDATA + 0x2000);
    add(14, TXDATA + 0x3000);
    r.tx.add([[TXDATA, 5]], []); // shorter than the header
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames.map((x) => x.bytes.length)).toEqual([1518, 14]);
    expect(r.counters.get('virtio_net.tx.drop.runt')).toBe(2);
    expect(r.counters.get('virtio_net.tx.drop.too_long')).toBe(1);
    expect(r.tx.takeUsed()).toHaveLength(5);
    expect(r.tx.freeCount).toBe(16);
  });

  it('carries the header offload fields to the sink; GSO without HOST_TSO is dropped', () => {
    const r = rig();
    r.bytes.set(hdr(12, { flags: 1, csumStart: 34, csumOffset: 16 }), r.off(TXDATA));
    r.bytes.set(frame(60), r.off(TXDATA + 12));
    r.tx.add([[TXDATA, 72]], []);
    r.bytes.set(hdr(12, { gso: 1 }), r.off(TXDATA + 0x1000));
    r.bytes.set(frame(60), r.off(TXDATA + 0x1000 + 12));
    r.tx.add([[TXDATA + 0x1000, 72]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(1);
    expect(r.sink.frames[0]!.offload).toMatchObject({ needsCsum: true, dataValid: false, csumStart: 34, csumOffset: 16, gsoType: 0 });
    expect(r.counters.get('virtio_net.tx.drop.gso_not_negotiated')).toBe(1);
  });

  it('uses the 10-byte header when neither VERSION_1 nor MRG_RXBUF is negotiated', () => {
    const r = rig({ features: VIRTIO_NET_F_MAC });
    const f = frame(64, 9);
    r.bytes.set(hdr(10), r.off(TXDATA));
    r.bytes.set(f, r.off(TXDATA + 10));
    r.tx.add([[TXDATA, 74]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames[0]!.bytes).toEqual([...f]);
  });

  it('a batch of frames from one kick fd signal: one batchEnd, one call signal', async () => {
    const r = rig({ kickFds: true, eventIdx: true });
    for (let i = 0; i < 5; i++) {
      const at = TXDATA + i * 0x1000;
      r.bytes.set(hdr(), r.off(at));
      r.bytes.set(frame(60, i), r.off(at + 12));
      r.tx.add([[at, 72]], []);
    }
    r.tx.publish();
    expect(r.tx.needsKick()).toBe(true);
    native.eventfdSignal(r.txKick);
    await until(() => r.sink.frames.length === 5);
    expect(r.sink.batches).toBe(1);
    expect(native.eventfdDrain(r.txCall)).toBe(1);
    expect(r.tx.takeUsed()).toHaveLength(5);
    // The device re-armed avail_event at its next index: the next add needs a kick.
    expect(r.tx.readAvailEvent()).toBe(5);
    r.bytes.set(hdr(), r.off(TXDATA));
    r.tx.add([[TXDATA, 72]], []);
    r.tx.publish();
    expect(r.tx.needsKick()).toBe(true);
  });

  it('respects NO_INTERRUPT on the transmit queue', () => {
    const r = rig();
    r.tx.disableInterrupts();
    r.bytes.set(hdr(), r.off(TXDATA));
    r.tx.add([[TXDATA, 72]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(1);
    expect(native.eventfdDrain(r.txCall)).toBe(0);
    expect(r.tx.takeUsed()).toHaveLength(1);
  });

  it('a corrupt transmit ring stops that queue, reports it, and never throws', () => {
    const r = rig();
    r.tx.writeDescriptor(0, TXDATA, 72, VIRTQ_DESC_F_NEXT, 0); // self loop
    r.tx.pushAvail(0);
    r.tx.publish();
    expect(() => r.dev.kick(TX_QUEUE)).not.toThrow();
    expect(r.broken).toHaveLength(1);
    expect(r.broken[0]![0]).toBe(TX_QUEUE);
    expect(r.broken[0]![1]).toMatch(/loop/);
    expect(r.counters.get('virtio_net.ring.broken')).toBe(1);
    expect(() => r.dev.kick(TX_QUEUE)).not.toThrow();
    expect(r.dev.queue(TX_QUEUE)!.isBroken).toBe(true);
    // The receive queue still works.
    r.rx.add([], [[RXDATA, 2048]]);
    r.rx.publish();
    expect(r.dev.send(frame(60))).toBe(true);
  });

  it('kick fds: a broken ring stops watching; stopQueue stops watching before returning', async () => {
    const r = rig({ kickFds: true });
    r.tx.writeDescriptor(0, TXDATA, 72, VIRTQ_DESC_F_NEXT, 0);
    r.tx.pushAvail(0);
    r.tx.publish();
    native.eventfdSignal(r.txKick);
    await until(() => r.broken.length === 1);
    await tick();
    native.eventfdSignal(r.txKick);
    await new Promise((res) => setTimeout(res, 20));
    // The watcher is closed: the kick stays unread in the eventfd.
    expect(native.eventfdDrain(r.txKick)).toBe(1);
    expect(r.broken).toHaveLength(1);

    // Receive queue: after stopQueue, kicks are not consumed either.
    r.dev.stopQueue(RX_QUEUE);
    native.eventfdSignal(r.rxKick);
    await new Promise((res) => setTimeout(res, 20));
    expect(native.eventfdDrain(r.rxKick)).toBe(1);
  });

  it('stopQueue returns the next available index; restarting resumes there', () => {
    const r = rig();
    for (let i = 0; i < 3; i++) {
      r.bytes.set(hdr(), r.off(TXDATA + i * 0x100));
      r.tx.add([[TXDATA + i * 0x100, 72]], []);
    }
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.dev.stopQueue(TX_QUEUE)).toBe(3);
    expect(r.dev.stopQueue(TX_QUEUE)).toBe(3); // never restarted: configured base
    r.tx.takeUsed();
    r.bytes.set(hdr(), r.off(TXDATA));
    r.tx.add([[TXDATA, 72]], []);
    r.tx.publish();
    r.dev.startQueue(TX_QUEUE, { size: r.size, ...DriverQueue.layout(r.size, TXQ), nextAvail: 3, kickFd: -1, callFd: r.txCall, eventIdx: false, indirect: true });
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(4);
    expect(r.tx.takeUsed()).toHaveLength(1);
  });

  it('a disabled queue passes no frames until enabled again', async () => {
    const r = rig();
    r.dev.enableQueue(TX_QUEUE, false);
    r.bytes.set(hdr(), r.off(TXDATA));
    r.tx.add([[TXDATA, 72]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(0);
    r.dev.enableQueue(TX_QUEUE, true);
    await tick();
    expect(r.sink.frames).toHaveLength(1);
  });
});

describe('VirtioNetDevice: receive (NetLink)', () => {
  function readHeader(r: ReturnType<typeof rig>, gpa: number) {
    const dv = new DataView(r.bytes.buffer, r.off(gpa), 12);
    return { flags: dv.getUint8(0), gso: dv.getUint8(1), numBuffers: dv.getUint16(10, true) };
  }

  it('reserve returns a view into the guest buffer; commit writes the header and used length', () => {
    const r = rig({ features: VIRTIO_F_VERSION_1 });
    const head = r.rx.add([], [[RXDATA, 1526]]);
    r.rx.publish();
    const v = r.dev.reserve(100)!;
    expect(v).not.toBeNull();
    expect(v.length).toBe(100);
    expect(v.buffer).toBe(r.bytes.buffer);
    expect(v.byteOffset).toBe(r.off(RXDATA + 12));
    v.set(frame(100, 4));
    r.dev.commit(100);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: head, len: 112 }]);
    expect(readHeader(r, RXDATA)).toEqual({ flags: 0, gso: 0, numBuffers: 1 });
    expect([...r.bytes.subarray(r.off(RXDATA + 12), r.off(RXDATA + 112))]).toEqual([...frame(100, 4)]);
    expect(native.eventfdDrain(r.rxCall)).toBe(1);
    expect(r.dev.stats.rxBounced).toBe(0);
  });

  it('header in its own buffer (big-packet layout): the frame view is the next buffer', () => {
    const r = rig({ features: VIRTIO_F_VERSION_1 });
    r.rx.add([], [[RXDATA, 12], [RXDATA + 0x1000, 4096]]);
    r.rx.publish();
    const v = r.dev.reserve(1514)!;
    expect(v.byteOffset).toBe(r.off(RXDATA + 0x1000));
    v.set(frame(1514));
    r.dev.commit(1500); // shorter than reserved
    r.dev.flush();
    expect(r.rx.takeUsed()[0]!.len).toBe(1512);
    expect(readHeader(r, RXDATA).numBuffers).toBe(1);
  });

  it('MRG_RXBUF: a 3000-byte frame over 1536-byte buffers uses two, num_buffers 2', () => {
    const r = rig({ features: VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF, mtu: 9000 });
    const a = r.rx.add([], [[RXDATA, 1536]])!;
    const b = r.rx.add([], [[RXDATA + 0x1000, 1536]])!;
    const c = r.rx.add([], [[RXDATA + 0x2000, 1536]])!;
    r.rx.publish();
    const f = frame(3000, 11);
    const v = r.dev.reserve(3000)!;
    expect(v.buffer).not.toBe(r.bytes.buffer); // bounce
    v.set(f);
    r.dev.commit(3000);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([
      { id: a, len: 1536 },
      { id: b, len: 3012 - 1536 },
    ]);
    expect(readHeader(r, RXDATA).numBuffers).toBe(2);
    const got = [...r.bytes.subarray(r.off(RXDATA + 12), r.off(RXDATA + 1536)), ...r.bytes.subarray(r.off(RXDATA + 0x1000), r.off(RXDATA + 0x1000 + 1476))];
    expect(got).toEqual([...f]);
    expect(r.dev.stats.rxBounced).toBe(1);
    // The third buffer is still available for the next frame.
    const v2 = r.dev.reserve(60)!;
    expect(v2.byteOffset).toBe(r.off(RXDATA + 0x2000 + 12));
    r.dev.commit(60);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: c, len: 72 }]);
  });

  it('MRG_RXBUF: a commit shorter than the reservation gives back the chains it does not need', () => {
    const r = rig({ features: VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF, mtu: 9000 });
    for (let i = 0; i < 4; i++) r.rx.add([], [[RXDATA + i * 0x1000, 1536]]);
    r.rx.publish();
    const v = r.dev.reserve(5000)!;
    v.set(frame(1000));
    r.dev.commit(1000);
    r.dev.flush();
    const used = r.rx.takeUsed();
    expect(used).toEqual([{ id: 0, len: 1012 }]);
    expect(readHeader(r, RXDATA).numBuffers).toBe(1);
    expect(r.dev.queue(RX_QUEUE)!.nextAvail).toBe(1);
  });

  it('without MRG_RXBUF a frame must fit one chain: scattered over its descriptors, or dropped', () => {
    const r = rig({ features: VIRTIO_F_VERSION_1 });
    r.rx.add([], [[RXDATA, 100], [RXDATA + 0x1000, 100]]);
    r.rx.publish();
    // 150 bytes: fits the chain (200 - 12) but not one descriptor -> bounce + scatter.
    const f = frame(150, 2);
    const v = r.dev.reserve(150)!;
    v.set(f);
    r.dev.commit(150);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: 0, len: 162 }]);
    expect([...r.bytes.subarray(r.off(RXDATA + 12), r.off(RXDATA + 100)), ...r.bytes.subarray(r.off(RXDATA + 0x1000), r.off(RXDATA + 0x1000 + 62))]).toEqual([...f]);
    // A frame bigger than the chain is dropped and the chain kept.
    r.rx.add([], [[RXDATA, 100]]);
    r.rx.publish();
    const big = r.dev.reserve(1000);
    expect(big).not.toBeNull();
    r.dev.commit(1000);
    expect(r.counters.get('virtio_net.rx.drop.frame_too_big_for_buffers')).toBe(1);
    expect(r.dev.send(frame(50))).toBe(true);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: 0, len: 62 }]);
  });

  it('back-pressure: reserve is null without buffers; a guest kick after adding buffers calls onWritable', async () => {
    const r = rig({ kickFds: true, eventIdx: true });
    let writable = 0;
    r.dev.onWritable(() => writable++);
    expect(r.dev.reserve(60)).toBeNull();
    expect(r.dev.stats.rxBackpressure).toBe(1);
    // The device asked for a kick at its next index.
    r.rx.add([], [[RXDATA, 1536]]);
    r.rx.publish();
    expect(r.rx.needsKick()).toBe(true);
    native.eventfdSignal(r.rxKick);
    await until(() => writable === 1);
    expect(r.dev.send(frame(60))).toBe(true);
    r.dev.flush();
    expect(r.rx.takeUsed()).toHaveLength(1);
    expect(r.dev.reserve(60)).toBeNull();
    expect(r.dev.stats.rxBackpressure).toBe(2);
    // Not enough buffers for a merged frame: what was popped goes back.
    r.rx.add([], [[RXDATA, 1024]]);
    r.rx.publish();
    expect(r.dev.reserve(1500)).toBeNull();
    expect(r.dev.queue(RX_QUEUE)!.nextAvail).toBe(1);
    expect(r.dev.send(frame(60))).toBe(true);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: 0, len: 72 }]);
  });

  it('back-pressure without EVENT_IDX toggles NO_NOTIFY', () => {
    const r = rig();
    expect(r.rx.readUsedFlags()).toBe(1); // kicks off while not waiting
    expect(r.dev.reserve(60)).toBeNull();
    expect(r.rx.readUsedFlags()).toBe(0); // waiting: kick me
    r.rx.add([], [[RXDATA, 1536]]);
    r.rx.publish();
    let writable = 0;
    r.dev.onWritable(() => writable++);
    r.dev.kick(RX_QUEUE);
    expect(writable).toBe(1);
    expect(r.rx.readUsedFlags()).toBe(1);
  });

  it('one signal per batch: several commits then flush; automatic flush at the end of the turn', async () => {
    const r = rig();
    for (let i = 0; i < 6; i++) r.rx.add([], [[RXDATA + i * 0x1000, 1536]]);
    r.rx.publish();
    for (let i = 0; i < 3; i++) expect(r.dev.send(frame(60, i))).toBe(true);
    expect(r.rx.readUsedIdx()).toBe(0); // nothing published yet
    r.dev.flush();
    expect(r.rx.readUsedIdx()).toBe(3);
    expect(native.eventfdDrain(r.rxCall)).toBe(1);
    for (let i = 0; i < 3; i++) expect(r.dev.send(frame(60, i))).toBe(true);
    await tick();
    expect(r.rx.readUsedIdx()).toBe(6);
    expect(native.eventfdDrain(r.rxCall)).toBe(1);
  });

  it('abort puts the chain back; a new memory table aborts an open reservation', () => {
    const r = rig();
    r.rx.add([], [[RXDATA, 1536]]);
    r.rx.publish();
    expect(r.dev.reserve(60)).not.toBeNull();
    r.dev.abort();
    expect(r.dev.queue(RX_QUEUE)!.nextAvail).toBe(0);
    expect(r.dev.reserve(60)).not.toBeNull();
    r.dev.setMemory(null);
    expect(r.dev.queue(RX_QUEUE)!.nextAvail).toBe(0);
    expect(r.dev.reserve(60)).toBeNull();
    r.dev.commit(60); // no reservation: counted, no throw
    expect(r.counters.get('virtio_net.rx.commit_without_reserve')).toBe(1);
    r.dev.setMemory(r.memory);
    expect(r.dev.send(frame(60))).toBe(true);
  });

  it('refuses reservations of impossible lengths', () => {
    const r = rig({ mtu: 1500 });
    r.rx.add([], [[RXDATA, 1536]]);
    r.rx.publish();
    expect(r.dev.reserve(0)).toBeNull();
    expect(r.dev.reserve(1519)).toBeNull();
    expect(r.counters.get('virtio_net.rx.drop.bad_length')).toBe(2);
    expect(r.dev.reserve(1518)).not.toBeNull();
  });
});

describe('VirtioNetDevice over mmap-ed memfd memory (external ArrayBuffer, Atomics)', () => {
  it('moves frames both ways', () => {
    const mfd = native.memfdCreate('vq-test', MEM_SIZE);
    openFds.push(mfd);
    const mapping = native.mmap(mfd, MEM_SIZE, 0);
    cleanups.push(() => native.munmap(mapping));
    const bytes = new Uint8Array(mapping.buffer);
    // Atomics work on the addon's (non-shared, external) ArrayBuffer.
    const u16 = new Uint16Array(mapping.buffer, 0, 2);
    Atomics.store(u16, 1, 0xabcd);
    expect(Atomics.load(u16, 1)).toBe(0xabcd);
    expect(bytes[2]).toBe(0xcd);

    const r = rig({ bytes, eventIdx: true });
    r.bytes.set(hdr(), r.off(TXDATA));
    r.bytes.set(frame(80, 6), r.off(TXDATA + 12));
    r.tx.add([[TXDATA, 92]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames[0]!.bytes).toEqual([...frame(80, 6)]);
    expect(r.sink.frames[0]!.view.buffer).toBe(mapping.buffer);
    r.rx.add([], [[RXDATA, 1536]]);
    r.rx.publish();
    expect(r.dev.send(frame(70, 8))).toBe(true);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: 0, len: 82 }]);
  });
});
