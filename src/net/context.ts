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
 * IPv4 addresses are carried as unsigned 32-bit numbers (host order value of
 * the big-endian wire field: 10.0.2.15 is 0x0a00020f) on every internal path;
 * strings exist only at the socket API edge (ipv4ToString/parseIPv4).
 */
import type * as dgram from 'node:dgram';
import type * as net from 'node:net';
import type { NetLink } from './link.js';

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

/** Parsed IPv4 header facts a protocol handler gets with its payload. */
export interface IPv4Meta {
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  tos: number;
  /** The whole IPv4 packet (header + payload), for ICMP errors quoting it. */
  packet: Uint8Array;
}

/** Output helpers the dispatcher gives protocol modules. */
export interface IPv4Output {
  /**
   * Reserve a guest-bound frame for an IPv4 packet with `payloadLength` bytes
   * of L4 payload (the L4 header counts as payload here). Fills in the
   * Ethernet header (to the guest's learned MAC, from gatewayMac) and a
   * 20-byte IPv4 header (id, TTL 64, DF when `dontFragment`, header checksum) and
   * returns the view of the L4 bytes for the caller to fill; then call
   * `commitIPv4()`. Returns null on back-pressure or when the guest's MAC is
   * not known yet.
   */
  reserveIPv4(src: number, dst: number, protocol: number, payloadLength: number, dontFragment?: boolean): Uint8Array | null;
  /** Publish the frame reserved by reserveIPv4 (optionally shorter: new L4 length). */
  commitIPv4(payloadLength?: number): void;
  /** Abort the open reservation. */
  abortIPv4(): void;
  /** Copy-path convenience: send an IPv4 packet whose L4 bytes are given. */
  sendIPv4(src: number, dst: number, protocol: number, payload: Uint8Array): boolean;
  /** Send an ICMP error (type/code) to the guest quoting `offending` (its IPv4 packet), e.g. port unreachable. */
  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: number): void;
  /** Register for one callback when the link can take frames again. Many may register; each is called once. */
  whenWritable(callback: () => void): void;
  flush(): void;

  // Offloaded output (checksum offload and TSO4 towards the guest), used by
  // the TCP translator while `link.rxOffloads.tso4` is set:

  /** `reserveIPv4` bounded by a 65535-byte IPv4 packet instead of the MTU when `link.rxOffloads.tso4` (by the MTU otherwise). */
  reserveIPv4Large(src: number, dst: number, protocol: number, payloadLength: number, dontFragment?: boolean): Uint8Array | null;
  /**
   * Publish the open reservation with its L4 checksum partial: the field at
   * `checksumOffset` in the L4 header holds the pseudo-header sum (not
   * inverted). When the L4 payload (after `l4HeaderLength`) is longer than
   * `gsoSize` > 0 it goes as one TCPv4 GSO frame of `gsoSize` segments. If
   * the guest did not negotiate GUEST_CSUM the stack completes the checksum
   * itself (and a frame beyond the MTU is dropped and counted).
   */
  commitIPv4Offload(checksumOffset: number, l4HeaderLength: number, gsoSize: number): void;
}

export interface StackContext {
  readonly config: StackConfig;
  readonly clock: Clock;
  readonly host: HostIO;
  readonly counters: Counters;
  readonly out: IPv4Output;
  readonly link: NetLink;
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
  /** One L4 packet from the guest. `segment` aliases guest memory only during the call. Must not throw. */
  input(meta: IPv4Meta, segment: Uint8Array): void;
  /** Timers: called by the stack's tick(now). */
  tick?(now: number): void;
  /** Tear everything down (sockets closed). */
  close(): void;
}
