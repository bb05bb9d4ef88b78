/**
 * The split-ring fuzz harness shared by the seeded fuzz test
 * (test/fuzz-split-queue.test.ts) and the coverage-guided fuzz target
 * (test/fuzz/targets/split-queue.ts): a driver-side ring in an ArrayBuffer
 * (DriverQueue) that a random source scribbles on — plausible descriptors,
 * corrupt ones, indirect tables, avail indices past the ring — and an
 * independent, deliberately plain model of what popping must give (`refPop`,
 * the spec rules as documented in split-queue.ts, read straight from the
 * bytes). `exerciseSplitQueue` runs the device side against it step by step
 * and throws when the queue and the model disagree or an invariant breaks
 * (used.idx never moves further than what was popped, popped chains lie in
 * guest memory with readable segments first and within the chain cap,
 * broken queues stay stopped and never write the used index again).
 *
 * Everything random comes from the `rand` given (values in [0, 1)): a seeded
 * PRNG in the test, the fuzzer's input bytes in the fuzz target.
 */
import { GuestMemory } from '../../src/virtio/guest-memory.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { DescriptorChain, SplitQueue } from '../../src/virtio/split-queue.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/virtio/features.js';

/** Guest memory: MEM bytes at guest-physical address BASE. */
export const BASE = 0x20000;
export const MEM = 0x20000;

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

export interface World {
  /** How often this world produces corrupt things (0..0.1): most worlds run long before breaking. */
  chaos: number;
  /** The device's next available index (so the driver does not overfill the ring unless chaos says so). */
  consumed: () => number;
  rand: () => number;
  int: (n: number) => number;
  bytes: Uint8Array;
  memory: GuestMemory;
  size: number;
  drv: DriverQueue;
  layout: { size: number; descAddr: number; availAddr: number; usedAddr: number };
}

export function world(rand: () => number): World {
  const int = (n: number): number => Math.floor(rand() * n);
  const size = 1 << int(7); // 1..64
  const bytes = new Uint8Array(MEM);
  const memory = new GuestMemory([{ guestAddr: BASE, size: MEM, userAddr: 0, bytes }]);
  const layout = { size, ...DriverQueue.layout(size, BASE + 16 * int(8)) };
  const drv = new DriverQueue(bytes, layout, { base: BASE, eventIdx: rand() < 0.5, startIndex: int(3) === 0 ? 65536 - int(8) : int(65536) });
  // Start from a table of plausible single descriptors.
  for (let i = 0; i < size; i++) drv.writeDescriptor(i, BASE + 0x4000 + int(0x8000), int(1600), rand() < 0.5 ? VIRTQ_DESC_F_WRITE : 0, 0);
  return { chaos: rand() * 0.1, consumed: () => drv.availIdx, rand, int, bytes, memory, size, drv, layout };
}

/** A random but often plausible descriptor. */
function randomDescriptor(w: World): [addr: number, len: number, flags: number, next: number] {
  const c = w.chaos;
  const r = w.rand();
  const addr =
    r >= c ? BASE + 0x4000 + w.int(0x8000) : r < c / 3 ? w.int(2) * 2 ** 40 + w.int(BASE * 4) : r < (2 * c) / 3 ? 2 ** 53 + w.int(1000) : BASE + MEM - w.int(64);
  const len = w.rand() >= c ? w.int(2048) : w.int(2 ** 32);
  let flags = 0;
  if (w.rand() < 0.3) flags |= VIRTQ_DESC_F_NEXT;
  if (w.rand() < 0.4) flags |= VIRTQ_DESC_F_WRITE;
  if (w.rand() < 0.1) flags |= VIRTQ_DESC_F_INDIRECT;
  if (w.rand() < c / 5) flags |= w.int(0x10000);
  const rn = w.rand();
  const next = rn < c ? w.int(0x10000) : rn < c + 0.05 ? w.size : w.int(w.size); // boundary value: one past the table
  // An indirect descriptor (here: maybe nested) usually gets a plausible table length.
  // and points at the area where tables of plausible descriptors are built.
  const plausible = (flags & VIRTQ_DESC_F_INDIRECT) !== 0 && w.rand() < 0.7;
  const l = plausible ? 16 * (1 + w.int(w.size)) : len;
  const a = plausible ? BASE + 0xc000 + 16 * w.int(256) : addr;
  return [a, l, flags, next];
}

export function scribble(w: World): void {
  const op = w.int(10);
  if (op < 4) {
    const [a, l, f, n] = randomDescriptor(w);
    if (f & VIRTQ_DESC_F_INDIRECT) {
      // Point at a table we fill with random descriptors, length often sane.
      const entries = 1 + w.int(Math.max(1, w.size + 1));
      const table = BASE + 0xc000 + 16 * w.int(256);
      const len = w.rand() >= w.chaos * 2 ? entries * 16 : w.int(w.size * 16 + 40);
      for (let k = 0; k < entries && table + k * 16 + 16 <= BASE + MEM; k++) {
        const [ta, tl, tf, tn] = randomDescriptor(w);
        w.drv.writeDescriptorAt(table + k * 16, ta, tl, tf, w.rand() < 0.9 ? Math.min(tn, entries) : w.rand() < 0.5 ? entries : tn);
      }
      w.drv.writeDescriptor(w.int(w.size), table, len, f, n);
    } else {
      w.drv.writeDescriptor(w.int(w.size), a, l, f, n);
    }
  } else if (op < 7) {
    const full = ((w.drv.availIdx - w.consumed()) & 0xffff) >= w.size;
    if (!full || w.rand() < w.chaos) w.drv.pushAvail(w.rand() >= w.chaos / 2 ? w.int(w.size) : w.int(0x10000));
    if (w.rand() < 0.7) w.drv.publish();
  } else if (op < 8) {
    // Well-formed chains through the free list too.
    const r: Array<[number, number]> = [];
    const wr: Array<[number, number]> = [];
    for (let k = w.int(3); k > 0; k--) r.push([BASE + 0x4000 + w.int(0x8000), w.int(1600)]);
    for (let k = w.int(3); k > 0; k--) wr.push([BASE + 0x4000 + w.int(0x8000), w.int(1600)]);
    if (w.rand() < 0.3) w.drv.addIndirect(BASE + 0x1c000 + 16 * w.int(64), r, wr);
    else w.drv.add(r, wr);
    w.drv.publish();
  } else if (op < 9) {
    if (w.rand() < w.chaos) w.drv.setAvailIdx(w.drv.availIdx + w.int(3 * w.size + 2));
    else w.drv.publish();
  } else {
    w.drv.setUsedEvent(w.int(0x10000));
    w.drv.setAvailFlags(w.int(2));
  }
}


export type Seg = [offset: number, len: number, writable: boolean];
export type RefResult = { kind: 'none' } | { kind: 'broken' } | { kind: 'ok'; head: number; segs: Seg[] };

/**
 * An independent, deliberately plain model of what popping should give
 * (spec rules as documented in split-queue.ts), read straight from the bytes.
 */
export function refPop(w: World, nextAvail: number, availSeen: number, indirectOk: boolean, maxChainBytes: number, maxChainDescriptors: number): RefResult {
  const dv = new DataView(w.bytes.buffer);
  const size = w.size;
  const at = (gpa: number): number => gpa - BASE;
  const inMem = (gpa: number, len: number): boolean => Number.isSafeInteger(gpa) && gpa >= BASE && gpa + len <= BASE + MEM;
  let na = nextAvail;
  let seen = availSeen;
  for (;;) {
    // avail.idx is read again only once everything seen was consumed.
    if (seen === na) {
      seen = dv.getUint16(at(w.layout.availAddr) + 2, true);
      const pending = (seen - na) & 0xffff;
      if (pending > size) return { kind: 'broken' };
      if (pending === 0) return { kind: 'none' };
    }
    const head = dv.getUint16(at(w.layout.availAddr) + 4 + 2 * (na % size), true);
    na = (na + 1) & 0xffff;
    if (head >= size) return { kind: 'broken' };
    const segs: Seg[] = [];
    let table = w.layout.descAddr;
    let tableLen = size;
    let indirect = false;
    let i = head;
    let steps = 0;
    let total = 0;
    let sawWritable = false;
    let broken = false;
    let buffers = 0;
    let tooMany = false;
    for (;;) {
      if (++steps > tableLen) { broken = true; break; }
      const o = at(table) + 16 * i;
      const addr = dv.getUint32(o, true) + dv.getUint32(o + 4, true) * 2 ** 32;
      const len = dv.getUint32(o + 8, true);
      const flags = dv.getUint16(o + 12, true);
      const next = dv.getUint16(o + 14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (indirect || !indirectOk || len === 0 || len % 16 !== 0 || len > 16 * size || !inMem(addr, len)) { broken = true; break; }
        indirect = true;
        table = addr;
        tableLen = len / 16;
        i = 0;
        steps = 0;
        continue;
      }
      if (++buffers > maxChainDescriptors) { tooMany = true; break; }
      const wr = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!wr && sawWritable) { broken = true; break; }
      sawWritable ||= wr;
      total += len;
      if (total <= maxChainBytes) {
        if (!inMem(addr, len)) { broken = true; break; }
        segs.push([at(addr), len, wr]);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableLen) { broken = true; break; }
      i = next;
    }
    if (broken) return { kind: 'broken' };
    if (tooMany || total > maxChainBytes) continue; // handed back, next one
    return { kind: 'ok', head, segs };
  }
}

/**
 * One queue against the model for up to `steps` random operations (fewer if
 * `more` says stop: the fuzz target's input ran out). Throws on the first
 * disagreement or broken invariant. Returns how many chains the queue
 * dropped for having too many descriptors (so callers can check the cap is
 * exercised).
 */
export function exerciseSplitQueue(rand: () => number, steps: number, more: () => boolean = () => true): number {
  const chain = new DescriptorChain();
  const w = world(rand);
  const start = w.drv.availIdx;
  const indirectOk = w.rand() < 0.8;
  // Half the worlds with a descriptor cap small enough to matter (the default, 256, is larger than any table here).
  const maxChainDescriptors = w.rand() < 0.5 ? undefined : 1 + w.int(2 * w.size);
  const q = new SplitQueue(
    { ...w.layout, nextAvail: start, eventIdx: w.drv.eventIdx, indirect: indirectOk, maxChainBytes: 1024 + w.int(8192), maxChainDescriptors },
    w.memory,
  );
  w.consumed = () => q.nextAvail;
  let outstanding: number[] = [];
  let brokenUsedIdx: number | null = null;
  for (let step = 0; step < steps && more(); step++) {
    const op = w.int(10);
    if (op < 4) scribble(w);
    else if (op < 7) {
      const wasBroken = q.isBroken;
      const na = q.nextAvail;
      const seen = q.availIdxSeen;
      const walked = q.descriptorsWalked;
      const got = q.pop(chain);
      // Each chain walked costs at most the cap + 2 reads (the INDIRECT descriptor, the one over the cap).
      const chainsWalked = (q.nextAvail - na) & 0xffff;
      check(q.descriptorsWalked - walked <= chainsWalked * (q.maxChainDescriptors + 2), `${q.descriptorsWalked - walked} descriptors walked for ${chainsWalked} chains`);
      if (!wasBroken) {
        const want = refPop(w, na, seen, indirectOk, q.maxChainBytes, q.maxChainDescriptors);
        if (got) {
          check(want.kind === 'ok', `queue popped, model says ${want.kind}`);
          if (want.kind === 'ok') {
            check(want.head === chain.head, `head ${chain.head} != model ${want.head}`);
            const segs: Seg[] = [];
            for (let i = 0; i < chain.count; i++) {
              const sg = chain.segments[i]!;
              segs.push([sg.byteOffset, sg.byteLength, i >= chain.readableCount]);
            }
            check(JSON.stringify(segs) === JSON.stringify(want.segs), `segments ${JSON.stringify(segs)} != model ${JSON.stringify(want.segs)}`);
          }
        } else {
          check(q.isBroken === (want.kind === 'broken'), `queue broken=${q.isBroken} (${q.brokenReason}), model says ${want.kind}`);
        }
      }
      if (got) {
        check(!q.isBroken, 'popped from a broken queue');
        let total = 0;
        let seenW = false;
        for (let i = 0; i < chain.count; i++) {
          const s = chain.segments[i]!;
          check(s.buffer === w.bytes.buffer && s.byteOffset + s.byteLength <= MEM, 'segment outside guest memory');
          const writable = i >= chain.readableCount;
          if (writable) seenW = true;
          else check(!seenW, 'readable segment after a writable one');
          total += s.byteLength;
        }
        check(total === chain.readableBytes + chain.writableBytes, 'byte counts');
        check(total <= q.maxChainBytes, 'chain over the cap');
        check(chain.count <= q.maxChainDescriptors, 'chain over the descriptor cap');
        check(chain.head < w.size, 'head out of range');
        outstanding.push(chain.head);
      }
    } else if (op < 8) {
      const n = w.int(outstanding.length + 2);
      for (let k = 0; k < n; k++) q.pushUsed(outstanding.shift() ?? w.int(w.size), w.int(5000));
    } else if (op < 9) {
      q.publishUsed();
    } else if (w.rand() < 0.5) {
      q.enableNotifications();
    } else if (w.rand() < 0.5) {
      q.disableNotifications();
    } else {
      const n = w.int(outstanding.length + 1);
      const back = q.unpop(n);
      check(back <= n, 'put back more than asked');
      outstanding = outstanding.slice(0, outstanding.length - back);
    }
    // Invariants.
    // used.idx in the ring is what the queue published, and it never
    // moved further than the chains popped.
    const usedIdx = w.drv.readUsedIdx();
    check(usedIdx === q.usedIdx, `ring used.idx ${usedIdx} != published ${q.usedIdx}`);
    check(q.usedCount <= q.popped, 'more used than popped');
    check(((usedIdx - start) & 0xffff) <= q.usedCount, 'used.idx moved further than the used entries');
    if (q.isBroken) {
      if (brokenUsedIdx === null) brokenUsedIdx = usedIdx;
      check(usedIdx === brokenUsedIdx, 'a broken queue moved used.idx');
      check(!q.pop(chain), 'a broken queue popped');
      check(typeof q.brokenReason === 'string', 'no reason');
    }
  }
  return q.droppedTooManyDescriptors;
}
