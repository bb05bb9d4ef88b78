/**
 * ICMPv6 message view and builders (RFC 4443).
 *
 * Theory of operation: every ICMPv6 message has type, code, checksum and a
 * 32-bit field whose meaning depends on the type (identifier + sequence for
 * echo, the MTU of Packet Too Big, the pointer of Parameter Problem, unused
 * otherwise), then a body. Every message defined is at least 8 bytes, so
 * `parseIcmpv6` checks that and the checksum, which in IPv6 is mandatory
 * and covers the pseudo-header (RFC 4443 §2.3), and returns fields and
 * views. NDP messages (types 133..137) are taken further by ndp.ts.
 *
 * Builders return whole messages with their checksum for a given source
 * and destination. Error messages quote as much of the offending packet as
 * fits in the IPv6 minimum MTU (RFC 4443 §2.4 (c)): 1280 - 40 - 8 = 1232
 * bytes. Whether an error may be sent at all is `icmpv6ErrorAllowed`,
 * which applies RFC 4443 §2.4 (e): never about an ICMPv6 error or a
 * Redirect, never to a source that is not one unicast node, and about a
 * packet sent to a multicast address (IPv6 or link layer) only for Packet
 * Too Big and for a Parameter Problem about an option whose type says
 * "tell even a multicast sender" (RFC 8200 §4.2, high bits 10). Rate
 * limiting (§2.4 (f)) is the sender's business.
 */
import { l4ChecksumIPv6 } from './checksum-ipv6.js';
import { IPV6_HEADER_LENGTH, IPV6_MIN_MTU, NEXT_HEADER_ICMPV6 } from './ipv6.js';
import { isMulticastIPv6, isUnicastIPv6, type IPv6Address } from '../ipv6-address.js';

export const ICMPV6_HEADER_LENGTH = 8;

export const ICMPV6_DEST_UNREACHABLE = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAMETER_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
export const ICMPV6_ROUTER_SOLICITATION = 133;
export const ICMPV6_ROUTER_ADVERTISEMENT = 134;
export const ICMPV6_NEIGHBOR_SOLICITATION = 135;
export const ICMPV6_NEIGHBOR_ADVERTISEMENT = 136;
export const ICMPV6_REDIRECT = 137;

/** Destination Unreachable codes (RFC 4443 §3.1). */
export const ICMPV6_UNREACH_NO_ROUTE = 0;
export const ICMPV6_UNREACH_ADMIN = 1;
export const ICMPV6_UNREACH_BEYOND_SCOPE = 2;
export const ICMPV6_UNREACH_ADDRESS = 3;
export const ICMPV6_UNREACH_PORT = 4;
export const ICMPV6_UNREACH_POLICY = 5;
export const ICMPV6_UNREACH_REJECT_ROUTE = 6;
/** Time Exceeded codes (RFC 4443 §3.3). */
export const ICMPV6_TIME_EXCEEDED_HOP_LIMIT = 0;
export const ICMPV6_TIME_EXCEEDED_REASSEMBLY = 1;

/** Most bytes of the offending packet an error message quotes. */
export const ICMPV6_ERROR_QUOTE_MAX = IPV6_MIN_MTU - IPV6_HEADER_LENGTH - ICMPV6_HEADER_LENGTH;

export interface Icmpv6View {
  type: number;
  code: number;
  /** Bytes 4..8 as a big-endian number: the MTU (Packet Too Big), the pointer (Parameter Problem). */
  parameter: number;
  /** Echo identifier and sequence number (bytes 4..6 and 6..8). */
  id: number;
  seq: number;
  /** Bytes after the 8-byte header: echo data, the quoted packet of an error, NDP fields and options. */
  body: Uint8Array;
  message: Uint8Array;
}

/** Checked parse (length, checksum over the pseudo-header): the view, or a drop reason. */
export function parseIcmpv6(message: Uint8Array, src: IPv6Address, dst: IPv6Address): Icmpv6View | string {
  if (message.length < ICMPV6_HEADER_LENGTH) return 'truncated';
  if (l4ChecksumIPv6(src, dst, NEXT_HEADER_ICMPV6, message) !== 0) return 'bad_checksum';
  const dv = new DataView(message.buffer, message.byteOffset, ICMPV6_HEADER_LENGTH);
  return {
    type: message[0]!,
    code: message[1]!,
    parameter: dv.getUint32(4, false),
    id: dv.getUint16(4, false),
    seq: dv.getUint16(6, false),
    body: message.subarray(ICMPV6_HEADER_LENGTH),
    message,
  };
}

/** Types 0..127 are errors (RFC 4443 §2.1): never answered with another error. */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}

/** Fill the checksum field (bytes 2..4, big-endian) of a finished message. */
export function finishIcmpv6Checksum(message: Uint8Array, src: IPv6Address, dst: IPv6Address): void {
  message[2] = 0;
  message[3] = 0;
  const c = l4ChecksumIPv6(src, dst, NEXT_HEADER_ICMPV6, message);
  message[2] = c >>> 8;
  message[3] = c & 0xff;
}

/** A new message: type, code, the 32-bit parameter and `body`, with its checksum. */
export function buildIcmpv6(type: number, code: number, parameter: number, body: Uint8Array, src: IPv6Address, dst: IPv6Address): Uint8Array {
  const message = new Uint8Array(ICMPV6_HEADER_LENGTH + body.length);
  message[0] = type;
  message[1] = code;
  new DataView(message.buffer).setUint32(4, parameter >>> 0, false);
  message.set(body, ICMPV6_HEADER_LENGTH);
  finishIcmpv6Checksum(message, src, dst);
  return message;
}

/** An Echo Request with `data`. */
export function buildEchoRequest(id: number, seq: number, data: Uint8Array, src: IPv6Address, dst: IPv6Address): Uint8Array {
  return buildIcmpv6(ICMPV6_ECHO_REQUEST, 0, ((id & 0xffff) << 16 | (seq & 0xffff)) >>> 0, data, src, dst);
}

/** The Echo Reply to `request` (same identifier, sequence and data, RFC 4443 §4.2), from `src` to `dst`. */
export function buildEchoReply(request: Icmpv6View, src: IPv6Address, dst: IPv6Address): Uint8Array {
  return buildIcmpv6(ICMPV6_ECHO_REPLY, 0, request.parameter, request.body, src, dst);
}

/**
 * An error message (Destination Unreachable, Packet Too Big, Time Exceeded,
 * Parameter Problem) about `offending` (its IPv6 packet from the fixed
 * header on), quoting as much as fits in 1280 bytes. `parameter` is the
 * MTU, the pointer, or 0.
 */
export function buildIcmpv6Error(
  type: number, code: number, parameter: number, offending: Uint8Array, src: IPv6Address, dst: IPv6Address,
): Uint8Array {
  return buildIcmpv6(type, code, parameter, offending.subarray(0, ICMPV6_ERROR_QUOTE_MAX), src, dst);
}

/** What RFC 4443 §2.4 (e) needs to know about the packet an error would be about. */
export interface Icmpv6ErrorContext {
  /** The offending packet's source and destination. */
  src: IPv6Address;
  dst: IPv6Address;
  /** It arrived in a link-layer multicast or broadcast frame. */
  linkMulticast: boolean;
  /** Its ICMPv6 type when it is (or its first fragment shows) an ICMPv6 message, else null. */
  icmpv6Type: number | null;
}

/**
 * May an error of `type`/`code` be sent about this packet (RFC 4443 §2.4 (e))?
 * `evenIfMulticast` is the walker's verdict for an unrecognized option
 * whose type's high bits are 10 (ipv6.ts, IPv6ParameterProblem).
 */
export function icmpv6ErrorAllowed(ctx: Icmpv6ErrorContext, type: number, evenIfMulticast = false): boolean {
  if (ctx.icmpv6Type !== null && (isIcmpv6Error(ctx.icmpv6Type) || ctx.icmpv6Type === ICMPV6_REDIRECT)) return false;
  if (!isUnicastIPv6(ctx.src)) return false;
  if (isMulticastIPv6(ctx.dst) || ctx.linkMulticast) {
    return type === ICMPV6_PACKET_TOO_BIG || (type === ICMPV6_PARAMETER_PROBLEM && evenIfMulticast);
  }
  return true;
}
