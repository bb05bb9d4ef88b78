/**
 * Property tests (fast-check) for the Internet checksum
 * (src/net/wire/checksum.ts, RFC 1071) against a plain reference — a
 * BigInt sum of 16-bit big-endian words, folded once at the end:
 * - the unrolled, periodically folded `sum16` gives the reference checksum
 *   for any bytes (odd lengths, 64 KiB buffers, a starting sum);
 * - incremental: summing even-length pieces one after another (`initial`)
 *   is the same as summing the whole;
 * - a stored checksum verifies (the sum over the result is zero), and a
 *   single flipped bit anywhere is always detected;
 * - partial checksums (virtio NEEDS_CSUM): a TCP segment whose checksum
 *   field holds only the pseudo-header sum (setTcpPartialChecksum),
 *   completed the way the device contract says (fold the sum from
 *   csum_start to the end, store it at csum_offset), equals the full
 *   setTcpChecksum result and verifies.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { checksum, fold, l4Checksum, pseudoHeaderSum, sum16 } from '../src/net/wire/checksum.js';
import { setTcpChecksum, setTcpPartialChecksum, TCP_PROTOCOL } from '../src/net/wire/tcp.js';

const RUNS = { numRuns: 2000, seed: 0xc5 };

function referenceSum(bytes: Uint8Array, initial = 0n): bigint {
  let s = initial;
  for (let i = 0; i < bytes.length; i += 2) s += BigInt((bytes[i]! << 8) | (bytes[i + 1] ?? 0));
  return s;
}

function referenceChecksum(bytes: Uint8Array, initial = 0n): number {
  let s = referenceSum(bytes, initial);
  while (s > 0xffffn) s = (s & 0xffffn) + (s >> 16n);
  return Number(~s & 0xffffn);
}

const someBytes = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 1600 }) },
  // Long runs of 0xff drive the running sum up fastest (the periodic fold).
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 60_000, max: 65_536 }), fc.integer({ min: 0, max: 255 })).map(([n, v]) => new Uint8Array(n).fill(v)) },
);

describe('Internet checksum (properties)', () => {
  it('sum16 + fold agree with the reference for any bytes and starting sum', () => {
    fc.assert(
      fc.property(someBytes, fc.nat({ max: 0x3ffff }), (bytes, initial) => {
        expect(fold(sum16(bytes, initial))).toBe(referenceChecksum(bytes, BigInt(initial)));
        expect(checksum(bytes)).toBe(referenceChecksum(bytes));
      }),
      RUNS,
    );
  });

  it('incremental: even-length pieces summed in turn equal the whole', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.array(fc.nat({ max: 1500 }), { maxLength: 6 }), (bytes, cuts) => {
        const points = [...new Set(cuts.map((c) => 2 * Math.floor(Math.min(c, bytes.length) / 2)))].sort((a, b) => a - b);
        let sum = 0;
        let from = 0;
        for (const p of [...points, bytes.length]) {
          sum = sum16(bytes.subarray(from, p), sum);
          from = p;
        }
        expect(fold(sum)).toBe(checksum(bytes));
      }),
      RUNS,
    );
  });

  it('a stored checksum verifies, and any single flipped bit is detected', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 2, maxLength: 1500 }), fc.nat(), fc.nat(), fc.nat({ max: 7 }), (raw, at0, flip0, bit) => {
        const bytes = raw.subarray(0, raw.length & ~1);
        const at = 2 * (at0 % (bytes.length / 2));
        bytes[at] = 0;
        bytes[at + 1] = 0;
        const c = checksum(bytes);
        bytes[at] = c >>> 8;
        bytes[at + 1] = c & 0xff;
        expect(checksum(bytes)).toBe(0);
        bytes[flip0 % bytes.length]! ^= 1 << bit;
        expect(checksum(bytes)).not.toBe(0);
      }),
      RUNS,
    );
  });

  it('a partial TCP checksum completed as virtio says equals the full checksum', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 20, maxLength: 1600 }), fc.nat({ max: 0xffff_ffff }), fc.nat({ max: 0xffff_ffff }), (segment, src, dst) => {
        const full = segment.slice();
        setTcpChecksum(full, src, dst);
        expect(l4Checksum(src, dst, TCP_PROTOCOL, full)).toBe(0);
        const partial = segment.slice();
        setTcpPartialChecksum(partial, src, dst, partial.length);
        // The field holds the pseudo-header sum, folded but not inverted.
        expect(((partial[16]! << 8) | partial[17]!) % 0xffff).toBe(pseudoHeaderSum(src, dst, TCP_PROTOCOL, partial.length) % 0xffff);
        const c = fold(sum16(partial)); // csum_start 0, csum_offset 16
        partial[16] = c >>> 8;
        partial[17] = c & 0xff;
        expect(Buffer.from(partial).equals(Buffer.from(full))).toBe(true);
      }),
      RUNS,
    );
  });
});
