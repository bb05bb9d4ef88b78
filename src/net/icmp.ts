/**
 * ICMP and ICMPv6 (other than NDP, which the IPv6 layer answers): echo for
 * the stack's own addresses, echo to the world through host ping sockets,
 * and ICMP errors from the guest.
 *
 * Theory of operation. Both families follow the same rules; an IPv6
 * packet's message is ICMPv6 (checksum over the pseudo-header, types 128
 * and 129 for echo, errors below 128), its flows are ICMPv6 ping sockets
 * (flow-table protocol 58) and its counters are 'icmpv6.*' where the
 * IPv4 ones are 'icmp.*' (the ping flow counters 'icmp.ping.*' are shared).
 *  - Echo request to the gateway or DNS address (checksum verified by the
 *    parser): answered here, same id, sequence and data.
 *  - Echo request to an address the NAT sends to the host: one ICMP "ping"
 *    socket (SOCK_DGRAM/IPPROTO_ICMP, from the native addon) per guest flow
 *    (guest source address, echo identifier). The kernel replaces the
 *    identifier with the socket's own and only delivers replies that carry
 *    it, so a reply on a flow's socket belongs to that flow: its
 *    identifier is set back to the guest's, its source translated
 *    (Nat.toGuestSource, falling back to the destination the guest pinged),
 *    and it is sent to the guest. Flows are entries of the stack's flow
 *    table (src/net/flows.ts, class 'ping': guest address, echo id as the
 *    guest port), bounded (config.maxPingFlows, LRU) and closed after
 *    PING_IDLE_MS without traffic.
 *  - Where ping sockets are not allowed (net.ipv4.ping_group_range
 *    excludes us: EACCES/EPERM), the refusal is logged once, counted
 *    ('icmp.ping.not_permitted') and every later echo to the host is
 *    dropped with the same count, without retrying the socket.
 *  - Error messages from the guest (destination unreachable, time exceeded,
 *    ...) are accepted and counted ('icmp.rx.error'); other types dropped.
 */
import type { IpMeta, StackInternals } from './context.js';
import { type InAny, inanyOwned, inanyToString } from './inany.js';
import { FlowEntry, type FlowClass } from './flows.js';
import { ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, isIcmpError, parseIcmp, writeEcho } from './wire/icmp.js';
import { PROTO_ICMP } from './wire/ipv4.js';
import { ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, buildEchoReply, finishIcmpv6Checksum, isIcmpv6Error, parseIcmpv6 } from './wire/icmpv6.js';
import { NEXT_HEADER_ICMPV6 } from './wire/ipv6.js';

/** One host ping socket. */
export interface PingSocket {
  /** Send an echo message (the kernel rewrites id and checksum). False if it would block or failed. */
  send(message: Uint8Array, address: string): boolean;
  close(): void;
}

/** Opens ping sockets (ICMP, or ICMPv6 for family 6); `open` throws an Error with `code` (e.g. EACCES) when not permitted. */
export interface PingIO {
  open(onMessage: (message: Uint8Array, address: string) => void, family?: 4 | 6): PingSocket;
}

export const PING_IDLE_MS = 60_000;
/** The "any" remote of an endpoint-independent flow key. */
const ANY = 0;
const RECV_BURST = 64;

/** The addon-backed PingIO, or null (logged) when the addon cannot be loaded. */
export async function loadNativePingIO(log: (message: string) => void): Promise<PingIO | null> {
  let mod: typeof import('../native/index.js');
  try {
    mod = await import('../native/index.js');
  } catch (err) {
    log(`ICMP: native addon not available, echo to the host network disabled (${(err as Error).message})`);
    return null;
  }
  const native = mod.native;
  return {
    open(onMessage, family = 4) {
      const fd = native.pingSocket(family);
      const buf = new Uint8Array(65536);
      let closed = false;
      const watcher = native.watch(fd, 'r', () => {
        for (let i = 0; i < RECV_BURST && !closed; i++) {
          let r: { bytes: number; address: string } | null;
          try {
            r = native.pingRecv(fd, buf);
          } catch {
            return;
          }
          if (!r) return;
          onMessage(buf.subarray(0, r.bytes), r.address);
        }
      });
      return {
        send(message, address) {
          try {
            return native.pingSend(fd, message, address) !== null;
          } catch {
            return false;
          }
        },
        close() {
          if (closed) return;
          closed = true;
          watcher.close();
          native.close(fd);
        },
      };
    },
  };
}

interface PingFlow {
  /** The flow's entry in the flow table: guest address, echo id as the guest port, counters. */
  entry: FlowEntry<PingFlow>;
  socket: PingSocket;
  /** Host address string -> guest-side destination the guest pinged. */
  destinations: Map<string, InAny>;
}

export class IcmpModule {
  private pingIO: PingIO | null;
  private denied = false;
  private readonly flows: FlowClass<PingFlow>;

  constructor(private readonly s: StackInternals, pingIO: PingIO | null) {
    this.pingIO = pingIO;
    this.flows = s.flows.addClass<PingFlow>({
      name: 'ping', capacity: s.config.maxPingFlows, lru: true, idleTimeoutMs: PING_IDLE_MS,
      onRemove: (entry, reason) => {
        s.counters.count('icmp.ping.flows.active', -1);
        s.counters.count(`icmp.ping.flows.${reason}`);
        try {
          entry.value.socket.close();
        } catch {
          /* already closed */
        }
      },
    });
  }

  setPingIO(io: PingIO): void {
    this.pingIO = io;
    this.denied = false;
  }

  get flowCount(): number {
    return this.flows.size;
  }

  input(meta: IpMeta, bytes: Uint8Array): void {
    if (typeof meta.src !== 'number') return this.input6(meta, meta.src, meta.dst as Uint8Array, bytes);
    const s = this.s;
    const c = s.counters;
    const icmp = parseIcmp(bytes);
    if (typeof icmp === 'string') return c.count(`icmp.drop.${icmp}`);
    if (isIcmpError(icmp.type)) {
      c.count('icmp.rx.error');
      return c.count(`icmp.rx.error.type_${icmp.type}`);
    }
    if (icmp.type !== ICMP_ECHO_REQUEST) return c.count('icmp.drop.type');
    if (icmp.code !== 0) return c.count('icmp.drop.code');
    c.count('icmp.rx.echo');
    const decision = s.nat.fromGuest('icmp', meta.dst, icmp.id);
    if (decision.kind === 'refuse') return c.count(`icmp.drop.nat_${decision.reason}`);
    if (decision.kind === 'local') {
      const reply = bytes.slice();
      writeEcho(reply, ICMP_ECHO_REPLY, icmp.id, icmp.seq);
      if (s.out.send(meta.dst, meta.src, PROTO_ICMP, reply)) c.count('icmp.echo.local');
      return;
    }
    this.hostEcho(meta, bytes, icmp.id, decision.address);
  }

  /** ICMPv6 from the guest (NDP excluded: the IPv6 layer answers it). */
  private input6(meta: IpMeta, src: Uint8Array, dst: Uint8Array, bytes: Uint8Array): void {
    const s = this.s;
    const c = s.counters;
    const icmp = parseIcmpv6(bytes, src, dst);
    if (typeof icmp === 'string') return c.count(`icmpv6.drop.${icmp}`);
    if (isIcmpv6Error(icmp.type)) {
      c.count('icmpv6.rx.error');
      return c.count(`icmpv6.rx.error.type_${icmp.type}`);
    }
    if (icmp.type !== ICMPV6_ECHO_REQUEST) return c.count('icmpv6.drop.type');
    if (icmp.code !== 0) return c.count('icmpv6.drop.code');
    c.count('icmpv6.rx.echo');
    const decision = s.nat.fromGuest('icmp', dst, icmp.id);
    if (decision.kind === 'refuse') return c.count(`icmpv6.drop.nat_${decision.reason}`);
    if (decision.kind === 'local') {
      if (s.out.send(dst, src, NEXT_HEADER_ICMPV6, buildEchoReply(icmp, dst, src))) c.count('icmpv6.echo.local');
      return;
    }
    this.hostEcho(meta, bytes, icmp.id, decision.address);
  }

  private hostEcho(meta: IpMeta, bytes: Uint8Array, guestId: number, address: string): void {
    const s = this.s;
    const c = s.counters;
    if (!this.pingIO) {
      s.logOnce('ping-unavailable', 'ICMP: ping sockets unavailable, echo requests to the host network are dropped');
      return c.count('icmp.ping.unavailable');
    }
    if (this.denied) return c.count('icmp.ping.not_permitted');
    const now = s.clock.now();
    const v6 = typeof meta.src !== 'number';
    const protocol = v6 ? NEXT_HEADER_ICMPV6 : PROTO_ICMP;
    let flow = s.flows.touch<PingFlow>(protocol, meta.src, guestId, ANY, 0, now)?.value;
    if (!flow) {
      const entry = new FlowEntry<PingFlow>(protocol, inanyOwned(meta.src), guestId, ANY, 0, now);
      const created: PingFlow = { entry, socket: null as unknown as PingSocket, destinations: new Map() };
      entry.value = created;
      try {
        created.socket = this.pingIO.open((msg, from) => this.reply(created, msg, from), v6 ? 6 : 4);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException)?.code;
        if (code === 'EACCES' || code === 'EPERM') {
          this.denied = true;
          s.logOnce('ping-denied',
            'ICMP: ping sockets not permitted (net.ipv4.ping_group_range excludes this process group); echo requests to the host network are dropped');
          return c.count('icmp.ping.not_permitted');
        }
        s.logOnce(`ping-open-${code}`, `ICMP: cannot open ping socket: ${String(err)}`);
        return c.count('icmp.ping.socket_error');
      }
      flow = created;
      s.flows.insert(this.flows, entry);
      c.count('icmp.ping.flows.active');
    }
    flow.entry.countFromGuest(bytes.length);
    if (flow.destinations.size < 64 || flow.destinations.has(address)) flow.destinations.set(address, inanyOwned(meta.dst));
    if (flow.socket.send(bytes.slice(), address)) c.count('icmp.ping.tx');
    else c.count('icmp.ping.send_error');
  }

  private reply(flow: PingFlow, msg: Uint8Array, from: string): void {
    const s = this.s;
    const c = s.counters;
    try {
      const entry = flow.entry;
      const guest = entry.guestAddr;
      const v6 = typeof guest !== 'number';
      if (msg.length < 8 || msg[0] !== (v6 ? ICMPV6_ECHO_REPLY : ICMP_ECHO_REPLY)) return c.count('icmp.ping.drop.not_echo_reply');
      if (!entry.live) return;
      const src = flow.destinations.get(from) ?? s.nat.toGuestSource(from);
      if (src === null || src === undefined || (typeof src === 'number') === v6) return c.count('icmp.ping.drop.unrepresentable_source');
      s.flows.used(entry, s.clock.now());
      entry.countToGuest(msg.length);
      const out = msg.slice();
      const seq = (out[6]! << 8) | out[7]!;
      if (v6) {
        out[4] = entry.guestPort >>> 8;
        out[5] = entry.guestPort & 0xff;
        finishIcmpv6Checksum(out, src as Uint8Array, guest);
      } else {
        writeEcho(out, ICMP_ECHO_REPLY, entry.guestPort, seq);
      }
      if (s.out.send(src, guest, v6 ? NEXT_HEADER_ICMPV6 : PROTO_ICMP, out)) c.count('icmp.ping.rx');
      else c.count('icmp.ping.drop.to_guest');
      s.out.flush();
    } catch (err) {
      c.count('icmp.exception');
      s.logOnce('icmp-reply', `exception relaying an echo reply from ${from}: ${String(err)}`);
    }
  }

  tick(now: number): void {
    this.flows.expire(now);
  }

  close(): void {
    this.flows.clear();
  }

  describeFlows(): string[] {
    return [...this.flows.entries()].map((e) => `${inanyToString(e.guestAddr)} id ${e.guestPort} -> ${[...e.value.destinations.keys()].join(',')}`);
  }
}
