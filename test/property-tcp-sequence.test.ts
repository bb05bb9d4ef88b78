/**
 * Property tests (fast-check) for TCP sequence-number arithmetic
 * (src/net/tcp/sequence.ts) against a plain BigInt model of RFC 9293 §3.4:
 * the distance from a to b is (b - a) mod 2^32 read as a signed 32-bit
 * number, and "a before b" means that distance is positive. Comparisons
 * must not care where the numbers sit in the 32-bit space (translation
 * invariance is what makes wraparound correct), and the one ambiguous
 * distance, exactly 2^31, is pinned down.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { seqAdd, seqDiff, seqGe, seqGt, seqInRange, seqLe, seqLt } from '../src/net/tcp/sequence.js';

const RUNS = { numRuns: 5000, seed: 0x5e9 };
const u32 = fc.nat({ max: 0xffff_ffff });
/** Distances that are not the ambiguous 2^31. */
const distance = fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 });

/** The model: signed 32-bit distance from a to b. */
function modelDiff(b: number, a: number): number {
  return Number(BigInt.asIntN(32, BigInt(b) - BigInt(a)));
}

describe('TCP sequence arithmetic (properties)', () => {
  it('seqAdd wraps modulo 2^32 and seqDiff undoes it', () => {
    fc.assert(
      fc.property(u32, fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (a, n) => {
        const b = seqAdd(a, n);
        expect(b).toBe(Number(BigInt.asUintN(32, BigInt(a) + BigInt(n))));
        expect(seqDiff(b, a)).toBe(n);
      }),
      RUNS,
    );
  });

  it('seqDiff and the comparisons agree with the model', () => {
    fc.assert(
      fc.property(u32, u32, (a, b) => {
        const d = modelDiff(b, a);
        expect(seqDiff(b, a)).toBe(d);
        expect(seqLt(a, b)).toBe(modelDiff(a, b) < 0);
        expect(seqLe(a, b)).toBe(modelDiff(a, b) <= 0);
        expect(seqGt(a, b)).toBe(modelDiff(a, b) > 0);
        expect(seqGe(a, b)).toBe(modelDiff(a, b) >= 0);
      }),
      RUNS,
    );
  });

  it('comparisons are invariant under translation (wraparound does not matter)', () => {
    fc.assert(
      fc.property(u32, u32, u32, (a, b, k) => {
        const [a2, b2] = [seqAdd(a, k), seqAdd(b, k)];
        expect([seqLt(a2, b2), seqLe(a2, b2), seqGt(a2, b2), seqGe(a2, b2), seqDiff(b2, a2)]).toEqual([seqLt(a, b), seqLe(a, b), seqGt(a, b), seqGe(a, b), seqDiff(b, a)]);
      }),
      RUNS,
    );
  });

  it('exactly one of before, equal, after — for every distance but 2^31', () => {
    fc.assert(
      fc.property(u32, distance, (a, d) => {
        const b = seqAdd(a, d);
        const verdicts = [seqLt(a, b), a === b, seqGt(a, b)].filter(Boolean);
        expect(verdicts).toHaveLength(1);
        expect(seqLt(a, b)).toBe(seqGt(b, a));
        expect(seqLe(a, b)).toBe(seqLt(a, b) || a === b);
        expect(seqGe(a, b)).toBe(seqLe(b, a));
      }),
      RUNS,
    );
  });

  it('at distance 2^31 each number is "before" the other (RFC 9293 leaves it undefined; nothing may rely on it)', () => {
    fc.assert(
      fc.property(u32, (a) => {
        const b = seqAdd(a, 2 ** 31);
        expect(seqLt(a, b) && seqLt(b, a)).toBe(true);
      }),
      RUNS,
    );
  });

  it('seqInRange(x, low, high) is 0 <= x - low < high - low for windows under 2^31', () => {
    fc.assert(
      fc.property(u32, fc.nat({ max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (low, width, offset) => {
        const high = seqAdd(low, width);
        const x = seqAdd(low, offset);
        expect(seqInRange(x, low, high)).toBe(offset >= 0 && offset < width);
      }),
      // The corner random inputs rarely meet: an empty window and the number 2^31 away.
      { ...RUNS, examples: [[1000, 0, -(2 ** 31)], [0xffff_ff00, 0, -(2 ** 31)], [7, 1, -(2 ** 31)]] },
    );
  });
});
