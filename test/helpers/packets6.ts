/**
 * IPv6 frame builders for tests, the IPv6 counterpart of packets.ts.
 *
 * Self-contained in the same way: checksums are computed here over an
 * explicitly assembled pseudo-header with the shared `checksum`, not with
 * the stack's checksum-ipv6.ts, so a bug there cannot hide behind the same
 * bug here. Extension headers are built from their parts so tests can
 * make any chain, well-formed or not.
 *
 * Addresses are 16-byte Uint8Arrays (src/net/ipv6-address.ts);
 * `ip6('fe80::1')` converts a literal. The guest's addresses are those of
 * the libslirp captures in ../shared/corpora (MAC 52:54:00:12:34:56, prefix
 * fec0::/64).
 */
import { checksum } from '../../src/net/wire/checksum.js';
import { linkLocalFromMac, parseIPv6, type IPv6Address } from '../../src/net/ipv6-address.js';
import { ETH_IPV6, GUEST_MAC, GATEWAY_MAC, concat, ethernetFrame, tcpSegment, udpWithChecksum, type TcpSegmentOptions, type UdpOptions } from './packets.js';

export const NH_HOP_BY_HOP = 0;
export const NH_TCP = 6;
export const NH_UDP = 17;
export const NH_ROUTING = 43;
export const NH_FRAGMENT = 44;
export const NH_ICMPV6 = 58;
export const NH_NONE = 59;
export const NH_DEST_OPTS = 60;

export function ip6(text: string): IPv6Address {
  const a = parseIPv6(text);
  if (a === null) throw new Error(`bad IPv6 literal ${text}`);
  return a;
}

/** The guest of the libslirp captures: SLAAC address in fec0::/64 and its link-local address. */
export const GUEST_IP6 = ip6('fec0::5054:ff:fe12:3456');
export const GUEST_LL6 = linkLocalFromMac(GUEST_MAC);
export const GATEWAY_IP6 = ip6('fec0::2');
export const GATEWAY_LL6 = ip6('fe80::2');
export const DNS_IP6 = ip6('fec0::3');

function be16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}

export interface Ipv6Options {
  src?: IPv6Address;
  dst: IPv6Address;
  nextHeader: number;
  payload: Uint8Array;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  /** Override the payload length field. */
  payloadLength?: number;
  version?: number;
}

export function ipv6Packet(o: Ipv6Options): Uint8Array {
  const p = new Uint8Array(40 + o.payload.length);
  const word0 = ((o.version ?? 6) << 28) | ((o.trafficClass ?? 0) << 20) | (o.flowLabel ?? 0);
  new DataView(p.buffer).setUint32(0, word0 >>> 0, false);
  be16(p, 4, o.payloadLength ?? o.payload.length);
  p[6] = o.nextHeader;
  p[7] = o.hopLimit ?? 64;
  p.set(o.src ?? GUEST_IP6, 8);
  p.set(o.dst, 24);
  p.set(o.payload, 40);
  return p;
}

/** An Ethernet frame from the guest (to the gateway MAC unless told) carrying `packet`. */
export function guestIpv6Frame(packet: Uint8Array, dstMac: Uint8Array = GATEWAY_MAC, padTo?: number): Uint8Array {
  return ethernetFrame({ etherType: ETH_IPV6, src: GUEST_MAC, dst: dstMac, payload: packet, ...(padTo ? { padTo } : {}) });
}

/** The 40-byte pseudo-header of RFC 8200 §8.1, assembled byte by byte. */
export function pseudoHeader6(src: IPv6Address, dst: IPv6Address, nextHeader: number, length: number): Uint8Array {
  const p = new Uint8Array(40);
  p.set(src, 0);
  p.set(dst, 16);
  new DataView(p.buffer).setUint32(32, length >>> 0, false);
  p[39] = nextHeader;
  return p;
}

/** The checksum of `segment` (checksum field as it is) with its pseudo-header: 0 when a stored checksum is right. */
export function checksum6(src: IPv6Address, dst: IPv6Address, nextHeader: number, segment: Uint8Array): number {
  return checksum(concat(pseudoHeader6(src, dst, nextHeader, segment.length), segment));
}

export interface Icmpv6Options {
  src?: IPv6Address;
  dst: IPv6Address;
  type: number;
  code?: number;
  /** Bytes 4..8 (echo id/seq, MTU, pointer, NDP flags). */
  parameter?: number;
  body?: Uint8Array;
  badChecksum?: boolean;
}

export function icmpv6Message(o: Icmpv6Options): Uint8Array {
  const m = new Uint8Array(8 + (o.body?.length ?? 0));
  m[0] = o.type;
  m[1] = o.code ?? 0;
  new DataView(m.buffer).setUint32(4, (o.parameter ?? 0) >>> 0, false);
  if (o.body) m.set(o.body, 8);
  const c = checksum6(o.src ?? GUEST_IP6, o.dst, NH_ICMPV6, m);
  be16(m, 2, o.badChecksum ? c ^ 0x0f0f : c);
  return m;
}

export interface Udp6Options extends Omit<UdpOptions, 'src' | 'dst'> {
  src?: IPv6Address;
  dst: IPv6Address;
}

export function udp6Datagram(o: Udp6Options): Uint8Array {
  return udpWithChecksum(o, (d) => checksum6(o.src ?? GUEST_IP6, o.dst, NH_UDP, d));
}

/**
 * A Hop-by-Hop or Destination Options header: next header, length, the
 * options as given, then PadN/Pad1 to a multiple of 8 unless `noPad`.
 */
export function optionsHeader(nextHeader: number, options: number[], noPad = false): Uint8Array {
  const body = [...options];
  const pad = (8 - ((2 + body.length) % 8)) % 8;
  if (!noPad && pad === 1) body.push(0);
  else if (!noPad && pad >= 2) body.push(1, pad - 2, ...new Array<number>(pad - 2).fill(0));
  const length = 2 + body.length;
  return Uint8Array.from([nextHeader, Math.ceil(length / 8) - 1, ...body]);
}

/** A Routing header with `data` after the 4 fixed bytes (padded with zeros to a multiple of 8). */
export function routingHeader(nextHeader: number, routingType: number, segmentsLeft: number, data: number[] = [0, 0, 0, 0]): Uint8Array {
  const body = [nextHeader, 0, routingType, segmentsLeft, ...data];
  while (body.length % 8 !== 0) body.push(0);
  body[1] = body.length / 8 - 1;
  return Uint8Array.from(body);
}

/** A Fragment header (offset in bytes, a multiple of 8). */
export function fragmentHeader(nextHeader: number, offset: number, more: boolean, identification: number): Uint8Array {
  const h = new Uint8Array(8);
  h[0] = nextHeader;
  be16(h, 2, (offset & 0xfff8) | (more ? 1 : 0));
  new DataView(h.buffer).setUint32(4, identification >>> 0, false);
  return h;
}

/** A guest-sent IPv6 frame parsed the simple way (fixed header, then the upper layer directly or behind one fragment header). */
export interface ParsedFrame6 {
  ethDst: Uint8Array;
  ethSrc: Uint8Array;
  src: IPv6Address;
  dst: IPv6Address;
  hopLimit: number;
  nextHeader: number;
  /** The upper-layer protocol and bytes (behind a fragment header when there is one). */
  protocol: number;
  upper: Uint8Array;
  fragment: { offset: number; more: boolean; id: number } | null;
  /** The upper-layer checksum checks out (false for fragments). */
  checksumOk: boolean;
  icmp?: { type: number; code: number; parameter: number; body: Uint8Array };
  udp?: { sport: number; dport: number; payload: Uint8Array };
  tcp?: { sport: number; dport: number; seq: number; ack: number; flags: number; window: number; mss?: number; payload: Uint8Array };
}

/** Parse a frame the stack sent (throws on anything that is not IPv6). */
export function parseFrame6(frame: Uint8Array): ParsedFrame6 {
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.length);
  if (dv.getUint16(12, false) !== ETH_IPV6) throw new Error('not an IPv6 frame');
  const p = frame.subarray(14);
  if (p[0]! >>> 4 !== 6) throw new Error('not version 6');
  const payloadLength = (p[4]! << 8) | p[5]!;
  if (40 + payloadLength !== p.length) throw new Error(`payload length ${payloadLength} for ${p.length - 40} bytes`);
  const src = p.slice(8, 24);
  const dst = p.slice(24, 40);
  let protocol = p[6]!;
  let upper = p.subarray(40);
  let fragment: ParsedFrame6['fragment'] = null;
  if (protocol === NH_FRAGMENT) {
    const word = (upper[2]! << 8) | upper[3]!;
    fragment = { offset: word & 0xfff8, more: (word & 1) !== 0, id: new DataView(upper.buffer, upper.byteOffset + 4, 4).getUint32(0, false) };
    protocol = upper[0]!;
    upper = upper.subarray(8);
  }
  const out: ParsedFrame6 = {
    ethDst: frame.slice(0, 6), ethSrc: frame.slice(6, 12), src, dst, hopLimit: p[7]!, nextHeader: p[6]!, protocol, upper, fragment,
    checksumOk: fragment === null && checksum6(src, dst, protocol, upper) === 0,
  };
  if (protocol === NH_ICMPV6 && upper.length >= 8) {
    out.icmp = { type: upper[0]!, code: upper[1]!, parameter: new DataView(upper.buffer, upper.byteOffset + 4, 4).getUint32(0, false), body: upper.subarray(8) };
  }
  if (protocol === NH_UDP && upper.length >= 8) {
    out.udp = { sport: (upper[0]! << 8) | upper[1]!, dport: (upper[2]! << 8) | upper[3]!, payload: upper.subarray(8) };
  }
  if (protocol === NH_TCP && upper.length >= 20) {
    const tv = new DataView(upper.buffer, upper.byteOffset, upper.length);
    const hl = (upper[12]! >>> 4) * 4;
    out.tcp = {
      sport: tv.getUint16(0, false), dport: tv.getUint16(2, false), seq: tv.getUint32(4, false), ack: tv.getUint32(8, false),
      flags: upper[13]!, window: tv.getUint16(14, false), payload: upper.subarray(hl),
    };
    for (let i = 20; i < hl;) {
      const kind = upper[i]!;
      if (kind === 0) break;
      if (kind === 1) { i++; continue; }
      if (kind === 2) out.tcp.mss = tv.getUint16(i + 2, false);
      i += Math.max(2, upper[i + 1]!);
    }
  }
  return out;
}

/** A Neighbor Solicitation body: 4 reserved bytes are the message's parameter; target then options (raw bytes). */
export function neighborSolicitation(target: IPv6Address, sourceMac?: Uint8Array): Uint8Array {
  return sourceMac ? concat(target, Uint8Array.of(1, 1), sourceMac) : target.slice();
}

/** A Router Solicitation body: 4 reserved bytes (the parameter), then an optional source link-layer option. */
export function routerSolicitation(sourceMac?: Uint8Array): Uint8Array {
  return sourceMac ? concat(Uint8Array.of(1, 1), sourceMac) : new Uint8Array(0);
}

/** A guest ICMPv6 frame with hop limit 255 (NDP) unless told. */
export function guestIcmpv6Frame(o: Icmpv6Options & { hopLimit?: number; dstMac?: Uint8Array }): Uint8Array {
  const src = o.src ?? GUEST_IP6;
  return guestIpv6Frame(ipv6Packet({ src, dst: o.dst, nextHeader: NH_ICMPV6, payload: icmpv6Message({ ...o, src }), hopLimit: o.hopLimit ?? 255 }), o.dstMac);
}

/** A TCP segment with its checksum over the IPv6 pseudo-header (packets.ts's tcpSegment for the rest). */
export function tcp6Segment(o: Omit<TcpSegmentOptions, 'src' | 'dst'> & { src?: IPv6Address; dst: IPv6Address }): Uint8Array {
  const s = tcpSegment({ ...o, src: 0, dst: 0 });
  s[16] = 0;
  s[17] = 0;
  const c = checksum6(o.src ?? GUEST_IP6, o.dst, NH_TCP, s);
  be16(s, 16, o.badChecksum ? c ^ 0x0101 : c);
  return s;
}

/** A guest frame carrying a TCP segment over IPv6. */
export function guestTcp6Frame(o: Omit<TcpSegmentOptions, 'src' | 'dst'> & { src?: IPv6Address; dst: IPv6Address }): Uint8Array {
  const src = o.src ?? GUEST_IP6;
  return guestIpv6Frame(ipv6Packet({ src, dst: o.dst, nextHeader: NH_TCP, payload: tcp6Segment({ ...o, src }) }));
}
