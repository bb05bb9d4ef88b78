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
 * `parseInAny`); the IPv6 text forms are `parseIPv6` (RFC 4291 §2.2 text,
 * an embedded dotted quad without leading zeros as inet_pton wants; zone
 * ids and everything else refused with null) and `formatIPv6` (RFC 5952:
 * lower case, no leading zeros, the longest run of two or more zero groups
 * as `::`, IPv4-mapped as ::ffff:a.b.c.d). The IPv6 helpers over this
 * representation (prefixes, scopes, solicited-node and EUI-64 addresses)
 * are in ipv6-address.ts. Hashing: `inanyWords` feeds an address to a keyed hash as
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

/** Text form: dotted quad for IPv4, RFC 5952 for IPv6 (`formatIPv6`). */
export function inanyToString(a: InAny): string {
  return typeof a === 'number' ? ipv4ToString(a) : formatIPv6(a);
}

/**
 * Parse a host address string as the socket API gives it: dotted-quad IPv4,
 * IPv4-mapped IPv6 (::ffff:a.b.c.d, as a dual-stack socket reports IPv4
 * peers; normalised to the number) or IPv6 text (a zone index, `%eth0`, is
 * refused). Returns null if malformed.
 */
export function parseInAny(text: string): InAny | null {
  if (!text.includes(':')) return parseIPv4(text);
  const bytes = parseIPv6(text);
  return bytes === null ? null : inanyFromV6Bytes(bytes);
}

/** ::ffff:0:0/96 */
export function isIPv4Mapped(address: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (address[i] !== 0) return false;
  return address[10] === 0xff && address[11] === 0xff;
}

/** An IPv6 address from its eight 16-bit groups. */
export function ipv6FromGroups(groups: number[]): Uint8Array {
  const a = new Uint8Array(IPV6_ADDRESS_LENGTH);
  for (let i = 0; i < 8; i++) {
    a[2 * i] = (groups[i]! >>> 8) & 0xff;
    a[2 * i + 1] = groups[i]! & 0xff;
  }
  return a;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Dotted quad to a 32-bit number, or null; no leading zeros (inet_pton's rule, which Node follows). */
function parseDottedQuad(text: string): number | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(part)) return null;
    const octet = Number(part);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
}

/** Hex groups (with an optional trailing dotted quad, as two groups) of one side of `::`; null if malformed. */
function parseGroups(text: string, allowDottedQuadAtEnd: boolean): number[] | null {
  if (text === '') return [];
  const parts = text.split(':');
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (HEX_GROUP.test(part)) {
      groups.push(parseInt(part, 16));
      continue;
    }
    if (allowDottedQuadAtEnd && i === parts.length - 1 && part.includes('.')) {
      const v4 = parseDottedQuad(part);
      if (v4 === null) return null;
      groups.push(Math.floor(v4 / 0x10000), v4 & 0xffff);
      continue;
    }
    return null;
  }
  return groups;
}

/** Parse RFC 4291 §2.2 text; null if malformed (zone ids, `:::`, two `::`, too many groups, bad hex). */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45) return null;
  const gap = text.indexOf('::');
  if (gap === -1) {
    const groups = parseGroups(text, true);
    return groups !== null && groups.length === 8 ? ipv6FromGroups(groups) : null;
  }
  if (text.indexOf('::', gap + 1) !== -1) return null;
  const head = parseGroups(text.slice(0, gap), false);
  const tail = parseGroups(text.slice(gap + 2), true);
  // `::` stands for at least one zero group (RFC 4291 §2.2 item 2; RFC 5952 §4.2.2 forbids it for one, but parsers accept it).
  if (head === null || tail === null || head.length + tail.length > 7) return null;
  const groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  return ipv6FromGroups(groups);
}

/** RFC 5952 canonical text. */
export function formatIPv6(address: Uint8Array): string {
  if (isIPv4Mapped(address)) {
    return `::ffff:${address[12]}.${address[13]}.${address[14]}.${address[15]}`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((address[2 * i]! << 8) | address[2 * i + 1]!);
  // Longest run of zero groups (length >= 2), first one on ties.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
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
  const hex = (from: number, to: number): string => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestStart === -1) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

