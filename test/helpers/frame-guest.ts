/**
 * A guest at the frame level in front of a real backend: our NetDriver plus
 * just enough TCP and UDP to open many flows through the backend's NAT and
 * move data over them, for soak and load tests that need no QEMU.
 *
 * Theory of operation. Every received frame is parsed (packets.ts) and
 * handed to the connection that owns its guest port: TCP by local port
 * (`GuestTcp`), UDP by local port (a callback). ARP requests for the guest's
 * address are answered. What the guest sends in reaction (ACKs, ARP replies)
 * is queued and handed to the driver once per burst of received frames
 * (a microtask after the driver's callback), so an ACK covers every segment
 * of the burst and the ring is kicked once.
 *
 * TCP here is the receiving half a test needs: active open (SYN with MSS and
 * window scaling) or passive open on a port given to `listenTcp` (a SYN
 * answered with SYN-ACK, connections told apart by the peer's port), in-order data accepted and acknowledged (out-of-order
 * segments are dropped, the backend retransmits), data sent in MSS-sized
 * segments with no retransmission of its own (the ring does not lose frames),
 * RST to end a connection. Received bytes are counted and hashed (sha256) as
 * they arrive, so a long transfer keeps no copy.
 */
import { createHash, type Hash } from 'node:crypto';
import type { NetDriver } from '../../src/frontend/net-driver.js';
import {
  BROADCAST_MAC, ETH_ARP, GATEWAY_IP, GUEST_IP, GUEST_MAC, TCP_FLAGS, arpPacket, ethernetFrame, guestTcpFrame, guestUdpFrame, mac, parseFrame,
  type ParsedTcp,
} from './packets.js';

export type TcpState = 'syn-sent' | 'syn-received' | 'established' | 'reset';

export class GuestTcp {
  state: TcpState = 'syn-sent';
  /** Next sequence number we send. */
  private seq: number;
  /** Next sequence number we expect (what we acknowledge). */
  private rcvNxt = 0;
  receivedBytes = 0;
  gotFin = false;
  private readonly hash: Hash = createHash('sha256');
  private ackDue = false;
  private readonly waiters: Array<{ cond: () => boolean; resolve: () => void }> = [];

  constructor(
    private readonly guest: FrameGuest,
    readonly port: number,
    readonly dst: number,
    readonly dstPort: number,
    private readonly windowScale: number,
  ) {
    this.seq = (0x1000_0000 + port * 7919) >>> 0;
  }

  /** Resolves once `cond` holds (checked after every segment for this connection). */
  until(cond: () => boolean): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ cond, resolve }));
  }

  established(): Promise<void> {
    return this.until(() => this.state !== 'syn-sent');
  }

  /** The sha256 of every in-order byte received so far (ends the hash: call once). */
  digest(): string {
    return this.hash.digest('hex');
  }

  /** Send `data` in segments of at most `mss` bytes (no retransmission: the ring is lossless). */
  write(data: Uint8Array, mss = 1460): void {
    for (let off = 0; off < data.length; off += mss) {
      const payload = data.subarray(off, Math.min(data.length, off + mss));
      this.segment(TCP_FLAGS.ACK | TCP_FLAGS.PSH, payload);
      this.seq = (this.seq + payload.length) >>> 0;
    }
  }

  reset(): void {
    this.segment(TCP_FLAGS.RST | TCP_FLAGS.ACK);
    this.state = 'reset';
    this.guest.forget(this);
  }

  /** @internal Passive open: answer the peer's SYN with SYN-ACK. */
  acceptSyn(t: ParsedTcp): void {
    this.state = 'syn-received';
    this.rcvNxt = (t.seq + 1) >>> 0;
    this.guest.queue(guestTcpFrame({
      dst: this.dst, sport: this.port, dport: this.dstPort, seq: this.seq, ack: this.rcvNxt, flags: TCP_FLAGS.SYN | TCP_FLAGS.ACK,
      window: 65535, options: { mss: 1460, wscale: this.windowScale },
    }));
    this.seq = (this.seq + 1) >>> 0;
  }

  /** @internal */
  sendSyn(): void {
    this.guest.queue(guestTcpFrame({
      dst: this.dst, sport: this.port, dport: this.dstPort, seq: this.seq, flags: TCP_FLAGS.SYN,
      window: 65535, options: { mss: 1460, wscale: this.windowScale },
    }));
    this.seq = (this.seq + 1) >>> 0;
  }

  /** @internal A segment from the backend for this connection. */
  input(t: ParsedTcp): void {
    if (t.flags & TCP_FLAGS.RST) {
      this.state = 'reset';
      this.guest.forget(this);
    } else if (this.state === 'syn-received' && !(t.flags & TCP_FLAGS.ACK && t.ack === this.seq)) {
      // Nothing but the ACK of our SYN-ACK moves a passive open on.
    } else if (this.state === 'syn-sent') {
      if ((t.flags & (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) === (TCP_FLAGS.SYN | TCP_FLAGS.ACK) && t.ack === this.seq) {
        this.rcvNxt = (t.seq + 1) >>> 0;
        this.state = 'established';
        this.ackDue = true;
      }
    } else {
      if (this.state === 'syn-received') this.state = 'established';
      if (t.payload.length > 0) {
        if (t.seq === this.rcvNxt) {
          this.hash.update(t.payload);
          this.receivedBytes += t.payload.length;
          this.rcvNxt = (this.rcvNxt + t.payload.length) >>> 0;
        }
        this.ackDue = true; // in order or not: say where we are
      }
      if (t.flags & TCP_FLAGS.FIN && ((t.seq + t.payload.length) >>> 0) === this.rcvNxt) {
        this.rcvNxt = (this.rcvNxt + 1) >>> 0;
        this.gotFin = true;
        this.ackDue = true;
      }
    }
    if (this.ackDue) this.guest.ackLater(this);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.cond() || this.state === 'reset') {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /** @internal */
  flushAck(): void {
    if (!this.ackDue || this.state !== 'established') return;
    this.ackDue = false;
    this.segment(TCP_FLAGS.ACK);
  }

  private segment(flags: number, payload?: Uint8Array): void {
    this.guest.queue(guestTcpFrame({
      dst: this.dst, sport: this.port, dport: this.dstPort, seq: this.seq, ack: this.rcvNxt, flags, window: 65535,
      ...(payload ? { payload } : {}),
    }));
  }
}

export type UdpHandler = (payload: Uint8Array, from: number, fromPort: number) => void;

export class FrameGuest {
  private readonly tcp = new Map<number, GuestTcp>();
  /** Passive opens: the listening ports, and their connections by `port * 65536 + peer port`. */
  private readonly listeners = new Map<number, (c: GuestTcp) => void>();
  private readonly accepted = new Map<number, GuestTcp>();
  private readonly udp = new Map<number, UdpHandler>();
  private readonly outgoing: Uint8Array[] = [];
  private readonly acks = new Set<GuestTcp>();
  private flushScheduled = false;
  /** Frames that reached no connection (late segments of reset flows, unknown ports). */
  unclaimed = 0;

  constructor(private readonly driver: NetDriver) {
    driver.onFrame((frame) => this.dispatch(frame));
  }

  /** Open a TCP connection from guest port `port` (SYN now; await `.established()`). */
  connectTcp(port: number, dstPort: number, dst = GATEWAY_IP, windowScale = 7): GuestTcp {
    const c = new GuestTcp(this, port, dst, dstPort, windowScale);
    this.tcp.set(port, c);
    c.sendSyn();
    return c;
  }

  /** Accept TCP connections to guest port `port`; `onAccept` gets each at its SYN (await `.established()`). */
  listenTcp(port: number, onAccept: (c: GuestTcp) => void): void {
    this.listeners.set(port, onAccept);
  }

  /** Receive UDP datagrams addressed to guest port `port`. */
  bindUdp(port: number, handler: UdpHandler): void {
    this.udp.set(port, handler);
  }

  sendUdp(sport: number, dport: number, payload: Uint8Array, dst = GATEWAY_IP): void {
    this.queue(guestUdpFrame({ dst, sport, dport, payload }));
  }

  /** @internal */
  forget(c: GuestTcp): void {
    if (this.tcp.get(c.port) === c) this.tcp.delete(c.port);
    else this.accepted.delete(c.port * 65536 + c.dstPort);
  }

  /** @internal Hand a frame to the driver with the next flush. */
  queue(frame: Uint8Array): void {
    this.outgoing.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** @internal */
  ackLater(c: GuestTcp): void {
    this.acks.add(c);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    for (const c of this.acks) c.flushAck();
    this.acks.clear();
    if (this.outgoing.length > 0) this.driver.send(this.outgoing.splice(0));
  }

  private dispatch(frame: Uint8Array): void {
    const p = parseFrame(frame);
    if (p.arp) {
      if (p.arp.op === 1 && p.arp.tpa === GUEST_IP) {
        this.queue(ethernetFrame({
          dst: mac(p.arp.sha), src: GUEST_MAC, etherType: ETH_ARP,
          payload: arpPacket({ op: 2, sha: GUEST_MAC, spa: GUEST_IP, tha: mac(p.arp.sha), tpa: p.arp.spa }),
        }));
      }
      return;
    }
    if (p.tcp) {
      const c = this.tcp.get(p.tcp.dport) ?? this.accepted.get(p.tcp.dport * 65536 + p.tcp.sport);
      if (c && p.ipv4!.src === c.dst && p.tcp.sport === c.dstPort) return c.input(p.tcp);
      const onAccept = this.listeners.get(p.tcp.dport);
      if (onAccept && !c && (p.tcp.flags & (TCP_FLAGS.SYN | TCP_FLAGS.ACK | TCP_FLAGS.RST)) === TCP_FLAGS.SYN) {
        const conn = new GuestTcp(this, p.tcp.dport, p.ipv4!.src, p.tcp.sport, 7);
        this.accepted.set(p.tcp.dport * 65536 + p.tcp.sport, conn);
        conn.acceptSyn(p.tcp);
        onAccept(conn);
        return;
      }
    } else if (p.udp) {
      const h = this.udp.get(p.udp.dport);
      if (h) return h(p.udp.payload, p.ipv4!.src, p.udp.sport);
    }
    this.unclaimed++;
  }
}

/** Who has the gateway? from the guest: makes the backend learn the guest's MAC. */
export function gatewayArpRequest(): Uint8Array {
  return ethernetFrame({ dst: BROADCAST_MAC, etherType: ETH_ARP, payload: arpPacket({ tpa: GATEWAY_IP }) });
}
