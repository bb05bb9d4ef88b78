/**
 * The IPv4 layer: input checks, source policy, fragment reassembly, output
 * (plain, fragmented and offloaded) and ICMP error building, once.
 *
 * Theory of operation.
 *
 * In (`input`, from the dispatcher for EtherType 0x0800): the header is
 * checked by `parseIPv4Packet` (version, IHL, total length against the frame
 * with trailing padding trimmed, header checksum, reserved flag; options
 * skipped). Source policy: a source must be 0.0.0.0 (DHCP only, UDP) or an
 * address of the guest network that is not its network or broadcast address
 * nor the gateway or DNS address; anything else is 'ipv4.drop.bad_src'. A
 * good source teaches the stack the guest's MAC. TTL is checked for
 * forwarded traffic (time exceeded from the gateway, so traceroute shows it
 * as the first hop). Fragments go to the bounded reassembler
 * (ipv4-fragments.ts); a datagram completed there loses any offload
 * metadata. A GSO frame that is not TCP is dropped ('ipv4.drop.gso_not_tcp':
 * only TCP GSO is negotiated), one whose gso_type is not TCPV4 (TCPV6 on an
 * IPv4 packet) too ('ipv4.drop.gso_wrong_family'). Then by protocol to the transports: ICMP
 * (1), UDP (17), TCP (6); an unknown protocol to one of the stack's own
 * addresses gets protocol unreachable. `checksumTrusted` (the frame's L4
 * checksum was left partial by the guest, see `ipv4PartialChecksumTrusted`)
 * and DATA_VALID tell UDP and TCP not to verify.
 *
 * Out: `reserve` writes the Ethernet header (to the guest's MAC) and a
 * 20-byte IPv4 header (id, TTL 64, DF on request, header checksum) into a
 * frame reserved in the link and arms the stack's one FrameReservation
 * (output.ts) for the transport to fill; packets up to the MTU, or up to
 * 64 KiB with OUT_LARGE while the guest takes TSO4. `send` copies a
 * finished L4 payload and fragments it (RFC 791, pieces of multiples of 8
 * bytes) when it exceeds the MTU.
 *
 * ICMP errors (`sendIcmpError`) quote the offending packet's header and 8
 * bytes of its payload (RFC 792), never about an ICMP error, a non-first
 * fragment, a packet to or from a broadcast/multicast address or from
 * 0.0.0.0 (RFC 1122 3.2.2): those are counted 'icmp.tx.error_suppressed'.
 */
import type { FrameOffload } from '../link.js';
import type { IpMeta, OutputReservation } from '../context.js';
import { OUT_DONT_FRAGMENT, OUT_LARGE } from '../context.js';
import type { InAny } from '../inany.js';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV4, writeEthernetHeader } from '../wire/ethernet.js';
import { IPV4_HEADER_LENGTH, PROTO_ICMP, PROTO_TCP, PROTO_UDP, isUnicastAddress, parseIPv4Packet, writeIPv4Header } from '../wire/ipv4.js';
import { ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, ICMP_UNREACH_PROTOCOL, finishIcmpChecksum, isIcmpError } from '../wire/icmp.js';
import { fold, sum16 } from '../wire/checksum.js';
import { inSubnet } from '../ip-address.js';
import { networkBroadcast } from '../config.js';
import { Reassembler } from './ipv4-fragments.js';
import { VIRTIO_NET_HDR_GSO_ECN, type FamilyOutput, type FrameReservation, type IpHeaderOps, type IpLayerHost } from './output.js';

/** virtio-net gso_type for TCPv4 (virtio 1.2 §5.1.6). */
const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
const MAX_IPV4_PACKET = 65535;

const IPV4_OPS: IpHeaderOps = {
  name: 'ipv4',
  headerLength: IPV4_HEADER_LENGTH,
  gsoTcp: VIRTIO_NET_HDR_GSO_TCPV4,
  setPayloadLength(header, payloadLength) {
    const dv = new DataView(header.buffer, header.byteOffset, IPV4_HEADER_LENGTH);
    dv.setUint16(2, IPV4_HEADER_LENGTH + payloadLength, false);
    dv.setUint16(10, 0, false);
    dv.setUint16(10, fold(sum16(header.subarray(0, IPV4_HEADER_LENGTH))), false);
  },
};

export class Ipv4Layer implements FamilyOutput {
  readonly reassembler: Reassembler;
  private ipId = 1;

  constructor(private readonly host: IpLayerHost, private readonly reservation: FrameReservation) {
    this.reassembler = new Reassembler(host.counters);
  }

  // ---- input -------------------------------------------------------------------

  /** One IPv4 packet from the guest (the Ethernet payload); `trusted`: see the header comment. */
  input(bytes: Uint8Array, srcMac: Uint8Array, offload: FrameOffload | null, trusted: boolean): void {
    const host = this.host;
    const c = host.counters;
    const parsed = parseIPv4Packet(bytes);
    if (typeof parsed === 'string') return c.count(`ipv4.drop.${parsed}`);
    let ip = parsed;
    const cfg = host.config;
    const src = ip.src;
    if (src !== 0 && !this.guestSourceAllowed(src)) return c.count('ipv4.drop.bad_src');
    if (src !== 0) host.learnGuestMac(srcMac);
    c.count('ipv4.rx.packets');
    const dstLocal = ip.dst === cfg.gateway || ip.dst === cfg.dns || ip.dst === 0xffffffff || ip.dst === networkBroadcast(cfg);
    if (!dstLocal && ip.ttl <= 1) {
      if (ip.fragmentOffset === 0) this.sendIcmpError(ICMP_TIME_EXCEEDED, 0, ip.packet, cfg.gateway);
      return c.count('ipv4.drop.ttl_exceeded');
    }
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      const whole = this.reassembler.input(ip, host.clock.now());
      if (!whole) return;
      const again = parseIPv4Packet(whole, false);
      if (typeof again === 'string') return c.count(`ipv4.drop.reassembled_${again}`);
      ip = again;
      offload = null;
      trusted = false;
    }
    if (offload !== null && offload.gsoType !== 0 && ip.protocol !== PROTO_TCP) {
      // The device lets through only the GSO types we negotiated (TCPv4): a
      // TSO frame that is not TCP is a driver bug or hostile.
      return c.count('ipv4.drop.gso_not_tcp');
    }
    if (offload !== null && offload.gsoType !== 0 && (offload.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== VIRTIO_NET_HDR_GSO_TCPV4) {
      return c.count('ipv4.drop.gso_wrong_family');
    }
    const meta: IpMeta = { src: ip.src, dst: ip.dst, protocol: ip.protocol, ttl: ip.ttl, tos: ip.tos, packet: ip.packet };
    if (src === 0 && ip.protocol !== PROTO_UDP) return c.count('ipv4.drop.bad_src');
    const t = host.transports;
    switch (ip.protocol) {
      case PROTO_ICMP:
        return t.icmp.input(meta, ip.payload);
      case PROTO_UDP:
        return t.udp.input(meta, ip.payload, trusted || offload?.dataValid === true);
      case PROTO_TCP:
        if (!t.tcp) return c.count('ipv4.drop.no_tcp');
        return t.tcp.input(meta, ip.payload, trusted);
      default:
        c.count('ipv4.drop.protocol');
        if (ip.dst === cfg.gateway || ip.dst === cfg.dns) this.sendIcmpError(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PROTOCOL, ip.packet, ip.dst);
    }
  }

  /** Source policy: an address of the guest network other than its network/broadcast address and the stack's own. */
  private guestSourceAllowed(src: number): boolean {
    const cfg = this.host.config;
    return inSubnet(src, cfg.network, cfg.prefixLength) && src !== networkBroadcast(cfg) && src !== cfg.network &&
      src !== cfg.gateway && src !== cfg.dns;
  }

  /** Timers: reassembly deadlines (ICMP time exceeded, code 1, for a datagram whose first fragment arrived). */
  tick(now: number): void {
    for (const quote of this.reassembler.expire(now)) this.sendIcmpError(ICMP_TIME_EXCEEDED, 1, quote, this.host.config.gateway);
  }

  close(): void {
    this.reassembler.clear();
  }

  // ---- output --------------------------------------------------------------------

  reserve(src: InAny, dst: InAny, protocol: number, payloadLength: number, flags: number): OutputReservation | null {
    const host = this.host;
    this.reservation.release();
    const mac = host.guestMacOrAsk(dst);
    if (!mac) return null;
    const maxPacket = (flags & OUT_LARGE) !== 0 && host.guestOffloads.tso4 ? MAX_IPV4_PACKET : host.mtu;
    if (payloadLength < 0 || IPV4_HEADER_LENGTH + payloadLength > maxPacket) {
      host.counters.count('ipv4.tx.too_big');
      return null;
    }
    const len = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payloadLength;
    const frame = host.link.reserve(len);
    if (!frame) {
      host.counters.count('eth.tx.backpressure');
      return null;
    }
    writeEthernetHeader(frame, mac, host.config.gatewayMac, ETHERTYPE_IPV4);
    writeIPv4Header(frame.subarray(ETHERNET_HEADER_LENGTH), {
      src: src as number, dst: dst as number, protocol, totalLength: IPV4_HEADER_LENGTH + payloadLength, id: this.nextId(),
      dontFragment: (flags & OUT_DONT_FRAGMENT) !== 0,
    });
    return this.reservation.arm(frame, IPV4_OPS, protocol);
  }

  send(src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    const mac = this.host.guestMacOrAsk(dst);
    if (!mac) return false;
    return this.sendTo(mac, src, dst, protocol, payload);
  }

  sendTo(dstMac: Uint8Array, src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    const host = this.host;
    this.reservation.release();
    if (IPV4_HEADER_LENGTH + payload.length > MAX_IPV4_PACKET) {
      host.counters.count('ipv4.tx.too_big');
      return false;
    }
    const id = this.nextId();
    const mtu = host.mtu;
    const maxData = (mtu - IPV4_HEADER_LENGTH) & ~7;
    if (IPV4_HEADER_LENGTH + payload.length <= mtu) return this.emit(dstMac, src as number, dst as number, protocol, payload, id, 0, false);
    // Fragment (RFC 791): every piece but the last carries a multiple of 8 bytes.
    host.counters.count('ipv4.tx.fragmented');
    for (let off = 0; off < payload.length; off += maxData) {
      const piece = payload.subarray(off, Math.min(payload.length, off + maxData));
      const more = off + maxData < payload.length;
      if (!this.emit(dstMac, src as number, dst as number, protocol, piece, id, off, more)) return false;
    }
    return true;
  }

  private emit(dstMac: Uint8Array, src: number, dst: number, protocol: number, payload: Uint8Array, id: number, fragmentOffset: number, moreFragments: boolean): boolean {
    const host = this.host;
    const len = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payload.length;
    const frame = host.link.reserve(len);
    if (!frame) {
      host.counters.count('eth.tx.backpressure');
      return false;
    }
    writeEthernetHeader(frame, dstMac, host.config.gatewayMac, ETHERTYPE_IPV4);
    writeIPv4Header(frame.subarray(ETHERNET_HEADER_LENGTH), {
      src, dst, protocol, totalLength: IPV4_HEADER_LENGTH + payload.length, id, fragmentOffset, moreFragments,
    });
    frame.set(payload, ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH);
    host.capture(frame);
    host.link.commit(len);
    host.counters.count('eth.tx.frames');
    return true;
  }

  /** ICMP error to the guest quoting `offending` (see the header comment). */
  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: InAny): void {
    const ip = parseIPv4Packet(offending, false);
    if (typeof ip === 'string') {
      // A quote may be cut short (reassembly keeps header + 8 bytes): accept that.
      const cut = parseQuote(offending);
      if (!cut) return this.host.counters.count('icmp.tx.error_suppressed');
      return this.emitIcmpError(type, code, cut.packet, cut, from);
    }
    return this.emitIcmpError(type, code, ip.packet, ip, from);
  }

  private emitIcmpError(type: number, code: number, packet: Uint8Array,
    ip: { src: number; dst: number; protocol: number; headerLength: number; fragmentOffset: number }, from?: InAny): void {
    const host = this.host;
    const c = host.counters;
    const cfg = host.config;
    if (ip.fragmentOffset !== 0 || !isUnicastAddress(ip.src) || !isUnicastAddress(ip.dst) || ip.dst === networkBroadcast(cfg)) {
      return c.count('icmp.tx.error_suppressed');
    }
    if (ip.protocol === PROTO_ICMP) {
      const icmpType = packet[ip.headerLength];
      if (icmpType === undefined || isIcmpError(icmpType)) return c.count('icmp.tx.error_suppressed');
    }
    const quoteLen = Math.min(packet.length, ip.headerLength + 8);
    const msg = new Uint8Array(8 + quoteLen);
    msg[0] = type;
    msg[1] = code;
    if (type === ICMP_DEST_UNREACHABLE && code === 4) {
      // Fragmentation needed: next-hop MTU in the low 16 bits (RFC 1191).
      const mtu = host.mtu;
      msg[6] = (mtu >>> 8) & 0xff;
      msg[7] = mtu & 0xff;
    }
    msg.set(packet.subarray(0, quoteLen), 8);
    finishIcmpChecksum(msg);
    const src = typeof from === 'number' && isUnicastAddress(from) ? from : cfg.gateway;
    if (this.send(src, ip.src, PROTO_ICMP, msg)) c.count(`icmp.tx.error.type_${type}_code_${code}`);
  }

  private nextId(): number {
    this.ipId = (this.ipId + 1) & 0xffff;
    return this.ipId;
  }
}

/**
 * Whether a NEEDS_CSUM frame is an unfragmented IPv4 TCP or UDP packet whose
 * csum_start is its L4 header and csum_offset that header's checksum field
 * (16 for TCP, 6 for UDP): the shape Linux gives locally generated packets
 * with CHECKSUM_PARTIAL. Anything else takes the generic completion path.
 */
export function ipv4PartialChecksumTrusted(frame: Uint8Array, o: FrameOffload): boolean {
  if (frame.length < ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH) return false;
  if (frame[12] !== 0x08 || frame[13] !== 0x00) return false;
  const b0 = frame[ETHERNET_HEADER_LENGTH]!;
  if (b0 >>> 4 !== 4) return false;
  const l4 = ETHERNET_HEADER_LENGTH + (b0 & 0x0f) * 4;
  if (o.csumStart !== l4) return false;
  // More-fragments flag or a fragment offset: the checksum covers the reassembled whole.
  if (((frame[ETHERNET_HEADER_LENGTH + 6]! & 0x3f) | frame[ETHERNET_HEADER_LENGTH + 7]!) !== 0) return false;
  const protocol = frame[ETHERNET_HEADER_LENGTH + 9];
  const field = protocol === PROTO_TCP ? 16 : protocol === PROTO_UDP ? 6 : -1;
  return o.csumOffset === field && l4 + field + 2 <= frame.length;
}

/** Parse a possibly truncated quoted packet (header complete, payload cut short). */
function parseQuote(bytes: Uint8Array): { src: number; dst: number; protocol: number; headerLength: number; fragmentOffset: number; packet: Uint8Array } | null {
  if (bytes.length < IPV4_HEADER_LENGTH || bytes[0]! >>> 4 !== 4) return null;
  const headerLength = (bytes[0]! & 0x0f) * 4;
  if (headerLength < IPV4_HEADER_LENGTH || headerLength > bytes.length) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, headerLength);
  return {
    src: dv.getUint32(12, false),
    dst: dv.getUint32(16, false),
    protocol: bytes[9]!,
    headerLength,
    fragmentOffset: (dv.getUint16(6, false) & 0x1fff) * 8,
    packet: bytes,
  };
}
