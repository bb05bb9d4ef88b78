/**
 * TCP header view and emitter (RFC 9293 §3.1; options RFC 9293 MSS, RFC 7323
 * window scale and timestamps, RFC 2018 SACK-permitted).
 *
 * Theory of operation. `parseTcp` is the one checked path from guest bytes to
 * TCP fields: it validates the length against the fixed header, the data
 * offset against both the minimum (5 words) and the segment length, walks the
 * options with a bound check on every option length, and (unless told not to)
 * verifies the checksum with the IPv4 pseudo-header. It never throws; a bad
 * segment comes back as `{ ok: false, reason }` and the caller counts it
 * under `tcp.drop.<reason>`. The result's `payload` is a subarray of the
 * input (zero copies), so it aliases guest memory exactly as long as the
 * input does.
 *
 * Malformed options (a length below 2 or running past the header) end option
 * parsing, as Linux does, rather than dropping the segment: what was parsed
 * before stays, and `optionsMalformed` tells the caller. A window scale above
 * 14 is clamped to 14 (RFC 7323 §2.3); an MSS or window-scale option with the
 * wrong length is ignored.
 *
 * The emitter `writeTcpHeader` writes a header (with MSS / window-scale
 * options for SYNs) at the start of a view the caller obtained from the
 * output path (guest memory, normally); the caller copies the payload after
 * it and calls `setTcpChecksum` over the whole segment (or, for a guest
 * that takes partial checksums, `setTcpPartialChecksum`, which touches no
 * payload byte). Every multi-byte
 * field is big-endian (network order), through DataView with `false`.
 */
import { l4Checksum, pseudoHeaderSum } from './checksum.js';
import type { InAny } from '../inany.js';

export const TCP_PROTOCOL = 6;
export const TCP_HEADER_LENGTH = 20;
export const TCP_MAX_HEADER_LENGTH = 60;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const TCP_OPT_EOL = 0;
export const TCP_OPT_NOP = 1;
export const TCP_OPT_MSS = 2;
export const TCP_OPT_WSCALE = 3;
export const TCP_OPT_SACK_PERMITTED = 4;
export const TCP_OPT_SACK = 5;
export const TCP_OPT_TIMESTAMP = 8;

/** The largest window scale shift RFC 7323 allows. */
export const TCP_MAX_WSCALE = 14;

export interface TcpOptions {
  /** Maximum segment size, or null when absent. */
  mss: number | null;
  /** Window scale shift (0..14), or null when absent. */
  windowScale: number | null;
  sackPermitted: boolean;
  timestamp: { value: number; echo: number } | null;
  /** An option length was invalid; parsing stopped there. */
  optionsMalformed: boolean;
}

/** The parsed meaning of one TCP segment. */
export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** Header length in bytes (data offset * 4). */
  headerLength: number;
  /** The 4 reserved bits (including the former NS bit); must be ignored on receipt (RFC 9293 §3.1). */
  reserved: number;
  /** Flag byte: CWR ECE URG ACK PSH RST SYN FIN. */
  flags: number;
  /** Raw 16-bit window field (unscaled). */
  window: number;
  checksum: number;
  urgent: number;
  options: TcpOptions;
  /** The segment's data: a subarray of the input. */
  payload: Uint8Array;
}

export type TcpParseResult =
  | { ok: true; segment: TcpSegment }
  | { ok: false; reason: 'truncated' | 'bad_offset' | 'bad_checksum' };

function parseOptions(bytes: Uint8Array, start: number, end: number): TcpOptions {
  const options: TcpOptions = { mss: null, windowScale: null, sackPermitted: false, timestamp: null, optionsMalformed: false };
  let i = start;
  while (i < end) {
    const kind = bytes[i]!;
    if (kind === TCP_OPT_EOL) break;
    if (kind === TCP_OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) {
      options.optionsMalformed = true;
      break;
    }
    const len = bytes[i + 1]!;
    if (len < 2 || i + len > end) {
      options.optionsMalformed = true;
      break;
    }
    switch (kind) {
      case TCP_OPT_MSS:
        if (len === 4) options.mss = (bytes[i + 2]! << 8) | bytes[i + 3]!;
        break;
      case TCP_OPT_WSCALE:
        if (len === 3) options.windowScale = Math.min(bytes[i + 2]!, TCP_MAX_WSCALE);
        break;
      case TCP_OPT_SACK_PERMITTED:
        if (len === 2) options.sackPermitted = true;
        break;
      case TCP_OPT_TIMESTAMP:
        if (len === 10) {
          const view = new DataView(bytes.buffer, bytes.byteOffset + i + 2, 8);
          options.timestamp = { value: view.getUint32(0, false), echo: view.getUint32(4, false) };
        }
        break;
      default:
        break; // SACK blocks and unknown options: skipped by length.
    }
    i += len;
  }
  return options;
}

/**
 * Parse and validate a TCP segment carried in an IPv4 packet from `src` to
 * `dst`. With `verifyChecksum` (default) a segment whose checksum does not
 * verify is rejected.
 */
export function parseTcp(bytes: Uint8Array, src: InAny, dst: InAny, verifyChecksum = true): TcpParseResult {
  if (bytes.length < TCP_HEADER_LENGTH) return { ok: false, reason: 'truncated' };
  const view = new DataView(bytes.buffer, bytes.byteOffset, TCP_HEADER_LENGTH);
  const offsetByte = view.getUint8(12);
  const headerLength = (offsetByte >>> 4) * 4;
  if (headerLength < TCP_HEADER_LENGTH || headerLength > bytes.length) return { ok: false, reason: 'bad_offset' };
  if (verifyChecksum && l4Checksum(src, dst, TCP_PROTOCOL, bytes) !== 0) return { ok: false, reason: 'bad_checksum' };
  return {
    ok: true,
    segment: {
      srcPort: view.getUint16(0, false),
      dstPort: view.getUint16(2, false),
      seq: view.getUint32(4, false),
      ack: view.getUint32(8, false),
      headerLength,
      reserved: offsetByte & 0x0f,
      flags: view.getUint8(13),
      window: view.getUint16(14, false),
      checksum: view.getUint16(16, false),
      urgent: view.getUint16(18, false),
      options: parseOptions(bytes, TCP_HEADER_LENGTH, headerLength),
      payload: bytes.subarray(headerLength),
    },
  };
}

/** Fields of a header to emit. */
export interface TcpHeaderFields {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** Options to include (SYN segments); omitted ones are not written. */
  mss?: number;
  windowScale?: number;
}

/** The header length `writeTcpHeader` will produce for these fields. */
export function tcpHeaderLength(fields: { mss?: number; windowScale?: number }): number {
  let length = TCP_HEADER_LENGTH;
  if (fields.mss !== undefined) length += 4;
  if (fields.windowScale !== undefined) length += 4; // NOP + 3-byte option keeps 32-bit alignment
  return length;
}

/**
 * Write a TCP header at the start of `out` (which must be at least
 * `tcpHeaderLength(fields)` long). The checksum field is zeroed; fill it with
 * `setTcpChecksum` once the payload is in place. Returns the header length.
 */
export function writeTcpHeader(out: Uint8Array, fields: TcpHeaderFields): number {
  const headerLength = tcpHeaderLength(fields);
  const view = new DataView(out.buffer, out.byteOffset, headerLength);
  view.setUint16(0, fields.srcPort, false);
  view.setUint16(2, fields.dstPort, false);
  view.setUint32(4, fields.seq >>> 0, false);
  view.setUint32(8, fields.ack >>> 0, false);
  view.setUint8(12, (headerLength / 4) << 4);
  view.setUint8(13, fields.flags & 0xff);
  view.setUint16(14, Math.max(0, Math.min(0xffff, fields.window)), false);
  view.setUint16(16, 0, false);
  view.setUint16(18, 0, false);
  let o = TCP_HEADER_LENGTH;
  if (fields.mss !== undefined) {
    view.setUint8(o, TCP_OPT_MSS);
    view.setUint8(o + 1, 4);
    view.setUint16(o + 2, fields.mss, false);
    o += 4;
  }
  if (fields.windowScale !== undefined) {
    view.setUint8(o, TCP_OPT_NOP);
    view.setUint8(o + 1, TCP_OPT_WSCALE);
    view.setUint8(o + 2, 3);
    view.setUint8(o + 3, fields.windowScale);
    o += 4;
  }
  return headerLength;
}

/** Compute and store the checksum of a complete segment (header + payload) sent from `src` to `dst`. */
export function setTcpChecksum(segment: Uint8Array, src: InAny, dst: InAny): void {
  segment[16] = 0;
  segment[17] = 0;
  const sum = l4Checksum(src, dst, TCP_PROTOCOL, segment);
  new DataView(segment.buffer, segment.byteOffset + 16, 2).setUint16(0, sum, false);
}

/**
 * Store only the pseudo-header sum (folded, not inverted) in the checksum
 * field of a segment sent from `src` to `dst` whose total length (header +
 * payload) is `length`: a partial checksum, which the receiver of a virtio
 * NEEDS_CSUM frame completes (or, as Linux does for local delivery, trusts).
 */
export function setTcpPartialChecksum(segment: Uint8Array, src: InAny, dst: InAny, length: number): void {
  let sum = pseudoHeaderSum(src, dst, TCP_PROTOCOL, length);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  segment[16] = sum >>> 8;
  segment[17] = sum & 0xff;
}
