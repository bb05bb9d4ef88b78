/**
 * The IPv6 layer: input checks, source policy, extension headers, fragment
 * reassembly, Neighbor Discovery on the link, output (plain, fragmented and
 * offloaded) and ICMPv6 error building, once; the second `FamilyOutput`
 * beside ipv4.ts.
 *
 * Theory of operation.
 *
 * In (`input`, from the dispatcher for EtherType 0x86DD): the fixed header
 * is checked by `parseIPv6Packet` (wire/ipv6.ts). Source policy: the
 * source must be an address the guest may own (GuestIPv6Addresses.eligible:
 * unicast, link-local or inside the prefix, none of the stack's), or ::
 * for NDP alone (duplicate address detection, router solicitation);
 * anything else is 'ipv6.drop.bad_src'. A multicast destination is taken
 * only when it is for us: all-nodes, all-routers, the DHCPv6 servers'
 * ff02::1:2 and solicited-node addresses (NDP decides which are ours);
 * others (MLD reports, mDNS, ...) are 'ipv6.drop.multicast'. A good packet
 * teaches the stack the guest's MAC and, from a unicast source, one of its
 * addresses. The extension headers are walked by `walkIPv6Headers`: a
 * verdict of Parameter Problem is sent (subject to RFC 4443 §2.4 (e)) and
 * counted 'ipv6.drop.<reason>', other refusals are counted the same way.
 * A hop limit of 1 or less towards an address the stack does not own gets
 * Time Exceeded from the gateway. Fragments go to the family-neutral
 * bounded reassembler (fragments.ts, the same limits as IPv4's) keyed by
 * (src, dst, identification); a datagram completed there is walked again
 * and loses any offload metadata; one never completed yields Time Exceeded
 * code 1 quoting its first fragment. A GSO frame that is not TCP is
 * 'ipv6.drop.gso_not_tcp', one of gso_type TCPV4 'ipv6.drop.gso_wrong_family'. Then by the upper-layer protocol: ICMPv6 types
 * 133..137 are NDP (never from fragments, RFC 6980), answered here through ndp.ts (NS for the stack's
 * addresses -> NA, RS -> RA, DAD probes recorded and never answered, RAs
 * to all-nodes at most one per MIN_DELAY_BETWEEN_RAS_MS); other ICMPv6,
 * UDP and TCP go to the transports; No Next Header is counted; any other
 * protocol gets Parameter Problem code 1 at the Next Header field that
 * named it.
 *
 * DHCPv6 (`dhcpv6Input`, from the UDP module for port 547): parsed and
 * answered by dhcpv6.ts (stateless and one IA_NA address, rapid commit),
 * the reply sent at the guest's MAC.
 *
 * Router advertisements: once the guest has sent any IPv6 packet, `tick`
 * sends unsolicited RAs to all-nodes, spaced as RFC 4861 §6.2.4 says
 * (`unsolicitedAdvertisementDelayMs`: the first three at most 16 s apart,
 * then between a third of MaxRtrAdvInterval and all of it).
 *
 * The guest's MAC: the stack has one (learned from any of its frames);
 * until it is known, output to an IPv6 address asks with a Neighbor
 * Solicitation (`solicit`, at most one a second) from the router's
 * link-local address, as the IPv4 layer asks with ARP.
 *
 * Out: `reserve` writes the Ethernet header and the 40-byte IPv6 header
 * (hop limit 64) and arms the stack's one FrameReservation (output.ts) with
 * this family's ops (payload length rewrite, GSO type TCPV6 = 4); packets
 * up to the MTU, or up to a 65535-byte payload with OUT_LARGE while the
 * guest takes TSO6. `send` copies a finished L4 payload and, beyond the
 * MTU, fragments it at the source (RFC 8200 §4.5: pieces of multiples of 8
 * bytes behind a fragment header).
 *
 * ICMPv6 errors (`sendIcmpError`: ICMPv6 type and code; Packet Too Big
 * carries the MTU) quote as much of the offending packet as fits in 1280
 * bytes, never about an ICMPv6 error or redirect, nor to anything but a
 * unicast guest address, nor (except Packet Too Big and the
 * Parameter Problems RFC 4443 §2.4 (e.2/3) allows) about a multicast
 * packet: those are counted 'icmpv6.tx.error_suppressed'. They come from
 * `from` when it is given, else from the gateway (the router's link-local
 * address for a link-local guest source).
 */
import type { FrameOffload } from '../link.js';
import type { IpMeta, OutputReservation } from '../context.js';
import { OUT_LARGE } from '../context.js';
import type { InAny } from '../inany.js';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV6, isMulticastMac, writeEthernetHeader } from '../wire/ethernet.js';
import {
  IPV6_HEADER_LENGTH, IPV6_MIN_MTU, NEXT_HEADER_FRAGMENT, NEXT_HEADER_ICMPV6, NEXT_HEADER_NONE, NEXT_HEADER_TCP, NEXT_HEADER_UDP,
  PARAM_PROBLEM_NEXT_HEADER, parseIPv6Packet, walkIPv6Headers, writeIPv6Header, type IPv6ParameterProblem, type IPv6View,
} from '../wire/ipv6.js';
import {
  ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAMETER_PROBLEM, ICMPV6_REDIRECT, ICMPV6_ROUTER_SOLICITATION,
  ICMPV6_TIME_EXCEEDED, ICMPV6_TIME_EXCEEDED_HOP_LIMIT, ICMPV6_TIME_EXCEEDED_REASSEMBLY, buildIcmpv6Error, icmpv6ErrorAllowed, parseIcmpv6,
} from '../wire/icmpv6.js';
import { buildNeighborSolicitation, ndpHopLimitValid, parseNdp, NDP_HOP_LIMIT } from '../wire/ndp.js';
import {
  ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ALL_NODES, ALL_ROUTERS, ipv6Equals, isLinkLocalIPv6, isMulticastIPv6, isSolicitedNodeMulticast,
  isUnicastIPv6, isUnspecifiedIPv6, multicastMac, solicitedNodeMulticast,
} from '../ipv6-address.js';
import { ipv6ReplyFrame, type Ipv6LinkConfig, type Ipv6LinkReply } from '../ipv6-link.js';
import {
  GuestIPv6Addresses, MIN_DELAY_BETWEEN_RAS_MS, isStackAddress, ndpInput, routerAdvertisement, unsolicitedAdvertisementDelayMs,
} from '../ndp.js';
import { ipv6LinkConfig } from '../config.js';
import { parseDhcpv6 } from '../wire/dhcpv6.js';
import type { UdpView } from '../wire/udp.js';
import { answerDhcpv6 } from '../dhcpv6.js';
import { inanyToString } from '../inany.js';
import { FragmentReassembler, type FragmentPiece, type ReassemblyFamily } from './fragments.js';
import { VIRTIO_NET_HDR_GSO_ECN, type FamilyOutput, type FrameReservation, type IpHeaderOps, type IpLayerHost } from './output.js';

/** virtio-net gso_type for TCPv6 (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
const MAX_IPV6_PAYLOAD = 65535;
const FRAGMENT_HEADER_LENGTH = 8;
/** At most one Neighbor Solicitation for the guest's MAC per this many ms. */
const SOLICIT_INTERVAL_MS = 1000;

const IPV6_OPS: IpHeaderOps = {
  name: 'ipv6',
  headerLength: IPV6_HEADER_LENGTH,
  gsoTcp: VIRTIO_NET_HDR_GSO_TCPV6,
  setPayloadLength(header, payloadLength) {
    header[4] = payloadLength >>> 8;
    header[5] = payloadLength & 0xff;
  },
};

const IPV6_REASSEMBLY: ReassemblyFamily = {
  counterNames: {
    rx: 'ipv6.frag.rx',
    duplicate: 'ipv6.frag.duplicate',
    reassembled: 'ipv6.frag.reassembled',
    drop: {
      bad_length: 'ipv6.frag.drop.bad_length',
      too_big: 'ipv6.frag.drop.too_big',
      mem_limit: 'ipv6.frag.drop.mem_limit',
      inconsistent: 'ipv6.frag.drop.inconsistent',
      overlap: 'ipv6.frag.drop.overlap',
      too_many: 'ipv6.frag.drop.too_many',
      timeout: 'ipv6.frag.drop.timeout',
      evicted: 'ipv6.frag.drop.evicted',
    },
  },
  // The payload length counts the unfragmentable extension headers and the reassembled data.
  fits: (headerLength, total) => Math.max(0, headerLength - IPV6_HEADER_LENGTH) + total <= MAX_IPV6_PAYLOAD,
  finish(out) {
    const payloadLength = out.length - IPV6_HEADER_LENGTH;
    out[4] = payloadLength >>> 8;
    out[5] = payloadLength & 0xff;
  },
};

export class Ipv6Layer implements FamilyOutput {
  /** What NDP and DHCPv6 answer with (its MTU follows the link's). */
  readonly link: Ipv6LinkConfig;
  /** The guest's addresses (bounded), learned from NDP and packet sources. */
  readonly guestAddresses: GuestIPv6Addresses;
  readonly reassembler: FragmentReassembler;
  private readonly piece: FragmentPiece = { key: '', offset: 0, more: false, data: new Uint8Array(0), header: null, quote: null };
  private fragmentId: number;
  /** Unsolicited RAs start once the guest has shown it speaks IPv6. */
  private guestSeen = false;
  private nextRaAt = 0;
  private rasSent = 0;
  private lastMulticastRa = -Infinity;
  private lastSolicit = -Infinity;

  constructor(
    private readonly host: IpLayerHost,
    private readonly reservation: FrameReservation,
    private readonly random: () => number = Math.random,
  ) {
    this.link = ipv6LinkConfig(host.config);
    this.guestAddresses = new GuestIPv6Addresses(this.link);
    this.reassembler = new FragmentReassembler(host.counters, IPV6_REASSEMBLY);
    this.fragmentId = Math.floor(random() * 0x100000000) >>> 0;
  }

  // ---- input -------------------------------------------------------------------

  /** One IPv6 packet from the guest (the Ethernet payload); `trusted`: its L4 checksum was left partial (see stack.ts). */
  input(bytes: Uint8Array, srcMac: Uint8Array, dstMac: Uint8Array, offload: FrameOffload | null, trusted: boolean): void {
    const host = this.host;
    const c = host.counters;
    let ip = parseIPv6Packet(bytes);
    if (typeof ip === 'string') return c.count(`ipv6.drop.${ip}`);
    const src = ip.src;
    const dst = ip.dst;
    const unspecified = isUnspecifiedIPv6(src);
    if (!unspecified && !this.guestAddresses.eligible(src)) return c.count('ipv6.drop.bad_src');
    const multicast = isMulticastIPv6(dst);
    if (multicast && !this.multicastForUs(dst)) return c.count('ipv6.drop.multicast');
    c.count('ipv6.rx.packets');
    const now = host.clock.now();
    host.learnGuestMac(srcMac);
    if (!unspecified) this.guestAddresses.learn(src, srcMac, 'source', now);
    this.guestSeen = true;
    let upper = walkIPv6Headers(ip);
    if (typeof upper === 'string') return c.count(`ipv6.drop.${upper}`);
    if (upper.kind === 'parameter_problem') {
      this.parameterProblem(ip.packet, upper, isMulticastMac(dstMac));
      return c.count(`ipv6.drop.${upper.reason}`);
    }
    const local = multicast || isStackAddress(this.link, dst);
    if (!local && ip.hopLimit <= 1) {
      if (upper.fragment === null || upper.fragment.offset === 0) {
        this.sendError(ICMPV6_TIME_EXCEEDED, ICMPV6_TIME_EXCEEDED_HOP_LIMIT, 0, ip.packet, false);
      }
      return c.count('ipv6.drop.hop_limit_exceeded');
    }
    const reassembled = upper.fragment !== null;
    if (upper.fragment !== null) {
      if (unspecified) return c.count('ipv6.drop.bad_src');
      const whole = this.reassemble(ip, upper.fragment.offset, upper.fragment.more, upper.fragment.identification,
        upper.fragment.headerOffset, upper.protocol, upper.payload, now);
      if (whole === null) return;
      const again = parseIPv6Packet(whole);
      if (typeof again === 'string') return c.count(`ipv6.drop.reassembled_${again}`);
      const walked = walkIPv6Headers(again);
      if (typeof walked === 'string') return c.count(`ipv6.drop.reassembled_${walked}`);
      if (walked.kind === 'parameter_problem' || walked.fragment !== null) return c.count('ipv6.drop.reassembled_bad_chain');
      ip = again;
      upper = walked;
      offload = null;
      trusted = false;
    }
    if (offload !== null && offload.gsoType !== 0) {
      if (upper.protocol !== NEXT_HEADER_TCP) return c.count('ipv6.drop.gso_not_tcp');
      if ((offload.gsoType & ~VIRTIO_NET_HDR_GSO_ECN) !== VIRTIO_NET_HDR_GSO_TCPV6) return c.count('ipv6.drop.gso_wrong_family');
    }
    const protocol = upper.protocol;
    const payload = upper.payload;
    if (protocol === NEXT_HEADER_ICMPV6 && payload.length > 0 && payload[0]! >= ICMPV6_ROUTER_SOLICITATION && payload[0]! <= ICMPV6_REDIRECT) {
      // RFC 6980: NDP in fragments is ignored.
      if (reassembled) return c.count('ndp.drop.fragmented');
      return this.ndp(ip, payload, srcMac, now);
    }
    if (unspecified) return c.count('ipv6.drop.bad_src');
    const meta: IpMeta = { src: ip.src, dst: ip.dst, protocol, ttl: ip.hopLimit, tos: ip.trafficClass, packet: ip.packet };
    const t = host.transports;
    switch (protocol) {
      case NEXT_HEADER_ICMPV6:
        return t.icmp.input(meta, payload);
      case NEXT_HEADER_UDP:
        return t.udp.input(meta, payload, trusted || offload?.dataValid === true);
      case NEXT_HEADER_TCP:
        if (!t.tcp) return c.count('ipv6.drop.no_tcp');
        return t.tcp.input(meta, payload, trusted);
      case NEXT_HEADER_NONE:
        return c.count('ipv6.rx.no_next_header');
      default:
        c.count('ipv6.drop.protocol');
        this.parameterProblem(ip.packet, {
          kind: 'parameter_problem', code: PARAM_PROBLEM_NEXT_HEADER, pointer: upper.nextHeaderPointer, reason: 'protocol', evenIfMulticast: false,
        }, isMulticastMac(dstMac));
    }
  }

  /** Multicast groups the stack listens to: all-nodes, all-routers, DHCPv6 servers, solicited-node addresses. */
  private multicastForUs(dst: Uint8Array): boolean {
    return ipv6Equals(dst, ALL_NODES) || ipv6Equals(dst, ALL_ROUTERS) || ipv6Equals(dst, ALL_DHCP_RELAY_AGENTS_AND_SERVERS) ||
      isSolicitedNodeMulticast(dst);
  }

  /** Hand a fragment to the reassembler; the whole packet when it completes. */
  private reassemble(ip: IPv6View, offset: number, more: boolean, id: number, headerOffset: number, protocol: number,
    data: Uint8Array, now: number): Uint8Array | null {
    const p = this.piece;
    p.key = `${inanyToString(ip.src)}|${inanyToString(ip.dst)}|${id}`;
    p.offset = offset;
    p.more = more;
    p.data = data;
    p.header = null;
    p.quote = null;
    if (offset === 0) {
      // The unfragmentable part, its last Next Header (the one naming the fragment header) set to the fragmentable part's protocol.
      const header = ip.packet.slice(0, headerOffset);
      let pointer = 6;
      for (let off = IPV6_HEADER_LENGTH; off < headerOffset; off += (header[off + 1]! + 1) * 8) pointer = off;
      header[pointer] = protocol;
      p.header = header;
      p.quote = ip.packet;
    }
    return this.reassembler.input(p, now);
  }

  private ndp(ip: IPv6View, message: Uint8Array, srcMac: Uint8Array, now: number): void {
    const c = this.host.counters;
    if (!ndpHopLimitValid(ip.hopLimit)) return c.count('ndp.drop.hop_limit');
    const icmp = parseIcmpv6(message, ip.src, ip.dst);
    if (typeof icmp === 'string') return c.count(`icmpv6.drop.${icmp}`);
    const msg = parseNdp(icmp, ip.src, ip.dst);
    if (typeof msg === 'string') return c.count(`ndp.drop.${msg}`);
    this.link.mtu = this.linkMtu();
    const reply = ndpInput(this.link, msg, { src: ip.src, dst: ip.dst, ethSrc: srcMac }, this.guestAddresses, now);
    if (typeof reply === 'string') return c.count(`ndp.${reply}`);
    if (msg.type === ICMPV6_ROUTER_SOLICITATION && isMulticastIPv6(reply.dst)) {
      if (now - this.lastMulticastRa < MIN_DELAY_BETWEEN_RAS_MS) return c.count('ndp.ra.rate_limited');
      this.lastMulticastRa = now;
    }
    if (this.sendLinkReply(reply)) c.count(msg.type === ICMPV6_NEIGHBOR_SOLICITATION ? 'ndp.tx.na' : 'ndp.tx.ra');
  }

  /** The MTU the RA advertises: the link's (never below IPv6's minimum). */
  private linkMtu(): number {
    return Math.max(IPV6_MIN_MTU, this.host.mtu);
  }

  /** Send a finished link-service reply (NDP, DHCPv6). */
  sendLinkReply(reply: Ipv6LinkReply): boolean {
    this.reservation.release();
    return this.host.sendFrame(ipv6ReplyFrame(reply));
  }

  /** Ask for the guest's MAC: a Neighbor Solicitation for `target` (rate-limited; only for an address the guest may own). */
  solicit(target: Uint8Array): void {
    const host = this.host;
    const now = host.clock.now();
    if (now - this.lastSolicit < SOLICIT_INTERVAL_MS || !this.guestAddresses.eligible(target)) return;
    this.lastSolicit = now;
    const dst = solicitedNodeMulticast(target);
    const src = this.link.gatewayLinkLocal;
    const message = buildNeighborSolicitation(target, { sourceLinkLayer: this.link.gatewayMac }, src, dst);
    if (this.sendLinkReply({ srcMac: this.link.gatewayMac, dstMac: multicastMac(dst), src, dst, hopLimit: NDP_HOP_LIMIT, nextHeader: NEXT_HEADER_ICMPV6, payload: message })) {
      host.counters.count('ndp.tx.ns');
    }
  }

  /** A DHCPv6 message from the guest (UDP to port 547 of ff02::1:2 or an address of ours), answered through dhcpv6.ts. */
  dhcpv6Input(meta: IpMeta, udp: UdpView): void {
    const host = this.host;
    const c = host.counters;
    const mac = host.guestMac;
    if (mac === null) return c.count('dhcpv6.drop.no_mac');
    const msg = parseDhcpv6(udp.payload);
    if (typeof msg === 'string') return c.count(`dhcpv6.drop.${msg}`);
    c.count('dhcpv6.rx.messages');
    const reply = answerDhcpv6(this.link, msg, { src: meta.src as Uint8Array, dst: meta.dst as Uint8Array, ethSrc: mac });
    if (typeof reply === 'string') return c.count(`dhcpv6.${reply}`);
    if (this.sendLinkReply(reply)) c.count('dhcpv6.tx.replies');
  }

  /** The guest's address inside the prefix seen most recently (the one forwards reach), or null. */
  guestGlobalAddress(): Uint8Array | null {
    let best: { address: Uint8Array; lastSeen: number } | null = null;
    for (const e of this.guestAddresses.all()) {
      if (!isLinkLocalIPv6(e.address) && (best === null || e.lastSeen > best.lastSeen)) best = e;
    }
    return best?.address ?? null;
  }

  /** Timers: reassembly deadlines (Time Exceeded code 1) and unsolicited RAs. */
  tick(now: number): void {
    for (const quote of this.reassembler.expire(now)) this.sendError(ICMPV6_TIME_EXCEEDED, ICMPV6_TIME_EXCEEDED_REASSEMBLY, 0, quote, false);
    if (!this.guestSeen || now < this.nextRaAt) return;
    if (now - this.lastMulticastRa >= MIN_DELAY_BETWEEN_RAS_MS) {
      this.link.mtu = this.linkMtu();
      if (this.sendLinkReply(routerAdvertisement(this.link))) {
        this.lastMulticastRa = now;
        this.rasSent++;
        this.host.counters.count('ndp.tx.ra_unsolicited');
      }
    }
    this.nextRaAt = now + unsolicitedAdvertisementDelayMs(this.link, this.rasSent, this.random());
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
    const maxPacket = (flags & OUT_LARGE) !== 0 && host.guestOffloads.tso6 ? IPV6_HEADER_LENGTH + MAX_IPV6_PAYLOAD : host.mtu;
    if (payloadLength < 0 || payloadLength > MAX_IPV6_PAYLOAD || IPV6_HEADER_LENGTH + payloadLength > maxPacket) {
      host.counters.count('ipv6.tx.too_big');
      return null;
    }
    const len = ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH + payloadLength;
    const frame = host.link.reserve(len);
    if (!frame) {
      host.counters.count('eth.tx.backpressure');
      return null;
    }
    writeEthernetHeader(frame, mac, host.config.gatewayMac, ETHERTYPE_IPV6);
    writeIPv6Header(frame.subarray(ETHERNET_HEADER_LENGTH), { src: src as Uint8Array, dst: dst as Uint8Array, nextHeader: protocol, payloadLength });
    return this.reservation.arm(frame, IPV6_OPS, protocol);
  }

  send(src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    const mac = this.host.guestMacOrAsk(dst);
    if (!mac) return false;
    return this.sendTo(mac, src, dst, protocol, payload);
  }

  sendTo(dstMac: Uint8Array, src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    const host = this.host;
    this.reservation.release();
    if (payload.length > MAX_IPV6_PAYLOAD) {
      host.counters.count('ipv6.tx.too_big');
      return false;
    }
    const s = src as Uint8Array;
    const d = dst as Uint8Array;
    const mtu = host.mtu;
    if (IPV6_HEADER_LENGTH + payload.length <= mtu) return this.emit(dstMac, s, d, protocol, payload, -1, false, 0);
    // Fragment at the source (RFC 8200 §4.5): every piece but the last carries a multiple of 8 bytes.
    host.counters.count('ipv6.tx.fragmented');
    const maxData = (mtu - IPV6_HEADER_LENGTH - FRAGMENT_HEADER_LENGTH) & ~7;
    this.fragmentId = (this.fragmentId + 1) >>> 0;
    for (let off = 0; off < payload.length; off += maxData) {
      const piece = payload.subarray(off, Math.min(payload.length, off + maxData));
      if (!this.emit(dstMac, s, d, protocol, piece, off, off + maxData < payload.length, this.fragmentId)) return false;
    }
    return true;
  }

  /** One frame; `fragmentOffset` >= 0 puts a fragment header in front of `payload`. */
  private emit(dstMac: Uint8Array, src: Uint8Array, dst: Uint8Array, protocol: number, payload: Uint8Array,
    fragmentOffset: number, more: boolean, id: number): boolean {
    const host = this.host;
    const extra = fragmentOffset >= 0 ? FRAGMENT_HEADER_LENGTH : 0;
    const len = ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH + extra + payload.length;
    const frame = host.link.reserve(len);
    if (!frame) {
      host.counters.count('eth.tx.backpressure');
      return false;
    }
    writeEthernetHeader(frame, dstMac, host.config.gatewayMac, ETHERTYPE_IPV6);
    writeIPv6Header(frame.subarray(ETHERNET_HEADER_LENGTH), {
      src, dst, nextHeader: extra ? NEXT_HEADER_FRAGMENT : protocol, payloadLength: extra + payload.length,
    });
    if (extra) {
      const h = frame.subarray(ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH, ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH + FRAGMENT_HEADER_LENGTH);
      const dv = new DataView(h.buffer, h.byteOffset, FRAGMENT_HEADER_LENGTH);
      h[0] = protocol;
      h[1] = 0;
      dv.setUint16(2, (fragmentOffset & 0xfff8) | (more ? 1 : 0), false);
      dv.setUint32(4, id, false);
    }
    frame.set(payload, ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH + extra);
    host.capture(frame);
    host.link.commit(len);
    host.counters.count('eth.tx.frames');
    return true;
  }

  /** ICMPv6 error (type and code are ICMPv6's) to the guest quoting `offending`; see the header comment. */
  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: InAny): void {
    this.sendError(type, code, type === ICMPV6_PACKET_TOO_BIG ? this.host.mtu : 0, offending, false, false, from);
  }

  private parameterProblem(packet: Uint8Array, problem: IPv6ParameterProblem, linkMulticast: boolean): void {
    this.sendError(ICMPV6_PARAMETER_PROBLEM, problem.code, problem.pointer, packet, linkMulticast, problem.evenIfMulticast);
  }

  private sendError(type: number, code: number, parameter: number, offending: Uint8Array, linkMulticast: boolean,
    evenIfMulticast = false, from?: InAny): void {
    const c = this.host.counters;
    if (offending.length < IPV6_HEADER_LENGTH || offending[0]! >>> 4 !== 6) return c.count('icmpv6.tx.error_suppressed');
    const src = offending.subarray(8, 24);
    const dst = offending.subarray(24, 40);
    const allowed = icmpv6ErrorAllowed({ src, dst, linkMulticast, icmpv6Type: quotedIcmpv6Type(offending) }, type, evenIfMulticast);
    if (!allowed || !this.guestAddresses.eligible(src)) return c.count('icmpv6.tx.error_suppressed');
    const errorSrc = from instanceof Uint8Array && isUnicastIPv6(from)
      ? from
      : isLinkLocalIPv6(src) ? this.link.gatewayLinkLocal : this.link.gateway;
    const message = buildIcmpv6Error(type, code, parameter, offending, errorSrc, src);
    if (this.send(errorSrc, src.slice(), NEXT_HEADER_ICMPV6, message)) c.count(`icmpv6.tx.error.type_${type}_code_${code}`);
  }
}

/** The ICMPv6 type of a quoted packet when it is (or its first fragment shows) ICMPv6, else null (also for a chain that cannot be walked). */
function quotedIcmpv6Type(packet: Uint8Array): number | null {
  if (packet[6] === NEXT_HEADER_ICMPV6) return packet.length > IPV6_HEADER_LENGTH ? packet[IPV6_HEADER_LENGTH]! : 0;
  const ip = parseIPv6Packet(packet);
  if (typeof ip === 'string') return null;
  const upper = walkIPv6Headers(ip);
  if (typeof upper === 'string' || upper.kind !== 'upper_layer') return null;
  if (upper.protocol !== NEXT_HEADER_ICMPV6) return null;
  return upper.payload.length > 0 ? upper.payload[0]! : 0;
}

/**
 * Whether a NEEDS_CSUM frame is an IPv6 TCP or UDP packet without extension
 * headers whose csum_start is its L4 header and csum_offset that header's
 * checksum field (16 for TCP, 6 for UDP): the shape Linux gives locally
 * generated packets. Anything else takes the stack's generic completion.
 */
export function ipv6PartialChecksumTrusted(frame: Uint8Array, o: FrameOffload): boolean {
  if (frame.length < ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH) return false;
  if (frame[12] !== 0x86 || frame[13] !== 0xdd || frame[ETHERNET_HEADER_LENGTH]! >>> 4 !== 6) return false;
  const l4 = ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH;
  if (o.csumStart !== l4) return false;
  const nextHeader = frame[ETHERNET_HEADER_LENGTH + 6];
  const field = nextHeader === NEXT_HEADER_TCP ? 16 : nextHeader === NEXT_HEADER_UDP ? 6 : -1;
  return o.csumOffset === field && l4 + field + 2 <= frame.length;
}
