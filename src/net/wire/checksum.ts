/**
 * The Internet checksum (RFC 1071), over byte views, big-endian 16-bit words.
 *
 * `sum16` returns the unfolded 32-bit-ish running sum so callers can chain a
 * pseudo-header and several pieces; `fold` turns a sum into the final
 * one's-complement checksum. A piece of odd length is padded with a zero byte
 * only at its end, so chain pieces of even length except the last.
 *
 * Pseudo-header sums take either family's address (src/net/inany.ts): the
 * IPv4 one (RFC 793) or the IPv6 one (RFC 8200 §8.1: a 32-bit upper-layer
 * length); both reduce to the sum of the addresses' 16-bit words plus the
 * protocol and the length.
 */
import { type InAny, inanySum16 } from '../inany.js';

/** Add the 16-bit big-endian words of `bytes` to `initial`. */
export function sum16(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  const n = bytes.length;
  let i = 0;
  // Unrolled by 8 bytes: the hot loop for TCP payloads.
  const end8 = n - (n % 8);
  for (; i < end8; i += 8) {
    sum += ((bytes[i]! << 8) | bytes[i + 1]!) + ((bytes[i + 2]! << 8) | bytes[i + 3]!) +
      ((bytes[i + 4]! << 8) | bytes[i + 5]!) + ((bytes[i + 6]! << 8) | bytes[i + 7]!);
    // Keep the sum well inside 2^53 and fast-path SMI range: fold periodically.
    if (sum > 0x3fffffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  for (; i + 1 < n; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < n) sum += bytes[i]! << 8;
  return sum;
}

/** Fold a running sum into the 16-bit one's-complement checksum (ready to store). */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** Checksum of `bytes` alone (e.g. an IPv4 header or an ICMP message). */
export function checksum(bytes: Uint8Array): number {
  return fold(sum16(bytes));
}

/** The pseudo-header sum for TCP/UDP (and ICMPv6): src, dst, protocol (next header), L4 length; unfolded. */
export function pseudoHeaderSum(src: InAny, dst: InAny, protocol: number, l4Length: number): number {
  return inanySum16(src) + inanySum16(dst) + protocol + (l4Length >>> 16) + (l4Length & 0xffff);
}

/** Checksum of an L4 segment (TCP/UDP) with its pseudo-header (either family). The checksum field must be zero or the result of verification is 0 for a correct one. */
export function l4Checksum(src: InAny, dst: InAny, protocol: number, segment: Uint8Array): number {
  return fold(sum16(segment, pseudoHeaderSum(src, dst, protocol, segment.length)));
}
