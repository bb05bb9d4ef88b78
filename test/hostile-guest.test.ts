/**
 * A hostile or odd guest against the real virtio-net device: what it puts in
 * its rings and buffers must never crash us, loop forever, or stall a flow
 * for good.
 *
 *  - receive rings too small for a 64 KiB GSO frame (legal with MRG_RXBUF,
 *    a SHOULD violation without it): the device withdraws GSO and TCP goes
 *    on with MSS-sized frames, driven end to end through the real Stack and
 *    TcpTranslator to a host socket on 127.0.0.1;
 *  - a full ring that can never hold a frame: that frame is dropped and
 *    counted, smaller ones still pass (no stall, no busy loop);
 *  - integer edges in descriptors (len 0, len 2^32-1, a header split byte by
 *    byte, writable descriptors in a transmit chain, readable-only receive
 *    chains);
 *  - ordering: memory unmapped under running rings (detached views), a queue
 *    stopped or reset while a continuation is pending;
 *  - work amplification: every chain of the largest ring naming one indirect
 *    table of thousands of zero-length descriptors; chains returned after
 *    the ones a reservation puts back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../src/native/index.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { DriverQueue } from '../src/virtio/driver-queue.js';
import { RX_QUEUE, RX_WALK_BUDGET, TX_BUDGET, TX_QUEUE, TX_WALK_BUDGET, VirtioNetDevice } from '../src/virtio/net-device.js';
import { MAX_CHAIN_DESCRIPTORS } from '../src/virtio/split-queue.js';
import type { FrameOffload, FrameSink } from '../src/net/link.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_RING_F_INDIRECT_DESC,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_SIZE,
} from '../src/virtio/features.js';
import { CounterSet } from '../src/net/counters.js';
import { GATEWAY_IP, GATEWAY_MAC, guestTcpFrame, parseFrame } from './helpers/packets.js';
import { FLAG, hostPeer, waitFor } from './helpers/tcp-context.js';
import { pattern } from './helpers/prng.js';
import { guestRig, type GuestRig } from './helpers/guest-rig.js';

const BASE = 0x4000_0000;
const MEM_SIZE = 8 << 20;
const TXQ = BASE + 0x1000;
const RXQ = BASE + 0x20000;
const TXDATA = BASE + 0x100000;
const RXDATA = BASE + 0x400000;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const MRG = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4;
const GSO = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4;

/**
 * A guest (device + stack + both rings, driven by hand) whose receive ring
 * has `qsize` entries and posts `posted` buffers of `rxBuf` bytes (one
 * descriptor per chain, as Linux does for mergeable and small buffers).
 */
async function stackRig(features: bigint, qsize: number, rxBuf: number, posted = qsize): Promise<GuestRig> {
  const r = await guestRig({ features, rxQueueSize: qsize, txQueueSize: 256, rxBufSize: rxBuf, rxPosted: posted });
  cleanups.push(r.close);
  return r;
}


/**
 * Connect from the guest, have the host write `data`, and play a guest that
 * takes every frame in order and ACKs it (window 2048 << 7 = 256 KiB).
 * Resolves with the data frames received.
 */
async function transfer(r: GuestRig, port: number, sport: number, data: Uint8Array, ms = 8000) {
  r.send(guestTcpFrame({ dst: GATEWAY_IP, sport, dport: port, seq: 1000, flags: FLAG.SYN, window: 65535, options: { mss: 1460, wscale: 7 } }));
  let synAck: ReturnType<typeof parseFrame> | undefined;
  await waitFor(() => {
    r.collect();
    synAck = r.received.splice(0).map((x) => parseFrame(x.frame)).find((f) => f.tcp?.flags === (FLAG.SYN | FLAG.ACK));
    return synAck !== undefined;
  }, 3000, 'SYN-ACK');
  const iss = synAck!.tcp!.seq;
  let rcvNxt = (iss + 1) >>> 0;
  r.send(guestTcpFrame({ dst: GATEWAY_IP, sport, dport: port, seq: 1001, ack: rcvNxt, flags: FLAG.ACK, window: 2048 }));
  return { iss, done: run() };

  async function run() {
    const got: Uint8Array[] = [];
    const frames: Array<{ gsoType: number; len: number }> = [];
    let total = 0;
    await waitFor(() => {
      r.collect();
      for (const x of r.received.splice(0)) {
        const p = parseFrame(x.frame);
        if (!p.tcp || p.tcp.payload.length === 0) continue;
        frames.push({ gsoType: x.hdr.gsoType, len: p.tcp.payload.length });
        if (p.tcp.seq !== rcvNxt) continue; // out of order: dropped, as a guest would
        got.push(p.tcp.payload.slice());
        total += p.tcp.payload.length;
        rcvNxt = (rcvNxt + p.tcp.payload.length) >>> 0;
        r.send(guestTcpFrame({ dst: GATEWAY_IP, sport, dport: port, seq: 1001, ack: rcvNxt, flags: FLAG.ACK, window: 2048 }));
      }
      return total >= data.length;
    }, ms, `all ${data.length} host bytes`);
    return { bytes: Buffer.concat(got), frames };
  }
}

describe('receive rings too small for a 64 KiB GSO frame', () => {
  it('MRG_RXBUF, 32 buffers of 1536 bytes (48 KiB in all): GSO is withdrawn and TCP goes on with MSS frames', async () => {
    const peer = await hostPeer(cleanups);
    const r = await stackRig(MRG | GSO, 32, 1536);
    expect(r.dev.rxOffloads.tso4).toBe(true);
    const data = pattern(300_000, 3);
    const t = await transfer(r, peer.port, 42001, data);
    await waitFor(() => peer.accepted.length === 1, 3000, 'accept');
    peer.accepted[0]!.write(data);
    const { bytes, frames } = await t.done;
    expect(Buffer.compare(bytes, Buffer.from(data))).toBe(0);
    expect(r.dev.rxOffloads).toEqual({ csum: true, tso4: false, tso6: false });
    expect(r.counters.get('virtio_net.rx.gso_withdrawn')).toBe(1);
    // Every frame that reached the guest fits its ring.
    expect(frames.every((f) => f.len <= 1460 || f.gsoType === VIRTIO_NET_HDR_GSO_TCPV4)).toBe(true);
    expect(Math.max(...frames.map((f) => f.len))).toBeLessThanOrEqual(32 * 1536);
  });

  it('MRG_RXBUF with a ring big enough keeps GSO (no false alarm)', async () => {
    const peer = await hostPeer(cleanups);
    const r = await stackRig(MRG | GSO, 64, 1536);
    const data = pattern(200_000, 4);
    const t = await transfer(r, peer.port, 42002, data);
    await waitFor(() => peer.accepted.length === 1, 3000, 'accept');
    peer.accepted[0]!.write(data);
    const { bytes, frames } = await t.done;
    expect(Buffer.compare(bytes, Buffer.from(data))).toBe(0);
    expect(r.dev.rxOffloads.tso4).toBe(true);
    expect(frames.some((f) => f.gsoType === VIRTIO_NET_HDR_GSO_TCPV4)).toBe(true);
    expect(r.counters.get('virtio_net.rx.gso_withdrawn')).toBe(0);
  });

  it('without MRG_RXBUF, GUEST_TSO4 but 1526-byte chains (a SHOULD violation): GSO is withdrawn instead of dropping every big frame', async () => {
    const peer = await hostPeer(cleanups);
    const r = await stackRig((MRG & ~VIRTIO_NET_F_MRG_RXBUF) | GSO, 64, 1526);
    const data = pattern(100_000, 5);
    const t = await transfer(r, peer.port, 42003, data);
    await waitFor(() => peer.accepted.length === 1, 3000, 'accept');
    peer.accepted[0]!.write(data);
    const { bytes } = await t.done;
    expect(Buffer.compare(bytes, Buffer.from(data))).toBe(0);
    expect(r.dev.rxOffloads.tso4).toBe(false);
    expect(r.counters.get('virtio_net.rx.gso_withdrawn')).toBe(1);
  });
});

// ---- device-level rigs ---------------------------------------------------------

class Sink implements FrameSink {
  frames: Uint8Array[] = [];
  receive(frame: Uint8Array, _offload: FrameOffload | null): void {
    this.frames.push(frame.slice());
  }
}

/** Both rings of `size` entries, the transmit ring at TXQ and the receive ring at `rxAt` (move it for rings over 2048 entries). */
function devRig(features = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_RING_F_INDIRECT_DESC, size = 16, bytes = new Uint8Array(MEM_SIZE), rxAt = RXQ) {
  const memory = new GuestMemory([{ guestAddr: BASE, size: bytes.length, userAddr: 0x7f00_0000_0000, bytes }]);
  const counters = new CounterSet();
  const sink = new Sink();
  const dev = new VirtioNetDevice({ mac: GATEWAY_MAC, mtu: 1500, sink, counters });
  const broken: string[] = [];
  dev.onBroken = (_q, reason) => broken.push(reason);
  dev.setAckedFeatures(features);
  dev.setMemory(memory);
  const rxLayout = { size, ...DriverQueue.layout(size, rxAt) };
  const txLayout = { size, ...DriverQueue.layout(size, TXQ) };
  const rx = new DriverQueue(bytes, rxLayout, { base: BASE });
  const tx = new DriverQueue(bytes, txLayout, { base: BASE });
  dev.startQueue(RX_QUEUE, { ...rxLayout, nextAvail: 0, kickFd: -1, callFd: -1, eventIdx: false, indirect: true });
  dev.startQueue(TX_QUEUE, { ...txLayout, nextAvail: 0, kickFd: -1, callFd: -1, eventIdx: false, indirect: true });
  cleanups.push(() => dev.reset());
  return { dev, counters, sink, broken, rx, tx, bytes, off: (gpa: number) => gpa - BASE };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('a full receive ring that can never hold a frame', () => {
  it('MRG_RXBUF, 4 buffers of 256 bytes: a 1514-byte frame is dropped and counted (not back-pressure forever); small frames pass', () => {
    const r = devRig(undefined, 4);
    for (let i = 0; i < 4; i++) r.rx.add([], [[RXDATA + i * 0x1000, 256]]);
    r.rx.publish();
    let writable = 0;
    r.dev.onWritable(() => writable++);
    const v = r.dev.reserve(1514);
    expect(v).not.toBeNull(); // accepted ...
    r.dev.commit(1514); // ... and dropped here
    expect(r.counters.get('virtio_net.rx.drop.frame_too_big_for_buffers')).toBe(1);
    expect(r.dev.stats.rxBackpressure).toBe(0);
    expect(r.dev.queue(RX_QUEUE)!.nextAvail).toBe(0); // no buffer used
    // A frame that fits still goes through.
    expect(r.dev.send(pattern(600, 1))).toBe(true);
    r.dev.flush();
    expect(r.rx.takeUsed().map((u) => u.len)).toEqual([256, 256, 600 + 12 - 512]);
  });

  it('a ring not yet full is back-pressure as before (the guest may still post)', () => {
    const r = devRig(undefined, 8);
    for (let i = 0; i < 4; i++) r.rx.add([], [[RXDATA + i * 0x1000, 256]]);
    r.rx.publish();
    expect(r.dev.reserve(1514)).toBeNull();
    expect(r.dev.stats.rxBackpressure).toBe(1);
    expect(r.counters.get('virtio_net.rx.drop.frame_too_big_for_buffers')).toBe(0);
  });
});

describe('descriptor integer edges (transmit)', () => {
  function sendChain(r: ReturnType<typeof devRig>, descs: Array<[number, number, boolean?]>): void {
    const q = r.tx;
    const readable = descs.filter((d) => !d[2]).map((d): [number, number] => [d[0], d[1]]);
    const writable = descs.filter((d) => d[2]).map((d): [number, number] => [d[0], d[1]]);
    q.add(readable, writable);
    q.publish();
    r.dev.kick(TX_QUEUE);
  }

  it('a header split byte by byte with zero-length descriptors between (within the queue size): delivered intact', () => {
    const r = devRig(undefined, 64);
    const frame = pattern(200, 9);
    r.bytes.set(frame, r.off(TXDATA + 0x100));
    const descs: Array<[number, number]> = [];
    for (let i = 0; i < 12; i++) descs.push([TXDATA + i, 1], [TXDATA + 0x80, 0]);
    descs.push([TXDATA + 0x100, 100], [TXDATA + 0x80, 0], [TXDATA + 0x100 + 100, 100]);
    sendChain(r, descs);
    expect(r.broken).toEqual([]);
    expect(r.sink.frames).toHaveLength(1);
    expect([...r.sink.frames[0]!]).toEqual([...frame]);
  });

  it('a descriptor of length 2^32-1: the chain is handed back unused and the ring goes on', () => {
    const r = devRig();
    sendChain(r, [[TXDATA, 12], [TXDATA + 0x100, 0xffff_ffff]]);
    expect(r.broken).toEqual([]);
    expect(r.sink.frames).toHaveLength(0);
    expect(r.dev.queue(TX_QUEUE)!.droppedChains).toBe(1);
    expect(r.tx.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    r.bytes.set(pattern(60, 2), r.off(TXDATA + 0x200 + 12));
    sendChain(r, [[TXDATA + 0x200, 72]]);
    expect(r.sink.frames).toHaveLength(1);
  });

  it('device-writable descriptors in a transmit chain are not part of the frame; a writable-only chain is a runt', () => {
    const r = devRig();
    r.bytes.set(pattern(60, 3), r.off(TXDATA + 12));
    sendChain(r, [[TXDATA, 72], [TXDATA + 0x1000, 500, true]]);
    expect(r.sink.frames).toHaveLength(1);
    expect(r.sink.frames[0]!.length).toBe(60);
    sendChain(r, [[TXDATA + 0x2000, 1500, true]]);
    expect(r.sink.frames).toHaveLength(1);
    expect(r.counters.get('virtio_net.tx.drop.runt')).toBe(1);
    expect(r.broken).toEqual([]);
  });
});

describe('descriptor integer edges (receive)', () => {
  it('readable-only chains and chains shorter than the header are handed back; a good one after them is used', () => {
    const r = devRig();
    r.rx.add([[RXDATA, 2048]], []); // readable only
    r.rx.add([], [[RXDATA + 0x1000, 11]]); // shorter than the 12-byte header
    r.rx.add([], [[RXDATA + 0x2000, 0]]); // zero length
    r.rx.add([], [[RXDATA + 0x3000, 2048]]);
    r.rx.publish();
    expect(r.dev.send(pattern(100, 4))).toBe(true);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([
      { id: 0, len: 0 },
      { id: 1, len: 0 },
      { id: 2, len: 0 },
      { id: 3, len: 112 },
    ]);
    expect(r.counters.get('virtio_net.rx.drop.buffer_too_small')).toBe(3);
    expect(r.broken).toEqual([]);
  });

  for (const [name, features, hdrLen] of [
    ['12-byte header (VERSION_1)', VIRTIO_F_VERSION_1, 12],
    ['10-byte legacy header', 0n, 10],
  ] as const) {
    it(`${name} split over writable descriptors of 5 and the rest: frame zero-copy in the third, header scattered`, () => {
      const r = devRig(features);
      r.bytes.fill(0xee, r.off(RXDATA), r.off(RXDATA) + 0x3000);
      r.rx.add([], [[RXDATA, 5], [RXDATA + 0x1000, hdrLen - 5], [RXDATA + 0x2000, 200]]);
      r.rx.publish();
      const v = r.dev.reserve(150)!;
      expect(v.byteOffset).toBe(r.off(RXDATA + 0x2000));
      v.set(pattern(150, 7));
      r.dev.commit(150);
      r.dev.flush();
      expect(r.rx.takeUsed()).toEqual([{ id: 0, len: hdrLen + 150 }]);
      const header = [...r.bytes.subarray(r.off(RXDATA), r.off(RXDATA) + 5), ...r.bytes.subarray(r.off(RXDATA + 0x1000), r.off(RXDATA + 0x1000) + hdrLen - 5)];
      expect(header).toEqual(hdrLen === 12 ? [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0] : new Array(10).fill(0));
      expect(r.bytes[r.off(RXDATA + 0x1000) + hdrLen - 5]).toBe(0xee); // nothing written past the header part
    });
  }

  it('a writable chain with a readable descriptor after it breaks the ring (spec order), and reserve stays safe', () => {
    const r = devRig();
    r.rx.writeDescriptor(0, RXDATA, 2048, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    r.rx.writeDescriptor(1, RXDATA + 0x1000, 100, 0, 0);
    r.rx.pushAvail(0);
    r.rx.setAvailIdx(1);
    expect(r.dev.reserve(100)).toBeNull();
    expect(r.broken).toHaveLength(1);
    expect(r.dev.reserve(100)).toBeNull();
    expect(r.dev.send(pattern(60, 1))).toBe(false);
    r.dev.flush();
  });
});

describe('ordering', () => {
  it('guest memory unmapped under running rings (views detached): nothing throws or loops; the rings stop', () => {
    const size = 1 << 20;
    const memfd = native.memfdCreate('hostile-detach', size);
    cleanups.push(() => native.close(memfd));
    const mapping = native.mmap(memfd, size, 0);
    const bytes = new Uint8Array(mapping.buffer);
    const base = BASE;
    const memory = new GuestMemory([{ guestAddr: base, size, userAddr: 0x7f00_0000_0000, bytes }]);
    const counters = new CounterSet();
    const sink = new Sink();
    const dev = new VirtioNetDevice({ mac: GATEWAY_MAC, mtu: 1500, sink, counters });
    const broken: number[] = [];
    dev.onBroken = (q) => broken.push(q);
    dev.setAckedFeatures(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
    dev.setMemory(memory);
    const rxLayout = { size: 16, ...DriverQueue.layout(16, base + 0x1000) };
    const txLayout = { size: 16, ...DriverQueue.layout(16, base + 0x4000) };
    const rx = new DriverQueue(bytes, rxLayout, { base });
    const tx = new DriverQueue(bytes, txLayout, { base });
    dev.startQueue(RX_QUEUE, { ...rxLayout, nextAvail: 0, kickFd: -1, callFd: -1, eventIdx: false, indirect: false });
    dev.startQueue(TX_QUEUE, { ...txLayout, nextAvail: 0, kickFd: -1, callFd: -1, eventIdx: false, indirect: false });
    rx.add([], [[base + 0x10000, 2048]]);
    rx.publish();
    tx.add([[base + 0x20000, 100]], []);
    tx.publish();
    // Open a reservation (a view into the mapping), then pull the memory away
    // without telling the device (a bug elsewhere must not become a crash).
    const v = dev.reserve(100)!;
    expect(v.buffer).toBe(mapping.buffer);
    native.munmap(mapping);
    expect(v.length).toBe(0);
    expect(() => {
      dev.commit(100);
      dev.kick(TX_QUEUE);
      dev.kick(RX_QUEUE);
      expect(dev.reserve(60)).toBeNull();
      dev.flush();
      dev.stopQueue(RX_QUEUE);
      dev.stopQueue(TX_QUEUE);
      dev.reset();
    }).not.toThrow();
    expect(broken.length).toBeGreaterThan(0);
    expect(sink.frames).toHaveLength(0);
  });

  it('stopQueue while a transmit continuation is pending: nothing runs after the stop', async () => {
    const r = devRig(undefined, 2048);
    r.bytes.set(pattern(60, 1), r.off(TXDATA + 12));
    // More chains than one turn's budget.
    for (let i = 0; i < TX_BUDGET + 10; i++) r.tx.add([[TXDATA, 72]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(TX_BUDGET);
    const base = r.dev.stopQueue(TX_QUEUE);
    expect(base).toBe(TX_BUDGET);
    await tick();
    await tick();
    expect(r.sink.frames).toHaveLength(TX_BUDGET);
  });

  it('reset with an automatic flush and a withdrawn-GSO retry pending: nothing fires into the next session', async () => {
    const r = devRig(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | GSO, 4);
    for (let i = 0; i < 4; i++) r.rx.add([], [[RXDATA + i * 0x1000, 1536]]);
    r.rx.publish();
    let writable = 0;
    r.dev.onWritable(() => writable++);
    expect(r.dev.reserve(30000)).toBeNull(); // full ring too small: GSO withdrawn, retry scheduled
    expect(r.dev.rxOffloads.tso4).toBe(false);
    expect(r.dev.send(pattern(60, 1))).toBe(true); // schedules the automatic flush
    r.dev.reset();
    const used = r.rx.readUsedIdx();
    await tick();
    await tick();
    expect(writable).toBe(0);
    expect(r.rx.readUsedIdx()).toBe(used); // the pending flush touched nothing after the reset
  });
});

describe('link back-pressure across ring stops (VM stop/cont, SET_VRING_ENABLE 0/1, reconnect)', () => {
  it('reserve refused while the receive ring is stopped or disabled: onWritable runs once it runs again with buffers', async () => {
    const r = devRig();
    let writable = 0;
    r.dev.onWritable(() => writable++);
    r.rx.add([], [[RXDATA, 2048]]);
    r.rx.publish();
    // Stopped (GET_VRING_BASE), the stack tries to send, then the ring restarts.
    const base = r.dev.stopQueue(RX_QUEUE);
    expect(r.dev.reserve(100)).toBeNull();
    const rxLayout = { size: 16, ...DriverQueue.layout(16, RXQ) };
    r.dev.startQueue(RX_QUEUE, { ...rxLayout, nextAvail: base, kickFd: -1, callFd: -1, eventIdx: false, indirect: true });
    await tick();
    expect(writable).toBe(1);
    expect(r.dev.send(pattern(60, 1))).toBe(true);
    // Disabled, then enabled again.
    r.dev.enableQueue(RX_QUEUE, false);
    expect(r.dev.reserve(100)).toBeNull();
    r.rx.add([], [[RXDATA + 0x1000, 2048]]);
    r.rx.publish();
    r.dev.enableQueue(RX_QUEUE, true);
    await tick();
    expect(writable).toBe(2);
    expect(r.dev.send(pattern(60, 2))).toBe(true);
  });

  it('a TCP download blocked while the VM is stopped resumes when it continues', async () => {
    const peer = await hostPeer(cleanups);
    const r = await stackRig(MRG | GSO, 256, 1536, 64);
    const data = pattern(400_000, 6);
    const t = await transfer(r, peer.port, 42010, data);
    await waitFor(() => peer.accepted.length === 1, 3000, 'accept');
    // VM stopped before the host sends: QEMU's GET_VRING_BASE on both rings.
    const rxBase = r.dev.stopQueue(RX_QUEUE);
    peer.accepted[0]!.write(data);
    await waitFor(() => r.counters.get('tcp.link.backpressure') > 0, 3000, 'back-pressure');
    await new Promise((res) => setTimeout(res, 50));
    // VM continues: the ring restarts where it stopped.
    r.dev.startQueue(RX_QUEUE, { ...r.rxLayout, nextAvail: rxBase, kickFd: -1, callFd: -1, eventIdx: false, indirect: true });
    const { bytes } = await t.done;
    expect(Buffer.compare(bytes, Buffer.from(data))).toBe(0);
  });
});

describe('work amplification through indirect tables (largest queue size)', () => {
  const SIZE = VIRTQ_MAX_SIZE;
  // Two 32768-entry rings: transmit at TXQ (to 0xd1006), receive here (to 0x2d0006); the table after it.
  const BIG_RXQ = BASE + 0x200000;
  const TABLE = BASE + 0x2e0000;
  /** Walk cost of one chain at most: its INDIRECT descriptor, the cap, and the one over it. */
  const CHAIN_WALK = MAX_CHAIN_DESCRIPTORS + 2;

  /** Every descriptor of `q` an INDIRECT one naming one table of `n` zero-length descriptors chained by NEXT, all made available. */
  function amplificationRing(q: DriverQueue, n: number, flags: number): void {
    for (let k = 0; k < n; k++) {
      const last = k === n - 1;
      q.writeDescriptorAt(TABLE + k * VIRTQ_DESC_SIZE, RXDATA, 0, flags | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : k + 1);
    }
    for (let i = 0; i < SIZE; i++) {
      q.writeDescriptor(i, TABLE, n * VIRTQ_DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      q.pushAvail(i);
    }
    q.publish();
  }

  /** Every chain came back once, in ring order, used length 0. */
  function expectAllReturnedUnused(q: DriverQueue): void {
    const used = q.takeUsed();
    expect(used).toHaveLength(SIZE);
    expect(used.filter((u, i) => u.id !== i || u.len !== 0)).toEqual([]);
  }

  it('transmit: chains over the cap are handed back and counted, each walked only up to the cap, the walk budget holds per turn; real frames pass after', async () => {
    const r = devRig(undefined, SIZE, undefined, BIG_RXQ);
    amplificationRing(r.tx, 4096, 0);
    const q = r.dev.queue(TX_QUEUE)!;
    const perTurn: number[] = [];
    let before = q.descriptorsWalked;
    r.dev.kick(TX_QUEUE);
    expect(r.counters.get('virtio_net.tx.drop.too_many_descriptors')).toBeGreaterThan(0);
    perTurn.push(q.descriptorsWalked - before);
    // The device goes on by itself, one continuation per turn.
    while (q.nextAvail !== (SIZE & 0xffff) && perTurn.length <= SIZE) {
      before = q.descriptorsWalked;
      await tick();
      perTurn.push(q.descriptorsWalked - before);
    }
    expect(q.nextAvail).toBe(SIZE & 0xffff);
    expect(r.counters.get('virtio_net.tx.drop.too_many_descriptors')).toBe(SIZE);
    expect(q.droppedTooManyDescriptors).toBe(SIZE);
    expect(q.descriptorsWalked).toBe(SIZE * CHAIN_WALK);
    expect(Math.max(...perTurn)).toBeLessThanOrEqual(TX_WALK_BUDGET + CHAIN_WALK);
    expect(perTurn.length).toBeGreaterThanOrEqual(Math.ceil((SIZE * CHAIN_WALK) / (TX_WALK_BUDGET + CHAIN_WALK)));
    expectAllReturnedUnused(r.tx);
    expect(r.sink.frames).toHaveLength(0);
    expect(r.broken).toEqual([]);
    // A real frame, header and data in two descriptors, after all that.
    r.bytes.set(pattern(60, 5), r.off(TXDATA + 12));
    r.tx.add([[TXDATA, 12], [TXDATA + 12, 60]], []);
    r.tx.publish();
    r.dev.kick(TX_QUEUE);
    expect(r.sink.frames).toHaveLength(1);
    expect([...r.sink.frames[0]!]).toEqual([...pattern(60, 5)]);
  });

  it('receive: chains over the cap are handed back and counted, reserve walks at most the budget per turn and yields; real frames pass after', async () => {
    const r = devRig(undefined, SIZE, undefined, BIG_RXQ);
    amplificationRing(r.rx, 1024, VIRTQ_DESC_F_WRITE);
    const q = r.dev.queue(RX_QUEUE)!;
    const perCall: number[] = [];
    const views: Array<Uint8Array | null> = [];
    const attempt = (): void => {
      const before = q.descriptorsWalked;
      views.push(r.dev.reserve(100));
      perCall.push(q.descriptorsWalked - before);
    };
    r.dev.onWritable(attempt);
    attempt();
    expect(r.counters.get('virtio_net.rx.drop.too_many_descriptors')).toBeGreaterThan(0);
    // Refused, retried by the device on the next turn, until a retry finds the ring empty (and waits for a kick).
    await waitFor(() => r.rx.readUsedIdx() === (SIZE & 0xffff) && perCall.at(-1) === 0, 10_000, 'every receive chain handed back');
    expect(views.every((v) => v === null)).toBe(true);
    expect(r.counters.get('virtio_net.rx.drop.too_many_descriptors')).toBe(SIZE);
    expect(q.descriptorsWalked).toBe(SIZE * CHAIN_WALK);
    expect(Math.max(...perCall)).toBeLessThanOrEqual(RX_WALK_BUDGET + CHAIN_WALK);
    expect(r.counters.get('virtio_net.rx.walk_yield')).toBeGreaterThanOrEqual(Math.floor((SIZE * CHAIN_WALK) / (RX_WALK_BUDGET + CHAIN_WALK)));
    expectAllReturnedUnused(r.rx);
    expect(r.broken).toEqual([]);
    // The guest posts a real buffer and kicks: the frame goes in.
    r.rx.add([], [[RXDATA, 2048]]);
    r.rx.publish();
    r.dev.kick(RX_QUEUE);
    const view = views.at(-1);
    expect(view).not.toBeNull();
    view!.set(pattern(100, 6));
    r.dev.commit(100);
    r.dev.flush();
    expect(r.rx.takeUsed()).toEqual([{ id: 0, len: 112 }]);
    expect([...r.bytes.subarray(r.off(RXDATA) + 12, r.off(RXDATA) + 112)]).toEqual([...pattern(100, 6)]);
  });

  it('receive, MRG_RXBUF: a reservation put back after a too-small chain was returned gives its chains back once (no chain returned twice, none lost)', async () => {
    const r = devRig();
    const a = r.rx.add([], [[RXDATA, 1024]])!;
    const small = r.rx.add([[RXDATA + 0x1000, 100]], [])!; // readable only: no room at all
    r.rx.publish();
    // A frame needing two buffers: a, then small (handed back), then nothing.
    expect(r.dev.reserve(1500)).toBeNull();
    await tick();
    expect(r.rx.readUsedIdx()).toBe(2); // both handed back, published at the end of the turn
    const b = r.rx.add([], [[RXDATA + 0x2000, 1024]])!;
    const c = r.rx.add([], [[RXDATA + 0x3000, 1024]])!;
    r.rx.publish();
    r.dev.kick(RX_QUEUE);
    const v = r.dev.reserve(1500);
    expect(v).not.toBeNull();
    r.dev.commit(1500);
    r.dev.flush();
    const used = r.rx.takeUsed();
    expect(r.rx.badUsed).toBe(0); // no id returned that was not in flight (e.g. twice)
    expect(used.map((u) => u.id).sort()).toEqual([a, small, b, c].sort());
    expect(used.filter((u) => u.id === b || u.id === c).map((u) => u.len)).toEqual([1024, 1512 - 1024]);
    expect(r.counters.get('virtio_net.rx.returned_unused')).toBe(1);
  });
});
