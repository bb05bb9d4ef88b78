/**
 * The contract between the stack's dispatcher (src/net/stack.ts) and its
 * protocol modules (arp, icmp, udp, dhcp, dns, tcp).
 *
 * The stack is a library with no event loop of its own, in the manner of
 * libslirp: frames come in through `Stack.receive` (it implements FrameSink),
 * frames go out through the NetLink, time comes from an injected clock and
 * the owner calls `tick(now)` (the runtime does so on a timer; tests call it
 * by hand to make TCP timers deterministic). Host I/O goes through injected
 * factories that default to Node's own sockets.
 *
 * Addresses on every internal path are `InAny` (src/net/inany.ts): an IPv4
 * address is the unsigned 32-bit value of its big-endian wire field
 * (10.0.2.15 is 0x0a00020f), an IPv6 address 16 bytes; strings exist only
 * at the socket API edge. The configuration's own IPv4 addresses are
 * numbers (and the IPv6 ones 16 bytes). Protocol modules see the IP layer only through `IpOutput`
 * (family-neutral) and ask the context, never the link, for the MTU and
 * the guest's receive offloads.
 */
import type * as dgram from 'node:dgram';
import type * as net from 'node:net';
import type { InAny } from './inany.js';
import type { FlowTable } from './flows.js';

export interface StackConfig {
  /** Guest network, e.g. 10.0.2.0 with prefix 24. */
  network: number;
  prefixLength: number;
  /** Gateway (the host as the guest sees it), default 10.0.2.2. */
  gateway: number;
  /** DNS forwarder address inside the guest network, default 10.0.2.3. */
  dns: number;
  /** Address leased to the guest by DHCP, default 10.0.2.15. */
  guestIp: number;
  /** MTU offered to the guest (DHCP option 26) and used for segment sizes; default 1500. */
  mtu: number;
  /** MAC address the gateway/DNS answer ARP with. */
  gatewayMac: Uint8Array;
  /** Map the gateway address to the host's loopback (127.0.0.1) — default true; --no-map-gw clears it. */
  mapGatewayToLoopback: boolean;
  /** libslirp restrict=on: the guest reaches nothing but forwarded ports (and the stack's own DHCP/DNS/ARP/ICMP to gateway). */
  restrict: boolean;
  /** Upstream DNS resolvers (host addresses, with port) the DNS forwarder uses, from /etc/resolv.conf or --dns-upstream. */
  dnsUpstreams: { address: string; port: number }[];
  /** DHCP extras. */
  hostname?: string;
  domainSearch: string[];
  leaseSeconds: number;
  /**
   * Bounds. Each flow holds one host fd (a TCP or UDP socket, an ICMP ping
   * socket); startBackend lowers these to fit the process's fd limit
   * (src/fd-budget.ts).
   */
  maxUdpFlows: number;
  maxTcpFlows: number;
  /** DNS queries relayed over UDP and waiting for an answer; each holds one host socket (fd). */
  maxDnsQueries: number;
  /** Ping flows (one ICMP socket each), default 256. */
  maxPingFlows: number;
  /** Fraction of maxTcpFlows that connections to forwarded ports may hold together (once there are forwards); the guest's own connections keep the rest. Default 0.25. */
  tcpInboundShare: number;
  /** Fraction of that inbound share one forward may hold; default: an equal split between the forwards. */
  tcpForwardShare?: number;
  udpIdleTimeoutMs: number;
  /**
   * IPv6 on the guest link (default true; --no-ipv6 clears it: every IPv6
   * frame is then dropped, counted 'eth.drop.ipv6'). The addresses are
   * 16-byte InAny values; defaults are libslirp's (src/net/config.ts).
   */
  ipv6: boolean;
  /** The guest's /64 prefix (default fec0::), advertised for SLAAC. */
  network6: Uint8Array;
  /** The gateway inside the prefix (default fec0::2); maps to the host's ::1 like the IPv4 gateway to 127.0.0.1. */
  gateway6: Uint8Array;
  /** The DNS forwarder's IPv6 address (default fec0::3). */
  dns6: Uint8Array;
  /** The router's link-local address (default fe80::2): source of RAs and DHCPv6 replies. */
  gatewayLinkLocal6: Uint8Array;
  /** The address DHCPv6 assigns (default prefix::15). */
  guestIp6: Uint8Array;
}

/** Injected time: milliseconds, monotonic. */
export interface Clock {
  now(): number;
}

/** Injected host I/O, defaulting to node:net / node:dgram and the addon's ping sockets. */
export interface HostIO {
  createUdpSocket(type: 'udp4' | 'udp6'): dgram.Socket;
  /** Start a TCP connection to the host side of a flow (net.connect semantics: events 'connect', 'data', 'end', 'error', 'close'). */
  connectTcp(options: net.TcpNetConnectOpts): net.Socket;
}

/** Named counters (gVisor style): every drop has a reason; read at run time with --stats or SIGUSR1. */
export interface Counters {
  /** Add n (default 1) to counter `name`, e.g. 'tcp.drop.bad_checksum'. Names are 'proto.metric[.reason]'. */
  count(name: string, n?: number): void;
  snapshot(): Record<string, number>;
}

/** Parsed IP header facts a transport handler gets with its payload (either family). */
export interface IpMeta {
  /** Source and destination (src/net/inany.ts; IPv6 bytes alias the packet: copy with inanyOwned to keep). */
  src: InAny;
  dst: InAny;
  /** IPv4 protocol / IPv6 next header of the transport. */
  protocol: number;
  /** IPv4 TTL / IPv6 hop limit. */
  ttl: number;
  /** IPv4 TOS / IPv6 traffic class. */
  tos: number;
  /** The whole IP packet (header + payload), for ICMP errors quoting it. */
  packet: Uint8Array;
}

/**
 * One guest-bound frame being built, reserved in the link's receive buffers
 * (zero copy). `payload` is the L4 bytes (transport header + data) to fill;
 * then exactly one of commit, commitOffload or abort ends it. The handle is
 * the IP output's own reused object: it is valid until it is ended or the
 * next reservation is made (which aborts one left open), and must not be
 * kept beyond that.
 */
export interface OutputReservation {
  readonly payload: Uint8Array;
  /** Publish the frame (optionally shorter: the new L4 length). */
  commit(payloadLength?: number): void;
  /**
   * Publish with the L4 checksum partial: the field at `checksumOffset` in
   * the L4 header holds the pseudo-header sum (not inverted). When the L4
   * payload (after `l4HeaderLength`) is longer than `gsoSize` > 0 it goes as
   * one TCP GSO frame of `gsoSize` segments. If the guest did not negotiate
   * partial checksums (GUEST_CSUM) the checksum is completed here in software
   * (and a frame beyond the MTU is dropped and counted).
   */
  commitOffload(checksumOffset: number, l4HeaderLength: number, gsoSize: number): void;
  /** Give the reserved room back unsent. */
  abort(): void;
}

/** `IpOutput.reserve` flags. */
export const OUT_DONT_FRAGMENT = 1;
/** Bounded by a 65535-byte IP payload instead of the MTU when the guest takes GSO frames of the family (by the MTU otherwise). */
export const OUT_LARGE = 2;

/**
 * IP output to the guest, family-neutral: `src`/`dst` say the family (an
 * IPv4 number or IPv6 bytes, both the same family) and the matching IP
 * layer (src/net/ip/) writes the Ethernet and IP headers.
 */
export interface IpOutput {
  /**
   * Reserve a guest-bound frame for an IP packet with `payloadLength` bytes
   * of L4 payload (the L4 header counts as payload here), its Ethernet and
   * IP headers filled in (to the guest's learned MAC, TTL/hop limit 64, DF
   * with OUT_DONT_FRAGMENT). Returns null on back-pressure, when the guest's
   * MAC is not known yet, or when the packet would exceed the MTU (OUT_LARGE:
   * 64 KiB with GSO); each is counted.
   */
  reserve(src: InAny, dst: InAny, protocol: number, payloadLength: number, flags?: number): OutputReservation | null;
  /** Copy-path convenience: send an IP packet whose L4 bytes are given (IPv4 fragments it beyond the MTU). */
  send(src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean;
  /**
   * Send an ICMP error (ICMPv4 type/code for an IPv4 `offending` packet,
   * ICMPv6 for an IPv6 one) to the guest quoting `offending`, from `from`
   * (default: the gateway), e.g. port unreachable. Suppressed (counted)
   * where the RFCs forbid an error.
   */
  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: InAny): void;
  /** Register for one callback when the link can take frames again. Many may register; each is called once. */
  whenWritable(callback: () => void): void;
  flush(): void;
}

/** Offloads the guest takes on receive (the link's negotiated GUEST_CSUM/GUEST_TSO4/GUEST_TSO6); may lose tso4/tso6 at run time: read per segment. */
export interface GuestOffloads {
  readonly csum: boolean;
  readonly tso4: boolean;
  readonly tso6: boolean;
}

export interface StackContext {
  readonly config: StackConfig;
  readonly clock: Clock;
  readonly host: HostIO;
  readonly counters: Counters;
  readonly out: IpOutput;
  /** The stack's one flow table (src/net/flows.ts): TCP, UDP and ping flows, keyed by a hash the guest cannot steer. */
  readonly flows: FlowTable;
  /** MTU of IP packets towards the guest: the smaller of config.mtu and the link's. */
  readonly mtu: number;
  /** What the guest takes on receive, asked per segment (never cached). */
  readonly guestOffloads: GuestOffloads;
  /** The guest's IPv6 address inside the prefix (learned through NDP, DHCPv6 or its packets) that forwards reach, or null (then forwards use IPv4). */
  guestIpv6(): Uint8Array | null;
  /** Log a message once per key (e.g. "ping sockets not permitted"). */
  logOnce(key: string, message: string): void;
}

/** Where a guest-side destination goes on the host (pure: see src/net/nat.ts). */
export type NatDecision =
  /** `dnsQueries`: the guest's byte stream must be DNS queries (TCP to the DNS address; see dns-stream.ts). */
  | { kind: 'host'; address: string; port: number; dnsQueries?: boolean }
  | { kind: 'local' } // answered by the stack itself (DHCP, DNS forwarder, ICMP echo to gateway/dns)
  | { kind: 'refuse'; reason: string };

/** A transport-protocol handler registered with the dispatcher. */
export interface TransportHandler {
  /**
   * One L4 packet from the guest. `segment` aliases guest memory only during
   * the call. `checksumTrusted`: the guest left the L4 checksum partial
   * (virtio NEEDS_CSUM) or the device vouched for it (DATA_VALID), so it
   * must not be verified. Must not throw.
   */
  input(meta: IpMeta, segment: Uint8Array, checksumTrusted?: boolean): void;
  /** Timers: called by the stack's tick(now). */
  tick?(now: number): void;
  /** Tear everything down (sockets closed). */
  close(): void;
}

/** The NAT policy as the protocol modules see it (src/net/nat.ts implements it; pure). */
export interface NatPolicy {
  /** Where guest traffic to (dst, dstPort) goes; `dstPort` is the echo id for ICMP (unused). */
  fromGuest(protocol: 'tcp' | 'udp' | 'icmp', dst: InAny, dstPort: number): NatDecision;
  /** The guest-side address for a host-side source, or null if it cannot be represented. */
  toGuestSource(hostAddress: string): InAny | null;
  /** The guest-side source for a peer of a forwarded port (the gateway when it cannot be represented). */
  inboundSource(hostAddress: string, family?: 4 | 6): InAny;
}

/**
 * What the stack offers its own protocol modules (arp, icmp, udp, dhcp,
 * dns) beyond StackContext. It lives here, beside the other contracts, so
 * that no module imports the dispatcher (src/net/stack.ts).
 */
export interface StackInternals extends StackContext {
  readonly nat: NatPolicy;
  /** The guest's MAC, once learned. */
  readonly guestMac: Uint8Array | null;
  learnGuestMac(mac: Uint8Array): void;
  /** Send a finished Ethernet frame (pcap + link). */
  sendFrame(frame: Uint8Array): boolean;
  /** `out.send` to an explicit destination MAC (DHCP broadcast replies). */
  sendTo(dstMac: Uint8Array, src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean;
  log(message: string): void;
}
