/**
 * IPv6 header view and extension-header walker (RFC 8200).
 *
 * Theory of operation. `parseIPv6Packet` validates the fixed header once —
 * at least 40 bytes, version 6, payload length within the bytes we have
 * (trailing Ethernet padding is allowed and trimmed) — and returns a plain
 * object of fields with views of the packet (trimmed to 40 + payload
 * length), the payload and the two addresses (views, no copies). A payload
 * length of 0 with a hop-by-hop header and bytes after the header is a
 * jumbogram (RFC 2675), which a link of our MTU never carries: refused.
 *
 * `walkIPv6Headers` then follows the Next Header chain and ends in one of
 * three verdicts:
 *  - an upper layer: the protocol number, the offset of its header, its
 *    bytes, the offset of the Next Header field that named it (the pointer
 *    for a Parameter Problem if the caller does not serve the protocol),
 *    the Router Alert value if there was one, and the fragment header's
 *    fields for a fragment;
 *  - a Parameter Problem (RFC 4443 §3.4) the caller should send (subject
 *    to the rules of RFC 4443 §2.4, see icmpv6.ts), with code, pointer and
 *    a reason to count; the packet is dropped either way;
 *  - a string: the packet is dropped silently, the string names the
 *    counter.
 *
 * The chain, per RFC 8200 §4:
 *  - Hop-by-Hop Options (0) only directly after the header (§4.3); found
 *    anywhere else it is an unrecognized Next Header (PP code 1).
 *  - Hop-by-Hop and Destination Options (60) are walked option by option
 *    (§4.2): Pad1 and PadN are skipped (a run of padding longer than 7
 *    bytes is dropped, as Linux does: padding has no business being longer
 *    than an 8-byte alignment needs); Router Alert (5) in a hop-by-hop
 *    header is noted; any other option is unrecognized and its type's two
 *    high bits decide: 00 skip, 01 drop silently, 10 drop and PP code 2
 *    pointing at the option type even if the destination was multicast,
 *    11 the same but not for a multicast destination. An option running
 *    past its header is dropped.
 *  - Routing (43): with Segments Left 0 the header is skipped (§4.4);
 *    otherwise this node would have to forward the packet, which it never
 *    does, so every routing type is unrecognized: PP code 0 pointing at
 *    the Routing Type (type 0 is deprecated by RFC 5095, the others — Mobile
 *    IPv6, RPL, SRv6 — are for nodes we are not).
 *  - Fragment (44): offset 0 with M clear is an atomic fragment, processed
 *    as a whole packet (RFC 6946) and the walk goes on. Any other fragment
 *    ends the walk at the fragment header (the protocol and offset are
 *    those of the fragmentable part, for reassembly). A fragment with M set
 *    whose payload length is not a multiple of 8 gets PP code 0 at the
 *    Payload Length field, one that would reassemble past 65535 bytes PP
 *    code 0 at the Fragment Offset (§4.5); a first fragment whose header
 *    chain does not reach the upper-layer header (RFC 7112) PP code 3.
 *  - ESP (50) and AH (51) end the walk as upper layers: this stack does not
 *    do IPsec, and a caller that treats them as unserved protocols answers
 *    PP code 1 as RFC 4301 expects of a node without IPsec. No Next Header
 *    (59) ends the walk with an empty payload (§4.7: bytes after it are
 *    ignored). Anything else is an upper layer too.
 * At most MAX_EXTENSION_HEADERS headers and MAX_EXTENSION_BYTES bytes of
 * them are walked, and at most MAX_OPTIONS non-padding options per header
 * (RFC 8504 §5.3 lets a node set such limits): past that the packet is
 * dropped, so the walk's work is bounded whatever the guest sends.
 *
 * `writeIPv6Header` fills the 40-byte fixed header of an outgoing packet.
 */
import { viewIPv6, writeIPv6, type IPv6Address } from '../ipv6-address.js';

export const IPV6_HEADER_LENGTH = 40;
/** The minimum link MTU every IPv6 link must carry (RFC 8200 §5). */
export const IPV6_MIN_MTU = 1280;

export const NEXT_HEADER_HOP_BY_HOP = 0;
export const NEXT_HEADER_TCP = 6;
export const NEXT_HEADER_UDP = 17;
export const NEXT_HEADER_ROUTING = 43;
export const NEXT_HEADER_FRAGMENT = 44;
export const NEXT_HEADER_ESP = 50;
export const NEXT_HEADER_AH = 51;
export const NEXT_HEADER_ICMPV6 = 58;
export const NEXT_HEADER_NONE = 59;
export const NEXT_HEADER_DESTINATION_OPTIONS = 60;

export const OPTION_PAD1 = 0;
export const OPTION_PADN = 1;
export const OPTION_ROUTER_ALERT = 5;

/** Parameter Problem codes (RFC 4443 §3.4, RFC 7112). */
export const PARAM_PROBLEM_HEADER_FIELD = 0;
export const PARAM_PROBLEM_NEXT_HEADER = 1;
export const PARAM_PROBLEM_OPTION = 2;
export const PARAM_PROBLEM_INCOMPLETE_CHAIN = 3;

export const MAX_EXTENSION_HEADERS = 8;
export const MAX_EXTENSION_BYTES = 1024;
export const MAX_OPTIONS = 8;
/** Longest run of Pad1/PadN bytes accepted in an options header. */
export const MAX_PADDING = 7;

export interface IPv6View {
  trafficClass: number;
  /** 20 bits. */
  flowLabel: number;
  payloadLength: number;
  nextHeader: number;
  hopLimit: number;
  /** Views into the packet. */
  src: IPv6Address;
  dst: IPv6Address;
  /** Header + payload, trimmed to 40 + payloadLength. */
  packet: Uint8Array;
  /** Everything after the fixed header (extension headers included). */
  payload: Uint8Array;
}

/** Checked parse of the fixed header: the view, or a drop reason. */
export function parseIPv6Packet(bytes: Uint8Array): IPv6View | string {
  if (bytes.length < IPV6_HEADER_LENGTH) return 'truncated';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, IPV6_HEADER_LENGTH);
  const word0 = dv.getUint32(0, false);
  if (word0 >>> 28 !== 6) return 'bad_version';
  const payloadLength = dv.getUint16(4, false);
  const nextHeader = bytes[6]!;
  if (payloadLength === 0 && nextHeader === NEXT_HEADER_HOP_BY_HOP && bytes.length > IPV6_HEADER_LENGTH) return 'jumbogram';
  if (IPV6_HEADER_LENGTH + payloadLength > bytes.length) return 'truncated';
  const packet = bytes.subarray(0, IPV6_HEADER_LENGTH + payloadLength);
  return {
    trafficClass: (word0 >>> 20) & 0xff,
    flowLabel: word0 & 0xfffff,
    payloadLength,
    nextHeader,
    hopLimit: bytes[7]!,
    src: viewIPv6(packet, 8),
    dst: viewIPv6(packet, 24),
    packet,
    payload: packet.subarray(IPV6_HEADER_LENGTH),
  };
}

export interface IPv6Fragment {
  /** Fragment offset in bytes (a multiple of 8). */
  offset: number;
  more: boolean;
  identification: number;
  /** Offset of the fragment header in the packet (the unfragmentable part ends here). */
  headerOffset: number;
}

export interface IPv6UpperLayer {
  kind: 'upper_layer';
  /** The upper-layer protocol (Next Header value); for a fragment, that of the fragmentable part. */
  protocol: number;
  /** Offset of its header in the packet. */
  offset: number;
  /** packet[offset..]: the upper-layer header and data (empty for No Next Header). */
  payload: Uint8Array;
  /** Offset of the Next Header field that named `protocol`: the pointer of a PP code 1 for an unserved protocol. */
  nextHeaderPointer: number;
  /** Extension headers walked (an atomic fragment header counts). */
  extensionHeaders: number;
  /** Value of a Router Alert option (RFC 2711) in the hop-by-hop header, or null. */
  routerAlert: number | null;
  /** Non-null for a fragment that needs reassembly (never for an atomic fragment). */
  fragment: IPv6Fragment | null;
}

export interface IPv6ParameterProblem {
  kind: 'parameter_problem';
  /** PARAM_PROBLEM_* */
  code: number;
  /** Offset of the offending byte in the packet (RFC 4443 §3.4 pointer). */
  pointer: number;
  /** Counter name suffix. */
  reason: string;
  /** RFC 4443 §2.4 (e.2): may be sent even for a multicast destination (an option whose type's high bits are 10). */
  evenIfMulticast: boolean;
}

function problem(code: number, pointer: number, reason: string, evenIfMulticast = false): IPv6ParameterProblem {
  return { kind: 'parameter_problem', code, pointer, reason, evenIfMulticast };
}

/** Size of the upper-layer header a first fragment must hold (RFC 7112; 0 when we do not know the protocol). */
function upperLayerHeaderLength(protocol: number): number {
  if (protocol === NEXT_HEADER_TCP) return 20;
  if (protocol === NEXT_HEADER_UDP) return 8;
  if (protocol === NEXT_HEADER_ICMPV6) return 4;
  return 0;
}

/** Walk one Hop-by-Hop or Destination Options header at packet[start..start+length): Router Alert value (or -1), a PP, or a drop reason. */
function walkOptions(packet: Uint8Array, start: number, length: number, hopByHop: boolean): number | IPv6ParameterProblem | string {
  const end = start + length;
  let routerAlert = -1;
  let padding = 0;
  let options = 0;
  for (let i = start + 2; i < end; ) {
    const type = packet[i]!;
    if (type === OPTION_PAD1) {
      if (++padding > MAX_PADDING) return 'excess_padding';
      i++;
      continue;
    }
    if (i + 2 > end) return 'bad_option_length';
    const dataLength = packet[i + 1]!;
    if (i + 2 + dataLength > end) return 'bad_option_length';
    if (type === OPTION_PADN) {
      padding += 2 + dataLength;
      if (padding > MAX_PADDING) return 'excess_padding';
      i += 2 + dataLength;
      continue;
    }
    padding = 0;
    if (++options > MAX_OPTIONS) return 'too_many_options';
    if (hopByHop && type === OPTION_ROUTER_ALERT) {
      if (dataLength !== 2) return 'bad_option_length';
      routerAlert = (packet[i + 2]! << 8) | packet[i + 3]!;
    } else {
      switch (type >>> 6) {
        case 0:
          break;
        case 1:
          return 'unrecognized_option';
        case 2:
          return problem(PARAM_PROBLEM_OPTION, i, 'unrecognized_option', true);
        default:
          return problem(PARAM_PROBLEM_OPTION, i, 'unrecognized_option', false);
      }
    }
    i += 2 + dataLength;
  }
  return routerAlert;
}

/**
 * Does the header chain starting with `nextHeader` at `offset` reach, inside
 * the packet, an upper-layer header it holds whole (RFC 7112)? Lengths
 * only: option contents are for after reassembly.
 */
function chainComplete(packet: Uint8Array, nextHeader: number, offset: number, headersSoFar: number, bytesSoFar: number): boolean {
  let nh = nextHeader;
  let off = offset;
  let headers = headersSoFar;
  let bytes = bytesSoFar;
  while (nh === NEXT_HEADER_DESTINATION_OPTIONS || nh === NEXT_HEADER_ROUTING) {
    if (off + 8 > packet.length) return false;
    const length = (packet[off + 1]! + 1) * 8;
    if (off + length > packet.length || ++headers > MAX_EXTENSION_HEADERS || (bytes += length) > MAX_EXTENSION_BYTES) return false;
    nh = packet[off]!;
    off += length;
  }
  return off + upperLayerHeaderLength(nh) <= packet.length;
}

/** Follow the extension headers of a parsed packet to its upper layer: see the theory of operation. */
export function walkIPv6Headers(view: IPv6View): IPv6UpperLayer | IPv6ParameterProblem | string {
  const packet = view.packet;
  const dv = new DataView(packet.buffer, packet.byteOffset, packet.length);
  let nh = view.nextHeader;
  let pointer = 6;
  let off = IPV6_HEADER_LENGTH;
  let headers = 0;
  let bytes = 0;
  let routerAlert: number | null = null;
  for (;;) {
    let length: number;
    switch (nh) {
      case NEXT_HEADER_HOP_BY_HOP:
      case NEXT_HEADER_DESTINATION_OPTIONS: {
        if (nh === NEXT_HEADER_HOP_BY_HOP && off !== IPV6_HEADER_LENGTH) {
          return problem(PARAM_PROBLEM_NEXT_HEADER, pointer, 'misplaced_hop_by_hop');
        }
        if (off + 8 > packet.length) return 'truncated_extension';
        length = (packet[off + 1]! + 1) * 8;
        if (off + length > packet.length) return 'truncated_extension';
        const r = walkOptions(packet, off, length, nh === NEXT_HEADER_HOP_BY_HOP);
        if (typeof r !== 'number') return r;
        if (r >= 0) routerAlert = r;
        break;
      }
      case NEXT_HEADER_ROUTING: {
        if (off + 8 > packet.length) return 'truncated_extension';
        length = (packet[off + 1]! + 1) * 8;
        if (off + length > packet.length) return 'truncated_extension';
        if (packet[off + 3] !== 0) return problem(PARAM_PROBLEM_HEADER_FIELD, off + 2, 'routing_header');
        break;
      }
      case NEXT_HEADER_FRAGMENT: {
        length = 8;
        if (off + 8 > packet.length) return 'truncated_extension';
        const offsetAndFlags = dv.getUint16(off + 2, false);
        const fragmentOffset = offsetAndFlags & 0xfff8;
        const more = (offsetAndFlags & 1) !== 0;
        if (fragmentOffset === 0 && !more) break; // atomic fragment (RFC 6946): go on as a whole packet
        if (more && view.payloadLength % 8 !== 0) return problem(PARAM_PROBLEM_HEADER_FIELD, 4, 'fragment_length');
        // Reassembled payload length: unfragmentable extension headers + fragment offset + this fragment's data.
        if (off - IPV6_HEADER_LENGTH + fragmentOffset + (packet.length - off - 8) > 0xffff) {
          return problem(PARAM_PROBLEM_HEADER_FIELD, off + 2, 'fragment_too_long');
        }
        if (++headers > MAX_EXTENSION_HEADERS || (bytes += length) > MAX_EXTENSION_BYTES) return 'too_many_extension_headers';
        if (fragmentOffset === 0 && !chainComplete(packet, packet[off]!, off + 8, headers, bytes)) {
          return problem(PARAM_PROBLEM_INCOMPLETE_CHAIN, 0, 'incomplete_chain');
        }
        return {
          kind: 'upper_layer',
          protocol: packet[off]!,
          offset: off + 8,
          payload: packet.subarray(off + 8),
          nextHeaderPointer: off,
          extensionHeaders: headers,
          routerAlert,
          fragment: { offset: fragmentOffset, more, identification: dv.getUint32(off + 4, false), headerOffset: off },
        };
      }
      default:
        return {
          kind: 'upper_layer',
          protocol: nh,
          offset: off,
          payload: nh === NEXT_HEADER_NONE ? packet.subarray(off, off) : packet.subarray(off),
          nextHeaderPointer: pointer,
          extensionHeaders: headers,
          routerAlert,
          fragment: null,
        };
    }
    if (++headers > MAX_EXTENSION_HEADERS || (bytes += length) > MAX_EXTENSION_BYTES) return 'too_many_extension_headers';
    pointer = off;
    nh = packet[off]!;
    off += length;
  }
}

export interface IPv6HeaderFields {
  src: IPv6Address;
  dst: IPv6Address;
  nextHeader: number;
  payloadLength: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}

/** Write the 40-byte fixed header at `out[0..40)` (big-endian fields). */
export function writeIPv6Header(out: Uint8Array, f: IPv6HeaderFields): void {
  const dv = new DataView(out.buffer, out.byteOffset, IPV6_HEADER_LENGTH);
  dv.setUint32(0, ((6 << 28) | (((f.trafficClass ?? 0) & 0xff) << 20) | ((f.flowLabel ?? 0) & 0xfffff)) >>> 0, false);
  dv.setUint16(4, f.payloadLength, false);
  out[6] = f.nextHeader;
  out[7] = f.hopLimit ?? 64;
  writeIPv6(out, 8, f.src);
  writeIPv6(out, 24, f.dst);
}

