/**
 * UDP: guest datagrams to host sockets and back (NAT with
 * endpoint-independent mapping), ICMP errors for them, plus inbound
 * forwarded ports.
 *
 * Theory of operation.
 *
 * Dispatch of a guest datagram (after the checksum, verified when nonzero;
 * over IPv6 always, a zero checksum being invalid there): port 67 to a
 * broadcast or the gateway -> DHCP server; IPv6 port 547 to ff02::1:2 or an
 * address of ours -> DHCPv6 (the IPv6 layer); the DNS address (IPv4 or
 * IPv6) port 53 -> DNS forwarder; a reply on an inbound-forward association -> back to
 * the host sender through the forward's socket; otherwise the pure NAT
 * decides (src/net/nat.ts) and a flow carries it.
 *
 * Flows: one per guest (source address, source port), entries of the
 * stack's one flow table (src/net/flows.ts; endpoint-independent: the guest
 * side's remote is "any"), in the class 'udp',
 * bounded by config.maxUdpFlows (LRU eviction) with idle expiry after
 * config.udpIdleTimeoutMs. A flow owns exactly one host socket (one fd) of
 * its family (udp4, or udp6 for an IPv6 guest address), unconnected, bound
 * to an ephemeral port on 0.0.0.0 (::) without SO_REUSEADDR
 * (no other socket, of ours or of another local user, can bind that port
 * while the flow lives). It sends to any destination the NAT allows and
 * delivers datagrams from ANY remote back to the guest, with the source
 * translated by `Nat.toGuestSource` (127.0.0.1 appears as the gateway).
 * Lifecycle (the flow table's, flows.ts): created on the first datagram ->
 * active while traffic flows either way -> expired/evicted/closed: socket
 * closed. The entry counts bytes and frames each way.
 *
 * ICMP errors (port unreachable, host/net unreachable, fragmentation needed,
 * time exceeded; for IPv6 flows ICMPv6 unreachable, packet too big, time
 * exceeded, relayed as ICMPv6 with the same type and code and the MTU of
 * packet too big), as passt does: the flow socket is a RawUdpSocket
 * (src/net/udp-raw.ts): an fd from the native addon with IP_RECVERR
 * (IPV6_RECVERR) on, bound with SO_REUSEADDR off (NativeAddon.udpSocket/
 * udpBind), sent on with sendmmsg straight from the guest's bytes, and
 * received in batches: all flow sockets are members of one pollSet, each
 * ready one is drained with recvmmsg into reused buffers, each datagram is
 * delivered to the guest, and what they wrote is published once after the
 * batch (counted as udp.rx.batches). Other factories (tests, fuzz targets,
 * the fallback) give dgram-like sockets whose datagrams are published at
 * once. With IP_RECVERR Linux reports to the socket, unconnected,
 * every ICMP error for a datagram it sent: the error waits in the socket's error
 * queue with the destination the datagram went to, and the socket's next
 * receive fails (the socket emits 'error', e.g. ECONNREFUSED). On that
 * 'error' the flow drains the queue (bounded per event; what is left raises
 * the next 'error') and turns each ICMP-origin entry of type 3 or 11 into an
 * ICMP error to the guest, with the same type and code (the next-hop MTU
 * from ee_info for "fragmentation needed"), quoting the guest's last
 * datagram to that destination: the flow remembers, per host destination,
 * the guest's IPv4 header + 8 bytes (RFC 792) and guest-side destination
 * address, for its MAX_QUOTES_PER_FLOW most recent destinations. An error
 * about any other destination is dropped and counted: like passt, which
 * relays only errors that match a flow, the guest hears only about
 * datagrams it recently sent (an ICMP error forged for a destination it
 * never used goes nowhere). The error comes from the guest-side
 * destination, or from the ICMP's own source (a router, for time exceeded)
 * when that one is representable. The queue must be drained: while
 * it holds an entry the fd stays in EPOLLERR and the level-triggered set
 * would report it every turn.
 * A pending error also fails the socket's next SEND if that comes first
 * (same tick, e.g. a burst to a closed port): that datagram was not sent,
 * so the flow drains the queue and retries it once (it may then go after
 * later datagrams of the burst: UDP promises no order).
 * Without the addon (not built; logged once) flows use plain node:dgram
 * sockets and the guest gets no ICMP errors for its UDP.
 *
 * Inbound forwards (--forward udp:HOST:PORTS:GUESTPORTS): a host socket
 * bound to the forward's address per port of its range (bound whole or
 * not at all); each datagram goes to the guest's matching port from the
 * sender translated by `Nat.inboundSource` (the sender's own address when
 * it is routable and outside the guest network, else the gateway; which
 * applies is logged once per forward port) — over IPv6
 * to the guest's IPv6 address (StackContext.guestIpv6) when the forward
 * listens on an IPv6 address, the sender is an IPv6 (not IPv4-mapped)
 * address and the guest has one, over IPv4 otherwise; the
 * association (guest port, guest-side sender) is remembered as a flow
 * table entry of the class 'udp_inbound' (bounded by maxUdpFlows, LRU, idle
 * expiry; guest address "any") so the guest's replies go back to that
 * sender. `removeForward` (at run time) closes the forward's socket and
 * ends its associations with it: a UDP association has no connection to
 * leave running, and the guest's replies could no longer leave.
 */
import type * as dgram from 'node:dgram';
import { createSocket } from 'node:dgram';
import type { IpMeta, StackInternals } from './context.js';
import { type InAny, inanyEqual, inanyOwned, inanyToString, parseInAny } from './inany.js';
import { sendUdpToGuest } from './udp-output.js';
import { RawUdpSocket, UdpBatchReader } from './udp-raw.js';
import type { DhcpServer } from './dhcp.js';
import type { DnsForwarder } from './dns.js';
import type { ForwardSpec } from './forward.js';
import type { NativeAddon, UdpQueuedError } from '../native/index.js';
import { FlowEntry, type FlowClass } from './flows.js';
import { parseUdp, type UdpView } from './wire/udp.js';
import { parseUdpIPv6 } from './wire/udp-ipv6.js';
import { PROTO_ICMP, PROTO_UDP, isUnicastAddress } from './wire/ipv4.js';
import { NEXT_HEADER_ICMPV6 } from './wire/ipv6.js';
import {
  ICMPV6_DEST_UNREACHABLE, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEEDED, ICMPV6_UNREACH_ADMIN, ICMPV6_UNREACH_PORT, buildIcmpv6Error,
} from './wire/icmpv6.js';
import { ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ipv6Equals } from './ipv6-address.js';
import { isLocalAddress } from './nat.js';
import {
  ICMP_DEST_UNREACHABLE, ICMP_HEADER_LENGTH, ICMP_TIME_EXCEEDED, ICMP_UNREACH_ADMIN, ICMP_UNREACH_NEEDFRAG, ICMP_UNREACH_PORT,
  finishIcmpChecksum,
} from './wire/icmp.js';
import { networkBroadcast } from './config.js';

/** The DHCPv6 server as UDP needs it (the IPv6 layer's `dhcpv6Input`). */
export interface Dhcpv6Service {
  dhcpv6Input(meta: IpMeta, udp: UdpView): void;
}

/**
 * What a flow uses of its socket: the part of dgram.Socket that RawUdpSocket
 * (src/net/udp-raw.ts) also offers. 'message' listeners get (bytes valid
 * only during the call, { address, port, batch? }); with `batch` the reply
 * is published after the reader's batch instead of at once.
 */
export interface UdpFlowSocket {
  send(data: Uint8Array, port: number, address: string, done?: (err: Error | null) => void): void;
  close(): unknown;
  address(): { port: number };
  on(event: 'message', listener: (msg: Uint8Array, rinfo: FlowRemoteInfo) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  once(event: 'listening', listener: () => void): unknown;
  emit(event: string, ...args: unknown[]): boolean;
}

/** Where a flow socket's datagram came from; `batch` set by RawUdpSocket. */
export interface FlowRemoteInfo {
  address: string;
  port: number;
  batch?: UdpBatchReader;
}

/** A flow's host socket: bound (or binding) to an ephemeral port on 0.0.0.0, without SO_REUSEADDR. */
export interface UdpHostSocket {
  readonly socket: UdpFlowSocket;
  /**
   * Read up to `max` entries of the socket's ICMP error queue (IP_RECVERR
   * on), or null when this socket does not report ICMP errors. Never called
   * once the socket is closed (its fd number may be reused).
   */
  readonly readErrors: ((max: number) => UdpQueuedError[]) | null;
}

/** Makes one flow socket of the flow's family (udp4 or udp6); may throw (e.g. EMFILE): the datagram is then dropped and counted. */
export type UdpSocketFactory = (family?: 4 | 6) => UdpHostSocket;

/** The addon when it loads (flow sockets then report ICMP errors), else why not. */
const addon: NativeAddon | Error = await import('../native/index.js').then(
  (m) => m.native,
  (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
);

/** The readiness set and receive buffers of every default flow socket (created with the first one). */
let defaultReader: UdpBatchReader | null = null;

/** The default flow sockets' batch reader, null without the addon (for tests and diagnostics). */
export function defaultUdpBatchReader(): UdpBatchReader | null {
  if (addon instanceof Error) return null;
  return (defaultReader ??= new UdpBatchReader(addon));
}

/**
 * The default flow socket: a RawUdpSocket (IP_RECVERR, received in batches
 * through one pollSet) when the addon loaded, else a plain node:dgram socket
 * (no ICMP errors). Throws if no socket can be made.
 */
export const hostUdpSocket: UdpSocketFactory = (family = 4) => {
  const reader = defaultUdpBatchReader();
  if (reader === null) {
    const socket = createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: family === 6 });
    socket.bind(0, family === 6 ? '::' : '0.0.0.0');
    return { socket, readErrors: null };
  }
  const socket = new RawUdpSocket(reader, family);
  return { socket, readErrors: (max) => reader.native.udpReadErrorQueue(socket.fd, max) };
};

/** Why flow sockets report no ICMP errors, or null when they do. */
export function udpErrorReportingUnavailable(): string | null {
  return addon instanceof Error ? addon.message : null;
}

/** Host destinations per flow whose last guest datagram is kept for quoting. */
export const MAX_QUOTES_PER_FLOW = 8;
/** Longest quote: the IP header (IPv4 with options: 60 bytes; IPv6 with extension headers) + 8 bytes of UDP, cut at 128. */
const MAX_QUOTE = 128;
/** The "any" address and port of an endpoint-independent side of a flow key. */
const ANY = 0;
/** Error-queue entries read per call, and calls per 'error' event (the rest raises another one). */
const ERROR_BURST = 32;
const ERROR_ROUNDS = 4;
/** SO_EE_ORIGIN_ICMP / SO_EE_ORIGIN_ICMP6: the entry is an ICMPv4 / ICMPv6 message from the network. */
const SO_EE_ORIGIN_ICMP = 2;
const SO_EE_ORIGIN_ICMP6 = 3;
/**
 * Send failures that may stand for a pending ICMP error (what the kernel's
 * icmp_err_convert yields for types 3 and 11, and EPROTO for 12): such a
 * send is retried once after the error queue is drained.
 */
const ICMP_SEND_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOPROTOOPT', 'EMSGSIZE', 'EOPNOTSUPP', 'EPROTO']);

/** The guest's last datagram to one host destination, as an ICMP error quotes it. */
interface SentQuote {
  /** The guest-side destination address. */
  guestDst: InAny;
  /** The guest's IP header(s) + 8 bytes, in quote[0..length). */
  quote: Uint8Array;
  length: number;
}

interface UdpFlow {
  /** The flow's entry in the flow table: guest side, host port (localPort), counters. */
  entry: FlowEntry<UdpFlow>;
  socket: UdpFlowSocket;
  readErrors: ((max: number) => UdpQueuedError[]) | null;
  /** Per host destination `address:port`, least recently sent first; only with readErrors. */
  sent: Map<string, SentQuote>;
  /** The most recent key of `sent` (saves re-ordering the map for a flow that talks to one peer). */
  lastKey: string;
  closed: boolean;
}

/** An inbound-forward association; its entry's host side is the sender's address and port. */
interface InboundAssociation {
  socket: dgram.Socket;
}

export class UdpModule {
  private readonly flows: FlowClass<UdpFlow>;
  private readonly inbound: FlowClass<InboundAssociation>;
  private readonly forwardSockets: dgram.Socket[] = [];
  /** Each bound forward's sockets (one per port) by host address and first port. */
  private readonly forwardsByKey = new Map<string, dgram.Socket[]>();
  private readonly makeSocket: UdpSocketFactory;

  constructor(
    private readonly s: StackInternals,
    private readonly dhcp: DhcpServer,
    private readonly dns: DnsForwarder,
    socketFactory?: UdpSocketFactory,
    private readonly dhcpv6: Dhcpv6Service | null = null,
  ) {
    const cfg = s.config;
    this.makeSocket = socketFactory ?? hostUdpSocket;
    this.flows = s.flows.addClass<UdpFlow>({
      name: 'udp', capacity: cfg.maxUdpFlows, lru: true, idleTimeoutMs: cfg.udpIdleTimeoutMs,
      onRemove: (entry, reason) => {
        s.counters.count('udp.flows.active', -1);
        s.counters.count(`udp.flows.${reason}`);
        this.closeFlow(entry.value);
      },
    });
    this.inbound = s.flows.addClass<InboundAssociation>({
      name: 'udp_inbound', capacity: cfg.maxUdpFlows, lru: true, idleTimeoutMs: cfg.udpIdleTimeoutMs,
      onRemove: (_entry, reason) => {
        s.counters.count('udp.inbound.active', -1);
        s.counters.count(`udp.inbound.${reason}`);
      },
    });
  }

  get flowCount(): number {
    return this.flows.size;
  }

  /** One UDP datagram (the IPv4 payload) from the guest. `checksumKnownGood` from virtio DATA_VALID. */
  input(meta: IpMeta, bytes: Uint8Array, checksumKnownGood = false): void {
    const s = this.s;
    const c = s.counters;
    const cfg = s.config;
    const v6 = typeof meta.src !== 'number';
    const udp = v6
      ? parseUdpIPv6(bytes, meta.src as Uint8Array, meta.dst as Uint8Array, !checksumKnownGood)
      : parseUdp(bytes, meta.src, meta.dst, !checksumKnownGood);
    if (typeof udp === 'string') return c.count(`udp.drop.${udp}`);
    c.count('udp.rx.datagrams');
    if (v6) {
      const dst = meta.dst as Uint8Array;
      if (udp.dstPort === 547 && (ipv6Equals(dst, ALL_DHCP_RELAY_AGENTS_AND_SERVERS) || isLocalAddress(cfg, dst))) {
        if (this.dhcpv6) return this.dhcpv6.dhcpv6Input(meta, udp);
        return c.count('udp.drop.no_dhcpv6');
      }
      if (udp.dstPort === 53 && ipv6Equals(dst, cfg.dns6)) return this.dns.input(meta, udp);
    } else if (udp.dstPort === 67 && (meta.dst === 0xffffffff || meta.dst === cfg.gateway || meta.dst === networkBroadcast(cfg))) {
      return this.dhcp.input(meta, udp);
    }
    if (meta.src === 0) return c.count('udp.drop.bad_src');
    if (meta.dst === cfg.dns && udp.dstPort === 53) return this.dns.input(meta, udp);
    if (udp.srcPort === 0 || udp.dstPort === 0) return c.count('udp.drop.port_zero');
    const now = s.clock.now();
    const assoc = s.flows.touch<InboundAssociation>(PROTO_UDP, ANY, udp.srcPort, meta.dst, udp.dstPort, now);
    if (assoc) {
      c.count('udp.inbound.tx');
      assoc.countFromGuest(udp.payload.length);
      assoc.value.socket.send(Buffer.from(udp.payload), assoc.hostPort, assoc.hostAddr, (err) => {
        if (err) c.count('udp.host.send_error');
      });
      return;
    }
    const decision = s.nat.fromGuest('udp', meta.dst, udp.dstPort);
    if (decision.kind === 'refuse') {
      c.count(`udp.drop.nat_${decision.reason}`);
      if (decision.reason === 'restricted' || decision.reason === 'gateway_unmapped') {
        if (v6) s.out.sendIcmpError(ICMPV6_DEST_UNREACHABLE, ICMPV6_UNREACH_ADMIN, meta.packet, meta.dst);
        else s.out.sendIcmpError(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN, meta.packet, meta.dst);
      }
      return;
    }
    if (decision.kind === 'local') {
      // Only DHCP and DNS are local for UDP, both handled above (e.g. DNS with a source of port 0).
      return c.count('udp.drop.local_port');
    }
    let flow = s.flows.touch<UdpFlow>(PROTO_UDP, meta.src, udp.srcPort, ANY, 0, now)?.value;
    if (!flow) {
      const created = this.createFlow(new FlowEntry<UdpFlow>(PROTO_UDP, inanyOwned(meta.src), udp.srcPort, ANY, 0, now), v6 ? 6 : 4);
      if (!created) return;
      flow = created;
      s.flows.insert(this.flows, flow.entry);
      c.count('udp.flows.created');
      c.count('udp.flows.active');
    }
    this.sendFromFlow(flow, decision.address, decision.port, meta, udp);
  }

  private createFlow(entry: FlowEntry<UdpFlow>, family: 4 | 6): UdpFlow | null {
    const s = this.s;
    let host: UdpHostSocket;
    try {
      host = this.makeSocket(family);
    } catch (err) {
      s.counters.count('udp.host.socket_error');
      s.logOnce('udp-socket', `cannot create UDP socket: ${String(err)}`);
      return null;
    }
    if (!host.readErrors) {
      const why = udpErrorReportingUnavailable();
      s.logOnce('udp-recverr', `UDP: no ICMP errors for the guest's datagrams${why ? ` (native addon not available: ${why})` : ''}`);
    }
    const flow: UdpFlow = {
      entry, socket: host.socket, readErrors: host.readErrors, sent: new Map(), lastKey: '', closed: false,
    };
    entry.value = flow;
    const socket = host.socket;
    socket.on('message', (msg: Uint8Array, rinfo: FlowRemoteInfo) =>
      this.deliver(flow, msg, rinfo.address, rinfo.port, rinfo.batch));
    socket.on('error', (err: Error) => this.socketError(flow, err));
    entry.localPort = boundPort(socket);
    if (entry.localPort === 0) {
      socket.once('listening', () => {
        entry.localPort = boundPort(socket);
      });
    }
    return flow;
  }

  private sendFromFlow(flow: UdpFlow, address: string, port: number, meta: IpMeta, udp: UdpView): void {
    this.s.counters.count('udp.tx.datagrams');
    if (flow.readErrors) this.rememberQuote(flow, `${address}:${port}`, meta, udp);
    this.hostSend(flow, udp.payload, port, address, true);
  }

  /** Keep the guest's IP header(s) + 8 bytes of this datagram for an ICMP error about it. */
  private rememberQuote(flow: UdpFlow, key: string, meta: IpMeta, udp: UdpView): void {
    const packet = meta.packet;
    const udpOffset = udp.datagram.byteOffset - packet.byteOffset;
    const length = Math.min(packet.length, udpOffset + 8, MAX_QUOTE);
    let entry = flow.sent.get(key);
    if (!entry) {
      if (flow.sent.size >= MAX_QUOTES_PER_FLOW) {
        const oldest = flow.sent.keys().next();
        if (!oldest.done) flow.sent.delete(oldest.value);
      }
      entry = { guestDst: inanyOwned(meta.dst), quote: new Uint8Array(MAX_QUOTE), length: 0 };
      flow.sent.set(key, entry);
    } else if (flow.lastKey !== key) {
      flow.sent.delete(key);
      flow.sent.set(key, entry);
    }
    flow.lastKey = key;
    entry.guestDst = inanyOwned(meta.dst);
    entry.quote.set(packet.subarray(0, length));
    entry.length = length;
  }

  private hostSend(flow: UdpFlow, data: Uint8Array, port: number, address: string, mayRetry: boolean): void {
    flow.socket.send(data, port, address, (err) => {
      if (!err || flow.closed) return;
      const c = this.s.counters;
      if (flow.readErrors) {
        // A pending ICMP error fails the next send whatever its destination
        // (the datagram was not sent), and leaves the entry in the queue.
        this.drainErrors(flow);
        if (mayRetry && ICMP_SEND_ERRORS.has((err as NodeJS.ErrnoException).code ?? '')) {
          c.count('udp.host.send_retry');
          this.hostSend(flow, data, port, address, false);
          return;
        }
      }
      c.count('udp.host.send_error');
    });
  }

  /** 'error' on a flow socket: with IP_RECVERR, an ICMP error failed a receive. */
  private socketError(flow: UdpFlow, err: Error): void {
    if (flow.closed) return;
    if (flow.readErrors && this.drainErrors(flow) > 0) return;
    this.s.counters.count('udp.host.error');
    this.s.logOnce(`udp-error-${(err as NodeJS.ErrnoException).code}`, `UDP flow socket error: ${err.message}`);
  }

  /** Read the flow socket's error queue (bounded) and tell the guest. Returns the entries read. */
  private drainErrors(flow: UdpFlow): number {
    const s = this.s;
    let total = 0;
    for (let round = 0; round < ERROR_ROUNDS && !flow.closed; round++) {
      let entries: UdpQueuedError[];
      try {
        entries = flow.readErrors!(ERROR_BURST);
      } catch (err) {
        s.counters.count('udp.host.errqueue_error');
        s.logOnce('udp-errqueue', `reading a UDP error queue: ${String(err)}`);
        break;
      }
      for (const e of entries) this.icmpErrorToGuest(flow, e);
      total += entries.length;
      if (entries.length < ERROR_BURST) break;
    }
    if (total > 0) s.out.flush();
    return total;
  }

  /** One error-queue entry -> an ICMP error to the guest quoting its datagram. */
  private icmpErrorToGuest(flow: UdpFlow, e: UdpQueuedError): void {
    const s = this.s;
    const c = s.counters;
    c.count('udp.icmp_error.rx');
    const guest = flow.entry.guestAddr;
    if (typeof guest !== 'number') return this.icmpv6ErrorToGuest(flow, guest, e);
    if (e.origin !== SO_EE_ORIGIN_ICMP || (e.type !== ICMP_DEST_UNREACHABLE && e.type !== ICMP_TIME_EXCEEDED)) {
      return c.count('udp.icmp_error.ignored');
    }
    const sent = flow.sent.get(`${e.address}:${e.port}`);
    if (!sent) return c.count('udp.icmp_error.unknown_destination');
    if (e.type === ICMP_DEST_UNREACHABLE && e.code === ICMP_UNREACH_PORT) c.count('udp.port_unreachable');
    const guestDst = sent.guestDst;
    const quote = sent.quote.subarray(0, sent.length);
    const guestIp = guest;
    if (typeof guestIp !== 'number' || !isUnicastAddress(guestIp)) return c.count('udp.icmp_error.suppressed');
    // From the destination itself, or from the router that sent it when the guest can be shown that address.
    const from = e.offender === '' || e.offender === e.address ? guestDst : (s.nat.toGuestSource(e.offender) ?? guestDst);
    const msg = new Uint8Array(ICMP_HEADER_LENGTH + quote.length);
    msg[0] = e.type;
    msg[1] = e.code;
    if (e.type === ICMP_DEST_UNREACHABLE && e.code === ICMP_UNREACH_NEEDFRAG && e.info >= 68 && e.info <= 0xffff) {
      // Next-hop MTU in the low 16 bits of the second word (RFC 1191).
      new DataView(msg.buffer).setUint16(6, e.info, false);
    }
    msg.set(quote, ICMP_HEADER_LENGTH);
    finishIcmpChecksum(msg);
    if (s.out.send(from, guestIp, PROTO_ICMP, msg)) c.count(`udp.icmp_error.type_${e.type}_code_${e.code}`);
    else c.count('udp.drop.to_guest');
  }

  /** One error-queue entry of an IPv6 flow -> an ICMPv6 error (unreachable, packet too big, time exceeded) quoting its datagram. */
  private icmpv6ErrorToGuest(flow: UdpFlow, guest: Uint8Array, e: UdpQueuedError): void {
    const s = this.s;
    const c = s.counters;
    if (e.origin !== SO_EE_ORIGIN_ICMP6 || (e.type !== ICMPV6_DEST_UNREACHABLE && e.type !== ICMPV6_PACKET_TOO_BIG && e.type !== ICMPV6_TIME_EXCEEDED)) {
      return c.count('udp.icmp_error.ignored');
    }
    const sent = flow.sent.get(`${e.address}:${e.port}`);
    if (!sent) return c.count('udp.icmp_error.unknown_destination');
    if (e.type === ICMPV6_DEST_UNREACHABLE && e.code === ICMPV6_UNREACH_PORT) c.count('udp.port_unreachable');
    const offender = e.offender === '' || e.offender === e.address ? null : s.nat.toGuestSource(e.offender);
    const from = offender instanceof Uint8Array ? offender : sent.guestDst;
    if (typeof from === 'number') return c.count('udp.icmp_error.suppressed');
    const parameter = e.type === ICMPV6_PACKET_TOO_BIG ? Math.max(1280, Math.min(e.info, s.mtu)) : 0;
    const msg = buildIcmpv6Error(e.type, e.code, parameter, sent.quote.subarray(0, sent.length), from, guest);
    if (s.out.send(from, guest, NEXT_HEADER_ICMPV6, msg)) c.count(`udp.icmp_error.v6_type_${e.type}_code_${e.code}`);
    else c.count('udp.drop.to_guest');
  }

  /** After a batch of host datagrams: publish what they wrote to the guest once. */
  private readonly flushAfterBatch = (): void => {
    this.s.counters.count('udp.rx.batches');
    this.s.out.flush();
  };

  /** A datagram from the host side of a flow; with `batch`, published after the batch (else at once). */
  private deliver(flow: UdpFlow, msg: Uint8Array, address: string, port: number, batch?: UdpBatchReader): void {
    const s = this.s;
    if (flow.closed) return;
    try {
      const src = s.nat.toGuestSource(address);
      const entry = flow.entry;
      // A source of the other family (an IPv4-mapped peer on a udp6 socket) cannot be shown on this flow.
      if (src === null || typeof src !== typeof entry.guestAddr) return s.counters.count('udp.drop.unrepresentable_source');
      s.flows.used(entry, s.clock.now());
      entry.countToGuest(msg.length);
      if (sendUdpToGuest(s, src, port, entry.guestAddr, entry.guestPort, msg)) s.counters.count('udp.rx.host_datagrams');
      else s.counters.count('udp.drop.to_guest');
      if (batch) batch.afterBatch(this.flushAfterBatch);
      else s.out.flush();
    } catch (err) {
      s.counters.count('udp.exception');
      s.logOnce('udp-deliver', `exception delivering UDP: ${String(err)}`);
    }
  }

  private closeFlow(flow: UdpFlow): void {
    flow.closed = true;
    flow.sent.clear();
    try {
      flow.socket.close();
    } catch {
      /* not running */
    }
  }

  /**
   * Bind a forward's host ports (hostPort + i, one socket each); datagrams
   * go to the guest's guestPort + i. All or nothing: if one port cannot be
   * bound, those already bound are closed and the promise rejects with that
   * bind's error (its code kept).
   */
  async addForward(spec: ForwardSpec): Promise<void> {
    const sockets: dgram.Socket[] = [];
    const logged = new Set<string>();
    try {
      for (let i = 0; i < (spec.count ?? 1); i++) sockets.push(await this.bindForwardPort(spec, i, logged));
    } catch (err) {
      for (const socket of sockets) socket.close();
      throw err;
    }
    this.forwardSockets.push(...sockets);
    this.forwardsByKey.set(`${spec.hostAddress}|${spec.hostPort}`, sockets);
  }

  /** One socket of a forward: host port hostPort + i to guest port guestPort + i. `logged`: the forward's behaviours already logged. */
  private bindForwardPort(spec: ForwardSpec, i: number, logged: Set<string>): Promise<dgram.Socket> {
    const s = this.s;
    const c = s.counters;
    const v6 = spec.hostAddress.includes(':');
    const hostPort = spec.hostPort + i;
    const guestPort = spec.guestPort + i;
    const socket = s.host.createUdpSocket(v6 ? 'udp6' : 'udp4');
    return new Promise((resolve, reject) => {
      const onBindError = (err: Error) => {
        try {
          socket.close();
        } catch {
          /* never bound */
        }
        // The code (EADDRINUSE...) kept for the caller, as Node's own errors carry it.
        reject(Object.assign(new Error(`forward udp:${spec.hostAddress}:${hostPort}: ${err.message}`), { code: (err as NodeJS.ErrnoException).code, port: hostPort }));
      };
      socket.once('error', onBindError);
      socket.bind({ port: hostPort, address: spec.hostAddress }, () => {
        socket.off('error', onBindError);
        socket.on('error', () => c.count('udp.inbound.error'));
        socket.on('message', (msg, rinfo) => {
          try {
            // Over IPv6 when the peer is an IPv6 address and the guest has one; otherwise over IPv4.
            const guest6 = v6 ? s.guestIpv6() : null;
            const peer = guest6 !== null ? parseInAny(rinfo.address) : null;
            const over6 = guest6 !== null && peer !== null && typeof peer !== 'number';
            const guestSrc = s.nat.inboundSource(rinfo.address, over6 ? 6 : 4);
            const guestDst: InAny = over6 ? guest6 : s.config.guestIp;
            const shownAsGateway = inanyEqual(guestSrc, over6 ? s.config.gateway6 : s.config.gateway);
            const behaviour = shownAsGateway ? 'gateway' : 'client';
            if (!logged.has(behaviour)) {
              logged.add(behaviour);
              s.log(
                shownAsGateway
                  ? `UDP forward ${spec.hostAddress}:${hostPort}: senders such as ${rinfo.address} reach the guest from the gateway ${inanyToString(guestSrc)}`
                  : `UDP forward ${spec.hostAddress}:${hostPort}: senders reach the guest from their own address (${rinfo.address}); the guest replies through its default route`,
              );
            }
            const now = s.clock.now();
            let assoc = s.flows.touch<InboundAssociation>(PROTO_UDP, ANY, guestPort, guestSrc, rinfo.port, now);
            if (!assoc) {
              assoc = new FlowEntry<InboundAssociation>(PROTO_UDP, ANY, guestPort, inanyOwned(guestSrc), rinfo.port, now);
              assoc.value = { socket };
              assoc.hostPort = rinfo.port;
              assoc.localPort = hostPort;
              s.flows.insert(this.inbound, assoc);
              c.count('udp.inbound.active');
              c.count(shownAsGateway ? 'udp.inbound.from_gateway' : 'udp.inbound.from_client');
            } else {
              assoc.value.socket = socket;
            }
            assoc.hostAddr = rinfo.address;
            assoc.countToGuest(msg.length);
            c.count('udp.inbound.rx');
            if (!sendUdpToGuest(s, guestSrc, rinfo.port, guestDst, guestPort, msg)) c.count('udp.drop.to_guest');
            s.out.flush();
          } catch (err) {
            c.count('udp.exception');
            s.logOnce('udp-inbound', `exception on UDP forward: ${String(err)}`);
          }
        });
        resolve(socket);
      });
    });
  }

  tick(now: number): void {
    this.flows.expire(now);
    this.inbound.expire(now);
  }

  close(): void {
    this.flows.clear();
    this.inbound.clear();
    this.forwardsByKey.clear();
    for (const sock of this.forwardSockets.splice(0)) {
      try {
        sock.close();
      } catch {
        /* not running */
      }
    }
  }

  /** Stop forwarding the range that starts at hostAddress:hostPort (see the theory of operation); false when no such forward is bound. */
  removeForward(spec: Pick<ForwardSpec, 'hostAddress' | 'hostPort'>): boolean {
    const key = `${spec.hostAddress}|${spec.hostPort}`;
    const sockets = this.forwardsByKey.get(key);
    if (!sockets) return false;
    this.forwardsByKey.delete(key);
    const closing = new Set(sockets);
    for (const socket of sockets) this.forwardSockets.splice(this.forwardSockets.indexOf(socket), 1);
    for (const entry of [...this.inbound.entries()]) if (closing.has(entry.value.socket)) this.s.flows.remove(entry);
    for (const socket of sockets) {
      try {
        socket.close();
      } catch {
        /* not running */
      }
    }
    return true;
  }

  /** For diagnostics. */
  describeFlows(): string[] {
    return [...this.flows.entries()].map((e) => `${inanyToString(e.guestAddr)}:${e.guestPort} -> host port ${e.localPort}`);
  }
}


/** The socket's bound port, 0 while it is not bound yet. */
function boundPort(socket: UdpFlowSocket): number {
  try {
    return socket.address().port;
  } catch {
    return 0;
  }
}
