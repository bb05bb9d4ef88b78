/**
 * A guest driven by hand in front of the real device: guest memory (a
 * GuestMemory over one Uint8Array), the real VirtioNetDevice with the real
 * Stack behind it, and the driver side of both rings (DriverQueue).
 *
 *  - receive: a pool of `rxPosted` buffers of `rxBufSize` bytes, one
 *    descriptor per chain (as Linux posts mergeable and small buffers), all
 *    posted at start; `collect()` takes used buffers, reassembles frames
 *    (num_buffers with MRG_RXBUF, one buffer each without), parses the
 *    virtio-net header (little-endian) and posts the buffers again;
 *  - transmit: `send()` writes the 12-byte header and the frame into a
 *    transmit area (header in its own descriptor, the frame split into
 *    descriptors at the given offsets), kicks, and takes the used entries.
 *
 * Call `close()` when done (stack, device, eventfds).
 */
import { native } from '../../src/native/index.js';
import { GuestMemory } from '../../src/virtio/guest-memory.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { RX_QUEUE, TX_QUEUE, VirtioNetDevice } from '../../src/virtio/net-device.js';
import { VIRTIO_NET_F_MRG_RXBUF } from '../../src/virtio/features.js';
import { Stack } from '../../src/net/stack.js';
import { CounterSet } from '../../src/net/counters.js';
import { GATEWAY_MAC, parseFrame, type ParsedFrame } from './packets.js';

/** Guest-physical layout of the rig's memory. */
export const RIG_BASE = 0x4000_0000;
const MEM_SIZE = 8 << 20;
const TXQ = RIG_BASE + 0x1000;
const RXQ = RIG_BASE + 0x20000;
/** 3 MiB of transmit buffers from here. */
const TXDATA = RIG_BASE + 0x100000;
/** Receive buffers from here. */
const RXDATA = RIG_BASE + 0x400000;
const HDR_LEN = 12;

/** A virtio-net header (virtio 1.x, 12 bytes); fields left out are 0. */
export interface VnetHdr {
  flags?: number;
  gsoType?: number;
  hdrLen?: number;
  gsoSize?: number;
  csumStart?: number;
  csumOffset?: number;
}

export interface GuestRigOptions {
  /** Features the guest acks. */
  features: bigint;
  /** Receive ring size (default 256). */
  rxQueueSize?: number;
  /** Transmit ring size (default 256). */
  txQueueSize?: number;
  /** Bytes per receive buffer (default 1536, what Linux posts for mergeable buffers at MTU 1500). */
  rxBufSize?: number;
  /** Receive buffers in the pool, all posted at start (default: the ring size). */
  rxPosted?: number;
}

/** A frame the device delivered, with its virtio-net header and the lengths of the buffers it used. */
export interface RigFrame {
  hdr: Required<VnetHdr> & { numBuffers: number };
  frame: Uint8Array;
  buffers: number[];
}

export type GuestRig = Awaited<ReturnType<typeof guestRig>>;

export async function guestRig(options: GuestRigOptions) {
  const { features, rxQueueSize = 256, txQueueSize = 256, rxBufSize = 1536 } = options;
  const rxPosted = options.rxPosted ?? rxQueueSize;
  const bytes = new Uint8Array(MEM_SIZE);
  const memory = new GuestMemory([{ guestAddr: RIG_BASE, size: MEM_SIZE, userAddr: 0x7f00_0000_0000, bytes }]);
  const counters = new CounterSet();
  const fds = [native.eventfdCreate(), native.eventfdCreate()];
  const dev = new VirtioNetDevice({ mac: GATEWAY_MAC, mtu: 1500, sink: { receive() {} }, counters });
  const stack = new Stack({ link: dev, counters, ping: null, logger: () => {} });
  const close = (): void => {
    stack.close();
    dev.reset();
    fds.forEach((fd) => native.close(fd));
  };
  try {
    await stack.start();
  } catch (err) {
    fds.forEach((fd) => native.close(fd));
    throw err;
  }
  dev.attach(stack);
  dev.setAckedFeatures(features);
  dev.setMemory(memory);
  const rxLayout = { size: rxQueueSize, ...DriverQueue.layout(rxQueueSize, RXQ) };
  const txLayout = { size: txQueueSize, ...DriverQueue.layout(txQueueSize, TXQ) };
  const rx = new DriverQueue(bytes, rxLayout, { base: RIG_BASE });
  const tx = new DriverQueue(bytes, txLayout, { base: RIG_BASE });
  dev.startQueue(RX_QUEUE, { ...rxLayout, nextAvail: 0, kickFd: -1, callFd: fds[0]!, eventIdx: false, indirect: true });
  dev.startQueue(TX_QUEUE, { ...txLayout, nextAvail: 0, kickFd: -1, callFd: fds[1]!, eventIdx: false, indirect: true });
  const off = (gpa: number): number => gpa - RIG_BASE;

  // Receive buffers: a pool, every free one posted (one descriptor per chain).
  const stride = (rxBufSize + 0xfff) & ~0xfff;
  if (RXDATA + rxPosted * stride > RIG_BASE + MEM_SIZE) throw new Error(`guestRig: ${rxPosted} buffers of ${rxBufSize} bytes do not fit`);
  const free: number[] = Array.from({ length: rxPosted }, (_, i) => RXDATA + i * stride);
  const rxAddr = new Map<number, number>();
  const postRx = (): void => {
    while (free.length > 0) {
      const gpa = free.pop()!;
      const id = rx.add([], [[gpa, rxBufSize]]);
      if (id === null) {
        free.push(gpa);
        break;
      }
      rxAddr.set(id, gpa);
    }
    rx.publish();
    dev.kick(RX_QUEUE);
  };
  const mergeable = (features & VIRTIO_NET_F_MRG_RXBUF) !== 0n;
  const received: RigFrame[] = [];
  // Used entries with the buffer address they had (ids are reused as soon as postRx adds chains again).
  const pending: Array<{ len: number; gpa: number }> = [];
  /** Take used buffers, reassemble frames (num_buffers), post the buffers again. */
  const collect = (): void => {
    for (const u of rx.takeUsed()) pending.push({ len: u.len, gpa: rxAddr.get(u.id)! });
    while (pending.length > 0) {
      const dv = new DataView(bytes.buffer, off(pending[0]!.gpa), HDR_LEN);
      const numBuffers = mergeable ? dv.getUint16(10, true) : 1;
      if (numBuffers === 0) throw new Error('num_buffers 0');
      if (pending.length < numBuffers) break;
      const parts = pending.splice(0, numBuffers);
      const all = Buffer.concat(parts.map((p) => bytes.subarray(off(p.gpa), off(p.gpa) + p.len)));
      received.push({
        hdr: {
          flags: dv.getUint8(0), gsoType: dv.getUint8(1), hdrLen: dv.getUint16(2, true), gsoSize: dv.getUint16(4, true),
          csumStart: dv.getUint16(6, true), csumOffset: dv.getUint16(8, true), numBuffers,
        },
        frame: new Uint8Array(all.subarray(HDR_LEN)),
        buffers: parts.map((p) => p.len),
      });
      for (const p of parts) free.push(p.gpa);
    }
    postRx();
  };
  /** Received frames carrying TCP, parsed (collects first). */
  const tcpFrames = (): ParsedFrame[] => {
    collect();
    return received.splice(0).map((r) => parseFrame(r.frame)).filter((f) => f.tcp);
  };

  // Transmit: header + frame written at TXDATA, the frame split into descriptors at the given frame offsets.
  let txAt = TXDATA;
  const send = (frame: Uint8Array, hdr: VnetHdr = {}, splits: number[] = []): void => {
    const h = new Uint8Array(HDR_LEN);
    const dv = new DataView(h.buffer);
    dv.setUint8(0, hdr.flags ?? 0);
    dv.setUint8(1, hdr.gsoType ?? 0);
    dv.setUint16(2, hdr.hdrLen ?? 0, true);
    dv.setUint16(4, hdr.gsoSize ?? 0, true);
    dv.setUint16(6, hdr.csumStart ?? 0, true);
    dv.setUint16(8, hdr.csumOffset ?? 0, true);
    if (txAt + HDR_LEN + frame.length + 64 > TXDATA + 0x300000) txAt = TXDATA;
    const hdrGpa = txAt;
    bytes.set(h, off(hdrGpa));
    const frameGpa = hdrGpa + 16;
    bytes.set(frame, off(frameGpa));
    txAt = (frameGpa + frame.length + 64) & ~63;
    const descs: Array<[number, number]> = [[hdrGpa, HDR_LEN]];
    let prev = 0;
    for (const s of [...splits, frame.length]) {
      descs.push([frameGpa + prev, s - prev]);
      prev = s;
    }
    tx.add(descs, []);
    tx.publish();
    dev.kick(TX_QUEUE);
    tx.takeUsed();
  };

  postRx();
  return { bytes, dev, stack, counters, rx, tx, rxLayout, txLayout, send, collect, received, tcpFrames, close };
}
