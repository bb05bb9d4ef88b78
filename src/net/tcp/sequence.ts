/**
 * 32-bit TCP sequence-number arithmetic (RFC 9293 §3.4): sequence space
 * wraps at 2^32, and "a < b" means b lies within 2^31 after a. All results
 * are unsigned 32-bit numbers (`>>> 0`); distances are signed 32-bit.
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

/** low <= x < high, in sequence space. */
export function seqInRange(x: number, low: number, high: number): boolean {
  return seqLe(low, x) && seqLt(x, high);
}
