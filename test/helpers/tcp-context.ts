/**
 * A small StackContext for driving the TCP translator frame by frame: an
 * IpOutput (IPv4 only) over FakeLink that writes Ethernet + IPv4 headers, an injected
 * clock (`ctx.time`), real host sockets, plain counters. Plus a guest-side
 * view: build segments with packets.ts's `tcpSegment` and feed them to
 * `input`, take what the translator sent as parsed TCP.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import type { Counters, GuestOffloads, IpMeta, IpOutput, NatDecision, OutputReservation, StackConfig, StackContext } from '../../src/net/context.js';
import { OUT_DONT_FRAGMENT, OUT_LARGE } from '../../src/net/context.js';
import type { InAny } from '../../src/net/inany.js';
import { FlowTable } from '../../src/net/flows.js';
import { defaultStackConfig } from '../../src/net/config.js';
import { checksum } from '../../src/net/wire/checksum.js';
import { writeIPv4 } from '../../src/net/ip-address.js';
import { TcpTranslator } from '../../src/net/tcp/index.js';
import { FakeLink } from './fake-link.js';
import { settle, waitFor } from './wait.js';
import { GATEWAY_IP, GATEWAY_MAC, GUEST_IP, GUEST_MAC, ipv4Packet, parseFrame, tcpSegment, type ParsedTcp, type TcpSegmentOptions } from './packets.js';

export { settle, waitFor };

export class TestCounters implements Counters {
  readonly values = new Map<string, number>();
  count(name: string, n = 1): void {
    this.values.set(name, (this.values.get(name) ?? 0) + n);
  }
  get(name: string): number {
    return this.values.get(name) ?? 0;
  }
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.values);
  }
}

class TestOutput implements IpOutput {
  private open = false;
  private openLength = 0;
  private waiters: (() => void)[] = [];
  reserved = 0;

  constructor(private readonly ctx: TcpTestContext) {}

  /**
   * As the Stack's IPv4 layer: Ethernet + IPv4 header written, a handle over
   * the L4 bytes. OUT_LARGE is bounded by 65535 with TSO4 and by the MTU
   * otherwise; a request beyond it is a translator bug here (throws).
   */
  reserve(src: InAny, dst: InAny, protocol: number, payloadLength: number, flags = 0): OutputReservation | null {
    if (flags & OUT_LARGE) {
      const max = this.ctx.link.rxOffloads.tso4 ? 65535 : this.ctx.config.mtu;
      if (20 + payloadLength > max) throw new Error(`reserve(OUT_LARGE): ${payloadLength} bytes beyond ${max}`);
    }
    const frame = this.ctx.link.reserve(14 + 20 + payloadLength);
    if (!frame) return null;
    this.open = true;
    this.openLength = frame.length;
    frame.set(GUEST_MAC, 0);
    frame.set(GATEWAY_MAC, 6);
    frame[12] = 0x08;
    frame[13] = 0x00;
    const ip = frame.subarray(14, 34);
    const dv = new DataView(ip.buffer, ip.byteOffset, 20);
    dv.setUint8(0, 0x45);
    dv.setUint8(1, 0);
    dv.setUint16(2, 20 + payloadLength, false);
    dv.setUint16(4, ++this.reserved & 0xffff, false);
    dv.setUint16(6, flags & OUT_DONT_FRAGMENT ? 0x4000 : 0, false);
    dv.setUint8(8, 64);
    dv.setUint8(9, protocol);
    dv.setUint16(10, 0, false);
    writeIPv4(ip, 12, src as number);
    writeIPv4(ip, 16, dst as number);
    dv.setUint16(10, checksum(ip), false);
    return {
      payload: frame.subarray(34),
      commit: (payloadLength?: number) => this.commit(payloadLength),
      commitOffload: (checksumOffset: number, l4HeaderLength: number, gsoSize: number) => this.commitOffload(checksumOffset, l4HeaderLength, gsoSize),
      abort: () => this.abort(),
    };
  }

  private commit(payloadLength?: number): void {
    if (!this.open) throw new Error('commit without reserve');
    this.open = false;
    if (payloadLength !== undefined) throw new Error('shortened commit not used by TCP');
    this.ctx.link.commit(this.openLength);
  }

  /** The offloaded commit, as the Stack implements it, minus the software fallback (tests set rxOffloads themselves). */
  private commitOffload(checksumOffset: number, l4HeaderLength: number, gsoSize: number): void {
    if (!this.open) throw new Error('commit without reserve');
    if (!this.ctx.link.rxOffloads.csum) throw new Error('partial checksum without GUEST_CSUM');
    this.open = false;
    const gso = gsoSize > 0 && this.openLength - 34 - l4HeaderLength > gsoSize;
    this.ctx.link.commit(this.openLength, {
      needsCsum: true, dataValid: false, csumStart: 34, csumOffset: checksumOffset, hdrLen: 34 + l4HeaderLength,
      gsoType: gso ? 1 : 0, gsoSize: gso ? gsoSize : 0,
    });
  }

  private abort(): void {
    this.open = false;
    this.ctx.link.abort();
  }

  send(src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    const out = this.reserve(src, dst, protocol, payload.length);
    if (!out) return false;
    out.payload.set(payload);
    out.commit();
    return true;
  }

  sendIcmpError(): void {
    /* not used by TCP */
  }

  whenWritable(callback: () => void): void {
    this.waiters.push(callback);
    this.ctx.link.onWritable(() => {
      const w = this.waiters.splice(0);
      for (const cb of w) cb();
    });
  }

  flush(): void {
    this.ctx.link.flush();
  }
}

export function testConfig(over: Partial<StackConfig> = {}): StackConfig {
  return {
    ...defaultStackConfig(),
    network: 0x0a000200,
    prefixLength: 24,
    gateway: GATEWAY_IP,
    dns: 0x0a000203,
    guestIp: GUEST_IP,
    mtu: 1500,
    gatewayMac: GATEWAY_MAC,
    mapGatewayToLoopback: true,
    restrict: false,
    dnsUpstreams: [],
    domainSearch: [],
    leaseSeconds: 86400,
    maxUdpFlows: 64,
    maxTcpFlows: 64,
    maxDnsQueries: 64,
    maxPingFlows: 64,
    tcpInboundShare: 0.25,
    udpIdleTimeoutMs: 180_000,
    ...over,
  };
}

export class TcpTestContext implements StackContext {
  readonly link = new FakeLink();
  readonly counters = new TestCounters();
  readonly flows = new FlowTable();
  readonly out: TestOutput;
  readonly config: StackConfig;
  time = 1_000_000;
  readonly clock = { now: (): number => this.time };
  readonly logs: string[] = [];
  /** What `guestIpv6()` answers (forwards reach the guest over IPv6 when set). */
  guestAddress6: Uint8Array | null = null;
  guestIpv6(): Uint8Array | null {
    return this.guestAddress6;
  }
  /** Every connect the translator started (options as given). */
  readonly connects: net.TcpNetConnectOpts[] = [];
  readonly host = {
    createUdpSocket: (type: 'udp4' | 'udp6'): dgram.Socket => dgram.createSocket(type),
    connectTcp: (options: net.TcpNetConnectOpts): net.Socket => {
      this.connects.push(options);
      return net.connect(options);
    },
  };

  constructor(over: Partial<StackConfig> = {}) {
    this.config = testConfig(over);
    this.out = new TestOutput(this);
  }

  get mtu(): number {
    return Math.min(this.config.mtu, this.link.mtu);
  }

  get guestOffloads(): GuestOffloads {
    return this.link.rxOffloads;
  }

  logOnce(key: string, message: string): void {
    this.logs.push(`${key}: ${message}`);
  }
}

/** The test NAT: the gateway maps to 127.0.0.1 (same port); 10.9.9.9 maps to 127.0.0.1 port+1; everything else refused. */
export const testNat = {
  outbound(_protocol: 'tcp' | 'udp', dst: number, dstPort: number): NatDecision {
    if (dst === GATEWAY_IP) return { kind: 'host', address: '127.0.0.1', port: dstPort };
    return { kind: 'refuse', reason: 'test' };
  },
  /** Forwarded connections appear from the gateway (tests of the client's own address use the real Nat). */
  inboundSource(_hostAddress: string, family: 4 | 6): InAny {
    return family === 6 ? defaultStackConfig().gateway6 : GATEWAY_IP;
  },
};

export function makeTcp(over: Partial<StackConfig> = {}): { ctx: TcpTestContext; tcp: TcpTranslator } {
  const ctx = new TcpTestContext(over);
  const tcp = new TcpTranslator(ctx, testNat);
  return { ctx, tcp };
}

/** A TCP segment from the guest (src defaults to the guest IP, dst to the gateway). */
export function guestInput(tcp: TcpTranslator, o: Omit<TcpSegmentOptions, 'dst'> & { dst?: number }): void {
  const src = o.src ?? GUEST_IP;
  const dst = o.dst ?? GATEWAY_IP;
  const seg = tcpSegment({ ...o, src, dst });
  const meta: IpMeta = { src, dst, protocol: 6, ttl: 64, tos: 0, packet: ipv4Packet({ src, dst, protocol: 6, payload: seg }) };
  tcp.input(meta, seg);
}

export interface SentTcp extends ParsedTcp {
  src: number;
  dst: number;
}

/**
 * Take every frame the translator sent, parsed; throws on a bad IPv4 or TCP
 * checksum. A frame committed with NEEDS_CSUM has its checksum completed
 * first, as the guest would (so a wrong pseudo-header sum still fails).
 */
export function takeTcp(ctx: TcpTestContext): SentTcp[] {
  const offloads = ctx.link.offloads.slice();
  return ctx.link.take().map((frame, i) => {
    const o = offloads[i];
    if (o?.needsCsum) {
      frame = frame.slice();
      const sum = checksum(frame.subarray(o.csumStart));
      frame[o.csumStart + o.csumOffset] = sum >>> 8;
      frame[o.csumStart + o.csumOffset + 1] = sum & 0xff;
    }
    const p = parseFrame(frame);
    if (!p.ipv4 || !p.tcp) throw new Error('not a TCP frame');
    if (!p.ipv4.checksumOk) throw new Error('bad IPv4 header checksum');
    if (!p.tcp.checksumOk) throw new Error('bad TCP checksum');
    return { ...p.tcp, payload: p.tcp.payload.slice(), src: p.ipv4.src, dst: p.ipv4.dst };
  });
}

/** A listening loopback server; returns it with its port. */
export async function listen(handler: (socket: net.Socket) => void, options: net.ServerOpts = {}, host = '127.0.0.1'): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer(options, handler);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

/**
 * A host peer: a loopback listener (127.0.0.1, or `host`, e.g. ::1) keeping the sockets it accepts and the
 * bytes they receive; sockets and server closed by a clean-up pushed on
 * `cleanups`.
 */
export async function hostPeer(cleanups: (() => void)[], host = '127.0.0.1'): Promise<{ port: number; accepted: net.Socket[]; got: Buffer[]; received: () => Buffer }> {
  const got: Buffer[] = [];
  const accepted: net.Socket[] = [];
  const { server, port } = await listen((s) => {
    accepted.push(s);
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
  }, {}, host);
  cleanups.push(() => {
    accepted.forEach((s) => s.destroy());
    server.close();
  });
  return { port, accepted, got, received: () => Buffer.concat(got) };
}

/** A loopback port with nothing listening (bound then closed). */
export async function closedPort(): Promise<number> {
  const { server, port } = await listen(() => {});
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

export const FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

/**
 * The guest's side of one connection, as a test-driven TCP: sends segments
 * through the translator's input, takes the frames addressed to its port,
 * keeps the byte stream it received in order.
 */
export class GuestConn {
  readonly port: number;
  readonly dst: number;
  readonly dstPort: number;
  /** Next sequence number the guest sends. */
  seq: number;
  /** Next sequence number expected from the translator (the guest's ACK). */
  rcvNxt = 0;
  peerIsn = 0;
  /** Window field the guest puts in its segments. */
  window: number;
  wscale: number | undefined;
  mss: number | undefined;
  readonly received: Uint8Array[] = [];
  receivedBytes = 0;
  gotFin = false;
  /** Frames for other ports taken while looking for ours. */
  static stash = new Map<TcpTestContext, SentTcp[]>();

  constructor(
    readonly tcp: TcpTranslator,
    readonly ctx: TcpTestContext,
    o: { port: number; dstPort: number; dst?: number; isn?: number; window?: number; wscale?: number; mss?: number },
  ) {
    this.port = o.port;
    this.dstPort = o.dstPort;
    this.dst = o.dst ?? GATEWAY_IP;
    this.seq = o.isn ?? 0x10000000;
    this.window = o.window ?? 65535;
    this.wscale = o.wscale;
    this.mss = o.mss ?? 1460;
  }

  /** Send a segment (defaults: our seq, ACK of rcvNxt when flags has ACK, our window). */
  send(flags: number, payload?: Uint8Array, over: { seq?: number; ack?: number; window?: number; options?: TcpSegmentOptions['options'] } = {}): void {
    const o: Omit<TcpSegmentOptions, 'dst'> & { dst: number } = {
      dst: this.dst,
      sport: this.port,
      dport: this.dstPort,
      seq: over.seq ?? this.seq,
      ack: over.ack ?? (flags & FLAG.ACK ? this.rcvNxt : 0),
      flags,
      window: over.window ?? this.window,
    };
    if (payload) o.payload = payload;
    if (over.options) o.options = over.options;
    guestInput(this.tcp, o);
  }

  syn(): void {
    const options: { mss?: number; wscale?: number } = {};
    if (this.mss !== undefined) options.mss = this.mss;
    if (this.wscale !== undefined) options.wscale = this.wscale;
    this.send(FLAG.SYN, undefined, { options, ack: 0 });
  }

  /** Every frame sent and not yet taken by a connection (the stash, with new frames moved in). Mutable. */
  static pending(ctx: TcpTestContext): SentTcp[] {
    const stash = GuestConn.stash.get(ctx) ?? [];
    stash.push(...takeTcp(ctx));
    GuestConn.stash.set(ctx, stash);
    return stash;
  }

  /** Frames the translator sent to this connection (others are stashed for their owners). */
  take(): SentTcp[] {
    const all = [...(GuestConn.stash.get(this.ctx) ?? []), ...takeTcp(this.ctx)];
    const mine = all.filter((f) => f.dport === this.port && f.sport === this.dstPort);
    GuestConn.stash.set(this.ctx, all.filter((f) => !(f.dport === this.port && f.sport === this.dstPort)));
    return mine;
  }

  /** SYN, wait for SYN-ACK, ACK it. Returns the SYN-ACK. */
  async connect(): Promise<SentTcp> {
    this.syn();
    this.seq = (this.seq + 1) >>> 0;
    let synAck: SentTcp | undefined;
    await waitFor(() => {
      synAck = this.take().find((f) => (f.flags & (FLAG.SYN | FLAG.ACK)) === (FLAG.SYN | FLAG.ACK));
      return synAck !== undefined;
    }, 3000, 'SYN-ACK');
    this.peerIsn = synAck!.seq;
    this.rcvNxt = (synAck!.seq + 1) >>> 0;
    this.send(FLAG.ACK);
    return synAck!;
  }

  /** Send data and advance our sequence number. */
  write(data: Uint8Array, flags = FLAG.ACK | FLAG.PSH): void {
    this.send(flags, data);
    this.seq = (this.seq + data.length) >>> 0;
  }

  fin(): void {
    this.send(FLAG.FIN | FLAG.ACK);
    this.seq = (this.seq + 1) >>> 0;
  }

  /** Accept in-order data/FIN from `frames`; returns true if anything new arrived. */
  absorb(frames: SentTcp[]): boolean {
    let progress = false;
    for (const f of frames) {
      if (f.flags & FLAG.RST) continue;
      if (f.payload.length > 0 && f.seq === this.rcvNxt) {
        this.received.push(f.payload);
        this.receivedBytes += f.payload.length;
        this.rcvNxt = (this.rcvNxt + f.payload.length) >>> 0;
        progress = true;
      }
      if (f.flags & FLAG.FIN && ((f.seq + f.payload.length) >>> 0) === this.rcvNxt) {
        this.rcvNxt = (this.rcvNxt + 1) >>> 0;
        this.gotFin = true;
        progress = true;
      }
    }
    return progress;
  }

  /** Everything received so far as one buffer. */
  data(): Buffer {
    return Buffer.concat(this.received);
  }
}
