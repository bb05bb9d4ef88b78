/**
 * 32-bit TCP sequence-number arithmetic (RFC 9293 §3.4): sequence space
 * wraps at 2^32, and "a < b" means b lies within 2^31 after a. All results
 * are unsigned 32-bit numbers (`>>> 0`); distances are signed 32-bit. Two
 * numbers exactly 2^31 apart have no order (each is "before" the other);
 * windows are far smaller (at most 2^30), so no caller meets that case.
 */

/** a + n modulo 2^32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** Signed distance b - a (positive when b is after a), in -2^31..2^31-1. */
export function seqDiff(b: number, a: number): number {
  return (b - a) | 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/**
 * low <= x < high, in sequence space: x lies 0 .. (high - low) - 1 after low.
 * An empty range (low === high) holds nothing, not even the number 2^31 away
 * that seqLe/seqLt cannot place (it is "before" and "after" low at once).
 */
export function seqInRange(x: number, low: number, high: number): boolean {
  const offset = seqDiff(x, low);
  return offset >= 0 && offset < seqDiff(high, low);
}
