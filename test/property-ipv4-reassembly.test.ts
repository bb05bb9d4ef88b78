/**
 * Property tests (fast-check) for IPv4 fragment reassembly
 * (src/net/ipv4-fragments.ts). A datagram (random payload, header with or
 * without options) is cut into fragments and fed in any order, with extra
 * overlapping pieces of the same datagram mixed in, and several datagrams
 * interleaved under small limits:
 * - an exact fragmentation in any order reassembles, once, to the original
 *   (header with total length fixed, MF and offset cleared, checksum right)
 *   and leaves nothing buffered;
 * - with overlapping pieces, whatever comes out is the original — anything
 *   else is dropped;
 * - the limits (datagrams in progress, bytes buffered) hold after every
 *   fragment, and expiry empties the reassembler.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { Reassembler } from '../src/net/ip/ipv4-fragments.js';
import { parseIPv4Packet } from '../src/net/wire/ipv4.js';
import { checksum } from '../src/net/wire/checksum.js';
import { CounterSet } from '../src/net/counters.js';

const RUNS = { numRuns: 1000, seed: 0xf7a9 };

interface Datagram {
  header: Uint8Array;
  payload: Uint8Array;
}

/** A header of 20..32 bytes (options are NOPs), DF maybe, MF/offset/checksum filled per fragment. */
const datagram = fc
  .record({
    optionWords: fc.nat({ max: 3 }),
    id: fc.nat({ max: 0xffff }),
    src: fc.nat({ max: 0xffff_ffff }),
    dst: fc.nat({ max: 0xffff_ffff }),
    protocol: fc.constantFrom(1, 6, 17, 47),
    df: fc.boolean(),
    payload: fc.uint8Array({ minLength: 9, maxLength: 3000 }),
  })
  .map(({ optionWords, id, src, dst, protocol, df, payload }): Datagram => {
    const hl = 20 + 4 * optionWords;
    const header = new Uint8Array(hl).fill(1, 20);
    const dv = new DataView(header.buffer);
    header[0] = 0x40 | (hl / 4);
    dv.setUint16(4, id, false);
    dv.setUint16(6, df ? 0x4000 : 0, false);
    header[8] = 64;
    header[9] = protocol;
    dv.setUint32(12, src, false);
    dv.setUint32(16, dst, false);
    return { header, payload };
  });

/** One fragment of `d`: payload bytes [offset, end) as an IPv4 packet. */
function fragment(d: Datagram, offset: number, end: number) {
  const hl = d.header.length;
  const p = new Uint8Array(hl + end - offset);
  p.set(d.header);
  p.set(d.payload.subarray(offset, end), hl);
  const dv = new DataView(p.buffer);
  dv.setUint16(2, p.length, false);
  dv.setUint16(6, (dv.getUint16(6, false) & 0x4000) | (end < d.payload.length ? 0x2000 : 0) | (offset / 8), false);
  dv.setUint16(10, checksum(p.subarray(0, hl)), false);
  const view = parseIPv4Packet(p);
  if (typeof view === 'string') throw new Error(`built a bad fragment: ${view}`);
  return view;
}

/** What reassembly must produce: the header with total length, no MF/offset, a fresh checksum; then the payload. */
function expected(d: Datagram): Uint8Array {
  return fragment(d, 0, d.payload.length).packet.slice();
}

/** Cut points (multiples of 8 strictly inside the payload) → the intervals of an exact fragmentation (at least two). */
function intervals(n: number, cuts: number[]): Array<[number, number]> {
  const points = [...new Set(cuts.map((c) => 8 * (1 + (c % Math.floor((n - 1) / 8)))))].filter((p) => p < n).sort((a, b) => a - b);
  const bounds = [0, ...(points.length > 0 ? points : [8]), n];
  return bounds.slice(1).map((e, i) => [bounds[i]!, e]);
}

/** A random piece of the same datagram: starts on an 8-byte boundary, ends on one or at the end. */
function piece(n: number, start: number, words: number): [number, number] {
  const o = 8 * (start % Math.ceil(n / 8));
  const e = Math.min(n, o + 8 * (1 + words));
  return [o, e];
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

describe('IPv4 reassembly (properties)', () => {
  it('an exact fragmentation in any order reassembles once, to the original, and leaves nothing buffered', () => {
    fc.assert(
      fc.property(datagram, fc.array(fc.nat(), { maxLength: 12 }), fc.infiniteStream(fc.nat()), (d, cuts, keys) => {
        const r = new Reassembler(new CounterSet());
        const parts = intervals(d.payload.length, cuts);
        const order = parts.map((p) => ({ p, k: keys.next().value as number })).sort((a, b) => a.k - b.k).map((x) => x.p);
        const results = order.map(([o, e]) => r.input(fragment(d, o, e), 0)).filter((x) => x !== null);
        expect(results).toHaveLength(1);
        expect(same(results[0]!, expected(d))).toBe(true);
        expect(parseIPv4Packet(results[0]!)).not.toBeTypeOf('string'); // header checksum verifies
        expect(r.pending).toBe(0);
        expect(r.bufferedBytes).toBe(0);
      }),
      RUNS,
    );
  });

  it('with overlapping pieces of the same datagram mixed in, anything that comes out is the original', () => {
    const counters = new CounterSet();
    let reassembled = 0;
    fc.assert(
      fc.property(
        datagram, fc.array(fc.nat(), { maxLength: 12 }), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 40 })), { minLength: 1, maxLength: 6 }), fc.infiniteStream(fc.nat()),
        (d, cuts, extras, keys) => {
          const r = new Reassembler(counters);
          const n = d.payload.length;
          const all = [...intervals(n, cuts), ...extras.map(([s, w]) => piece(n, s, w))].filter(([o, e]) => !(o === 0 && e === n));
          const order = all.map((p) => ({ p, k: keys.next().value as number })).sort((a, b) => a.k - b.k).map((x) => x.p);
          const want = expected(d);
          for (const [o, e] of order) {
            const out = r.input(fragment(d, o, e), 0);
            if (out !== null) {
              reassembled++;
              expect(same(out, want)).toBe(true);
            }
            expect(r.pending).toBeLessThanOrEqual(1);
          }
        },
      ),
      RUNS,
    );
    // Both outcomes happened: some mixes reassembled, some were dropped as overlaps.
    expect(reassembled).toBeGreaterThan(0);
    expect(counters.get('ipv4.frag.drop.overlap')).toBeGreaterThan(0);
  });

  it('interleaved datagrams under small limits: bounds hold after every fragment, results are originals, expiry empties it', () => {
    const limits = { maxDatagrams: 3, maxBytes: 4096, maxFragments: 6, timeoutMs: 1000 };
    fc.assert(
      fc.property(fc.array(fc.tuple(datagram, fc.array(fc.nat(), { maxLength: 8 })), { minLength: 1, maxLength: 6 }), fc.infiniteStream(fc.nat()), (ds, keys) => {
        const r = new Reassembler(new CounterSet(), limits);
        // Distinct ids so each result names its datagram.
        const items = ds.map(([d, cuts], i) => {
          const header = d.header.slice();
          new DataView(header.buffer).setUint16(4, i, false);
          const dd = { header, payload: d.payload };
          return { d: dd, want: expected(dd), parts: intervals(d.payload.length, cuts) };
        });
        const all = items.flatMap((it) => it.parts.map((p) => ({ it, p, k: keys.next().value as number }))).sort((a, b) => a.k - b.k);
        let now = 0;
        for (const { it, p } of all) {
          now += 10;
          const out = r.input(fragment(it.d, p[0], p[1]), now);
          if (out !== null) expect(same(out, it.want)).toBe(true);
          expect(r.pending).toBeLessThanOrEqual(limits.maxDatagrams);
          expect(r.bufferedBytes).toBeLessThanOrEqual(limits.maxBytes);
        }
        r.expire(now + limits.timeoutMs);
        expect(r.pending).toBe(0);
        expect(r.bufferedBytes).toBe(0);
      }),
      RUNS,
    );
  });
});
