/**
 * One address type for both IP families (after passt's `union inany_addr`
 * and smoltcp's `IpAddress`).
 *
 * Theory of operation. An `InAny` is either
 *  - a number: an IPv4 address as the unsigned 32-bit value of its
 *    big-endian wire field (10.0.2.15 is 0x0a00020f), exactly what every
 *    IPv4 path carried before; or
 *  - a `Uint8Array` of 16 bytes: an IPv6 address in wire order.
 * The family is the JavaScript type (`typeof a === 'number'` is IPv4), so
 * the IPv4 per-packet path allocates nothing and compares with `===`; only
 * an IPv6 address is an object. An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is never kept as bytes: every constructor here
 * normalises it to the number, so one address has one representation and
 * `inanyEqual` is exact.
 *
 * Ownership: a 16-byte address read out of a packet may alias guest memory
 * (a `subarray` of the frame), valid only during the receive call. Anything
 * that keeps an address past the call (a flow side, a quote) keeps
 * `inanyOwned(a)`: the number itself, or a copy of the bytes.
 *
 * Strings exist only at the socket API edge (`inanyToString`,
 * `parseInAny`). Hashing: `inanyWords` feeds an address to a keyed hash as
 * four 32-bit words (an IPv4 address as ::ffff:a.b.c.d, so both families
 * share one key layout), see src/net/flow.ts.
 */
import { ipv4ToString, parseIPv4 } from './ip-address.js';

/** An IPv4 address (u32 number) or an IPv6 address (16 bytes, wire order). */
export type InAny = number | Uint8Array;

export const IPV6_ADDRESS_LENGTH = 16;

/** True for an IPv4 address. */
export function isV4(a: InAny): a is number {
  return typeof a === 'number';
}

/** 4 or 6. */
export function inanyFamily(a: InAny): 4 | 6 {
  return typeof a === 'number' ? 4 : 6;
}

/** Address equality across both families (no allocation). */
export function inanyEqual(a: InAny, b: InAny): boolean {
  if (typeof a === 'number' || typeof b === 'number') return a === b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** An address safe to keep after the call that produced it (IPv6 bytes copied out of any packet). */
export function inanyOwned(a: InAny): InAny {
  return typeof a === 'number' ? a : a.slice();
}

/**
 * 16 bytes of IPv6 as an InAny: an IPv4-mapped address (::ffff:a.b.c.d)
 * becomes the IPv4 number, anything else stays bytes (aliasing `bytes`).
 */
export function inanyFromV6Bytes(bytes: Uint8Array): InAny {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return bytes;
  if (bytes[10] !== 0xff || bytes[11] !== 0xff) return bytes;
  return ((bytes[12]! << 24) | (bytes[13]! << 16) | (bytes[14]! << 8) | bytes[15]!) >>> 0;
}

/** Word `i` (0..3) of the address as 32-bit big-endian words of its IPv6 form (IPv4 as ::ffff:a.b.c.d). */
export function inanyWord(a: InAny, i: number): number {
  if (typeof a === 'number') return i === 3 ? a : i === 2 ? 0xffff : 0;
  const o = i * 4;
  return ((a[o]! << 24) | (a[o + 1]! << 16) | (a[o + 2]! << 8) | a[o + 3]!) >>> 0;
}

/**
 * The one's-complement sum of the address's 16-bit words, unfolded, as a
 * pseudo-header takes it (RFC 768/793 for IPv4, RFC 8200 §8.1 for IPv6).
 */
export function inanySum16(a: InAny): number {
  if (typeof a === 'number') return (a >>> 16) + (a & 0xffff);
  let sum = 0;
  for (let i = 0; i < 16; i += 2) sum += (a[i]! << 8) | a[i + 1]!;
  return sum;
}

/** Text form: dotted quad for IPv4, RFC 5952 (lower case, longest zero run as ::) for IPv6. */
export function inanyToString(a: InAny): string {
  if (typeof a === 'number') return ipv4ToString(a);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((a[i]! << 8) | a[i + 1]!);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`;
}

/**
 * Parse a host address string as the socket API gives it: dotted-quad IPv4,
 * IPv4-mapped IPv6 (::ffff:a.b.c.d, as a dual-stack socket reports IPv4
 * peers; normalised to the number) or IPv6 text (a zone index, `%eth0`, is
 * refused). Returns null if malformed.
 */
export function parseInAny(text: string): InAny | null {
  if (!text.includes(':')) return parseIPv4(text);
  if (text.includes('%')) return null;
  const bytes = parseIPv6(text);
  return bytes === null ? null : inanyFromV6Bytes(bytes);
}

function parseIPv6(text: string): Uint8Array | null {
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const words: number[][] = [];
  for (const half of halves) {
    const out: number[] = [];
    if (half !== '') {
      const parts = half.split(':');
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]!;
        if (i === parts.length - 1 && part.includes('.')) {
          const v4 = parseIPv4(part);
          if (v4 === null) return null;
          out.push(v4 >>> 16, v4 & 0xffff);
          continue;
        }
        if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return null;
        out.push(parseInt(part, 16));
      }
    }
    words.push(out);
  }
  const head = words[0]!;
  const tail = words[1] ?? [];
  const count = head.length + tail.length;
  if (halves.length === 1 ? count !== 8 : count > 7) return null;
  const all = [...head, ...new Array<number>(8 - count).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    bytes[i * 2] = all[i]! >>> 8;
    bytes[i * 2 + 1] = all[i]! & 0xff;
  }
  return bytes;
}
