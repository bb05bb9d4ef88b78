/**
 * IPv4 header view (RFC 791).
 *
 * Theory of operation: `parseIPv4Packet` validates once — version 4, IHL >= 5,
 * header within the bytes, total length >= header and <= the bytes we have
 * (trailing Ethernet padding is allowed and trimmed), header checksum — and
 * returns a plain object of fields plus views of the packet (trimmed to the
 * total length), the header and the payload. Options are allowed and skipped.
 * `writeIPv4Header` fills a 20-byte header with its checksum.
 */
import { checksum } from './checksum.js';
import { readIPv4, writeIPv4 } from '../ip-address.js';

export const IPV4_HEADER_LENGTH = 20;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

export interface IPv4View {
  headerLength: number;
  totalLength: number;
  tos: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in bytes. */
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  src: number;
  dst: number;
  /** Header + payload, trimmed to totalLength. */
  packet: Uint8Array;
  payload: Uint8Array;
}

/** Checked parse; `verifyChecksum` false skips the header checksum (reassembled packets). */
export function parseIPv4Packet(bytes: Uint8Array, verifyChecksum = true): IPv4View | string {
  if (bytes.length < IPV4_HEADER_LENGTH) return 'truncated';
  const b0 = bytes[0]!;
  if (b0 >>> 4 !== 4) return 'bad_version';
  const headerLength = (b0 & 0x0f) * 4;
  if (headerLength < IPV4_HEADER_LENGTH) return 'bad_ihl';
  if (headerLength > bytes.length) return 'truncated';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, headerLength);
  const totalLength = dv.getUint16(2, false);
  if (totalLength < headerLength) return 'bad_length';
  if (totalLength > bytes.length) return 'truncated';
  if (verifyChecksum && checksum(bytes.subarray(0, headerLength)) !== 0) return 'bad_checksum';
  const frag = dv.getUint16(6, false);
  if (frag & 0x8000) return 'reserved_flag';
  const packet = bytes.subarray(0, totalLength);
  return {
    headerLength,
    totalLength,
    tos: bytes[1]!,
    id: dv.getUint16(4, false),
    dontFragment: (frag & 0x4000) !== 0,
    moreFragments: (frag & 0x2000) !== 0,
    fragmentOffset: (frag & 0x1fff) * 8,
    ttl: bytes[8]!,
    protocol: bytes[9]!,
    src: readIPv4(bytes, 12),
    dst: readIPv4(bytes, 16),
    packet,
    payload: packet.subarray(headerLength),
  };
}

export interface IPv4HeaderFields {
  src: number;
  dst: number;
  protocol: number;
  totalLength: number;
  id: number;
  ttl?: number;
  tos?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** Bytes, multiple of 8. */
  fragmentOffset?: number;
}

/** Write a 20-byte IPv4 header (no options) at `out[0..20)`, checksum included. */
export function writeIPv4Header(out: Uint8Array, f: IPv4HeaderFields): void {
  const dv = new DataView(out.buffer, out.byteOffset, IPV4_HEADER_LENGTH);
  out[0] = 0x45;
  out[1] = f.tos ?? 0;
  dv.setUint16(2, f.totalLength, false);
  dv.setUint16(4, f.id & 0xffff, false);
  dv.setUint16(6, ((f.fragmentOffset ?? 0) >>> 3) | (f.dontFragment ? 0x4000 : 0) | (f.moreFragments ? 0x2000 : 0), false);
  out[8] = f.ttl ?? 64;
  out[9] = f.protocol;
  dv.setUint16(10, 0, false);
  writeIPv4(out, 12, f.src);
  writeIPv4(out, 16, f.dst);
  dv.setUint16(10, checksum(out.subarray(0, IPV4_HEADER_LENGTH)), false);
}

/** Addresses a reply must never be sent to or from (RFC 1122 3.2.1.3 / 3.2.2). */
export function isUnicastAddress(address: number): boolean {
  const a = address >>> 24;
  if (address === 0 || address === 0xffffffff) return false;
  if (a === 0 || a === 127 || a >= 224) return false;
  return true;
}
