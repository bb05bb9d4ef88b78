/**
 * The stack's dispatcher: frames in from the device, frames out to it.
 *
 * Theory of operation. The Stack is a library with no event loop of its own
 * (libslirp's shape): the device calls `receive(frame, offload)` for each
 * guest frame and `batchEnd()` after each kick; the owner calls `tick(now)`
 * on a timer; host sockets deliver their events through Node's loop.
 *
 * In: Ethernet (drop non-IPv4/ARP, counting IPv6 separately) -> ARP module,
 * or IPv4: version, IHL, total length against the frame (trailing padding
 * trimmed), header checksum, reserved flag; options skipped; TTL checked for
 * forwarded traffic (time exceeded from the gateway, so traceroute shows
 * it as the first hop); fragments go to the bounded reassembler; then by
 * protocol: ICMP (1), UDP (17: DHCP, DNS forwarder, NAT flows) and TCP (6,
 * the TCP translator). A partial checksum from the guest (virtio
 * NEEDS_CSUM, always the case with TSO frames) on an unfragmented TCP or UDP
 * packet, pointing at that header's checksum field, is trusted: the data is
 * the guest's own and never crossed a wire, so TCP and UDP are told not to
 * verify it (no copy, no pass over the payload). A TSO frame (up to 64 KiB,
 * gso_type TCPV4; IPv4 total length and header checksum are set by the
 * guest as for any packet) is one big TCP segment to the translator. Any
 * other NEEDS_CSUM frame is completed in a scratch copy before anything is
 * parsed, so the protocol modules can verify checksums as usual.
 *
 * Out: protocol modules reserve a frame (`reserveIPv4`), write their L4
 * bytes into it and commit; or hand a finished payload to `sendIPv4`,
 * which fragments it when it exceeds the MTU. The TCP translator also uses
 * the offloaded pair of IPv4Output (src/net/context.ts): `reserveIPv4Large`
 * (up to a 64 KiB packet when the guest negotiated GUEST_TSO4) and
 * `commitIPv4Offload` (partial L4 checksum, GSO TCPv4 metadata for the
 * virtio-net header; completed here in software if the guest cannot take
 * partial checksums). Every frame in and out
 * passes the pcap writer at this boundary.
 *
 * The guest's MAC address is learned from the frames it sends (ARP, DHCP,
 * any IPv4 from inside the guest network), as libslirp does; until it is
 * known, output is dropped (counted) and an ARP request asks for it.
 *
 * Nothing throws out of `receive`: every failure is a counted drop; an
 * unexpected exception is caught, counted as 'stack.drop.exception' and
 * logged once.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import type { FrameOffload, FrameSink, NetLink } from './link.js';
import type { Clock, Counters, HostIO, IPv4Meta, IPv4Output, StackConfig, StackContext, TransportHandler } from './context.js';
import { resolveStackConfig } from './config.js';
import { CounterSet } from './counters.js';
import { Nat } from './nat.js';
import type { PcapWriter } from './pcap.js';
import type { ForwardSpec } from './forward.js';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, isMulticastMac, isZeroMac, macEquals, macToString, parseEthernet, writeEthernetHeader } from './wire/ethernet.js';
import { IPV4_HEADER_LENGTH, PROTO_ICMP, PROTO_TCP, PROTO_UDP, isUnicastAddress, parseIPv4Packet, writeIPv4Header } from './wire/ipv4.js';
import { ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, ICMP_UNREACH_PROTOCOL, finishIcmpChecksum, isIcmpError } from './wire/icmp.js';
import { sum16, fold } from './wire/checksum.js';
import { inSubnet, ipv4ToString } from './ip-address.js';
import { networkBroadcast } from './config.js';
import { Reassembler } from './ipv4-fragments.js';
import { ArpModule } from './arp.js';
import { IcmpModule, type PingIO, loadNativePingIO } from './icmp.js';
import { UdpModule, type UdpSocketFactory } from './udp.js';
import { DhcpServer } from './dhcp.js';
import { DnsForwarder } from './dns.js';
import { TcpTranslator } from './tcp/index.js';

/**
 * A TCP handler as the stack needs it (the TCP translator's shape): a
 * TransportHandler whose `input` also takes `checksumTrusted` (the guest left
 * the checksum partial under virtio NEEDS_CSUM: do not verify it).
 */
export type TcpHandler = Omit<TransportHandler, 'input'> & {
  input(meta: IPv4Meta, segment: Uint8Array, checksumTrusted?: boolean): void;
  addForward?(spec: { hostAddress: string; hostPort: number; guestPort: number }): Promise<void>;
  readonly flowCount?: number;
};

export type TcpFactory = (ctx: StackContext, nat: Nat) => TcpHandler;

export interface StackOptions {
  link: NetLink;
  config?: Partial<StackConfig>;
  clock?: Clock;
  host?: Partial<HostIO>;
  counters?: Counters;
  logger?: (message: string) => void;
  pcap?: PcapWriter;
  forwards?: ForwardSpec[];
  /** TCP handler factory; defaults to the TcpTranslator. `null` disables TCP (segments dropped, counted). */
  tcp?: TcpFactory | null;
  /** ICMP ping sockets; defaults to the native addon (loaded by start()). `null` disables host pings. */
  ping?: PingIO | null;
  /** Factory for UDP flow sockets; defaults to `hostUdpSocket` (IP_RECVERR sockets from the addon, for ICMP errors). */
  udpSocket?: UdpSocketFactory;
  /** Wall-clock ms for pcap timestamps (default Date.now). */
  wallClock?: () => number;
}

/** What the stack offers its own protocol modules beyond the StackContext contract. */
export interface StackInternals extends StackContext {
  readonly nat: Nat;
  /** Effective IPv4 MTU towards the guest (min of config and link). */
  readonly mtu: number;
  /** The guest's MAC, once learned. */
  readonly guestMac: Uint8Array | null;
  learnGuestMac(mac: Uint8Array): void;
  /** Send a finished Ethernet frame (pcap + link). */
  sendFrame(frame: Uint8Array): boolean;
  /** sendIPv4 to an explicit destination MAC (DHCP broadcast replies). */
  sendIPv4To(dstMac: Uint8Array, src: number, dst: number, protocol: number, payload: Uint8Array): boolean;
  log(message: string): void;
}


const SCRATCH_SIZE = 65536 + ETHERNET_HEADER_LENGTH;

/** virtio-net gso_type for TCPv4 (virtio 1.2 §5.1.6); the link contract speaks in these. */
const VIRTIO_NET_HDR_GSO_TCPV4 = 1;

export class Stack implements FrameSink, StackInternals, IPv4Output {
  readonly config: StackConfig;
  readonly clock: Clock;
  readonly host: HostIO;
  readonly counters: Counters;
  readonly link: NetLink;
  readonly nat: Nat;
  readonly out: IPv4Output = this;
  private readonly logger: (message: string) => void;
  /** Cleared (and the failure counted and logged once) when the capture file cannot be written. */
  private pcap: PcapWriter | undefined;
  private readonly wallClock: () => number;
  private readonly forwards: ForwardSpec[];
  private readonly logged = new Set<string>();

  private mac: Uint8Array | null = null;
  private ipId = 1;
  private readonly scratch = new Uint8Array(SCRATCH_SIZE);
  private reservation: Uint8Array | null = null;
  private reservationProtocol = 0;
  /** The offload record handed to link.commit by commitIPv4Offload (reused: the link reads it during the call). */
  private readonly rxOffload: FrameOffload = { needsCsum: false, dataValid: false, csumStart: 0, csumOffset: 0, gsoType: 0, gsoSize: 0, hdrLen: 0 };
  private writableCallbacks: (() => void)[] = [];
  private lastGuestArpRequest = -Infinity;
  private closed = false;
  private readonly pingOption: PingIO | null | undefined;

  readonly reassembler: Reassembler;
  readonly arp: ArpModule;
  readonly icmp: IcmpModule;
  readonly udp: UdpModule;
  readonly dhcp: DhcpServer;
  readonly dns: DnsForwarder;
  private readonly tcpHandler: TcpHandler | null;

  constructor(options: StackOptions) {
    this.link = options.link;
    this.config = resolveStackConfig(options.config ?? {});
    this.clock = options.clock ?? { now: () => performance.now() };
    this.host = {
      createUdpSocket: options.host?.createUdpSocket ?? ((type) => dgram.createSocket(type)),
      connectTcp: options.host?.connectTcp ?? ((o) => net.connect(o)),
    };
    this.counters = options.counters ?? new CounterSet();
    this.logger = options.logger ?? ((m) => console.warn(`vhost-user-net: ${m}`));
    this.pcap = options.pcap;
    this.wallClock = options.wallClock ?? Date.now;
    this.forwards = options.forwards ?? [];
    this.nat = new Nat(this.config);
    this.pingOption = options.ping;
    this.reassembler = new Reassembler(this.counters);
    this.arp = new ArpModule(this);
    this.icmp = new IcmpModule(this, options.ping ?? null);
    this.dhcp = new DhcpServer(this);
    this.dns = new DnsForwarder(this);
    this.udp = new UdpModule(this, this.dhcp, this.dns, options.udpSocket);
    const tcpFactory: TcpFactory | null = options.tcp === undefined ? (ctx, nat) => new TcpTranslator(ctx, nat) : options.tcp;
    this.tcpHandler = tcpFactory ? tcpFactory(this, this.nat) : null;
  }

  // ---- lifecycle -----------------------------------------------------------

  /** The TCP handler (the TcpTranslator unless `options.tcp` said otherwise). */
  get tcp(): TcpHandler | null {
    return this.tcpHandler;
  }

  /** Load ping support and bind forwarded ports (TCP and UDP). Rejects if a forward cannot be bound. */
  async start(): Promise<void> {
    if (this.pingOption === undefined) {
      const io = await loadNativePingIO((m) => this.logOnce('ping-load', m));
      if (io) this.icmp.setPingIO(io);
    }
    for (const f of this.forwards) {
      if (f.protocol === 'udp') await this.udp.addForward(f);
      else if (this.tcp?.addForward) await this.tcp.addForward({ hostAddress: f.hostAddress, hostPort: f.hostPort, guestPort: f.guestPort });
      else throw new Error(`forward ${f.protocol}:${f.hostPort}: TCP forwarding not available`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of [this.tcp, this.udp, this.dns, this.icmp]) {
      try {
        m?.close();
      } catch (err) {
        this.log(`close: ${String(err)}`);
      }
    }
    this.reassembler.clear();
    const pcap = this.pcap;
    if (pcap) {
      pcap.flush();
      if (pcap.error) this.pcapFailed(pcap);
    }
  }

  /** Timers of every module. `now` defaults to the clock. Never throws: one module's failure does not stop the others' timers. */
  tick(now: number = this.clock.now()): void {
    const steps: (() => void)[] = [
      () => {
        for (const quote of this.reassembler.expire(now)) this.sendIcmpError(ICMP_TIME_EXCEEDED, 1, quote, this.config.gateway);
      },
      () => this.icmp.tick(now),
      () => this.udp.tick(now),
      () => this.dns.tick(now),
      () => this.tcp?.tick?.(now),
      () => this.flush(),
    ];
    for (const step of steps) {
      try {
        step();
      } catch (err) {
        this.counters.count('stack.tick.exception');
        this.logOnce('tick-exception', `exception in tick: ${(err as Error)?.stack ?? String(err)}`);
      }
    }
  }

  // ---- StackContext ------------------------------------------------------------

  /**
   * Log once per key. Keys may carry host-side detail (an errno name); once
   * 1024 distinct keys were logged, further new keys are counted
   * ('stack.log.suppressed') instead of logged, so nothing a guest does can
   * turn this into a log flood.
   */
  logOnce(key: string, message: string): void {
    if (this.logged.has(key)) return;
    if (this.logged.size >= 1024) return this.counters.count('stack.log.suppressed');
    this.logged.add(key);
    this.logger(message);
  }

  log(message: string): void {
    this.logger(message);
  }

  get mtu(): number {
    return Math.min(this.config.mtu, this.link.mtu);
  }

  get guestMac(): Uint8Array | null {
    return this.mac;
  }

  learnGuestMac(mac: Uint8Array): void {
    if (isMulticastMac(mac) || isZeroMac(mac)) return;
    if (this.mac && macEquals(this.mac, mac)) return;
    this.mac = Uint8Array.from(mac.subarray(0, 6));
    this.counters.count('eth.guest_mac_learned');
  }

  // ---- input -------------------------------------------------------------------

  receive(frame: Uint8Array, offload: FrameOffload | null): void {
    if (this.closed) return this.counters.count('stack.drop.closed');
    try {
      this.input(frame, offload);
    } catch (err) {
      this.counters.count('stack.drop.exception');
      this.logOnce('receive-exception', `exception on the receive path (frame dropped): ${(err as Error)?.stack ?? String(err)}`);
      if (this.reservation) this.abortIPv4();
    }
  }

  batchEnd(): void {
    try {
      this.flush();
    } catch (err) {
      this.counters.count('stack.flush.exception');
      this.logOnce('flush-exception', `exception flushing output: ${(err as Error)?.stack ?? String(err)}`);
    }
  }

  /** Write one frame to the capture file; a write failure turns capturing off (counted, logged once). */
  private capture(frame: Uint8Array): void {
    const pcap = this.pcap;
    if (!pcap) return;
    pcap.writeFrame(frame, this.wallClock());
    if (pcap.error) this.pcapFailed(pcap);
  }

  private pcapFailed(pcap: PcapWriter): void {
    this.pcap = undefined;
    this.counters.count('pcap.error');
    this.log(`pcap: cannot write the capture file, capture stopped: ${pcap.error?.message ?? 'unknown error'}`);
  }

  private input(frame: Uint8Array, offload: FrameOffload | null): void {
    const c = this.counters;
    c.count('eth.rx.frames');
    c.count('eth.rx.bytes', frame.length);
    if (this.pcap) this.capture(frame);
    let trusted = false;
    if (offload !== null && offload.needsCsum) {
      if (partialChecksumTrusted(frame, offload)) {
        // Guest-local data with its L4 checksum left partial (virtio
        // NEEDS_CSUM, TSO): it never crossed a wire, so there is nothing to
        // verify and nothing to complete.
        trusted = true;
      } else {
        const completed = this.completeChecksum(frame, offload);
        if (!completed) return;
        frame = completed;
      }
    }
    const eth = parseEthernet(frame);
    if (typeof eth === 'string') return c.count(`eth.drop.${eth}`);
    if (isMulticastMac(eth.src) || isZeroMac(eth.src)) return c.count('eth.drop.bad_src_mac');
    switch (eth.etherType) {
      case ETHERTYPE_IPV4:
        return this.ipv4Input(eth.payload, eth.src, offload, trusted);
      case ETHERTYPE_ARP:
        return this.arp.input(eth.payload, eth.src);
      case ETHERTYPE_IPV6:
        return c.count('eth.drop.ipv6');
      default:
        return c.count('eth.drop.ethertype');
    }
  }

  /** Complete a partial L4 checksum (virtio NEEDS_CSUM) in a scratch copy; null (counted) if the offsets are bad. */
  private completeChecksum(frame: Uint8Array, o: FrameOffload): Uint8Array | null {
    const start = o.csumStart;
    const at = start + o.csumOffset;
    if (frame.length > SCRATCH_SIZE || start < ETHERNET_HEADER_LENGTH || at + 2 > frame.length || start >= frame.length) {
      this.counters.count('eth.drop.bad_csum_offload');
      return null;
    }
    const copy = this.scratch.subarray(0, frame.length);
    copy.set(frame);
    // The field holds the pseudo-header sum; the checksum covers [start, end).
    const csum = fold(sum16(copy.subarray(start)));
    copy[at] = csum >>> 8;
    copy[at + 1] = csum & 0xff;
    this.counters.count('eth.rx.csum_completed');
    return copy;
  }

  /**
   * `trusted`: the L4 checksum was left partial by the guest (NEEDS_CSUM on an
   * unfragmented TCP/UDP packet whose csum_start/csum_offset point at that
   * header's checksum field), so the transport must not verify it.
   */
  private ipv4Input(bytes: Uint8Array, srcMac: Uint8Array, offload: FrameOffload | null, trusted: boolean): void {
    const c = this.counters;
    const parsed = parseIPv4Packet(bytes);
    if (typeof parsed === 'string') return c.count(`ipv4.drop.${parsed}`);
    let ip = parsed;
    const cfg = this.config;
    const src = ip.src;
    if (src !== 0 && (!inSubnet(src, cfg.network, cfg.prefixLength) || src === networkBroadcast(cfg) || src === cfg.network ||
        src === cfg.gateway || src === cfg.dns)) {
      return c.count('ipv4.drop.bad_src');
    }
    if (src !== 0) this.learnGuestMac(srcMac);
    c.count('ipv4.rx.packets');
    const dstLocal = ip.dst === cfg.gateway || ip.dst === cfg.dns || ip.dst === 0xffffffff || ip.dst === networkBroadcast(cfg);
    if (!dstLocal && ip.ttl <= 1) {
      if (ip.fragmentOffset === 0) this.sendIcmpError(ICMP_TIME_EXCEEDED, 0, ip.packet, cfg.gateway);
      return c.count('ipv4.drop.ttl_exceeded');
    }
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      const whole = this.reassembler.input(ip, this.clock.now());
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
    const meta: IPv4Meta = { src: ip.src, dst: ip.dst, protocol: ip.protocol, ttl: ip.ttl, tos: ip.tos, packet: ip.packet };
    if (src === 0 && ip.protocol !== PROTO_UDP) return c.count('ipv4.drop.bad_src');
    switch (ip.protocol) {
      case PROTO_ICMP:
        return this.icmp.input(meta, ip.payload);
      case PROTO_UDP:
        return this.udp.input(meta, ip.payload, trusted || offload?.dataValid === true);
      case PROTO_TCP:
        if (!this.tcp) return c.count('ipv4.drop.no_tcp');
        return this.tcp.input(meta, ip.payload, trusted);
      default:
        c.count('ipv4.drop.protocol');
        if (ip.dst === cfg.gateway || ip.dst === cfg.dns) this.sendIcmpError(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PROTOCOL, ip.packet, ip.dst);
    }
  }

  // ---- output --------------------------------------------------------------------

  /** Frame to the guest: pcap, link, counters. */
  sendFrame(frame: Uint8Array): boolean {
    if (this.pcap) this.capture(frame);
    if (!this.link.send(frame)) {
      this.counters.count('eth.tx.backpressure');
      return false;
    }
    this.counters.count('eth.tx.frames');
    return true;
  }

  /** The guest's MAC, or null after asking for it (rate-limited ARP request). */
  private guestMacOrAsk(): Uint8Array | null {
    if (this.mac) return this.mac;
    this.counters.count('eth.tx.no_guest_mac');
    const now = this.clock.now();
    if (now - this.lastGuestArpRequest >= 1000) {
      this.lastGuestArpRequest = now;
      this.arp.request(this.config.guestIp);
    }
    return null;
  }

  reserveIPv4(src: number, dst: number, protocol: number, payloadLength: number, dontFragment = false): Uint8Array | null {
    return this.reserveIPv4Within(this.mtu, src, dst, protocol, payloadLength, dontFragment);
  }

  reserveIPv4Large(src: number, dst: number, protocol: number, payloadLength: number, dontFragment = false): Uint8Array | null {
    return this.reserveIPv4Within(this.link.rxOffloads.tso4 ? 65535 : this.mtu, src, dst, protocol, payloadLength, dontFragment);
  }

  private reserveIPv4Within(maxPacket: number, src: number, dst: number, protocol: number, payloadLength: number, dontFragment: boolean): Uint8Array | null {
    if (this.reservation) this.abortIPv4();
    const mac = this.guestMacOrAsk();
    if (!mac) return null;
    if (payloadLength < 0 || IPV4_HEADER_LENGTH + payloadLength > maxPacket) {
      this.counters.count('ipv4.tx.too_big');
      return null;
    }
    const len = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payloadLength;
    const frame = this.link.reserve(len);
    if (!frame) {
      this.counters.count('eth.tx.backpressure');
      return null;
    }
    writeEthernetHeader(frame, mac, this.config.gatewayMac, ETHERTYPE_IPV4);
    writeIPv4Header(frame.subarray(ETHERNET_HEADER_LENGTH), {
      src, dst, protocol, totalLength: IPV4_HEADER_LENGTH + payloadLength, id: this.nextId(), dontFragment,
    });
    this.reservation = frame;
    this.reservationProtocol = protocol;
    return frame.subarray(ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH, len);
  }

  commitIPv4Offload(checksumOffset: number, l4HeaderLength: number, gsoSize: number): void {
    const frame = this.reservation;
    if (!frame) return;
    const l4 = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH;
    const len = frame.length;
    const rx = this.link.rxOffloads;
    if (checksumOffset < 0 || l4HeaderLength < 0 || l4 + l4HeaderLength > len || l4 + checksumOffset + 2 > len) {
      this.counters.count('ipv4.tx.bad_offload');
      this.abortIPv4();
      return;
    }
    const gso = gsoSize > 0 && len - l4 - l4HeaderLength > gsoSize;
    if (!rx.csum || (gso && (!rx.tso4 || this.reservationProtocol !== PROTO_TCP))) {
      if (len - ETHERNET_HEADER_LENGTH > this.mtu) {
        this.counters.count('ipv4.tx.too_big');
        this.abortIPv4();
        return;
      }
      // The guest takes no partial checksums: complete it here (the field holds the pseudo-header sum).
      const csum = fold(sum16(frame.subarray(l4)));
      frame[l4 + checksumOffset] = csum >>> 8;
      frame[l4 + checksumOffset + 1] = csum & 0xff;
      this.commitIPv4();
      return;
    }
    this.reservation = null;
    const o = this.rxOffload;
    o.needsCsum = true;
    o.dataValid = false;
    o.csumStart = l4;
    o.csumOffset = checksumOffset;
    o.hdrLen = l4 + l4HeaderLength;
    o.gsoType = gso ? VIRTIO_NET_HDR_GSO_TCPV4 : 0;
    o.gsoSize = gso ? gsoSize : 0;
    if (this.pcap) this.capture(frame);
    this.link.commit(len, o);
    this.counters.count('eth.tx.frames');
  }

  commitIPv4(payloadLength?: number): void {
    const frame = this.reservation;
    if (!frame) return;
    this.reservation = null;
    let len = frame.length;
    if (payloadLength !== undefined && payloadLength >= 0 && ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payloadLength < len) {
      len = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payloadLength;
      const ipHeader = frame.subarray(ETHERNET_HEADER_LENGTH, ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH);
      const dv = new DataView(ipHeader.buffer, ipHeader.byteOffset, IPV4_HEADER_LENGTH);
      dv.setUint16(2, IPV4_HEADER_LENGTH + payloadLength, false);
      dv.setUint16(10, 0, false);
      dv.setUint16(10, fold(sum16(ipHeader)), false);
    }
    if (this.pcap) this.capture(frame.subarray(0, len));
    this.link.commit(len);
    this.counters.count('eth.tx.frames');
  }

  abortIPv4(): void {
    if (!this.reservation) return;
    this.reservation = null;
    this.link.abort();
  }

  sendIPv4(src: number, dst: number, protocol: number, payload: Uint8Array): boolean {
    const mac = this.guestMacOrAsk();
    if (!mac) return false;
    return this.sendIPv4To(mac, src, dst, protocol, payload);
  }

  sendIPv4To(dstMac: Uint8Array, src: number, dst: number, protocol: number, payload: Uint8Array): boolean {
    if (this.reservation) this.abortIPv4();
    if (IPV4_HEADER_LENGTH + payload.length > 65535) {
      this.counters.count('ipv4.tx.too_big');
      return false;
    }
    const id = this.nextId();
    const maxData = (this.mtu - IPV4_HEADER_LENGTH) & ~7;
    if (IPV4_HEADER_LENGTH + payload.length <= this.mtu) return this.emitIPv4(dstMac, src, dst, protocol, payload, id, 0, false);
    // Fragment (RFC 791): every piece but the last carries a multiple of 8 bytes.
    this.counters.count('ipv4.tx.fragmented');
    for (let off = 0; off < payload.length; off += maxData) {
      const piece = payload.subarray(off, Math.min(payload.length, off + maxData));
      const more = off + maxData < payload.length;
      if (!this.emitIPv4(dstMac, src, dst, protocol, piece, id, off, more)) return false;
    }
    return true;
  }

  private emitIPv4(dstMac: Uint8Array, src: number, dst: number, protocol: number, payload: Uint8Array, id: number, fragmentOffset: number, moreFragments: boolean): boolean {
    const len = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payload.length;
    const frame = this.link.reserve(len);
    if (!frame) {
      this.counters.count('eth.tx.backpressure');
      return false;
    }
    writeEthernetHeader(frame, dstMac, this.config.gatewayMac, ETHERTYPE_IPV4);
    writeIPv4Header(frame.subarray(ETHERNET_HEADER_LENGTH), {
      src, dst, protocol, totalLength: IPV4_HEADER_LENGTH + payload.length, id, fragmentOffset, moreFragments,
    });
    frame.set(payload, ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH);
    if (this.pcap) this.capture(frame);
    this.link.commit(len);
    this.counters.count('eth.tx.frames');
    return true;
  }

  /**
   * ICMP error to the guest quoting `offending` (RFC 792: its IP header and
   * the first 8 bytes of its payload). Never sent about an ICMP error, a
   * non-first fragment, a packet to or from a broadcast/multicast address or
   * from 0.0.0.0 (RFC 1122 3.2.2).
   */
  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: number): void {
    const ip = parseIPv4Packet(offending, false);
    if (typeof ip === 'string') {
      // A quote may be cut short (reassembly keeps header + 8 bytes): accept that.
      const cut = parseQuote(offending);
      if (!cut) return this.counters.count('icmp.tx.error_suppressed');
      return this.emitIcmpError(type, code, cut.packet, cut, from);
    }
    return this.emitIcmpError(type, code, ip.packet, ip, from);
  }

  private emitIcmpError(type: number, code: number, packet: Uint8Array,
    ip: { src: number; dst: number; protocol: number; headerLength: number; fragmentOffset: number }, from?: number): void {
    const c = this.counters;
    const cfg = this.config;
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
      msg[6] = (this.mtu >>> 8) & 0xff;
      msg[7] = this.mtu & 0xff;
    }
    msg.set(packet.subarray(0, quoteLen), 8);
    finishIcmpChecksum(msg);
    const src = from !== undefined && isUnicastAddress(from) ? from : cfg.gateway;
    if (this.sendIPv4(src, ip.src, PROTO_ICMP, msg)) c.count(`icmp.tx.error.type_${type}_code_${code}`);
  }

  whenWritable(callback: () => void): void {
    this.writableCallbacks.push(callback);
    if (this.writableCallbacks.length === 1) {
      this.link.onWritable(() => {
        const callbacks = this.writableCallbacks;
        this.writableCallbacks = [];
        for (const cb of callbacks) {
          try {
            cb();
          } catch (err) {
            this.counters.count('stack.writable.exception');
            this.logOnce('writable-exception', `exception in writable callback: ${String(err)}`);
          }
        }
      });
    }
  }

  flush(): void {
    this.link.flush();
    const pcap = this.pcap;
    if (pcap) {
      pcap.flush();
      if (pcap.error) this.pcapFailed(pcap);
    }
  }

  private nextId(): number {
    this.ipId = (this.ipId + 1) & 0xffff;
    return this.ipId;
  }

  /** For logs and --stats. */
  describe(): string {
    return `guest ${ipv4ToString(this.config.guestIp)} mac ${this.mac ? macToString(this.mac) : '(unknown)'}, gateway ${ipv4ToString(this.config.gateway)}, dns ${ipv4ToString(this.config.dns)}`;
  }
}

/**
 * Whether a NEEDS_CSUM frame is an unfragmented IPv4 TCP or UDP packet whose
 * csum_start is its L4 header and csum_offset that header's checksum field
 * (16 for TCP, 6 for UDP): the shape Linux gives locally generated packets
 * with CHECKSUM_PARTIAL. Anything else takes the generic completion path.
 */
function partialChecksumTrusted(frame: Uint8Array, o: FrameOffload): boolean {
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

