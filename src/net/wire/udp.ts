/**
 * UDP datagram view (RFC 768) inside an IPv4 packet.
 *
 * Theory of operation: `parseUdp` checks the length field against the bytes
 * the IP layer handed over (>= 8, <= available; the IP payload may not be
 * shorter than the field says), and the checksum over the pseudo-header when
 * it is nonzero (zero means "no checksum" in IPv4). `writeUdp` fills a
 * header with its checksum (0 transmitted as 0xffff).
 */
import { l4Checksum } from './checksum.js';
import type { InAny } from '../inany.js';

export const UDP_HEADER_LENGTH = 8;

export interface UdpView {
  srcPort: number;
  dstPort: number;
  /** Header + payload, trimmed to the length field. */
  datagram: Uint8Array;
  payload: Uint8Array;
}

/** Checked parse; `verifyChecksum` false when the checksum is known good (offload). */
export function parseUdp(bytes: Uint8Array, src: InAny, dst: InAny, verifyChecksum = true): UdpView | string {
  if (bytes.length < UDP_HEADER_LENGTH) return 'truncated';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, UDP_HEADER_LENGTH);
  const length = dv.getUint16(4, false);
  if (length < UDP_HEADER_LENGTH) return 'bad_length';
  if (length > bytes.length) return 'truncated';
  const datagram = bytes.subarray(0, length);
  if (verifyChecksum && dv.getUint16(6, false) !== 0 && l4Checksum(src, dst, 17, datagram) !== 0) return 'bad_checksum';
  return { srcPort: dv.getUint16(0, false), dstPort: dv.getUint16(2, false), datagram, payload: datagram.subarray(UDP_HEADER_LENGTH) };
}

/**
 * Write the UDP header into out[0..8) for a datagram of out.length bytes
 * whose payload is already at out[8..], then the checksum (big-endian).
 */
export function writeUdp(out: Uint8Array, src: InAny, dst: InAny, srcPort: number, dstPort: number): void {
  const dv = new DataView(out.buffer, out.byteOffset, UDP_HEADER_LENGTH);
  dv.setUint16(0, srcPort, false);
  dv.setUint16(2, dstPort, false);
  dv.setUint16(4, out.length, false);
  dv.setUint16(6, 0, false);
  const c = l4Checksum(src, dst, 17, out);
  dv.setUint16(6, c === 0 ? 0xffff : c, false);
}
