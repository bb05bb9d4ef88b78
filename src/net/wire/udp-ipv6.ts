/**
 * UDP datagram view (RFC 768) inside an IPv6 packet (RFC 8200 §8.1).
 *
 * Theory of operation: the same header as over IPv4 (udp.ts, whose
 * `UdpView` this returns), with two differences: the checksum covers the
 * IPv6 pseudo-header and it is mandatory — a zero checksum is a drop
 * ('zero_checksum'), not "no checksum". `parseUdpIPv6` checks the length
 * field against the bytes the IP layer handed over (>= 8, <= available)
 * and the checksum; `buildUdpIPv6` returns a datagram with its checksum (a
 * computed 0 is sent as 0xffff).
 */
import { l4ChecksumIPv6 } from './checksum-ipv6.js';
import { NEXT_HEADER_UDP } from './ipv6.js';
import { UDP_HEADER_LENGTH, type UdpView } from './udp.js';
import type { IPv6Address } from '../ipv6-address.js';

/** Checked parse; `verifyChecksum` false when the checksum is known good (offload). */
export function parseUdpIPv6(bytes: Uint8Array, src: IPv6Address, dst: IPv6Address, verifyChecksum = true): UdpView | string {
  if (bytes.length < UDP_HEADER_LENGTH) return 'truncated';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, UDP_HEADER_LENGTH);
  const length = dv.getUint16(4, false);
  if (length < UDP_HEADER_LENGTH) return 'bad_length';
  if (length > bytes.length) return 'truncated';
  const datagram = bytes.subarray(0, length);
  if (verifyChecksum) {
    if (dv.getUint16(6, false) === 0) return 'zero_checksum';
    if (l4ChecksumIPv6(src, dst, NEXT_HEADER_UDP, datagram) !== 0) return 'bad_checksum';
  }
  return { srcPort: dv.getUint16(0, false), dstPort: dv.getUint16(2, false), datagram, payload: datagram.subarray(UDP_HEADER_LENGTH) };
}

/** A UDP datagram (header, `payload`, checksum over the IPv6 pseudo-header). */
export function buildUdpIPv6(src: IPv6Address, dst: IPv6Address, srcPort: number, dstPort: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(UDP_HEADER_LENGTH + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, srcPort, false);
  dv.setUint16(2, dstPort, false);
  dv.setUint16(4, out.length, false);
  out.set(payload, UDP_HEADER_LENGTH);
  const c = l4ChecksumIPv6(src, dst, NEXT_HEADER_UDP, out);
  dv.setUint16(6, c === 0 ? 0xffff : c, false);
  return out;
}
