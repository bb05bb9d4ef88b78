/**
 * The IPv6 pseudo-header for upper-layer checksums (RFC 8200 §8.1), next to
 * the IPv4 one in checksum.ts and built on its `sum16`/`fold`.
 *
 * Theory of operation: the pseudo-header is source address, destination
 * address (the final one: with a routing header, the last segment), the
 * 32-bit upper-layer packet length and the next header value in the low
 * byte of a zero 32-bit word. Its sum is added to the sum of the segment
 * like the IPv4 one. Unlike IPv4's UDP, a zero UDP checksum is invalid in
 * IPv6 (RFC 8200 §8.1): `l4ChecksumIPv6` only computes, callers decide.
 */
import { fold, sum16 } from './checksum.js';
import type { IPv6Address } from '../ipv6-address.js';

/** Unfolded sum of the IPv6 pseudo-header. */
export function pseudoHeaderSumIPv6(src: IPv6Address, dst: IPv6Address, nextHeader: number, upperLayerLength: number): number {
  return sum16(dst, sum16(src)) + Math.floor(upperLayerLength / 0x10000) + (upperLayerLength & 0xffff) + nextHeader;
}

/**
 * Checksum of an upper-layer segment (ICMPv6, UDP, TCP) with its IPv6
 * pseudo-header: the value to store (checksum field zero), or 0 when
 * verifying a segment whose stored checksum is correct.
 */
export function l4ChecksumIPv6(src: IPv6Address, dst: IPv6Address, nextHeader: number, segment: Uint8Array): number {
  return fold(sum16(segment, pseudoHeaderSumIPv6(src, dst, nextHeader, segment.length)));
}
