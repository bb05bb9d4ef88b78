/**
 * UDP: guest datagrams to host sockets and back (NAT with
 * endpoint-independent mapping), plus inbound forwarded ports.
 *
 * Theory of operation.
 *
 * Dispatch of a guest datagram (after the checksum, verified when nonzero):
 * port 67 to a broadcast or the gateway -> DHCP server; the DNS address port
 * 53 -> DNS forwarder; a reply on an inbound-forward association -> back to
 * the host sender through the forward's socket; otherwise the pure NAT
 * decides (src/net/nat.ts) and a flow carries it.
 *
 * Flows: one per guest (source address, source port), in a FlowTable
 * bounded by config.maxUdpFlows (LRU eviction) with idle expiry after
 * config.udpIdleTimeoutMs. A flow owns one host socket bound to an
 * ephemeral port on 0.0.0.0; it sends to any destination the NAT allows
 * and delivers datagrams from ANY remote back to the guest, with the
 * source translated by `Nat.toGuestSource` (127.0.0.1 appears as the
 * gateway). Lifecycle: created on the first datagram -> active while
 * traffic flows either way -> expired/evicted/closed: socket closed.
 *
 * Port unreachable: Linux reports ICMP errors only to connected UDP sockets
 * (without IP_RECVERR, which Node cannot set), and a connected socket
 * would filter replies from other remotes. So a flow's main socket stays
 * unconnected (SO_REUSEADDR on), and for loopback destinations — the
 * common case, the gateway mapped to the host with nothing listening — the
 * flow adds a "companion" socket bound to the same port (SO_REUSEADDR) and
 * connected to that destination. The kernel prefers the connected socket
 * for traffic from its peer (better lookup score), so replies from that
 * peer and its ECONNREFUSED both arrive there; the latter becomes an ICMP
 * port unreachable to the guest quoting the last datagram it sent there.
 * Limits: at most 4 companions per flow; non-loopback destinations get no
 * port unreachable (the host kernel tells an unconnected socket nothing).
 * SO_REUSEADDR means another local process that also sets it could bind
 * the same port; only a local user can do that. It also lets the kernel
 * hand two of our own flows the same ephemeral port, so a flow whose port
 * is already held by another flow re-binds with a fresh socket.
 *
 * Inbound forwards (--forward udp:HOST:PORT:GUESTPORT): a host socket
 * bound to the forward's address; each datagram goes to the guest's
 * GUESTPORT from the sender translated by `Nat.inboundSource`; the
 * association (guest port, guest-side sender) is remembered (bounded, idle
 * expiry) so the guest's replies go back to that sender.
 */
import type * as dgram from 'node:dgram';
import { createSocket } from 'node:dgram';
import type { IPv4Meta } from './context.js';
import type { StackInternals } from './stack.js';
import type { DhcpServer } from './dhcp.js';
import type { DnsForwarder } from './dns.js';
import type { ForwardSpec } from './forward.js';
import { FlowTable, type FlowEntry } from './flow-table.js';
import { parseUdp, writeUdp, UDP_HEADER_LENGTH, type UdpView } from './wire/udp.js';
import { IPV4_HEADER_LENGTH, PROTO_UDP } from './wire/ipv4.js';
import { ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN, ICMP_UNREACH_PORT } from './wire/icmp.js';
import { networkBroadcast } from './config.js';
import { ipv4ToString } from './ip-address.js';

export type UdpSocketFactory = (options: dgram.SocketOptions) => dgram.Socket;

const MAX_COMPANIONS_PER_FLOW = 4;
/** Datagrams queued per socket while it binds/connects. */
const MAX_PENDING = 32;

interface Companion {
  socket: dgram.Socket;
  ready: boolean;
  pending: Buffer[];
  /** Guest-side destination this companion stands for. */
  guestDst: number;
  /** The last guest packet sent here (IP header + 8 bytes), quoted by port unreachable. */
  lastQuote: Uint8Array | null;
}

interface UdpFlow extends FlowEntry {
  guestIp: number;
  guestPort: number;
  socket: dgram.Socket;
  /** Host port once bound (0 before). */
  port: number;
  pending: { data: Buffer; port: number; address: string; companionKey?: string }[];
  companions: Map<string, Companion>;
  closed: boolean;
}

interface InboundAssociation extends FlowEntry {
  socket: dgram.Socket;
  hostAddress: string;
  hostPort: number;
}

/**
 * Send a UDP datagram to the guest: reserve-and-fill when it fits the MTU,
 * otherwise one copy and IPv4 fragmentation. Returns false on back-pressure
 * or when the guest's MAC is unknown.
 */
export function sendUdpToGuest(s: StackInternals, src: number, srcPort: number, dst: number, dstPort: number, data: Uint8Array, dstMac?: Uint8Array): boolean {
  const len = UDP_HEADER_LENGTH + data.length;
  if (IPV4_HEADER_LENGTH + len > 65535) {
    s.counters.count('udp.tx.too_big');
    return false;
  }
  if (!dstMac && IPV4_HEADER_LENGTH + len <= s.mtu) {
    const view = s.out.reserveIPv4(src, dst, PROTO_UDP, len);
    if (!view) return false;
    view.set(data, UDP_HEADER_LENGTH);
    writeUdp(view, src, dst, srcPort, dstPort);
    s.out.commitIPv4();
    return true;
  }
  const datagram = new Uint8Array(len);
  datagram.set(data, UDP_HEADER_LENGTH);
  writeUdp(datagram, src, dst, srcPort, dstPort);
  return dstMac ? s.sendIPv4To(dstMac, src, dst, PROTO_UDP, datagram) : s.out.sendIPv4(src, dst, PROTO_UDP, datagram);
}

export class UdpModule {
  private readonly flows: FlowTable<UdpFlow>;
  private readonly inbound: FlowTable<InboundAssociation>;
  private readonly forwardSockets: dgram.Socket[] = [];
  private readonly makeSocket: UdpSocketFactory;
  private companionCount = 0;
  /** Host ports held by our flows (SO_REUSEADDR would let two share one). */
  private readonly usedPorts = new Set<number>();
  private readonly maxCompanions: number;

  constructor(
    private readonly s: StackInternals,
    private readonly dhcp: DhcpServer,
    private readonly dns: DnsForwarder,
    socketFactory?: UdpSocketFactory,
  ) {
    const cfg = s.config;
    this.makeSocket = socketFactory ?? ((o) => createSocket(o));
    this.maxCompanions = Math.max(16, cfg.maxUdpFlows);
    this.flows = new FlowTable<UdpFlow>(cfg.maxUdpFlows, cfg.udpIdleTimeoutMs, (_key, flow, reason) => {
      s.counters.count('udp.flows.active', -1);
      s.counters.count(`udp.flows.${reason}`);
      this.closeFlow(flow);
    });
    this.inbound = new FlowTable<InboundAssociation>(cfg.maxUdpFlows, cfg.udpIdleTimeoutMs, (_key, _a, reason) => {
      s.counters.count('udp.inbound.active', -1);
      s.counters.count(`udp.inbound.${reason}`);
    });
  }

  get flowCount(): number {
    return this.flows.size;
  }

  /** One UDP datagram (the IPv4 payload) from the guest. `checksumKnownGood` from virtio DATA_VALID. */
  input(meta: IPv4Meta, bytes: Uint8Array, checksumKnownGood = false): void {
    const s = this.s;
    const c = s.counters;
    const cfg = s.config;
    const udp = parseUdp(bytes, meta.src, meta.dst, !checksumKnownGood);
    if (typeof udp === 'string') return c.count(`udp.drop.${udp}`);
    c.count('udp.rx.datagrams');
    if (udp.dstPort === 67 && (meta.dst === 0xffffffff || meta.dst === cfg.gateway || meta.dst === networkBroadcast(cfg))) {
      return this.dhcp.input(meta, udp);
    }
    if (meta.src === 0) return c.count('udp.drop.bad_src');
    if (meta.dst === cfg.dns && udp.dstPort === 53) return this.dns.input(meta, udp);
    if (udp.srcPort === 0 || udp.dstPort === 0) return c.count('udp.drop.port_zero');
    const now = s.clock.now();
    const assoc = this.inbound.touch(inboundKey(udp.srcPort, meta.dst, udp.dstPort), now);
    if (assoc) {
      c.count('udp.inbound.tx');
      assoc.socket.send(Buffer.from(udp.payload), assoc.hostPort, assoc.hostAddress, (err) => {
        if (err) c.count('udp.host.send_error');
      });
      return;
    }
    const decision = s.nat.fromGuest('udp', meta.dst, udp.dstPort);
    if (decision.kind === 'refuse') {
      c.count(`udp.drop.nat_${decision.reason}`);
      if (decision.reason === 'restricted' || decision.reason === 'gateway_unmapped') {
        s.out.sendIcmpError(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN, meta.packet, meta.dst);
      }
      return;
    }
    if (decision.kind === 'local') {
      // Only DHCP and DNS are local for UDP, both handled above (e.g. DNS with a source of port 0).
      return c.count('udp.drop.local_port');
    }
    const key = `${meta.src}:${udp.srcPort}`;
    let flow = this.flows.touch(key, now);
    if (!flow) {
      const created = this.createFlow(meta.src, udp.srcPort, now);
      if (!created) return;
      flow = created;
      this.flows.insert(key, flow);
      c.count('udp.flows.created');
      c.count('udp.flows.active');
    }
    this.sendFromFlow(flow, decision.address, decision.port, meta, udp);
  }

  private createFlow(guestIp: number, guestPort: number, now: number): UdpFlow | null {
    const socket = this.newFlowSocket();
    if (!socket) return null;
    const flow: UdpFlow = { lastUsed: now, guestIp, guestPort, socket, port: 0, pending: [], companions: new Map(), closed: false };
    this.bindFlow(flow, 0);
    return flow;
  }

  private newFlowSocket(): dgram.Socket | null {
    try {
      return this.makeSocket({ type: 'udp4', reuseAddr: true });
    } catch (err) {
      this.s.counters.count('udp.host.socket_error');
      this.s.logOnce('udp-socket', `cannot create UDP socket: ${String(err)}`);
      return null;
    }
  }

  /**
   * Bind the flow's main socket to an ephemeral port. With SO_REUSEADDR the
   * kernel may hand out a port another of our flows already holds (two
   * reuse sockets do not conflict), so such a port is refused and the bind
   * retried with a fresh socket.
   */
  private bindFlow(flow: UdpFlow, attempt: number): void {
    const c = this.s.counters;
    const socket = flow.socket;
    socket.on('message', (msg, rinfo) => this.deliver(flow, msg, rinfo.address, rinfo.port));
    socket.on('error', (err) => {
      c.count('udp.host.error');
      this.s.logOnce(`udp-error-${(err as NodeJS.ErrnoException).code}`, `UDP flow socket error: ${err.message}`);
    });
    socket.bind({ port: 0, address: '0.0.0.0' }, () => {
      if (flow.closed) return;
      const port = socket.address().port;
      if (this.usedPorts.has(port) && attempt < 8) {
        c.count('udp.host.port_collision');
        socket.close();
        const again = this.newFlowSocket();
        if (!again) {
          flow.closed = true;
          return;
        }
        flow.socket = again;
        this.bindFlow(flow, attempt + 1);
        return;
      }
      flow.port = port;
      this.usedPorts.add(port);
      const pending = flow.pending;
      flow.pending = [];
      for (const p of pending) {
        if (p.companionKey) this.openCompanion(flow, p.companionKey);
        else this.hostSend(flow.socket, p.data, p.port, p.address);
      }
    });
  }

  private sendFromFlow(flow: UdpFlow, address: string, port: number, meta: IPv4Meta, udp: UdpView): void {
    const c = this.s.counters;
    const data = Buffer.from(udp.payload);
    c.count('udp.tx.datagrams');
    const loopback = address.startsWith('127.');
    const companionKey = `${address}:${port}`;
    let comp = loopback ? flow.companions.get(companionKey) : undefined;
    if (loopback && !comp && flow.companions.size < MAX_COMPANIONS_PER_FLOW && this.companionCount < this.maxCompanions) {
      comp = {
        socket: null as unknown as dgram.Socket, ready: false, pending: [], guestDst: meta.dst, lastQuote: null,
      };
      flow.companions.set(companionKey, comp);
      this.companionCount++;
      if (flow.port !== 0) this.openCompanion(flow, companionKey);
      else flow.pending.push({ data: Buffer.alloc(0), port, address, companionKey });
    }
    if (comp) {
      const hl = (meta.packet[0]! & 0x0f) * 4;
      comp.lastQuote = meta.packet.slice(0, Math.min(meta.packet.length, hl + 8));
      if (comp.ready) this.companionSend(comp, data);
      else if (comp.pending.length < MAX_PENDING) comp.pending.push(data);
      else c.count('udp.drop.pending_full');
      return;
    }
    if (flow.port === 0) {
      if (flow.pending.length < MAX_PENDING) flow.pending.push({ data, port, address });
      else c.count('udp.drop.pending_full');
      return;
    }
    this.hostSend(flow.socket, data, port, address);
  }

  private openCompanion(flow: UdpFlow, key: string): void {
    const comp = flow.companions.get(key);
    if (!comp || flow.closed) return;
    const c = this.s.counters;
    const sep = key.lastIndexOf(':');
    const address = key.slice(0, sep);
    const port = Number(key.slice(sep + 1));
    let socket: dgram.Socket;
    try {
      socket = this.makeSocket({ type: 'udp4', reuseAddr: true });
    } catch {
      c.count('udp.host.socket_error');
      flow.companions.delete(key);
      this.companionCount--;
      for (const d of comp.pending) this.hostSend(flow.socket, d, port, address);
      return;
    }
    comp.socket = socket;
    socket.on('message', (msg, rinfo) => this.deliver(flow, msg, rinfo.address, rinfo.port));
    socket.on('error', (err) => {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNREFUSED') {
        c.count('udp.port_unreachable');
        if (comp.lastQuote && !flow.closed) {
          this.s.out.sendIcmpError(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PORT, comp.lastQuote, comp.guestDst);
          this.s.out.flush();
        }
        return;
      }
      c.count('udp.host.error');
      if (!comp.ready) {
        // bind/connect failed: fall back to the main socket for this destination.
        flow.companions.delete(key);
        this.companionCount--;
        try {
          socket.close();
        } catch {
          /* already closed */
        }
        for (const d of comp.pending) this.hostSend(flow.socket, d, port, address);
        comp.pending = [];
      }
    });
    socket.bind({ port: flow.port, address: '0.0.0.0' }, () => {
      if (flow.closed) return;
      socket.connect(port, address, () => {
        if (flow.closed) return;
        comp.ready = true;
        const pending = comp.pending;
        comp.pending = [];
        for (const d of pending) this.companionSend(comp, d);
      });
    });
  }

  private companionSend(comp: Companion, data: Buffer): void {
    comp.socket.send(data, (err) => {
      if (err && (err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') this.s.counters.count('udp.host.send_error');
    });
  }

  private hostSend(socket: dgram.Socket, data: Buffer, port: number, address: string): void {
    socket.send(data, port, address, (err) => {
      if (err) this.s.counters.count('udp.host.send_error');
    });
  }

  /** A datagram from the host side of a flow. */
  private deliver(flow: UdpFlow, msg: Buffer, address: string, port: number): void {
    const s = this.s;
    if (flow.closed) return;
    try {
      const src = s.nat.toGuestSource(address);
      if (src === null) return s.counters.count('udp.drop.unrepresentable_source');
      this.flows.touch(`${flow.guestIp}:${flow.guestPort}`, s.clock.now());
      if (sendUdpToGuest(s, src, port, flow.guestIp, flow.guestPort, msg)) s.counters.count('udp.rx.host_datagrams');
      else s.counters.count('udp.drop.to_guest');
      s.out.flush();
    } catch (err) {
      s.counters.count('udp.exception');
      s.logOnce('udp-deliver', `exception delivering UDP: ${String(err)}`);
    }
  }

  private closeFlow(flow: UdpFlow): void {
    flow.closed = true;
    flow.pending = [];
    if (flow.port !== 0) this.usedPorts.delete(flow.port);
    try {
      flow.socket.close();
    } catch {
      /* not running */
    }
    for (const comp of flow.companions.values()) {
      this.companionCount--;
      try {
        comp.socket?.close();
      } catch {
        /* not running */
      }
    }
    flow.companions.clear();
  }

  /** Bind a forwarded host port; datagrams go to the guest's `guestPort`. */
  addForward(spec: ForwardSpec): Promise<void> {
    const s = this.s;
    const c = s.counters;
    const v6 = spec.hostAddress.includes(':');
    const socket = s.host.createUdpSocket(v6 ? 'udp6' : 'udp4');
    return new Promise((resolve, reject) => {
      const onBindError = (err: Error) => reject(new Error(`forward udp:${spec.hostAddress}:${spec.hostPort}: ${err.message}`));
      socket.once('error', onBindError);
      socket.bind({ port: spec.hostPort, address: spec.hostAddress }, () => {
        socket.off('error', onBindError);
        socket.on('error', () => c.count('udp.inbound.error'));
        this.forwardSockets.push(socket);
        socket.on('message', (msg, rinfo) => {
          try {
            const guestSrc = s.nat.inboundSource(rinfo.address);
            const key = inboundKey(spec.guestPort, guestSrc, rinfo.port);
            const now = s.clock.now();
            const assoc = this.inbound.touch(key, now);
            if (!assoc) {
              this.inbound.insert(key, { lastUsed: now, socket, hostAddress: rinfo.address, hostPort: rinfo.port });
              c.count('udp.inbound.active');
            } else {
              assoc.socket = socket;
              assoc.hostAddress = rinfo.address;
            }
            c.count('udp.inbound.rx');
            if (!sendUdpToGuest(s, guestSrc, rinfo.port, s.config.guestIp, spec.guestPort, msg)) c.count('udp.drop.to_guest');
            s.out.flush();
          } catch (err) {
            c.count('udp.exception');
            s.logOnce('udp-inbound', `exception on UDP forward: ${String(err)}`);
          }
        });
        resolve();
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
    for (const sock of this.forwardSockets.splice(0)) {
      try {
        sock.close();
      } catch {
        /* not running */
      }
    }
  }

  /** For diagnostics. */
  describeFlows(): string[] {
    return [...this.flows.values()].map((f) => `${ipv4ToString(f.guestIp)}:${f.guestPort} -> host port ${f.port}`);
  }
}

function inboundKey(guestPort: number, remote: number, remotePort: number): string {
  return `${guestPort}|${remote}|${remotePort}`;
}
