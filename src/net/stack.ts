/**
 * The stack's dispatcher: frames in from the device, frames out to it.
 *
 * Theory of operation. The Stack is a library with no event loop of its own
 * (libslirp's shape): the device calls `receive(frame, offload)` for each
 * guest frame and `batchEnd()` after each kick; the owner calls `tick(now)`
 * on a timer; host sockets deliver their events through Node's loop.
 *
 * In: Ethernet -> ARP module, the IPv4 layer (src/net/ip/ipv4.ts) or the
 * IPv6 layer (src/net/ip/ipv6.ts; with IPv6 off its frames are dropped,
 * counted 'eth.drop.ipv6'): input checks, source policy, reassembly (and
 * for IPv6 extension headers and NDP), then by protocol to ICMP/ICMPv6,
 * UDP (DHCP, DHCPv6, DNS forwarder, NAT flows) and the TCP translator. Checksum offload is settled here, before
 * any parsing: a partial checksum from the guest (virtio NEEDS_CSUM, always
 * the case with TSO frames) on an unfragmented TCP or UDP packet (IPv6: with
 * no extension headers), pointing at that header's checksum field, is trusted: the data is the guest's own
 * and never crossed a wire, so TCP and UDP are told not to verify it (no
 * copy, no pass over the payload). A TSO frame (up to 64 KiB, gso_type
 * TCPV4 or TCPV6; the IP length fields are set by the guest as for any
 * packet) is one big TCP segment to the translator. Any other
 * NEEDS_CSUM frame is completed in a scratch copy before anything is
 * parsed, so the protocol modules can verify checksums as usual.
 *
 * Out: protocol modules use the family-neutral IpOutput (`ctx.out`,
 * src/net/ip/output.ts), which hands each call to the IP layer of its
 * addresses' family: `reserve` -> a reservation handle whose `payload` the
 * module fills and then commits (or commits with a partial checksum and GSO
 * metadata, commitOffload), or `send` for a finished payload. The MTU and
 * the guest's receive offloads are asked of the context (`ctx.mtu`,
 * `ctx.guestOffloads`). Every frame in and out passes the pcap writer at
 * this boundary.
 *
 * The guest's MAC address is learned from the frames it sends (ARP, DHCP,
 * any IPv4 from inside the guest network, any IPv6 from an address it may
 * own), as libslirp does; until it is known, output is dropped (counted)
 * and an ARP request (a Neighbor Solicitation for IPv6) asks for it.
 *
 * Nothing throws out of `receive`: every failure is a counted drop; an
 * unexpected exception is caught, counted as 'stack.drop.exception' and
 * logged once.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import type { FrameOffload, FrameSink, NetLink } from './link.js';
import type { Clock, Counters, GuestOffloads, HostIO, StackConfig, StackContext, TransportHandler } from './context.js';
import { type InAny, inanyToString } from './inany.js';
import { resolveStackConfig } from './config.js';
import { CounterSet } from './counters.js';
import { Nat } from './nat.js';
import type { PcapWriter } from './pcap.js';
import { type ForwardSpec, checkForwardSpec, checkForwards, forwardPortCount } from './forward.js';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, isMulticastMac, isZeroMac, macEquals, macToString, parseEthernet } from './wire/ethernet.js';
import { sum16, fold } from './wire/checksum.js';
import { ipv4ToString } from './ip-address.js';
import type { Reassembler } from './ip/ipv4-fragments.js';
import { Ipv4Layer, ipv4PartialChecksumTrusted } from './ip/ipv4.js';
import { Ipv6Layer, ipv6PartialChecksumTrusted } from './ip/ipv6.js';
import { DualOutput, FrameReservation, type IpLayerHost, type Transports } from './ip/output.js';
import { FlowTable } from './flows.js';
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
export type TcpHandler = TransportHandler & {
  addForward?(spec: { hostAddress: string; hostPort: number; guestPort: number; count?: number }): Promise<void>;
  removeForward?(spec: { hostAddress: string; hostPort: number }, closeFlows: boolean): Promise<boolean>;
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
  /** Random numbers in [0, 1) (RA spacing, IPv6 fragment ids); default Math.random. */
  random?: () => number;
}

const SCRATCH_SIZE = 65536 + ETHERNET_HEADER_LENGTH;

export class Stack implements FrameSink, IpLayerHost, Transports {
  readonly config: StackConfig;
  readonly clock: Clock;
  readonly host: HostIO;
  readonly counters: Counters;
  readonly link: NetLink;
  readonly nat: Nat;
  readonly out: DualOutput;
  /** The one flow table (a fresh random hash secret per stack). */
  readonly flows = new FlowTable();
  /** The IPv4 layer (input, reassembly, output, ICMP errors). */
  readonly ipv4: Ipv4Layer;
  /** The IPv6 layer (input, extension headers, reassembly, NDP, output, ICMPv6 errors); null with IPv6 off. */
  readonly ipv6: Ipv6Layer | null;
  private readonly reservation: FrameReservation;
  private readonly logger: (message: string) => void;
  /** Cleared (and the failure counted and logged once) when the capture file cannot be written. */
  private pcap: PcapWriter | undefined;
  private readonly wallClock: () => number;
  private readonly forwards: ForwardSpec[];
  private readonly logged = new Set<string>();

  private mac: Uint8Array | null = null;
  private readonly scratch = new Uint8Array(SCRATCH_SIZE);
  private lastGuestArpRequest = -Infinity;
  private closed = false;
  private readonly pingOption: PingIO | null | undefined;

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
    this.reservation = new FrameReservation(this);
    this.ipv4 = new Ipv4Layer(this, this.reservation);
    this.ipv6 = this.config.ipv6 ? new Ipv6Layer(this, this.reservation, options.random) : null;
    this.out = new DualOutput(this, this.ipv4, this.ipv6);
    this.arp = new ArpModule(this);
    this.icmp = new IcmpModule(this, options.ping ?? null);
    this.dhcp = new DhcpServer(this);
    this.dns = new DnsForwarder(this);
    this.udp = new UdpModule(this, this.dhcp, this.dns, options.udpSocket, this.ipv6);
    const tcpFactory: TcpFactory | null = options.tcp === undefined ? (ctx, nat) => new TcpTranslator(ctx, nat) : options.tcp;
    this.tcpHandler = tcpFactory ? tcpFactory(this, this.nat) : null;
  }

  // ---- lifecycle -----------------------------------------------------------

  /** The IPv4 reassembler (for tests and diagnostics). */
  get reassembler(): Reassembler {
    return this.ipv4.reassembler;
  }

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
    checkForwards(this.forwards);
    for (const f of this.forwards) await this.addForward(f);
  }

  /**
   * Bind one forward (every port of its range, or none) at run time (the
   * control endpoint). Rejects as `start` does for a port that cannot be
   * bound. Overlaps with other forwards are the caller's to refuse
   * (src/control/forwards.ts).
   */
  async addForward(f: ForwardSpec): Promise<void> {
    checkForwardSpec(f);
    if (f.protocol === 'udp') return this.udp.addForward(f);
    if (!this.tcp?.addForward) throw new Error(`forward ${f.protocol}:${f.hostPort}: TCP forwarding not available`);
    return this.tcp.addForward({ hostAddress: f.hostAddress, hostPort: f.hostPort, guestPort: f.guestPort, count: forwardPortCount(f) });
  }

  /** Stop forwarding (its listeners closed; `closeFlows` also ends its connections). False when it is not forwarded. */
  async removeForward(f: ForwardSpec, closeFlows: boolean): Promise<boolean> {
    if (f.protocol === 'udp') return this.udp.removeForward(f);
    return (await this.tcp?.removeForward?.(f, closeFlows)) ?? false;
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
    this.ipv4.close();
    this.ipv6?.close();
    const pcap = this.pcap;
    if (pcap) {
      pcap.flush();
      if (pcap.error) this.pcapFailed(pcap);
    }
  }

  /** Timers of every module. `now` defaults to the clock. Never throws: one module's failure does not stop the others' timers. */
  tick(now: number = this.clock.now()): void {
    const steps: (() => void)[] = [
      () => this.ipv4.tick(now),
      () => this.ipv6?.tick(now),
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

  get guestOffloads(): GuestOffloads {
    return this.link.rxOffloads;
  }

  get transports(): Transports {
    return this;
  }

  sendTo(dstMac: Uint8Array, src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    return this.out.sendTo(dstMac, src, dst, protocol, payload);
  }

  guestIpv6(): Uint8Array | null {
    return this.ipv6?.guestGlobalAddress() ?? null;
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
      this.reservation.abort();
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
  capture(frame: Uint8Array): void {
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
      if (ipv4PartialChecksumTrusted(frame, offload) || (this.ipv6 !== null && ipv6PartialChecksumTrusted(frame, offload))) {
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
        return this.ipv4.input(eth.payload, eth.src, offload, trusted);
      case ETHERTYPE_ARP:
        return this.arp.input(eth.payload, eth.src);
      case ETHERTYPE_IPV6:
        if (this.ipv6 === null) return c.count('eth.drop.ipv6');
        return this.ipv6.input(eth.payload, eth.src, eth.dst, offload, trusted);
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

  /** The guest's MAC, or null after asking for it (rate-limited ARP request; Neighbor Solicitation for an IPv6 `dst`). */
  guestMacOrAsk(dst: InAny): Uint8Array | null {
    if (this.mac) return this.mac;
    this.counters.count('eth.tx.no_guest_mac');
    if (typeof dst !== 'number') {
      this.ipv6?.solicit(dst);
      return null;
    }
    const now = this.clock.now();
    if (now - this.lastGuestArpRequest >= 1000) {
      this.lastGuestArpRequest = now;
      this.arp.request(this.config.guestIp);
    }
    return null;
  }

  flush(): void {
    this.link.flush();
    const pcap = this.pcap;
    if (pcap) {
      pcap.flush();
      if (pcap.error) this.pcapFailed(pcap);
    }
  }

  /** For logs and --stats. */
  describe(): string {
    const c = this.config;
    const v6 = this.ipv6
      ? `; IPv6 prefix ${inanyToString(c.network6)}/64 gateway ${inanyToString(c.gateway6)} dns ${inanyToString(c.dns6)}, guest ${this.ipv6.guestAddresses.all().map((e) => inanyToString(e.address)).join(' ') || '(none seen)'}`
      : '; IPv6 off';
    return `guest ${ipv4ToString(c.guestIp)} mac ${this.mac ? macToString(this.mac) : '(unknown)'}, gateway ${ipv4ToString(c.gateway)}, dns ${ipv4ToString(c.dns)}${v6}`;
  }
}
