/**
 * Random descriptor tables and rings thrown at the device side of a split
 * queue and at the virtio-net device: nothing throws, and the invariants
 * hold (used.idx never moves further than what was popped, popped chains
 * lie inside guest memory with readable segments first, broken queues stay
 * stopped and never write the used index again).
 *
 * Deterministic (seeded PRNG): a failure names its seed. The ring harness
 * and its model are in helpers/split-queue-model.ts (shared with the
 * coverage-guided fuzz target).
 */
import { describe, it, expect, afterAll } from 'vitest';
import { native } from '../src/native/index.js';
import { GuestMemory } from '../src/virtio/guest-memory.js';
import { DriverQueue } from '../src/virtio/driver-queue.js';
import { RX_QUEUE, TX_QUEUE, VirtioNetDevice } from '../src/virtio/net-device.js';
import type { FrameOffload } from '../src/net/link.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MRG_RXBUF,
} from '../src/virtio/features.js';
import { mulberry32 } from './helpers/prng.js';
import { BASE, MEM, exerciseSplitQueue, scribble, world } from './helpers/split-queue-model.js';

describe('fuzz: SplitQueue with random rings', () => {
  it('never throws; used.idx never passes what was popped; broken stays broken', () => {
    let checks = 0;
    let tooManyDescriptors = 0;
    for (let seed = 1; seed <= 300; seed++) {
      try {
        tooManyDescriptors += exerciseSplitQueue(mulberry32(seed), 120);
        checks++;
      } catch (err) {
        throw new Error(`seed ${seed}: ${(err as Error).message}`);
      }
    }
    expect(checks).toBe(300);
    expect(tooManyDescriptors).toBeGreaterThan(0); // the descriptor cap is exercised
  }, 60_000);
});

const fds: number[] = [];
afterAll(() => {
  for (const fd of fds) native.close(fd);
});

describe('fuzz: VirtioNetDevice with random rings', () => {
  it('never throws; frames handed to the sink have sane lengths; broken queues stay stopped', () => {
    const callFd = native.eventfdCreate();
    fds.push(callFd);
    const badFrames: number[] = [];
    let frames = 0;
    let rxFrames = 0;
    for (let seed = 1000; seed < 1200; seed++) {
      const w = world(mulberry32(seed));
      const rxBytes = w.bytes;
      // The rx ring sits after the tx ring area.
      const rxLayout = { size: w.size, ...DriverQueue.layout(w.size, BASE + 0x1e000 - w.size * 32) };
      const rxDrv = new DriverQueue(rxBytes, rxLayout, { base: BASE, eventIdx: w.drv.eventIdx });
      const sink = {
        // (The device catches exceptions from the sink, so record, don't throw.)
        receive(frame: Uint8Array, _offload: FrameOffload | null): void {
          if (frame.length < 14 || frame.length > 1518) badFrames.push(frame.length);
          frames++;
        },
      };
      const dev = new VirtioNetDevice({ mac: new Uint8Array(6), mtu: 1500, sink });
      const broken: number[] = [];
      dev.onBroken = (i) => broken.push(i);
      dev.setAckedFeatures(VIRTIO_F_VERSION_1 | (w.rand() < 0.5 ? VIRTIO_NET_F_MRG_RXBUF : 0n));
      dev.setMemory(w.memory);
      const eventIdx = w.drv.eventIdx;
      dev.startQueue(TX_QUEUE, { ...w.layout, nextAvail: w.drv.availIdx, kickFd: -1, callFd, eventIdx, indirect: true });
      dev.startQueue(RX_QUEUE, { ...rxLayout, nextAvail: 0, kickFd: -1, callFd, eventIdx, indirect: true });
      try {
        for (let step = 0; step < 60; step++) {
          const op = w.int(6);
          if (op < 3) scribble(w);
          else if (op < 4) expect(() => dev.kick(TX_QUEUE)).not.toThrow();
          else if (op < 5) {
            if (w.rand() < 0.5) rxDrv.add([], [[BASE + 0x4000 + w.int(0x8000), w.int(3000)]]);
            else rxDrv.writeDescriptor(w.int(w.size), BASE + w.int(MEM * 2), w.int(4000), w.int(8), w.int(w.size + 1));
            if (w.rand() < 0.3) rxDrv.pushAvail(w.int(w.size));
            rxDrv.publish();
          } else {
            const len = 1 + w.int(1600);
            const v = dev.reserve(len);
            if (v !== null) {
              expect(v.length).toBe(len);
              if (w.rand() < 0.8) dev.commit(w.int(len + 1));
              else dev.abort();
            }
            if (w.rand() < 0.5) dev.flush();
          }
          for (const i of [RX_QUEUE, TX_QUEUE]) {
            const q = dev.queue(i)!;
            expect(q.usedCount).toBeLessThanOrEqual(q.popped);
          }
        }
        expect(new Set(broken).size).toBe(broken.length); // each queue reported at most once
      } catch (err) {
        throw new Error(`seed ${seed}: ${(err as Error).message}`);
      } finally {
        rxFrames += dev.stats.rxFrames;
        dev.reset();
      }
    }
    expect(badFrames).toEqual([]);
    expect(frames).toBeGreaterThan(0); // the fuzz does reach the sink
    expect(rxFrames).toBeGreaterThan(0);
    native.eventfdDrain(callFd);
  }, 60_000);
});

describe('fuzz: VirtioNetDevice lifecycle, offloads and memory swaps', () => {
  it('never throws under random features, GSO-sized reservations, offloaded commits, memory swaps, stops and restarts', () => {
    const callFd = native.eventfdCreate();
    fds.push(callFd);
    const badFrames: number[] = [];
    let frames = 0;
    let restarts = 0;
    let withdrawn = 0;
    for (let seed = 5000; seed < 5150; seed++) {
      const w = world(mulberry32(seed));
      // Random bytes in the buffer area: transmit headers carry random flags, GSO types and offsets.
      for (let i = 0x4000; i < 0xc000; i++) w.bytes[i] = w.rand() < 0.5 ? 0 : w.int(256);
      const other = new GuestMemory([{ guestAddr: BASE, size: MEM / 2, userAddr: 0, bytes: w.bytes.subarray(0, MEM / 2) }]);
      const rxLayout = { size: w.size, ...DriverQueue.layout(w.size, BASE + 0x1e000 - w.size * 32) };
      const rxDrv = new DriverQueue(w.bytes, rxLayout, { base: BASE, eventIdx: w.drv.eventIdx });
      const sink = {
        receive(frame: Uint8Array, _offload: FrameOffload | null): void {
          if (frame.length < 14 || frame.length > 65535 + 18) badFrames.push(frame.length);
          frames++;
        },
      };
      const counters = new Map<string, number>();
      const dev = new VirtioNetDevice({
        mac: new Uint8Array(6),
        mtu: 1500,
        sink,
        counters: { count: (n: string, k = 1) => void counters.set(n, (counters.get(n) ?? 0) + k), snapshot: () => Object.fromEntries(counters) },
      });
      let writable = 0;
      dev.onWritable(() => writable++);
      const pick = (bits: bigint[]): bigint => bits.reduce((a, b) => (w.rand() < 0.6 ? a | b : a), 0n);
      const features = (): bigint =>
        pick([VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4]);
      dev.setAckedFeatures(features());
      dev.setMemory(w.memory);
      const eventIdx = w.drv.eventIdx;
      const bases = [0, w.drv.availIdx];
      const start = (i: number): void =>
        dev.startQueue(i, { ...(i === TX_QUEUE ? w.layout : rxLayout), nextAvail: bases[i]!, kickFd: -1, callFd, eventIdx, indirect: true });
      start(TX_QUEUE);
      start(RX_QUEUE);
      try {
        for (let step = 0; step < 80; step++) {
          const op = w.int(12);
          if (op < 3) scribble(w);
          else if (op < 4) dev.kick(TX_QUEUE);
          else if (op < 6) {
            for (let k = 1 + w.int(8); k > 0; k--) rxDrv.add([], [[BASE + 0x4000 + w.int(0x7000), w.int(5000)]]);
            rxDrv.publish();
            dev.kick(RX_QUEUE);
          } else if (op < 8) {
            const len = w.rand() < 0.5 ? 1 + w.int(1600) : 1 + w.int(65535 + 40);
            const v = dev.reserve(len);
            if (v !== null) {
              expect(v.length).toBe(len);
              const r = w.rand();
              if (r < 0.4) dev.commit(w.int(len + 1));
              else if (r < 0.8) {
                dev.commit(w.int(len + 1), {
                  needsCsum: w.rand() < 0.7,
                  dataValid: w.rand() < 0.2,
                  csumStart: w.int(0x10000),
                  csumOffset: w.int(0x10000),
                  gsoType: [0, 1, 3, 4, 5, 0x81, w.int(256)][w.int(7)]!,
                  gsoSize: w.int(0x10000),
                  hdrLen: w.int(0x10000),
                });
              } else dev.abort();
            }
            if (w.rand() < 0.3) dev.flush();
          } else if (op < 9) {
            // Memory swapped, withdrawn, restored (the session's SET_MEM_TABLE / REM_MEM_REG).
            const r = w.rand();
            dev.setMemory(r < 0.3 ? null : r < 0.5 ? other : w.memory);
            if (r < 0.5 && w.rand() < 0.7) dev.setMemory(w.memory);
          } else if (op < 10) {
            // GET_VRING_BASE then a restart at the returned base (the ring may be broken).
            const i = w.int(2);
            bases[i] = dev.stopQueue(i);
            if (w.rand() < 0.8) {
              start(i);
              restarts++;
            }
          } else if (op < 11) {
            dev.enableQueue(w.int(2), w.rand() < 0.7);
          } else {
            if (w.rand() < 0.2) {
              dev.reset();
              dev.setAckedFeatures(features());
              bases[0] = 0;
              bases[1] = w.drv.availIdx;
              start(TX_QUEUE);
              start(RX_QUEUE);
            } else {
              dev.setAckedFeatures(features());
            }
          }
          const o = dev.rxOffloads;
          expect(!(o.tso4 || o.tso6) || o.csum).toBe(true);
          for (const i of [RX_QUEUE, TX_QUEUE]) {
            const q = dev.queue(i);
            if (q === null) continue;
            expect(q.usedCount).toBeLessThanOrEqual(q.popped);
            expect(q.inFlight).toBeLessThanOrEqual(q.size);
          }
        }
      } catch (err) {
        throw new Error(`seed ${seed}: ${(err as Error).message}`);
      } finally {
        withdrawn += counters.get('virtio_net.rx.gso_withdrawn') ?? 0;
        dev.reset();
      }
    }
    expect(badFrames).toEqual([]);
    expect(frames).toBeGreaterThan(0);
    expect(restarts).toBeGreaterThan(50);
    expect(withdrawn).toBeGreaterThan(0); // small random rings met GSO-sized frames
    native.eventfdDrain(callFd);
  }, 60_000);
});
