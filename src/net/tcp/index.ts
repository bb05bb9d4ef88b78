/**
 * TCP translation between the guest and host sockets (passt-style L2<->L4
 * translation; no TCP stack of our own on the host side).
 *
 * Theory of operation. `TcpTranslator` is the dispatcher's handler for TCP
 * over either family (IPv4 protocol 6, IPv6 next header 6; host sockets of
 * the destination's family). Every guest segment is parsed once through `parseTcp` (length,
 * data offset, options, checksum with the pseudo-header) and looked up in
 * one flow table; the per-connection work is in `flow.ts`, whose header
 * comment holds the whole lifecycle.
 *
 *  - Guest SYN for an unknown 4-tuple: the NAT (`nat.outbound`) says where it
 *    goes; a 'host' decision opens `ctx.host.connectTcp` and the guest hears
 *    nothing until the connect succeeds (SYN-ACK) or fails (RST+ACK). Any
 *    other decision, and a full outbound share, answer RST+ACK at once. A
 *    decision with `dnsQueries` (TCP to the DNS address) gives the flow a
 *    DnsQueryStream: the guest's bytes reach the host only as checked DNS
 *    queries.
 *  - Non-SYN segments for unknown flows are answered with RST as a real TCP
 *    would (RFC 9293 §3.10.7.1), RSTs for unknown flows are dropped; both
 *    are counted as `tcp.drop.no_flow`.
 *  - `addForward` listens on a host address and a port or a range of them
 *    (one listener per port, one flow share per forward); each accepted
 *    connection becomes a flow that sends SYN to config.guestIp:guestPort —
 *    over IPv6 (the guest's IPv6 address) when the peer is an IPv6 address
 *    and the guest has one (StackContext.guestIpv6) — or is reset at once
 *    when its forward's share is full. The SYN comes from the client's own
 *    address and port when the NAT can show it to the guest
 *    (`nat.inboundSource`: a routable address outside the guest's network,
 *    as passt does; the guest answers through its default route, us, and
 *    the flow's key is exactly what it answers to), otherwise — loopback
 *    clients, unrepresentable addresses — from the gateway (gateway6) and
 *    a port we pick; we pick one too when the client's port would collide
 *    with a live flow. Which of the two applies is logged once per forward. `removeForward` (at
 *    run time) closes the listener: its established flows go on unless
 *    asked to end them too (RST both ways); its share is dropped and the
 *    others' derived again (flow-shares.ts).
 *  - ACKs for data are coalesced per batch: a flow marks its ACK pending and
 *    one microtask after the dispatcher's synchronous batch sends them all
 *    (control ACKs for FIN, out-of-order and window updates go at once).
 *  - Link back-pressure parks flows in one set, with a single whenWritable
 *    registration for all of them.
 *  - `tick(now)` drives every timer (RTO, persist, handshake/connect,
 *    idle, FIN and linger timeouts) from the injected clock.
 *
 * Timeouts (see TCP_TIMING in flow.ts): host connect 75 s (BSD/libslirp
 * TCPTV_KEEP_INIT); handshake with the guest 10 s (passt SYN_TIMEOUT); an
 * established flow with no traffic either way for 2 h is reset (passt
 * ACT_TIMEOUT); once our FIN is out, 60 s of guest silence resets it (passt
 * FIN_TIMEOUT); both directions closed -> 2 s linger, then gone.
 *
 * The flow table. Flows are entries of the stack's one flow table
 * (src/net/flows.ts, class 'tcp'), keyed by the guest's view of the
 * 4-tuple (inbound flows use the source the guest was shown — the client
 * or the gateway — as the remote side, so both kinds share one lookup); the entry's host side
 * is the host peer, and it counts bytes and frames each way. `maxTcpFlows` is shared out (flow-shares.ts): with
 * forwards, forwarded connections hold at most `tcpInboundShare` of it
 * (split between the forwards) and the guest's own the rest, so neither
 * side can take the other's slots. A guest cannot attack the table: entries
 * are created only by SYNs that pass the NAT and its share (connect
 * attempts in flight are flows and count), every entry is reclaimed by a
 * timeout, and the table hashes keys with a random secret per stack, so
 * the guest cannot choose 4-tuples that collide. A full share costs no scan per SYN: the TIME_WAIT flows that
 * may be reclaimed are kept in a set per share. Memory per flow is bounded:
 * the host->guest ring holds at most the guest's window, capped at 4 MiB
 * (flow.ts: every host read is sized to that); guest->host bytes queued in
 * Node are capped by the window we advertise (512 KiB).
 *
 * Memory across flows is bounded too (maxTcpFlows x the per-flow caps would
 * be ~18 GiB): two global budgets (TCP_LIMITS.hostToGuestBudget, 192 MiB,
 * and guestToHostBudget, 64 MiB; `TcpTranslatorOptions` for tests). Host ->
 * guest counts the rings' allocations (and the growth set aside for the
 * read each reading flow has asked Node for, TcpFlow.ringCharged) in two
 * parts: every ring's first 16 KiB (TCP_LIMITS.ringFloor) from a floor part
 * of ringFloor x maxTcpFlows (at most half the budget), anything above from
 * the rest. So flows that never ACK can fill the shared part but not take
 * the 16 KiB each other flow needs to keep moving. A read is sized to what
 * both parts allow (`ringRoom`: the flow reads less, or waits) and its
 * growth is charged before Node reads, so the sum never passes the budget
 * whatever reads land in which order; flows refused wait in a set and are
 * re-checked whenever memory is freed (rings are trimmed from tick():
 * released when drained, shrunk to fit while the shared part is more than
 * half used). Guest -> host counts bytes
 * handed to socket.write() until Node's callback says they reached the
 * kernel, including those of flows already closed and still flushing (their
 * sockets are kept in a set, so close() ends them too): the
 * window we advertise shrinks to what is left, guest data beyond it is
 * dropped ('tcp.drop.memory'), and the flows that were shrunk get a window
 * update when a quarter of the budget (or a flow's 512 KiB) is free again.
 *
 * Host reads of outbound flows use Node's `onread` option: one 256 KiB
 * buffer shared by all flows receives every read (no allocation per read;
 * each read gets a view of it as long as the flow may take, see
 * TcpFlow.hostReadBuffer) and is copied into the flow's ring before the
 * callback returns. Such a socket is paused before it connects, so Node
 * starts no read the flow did not ask for. Accepted (forwarded) sockets
 * cannot take `onread`, so they use 'data' events (TcpFlow.onHostChunk).
 *
 * Never throws out of input()/tick(): every entry point catches, counts
 * `tcp.error.internal` and logs once.
 */
import * as net from 'node:net';
import type { IpMeta, NatDecision, StackContext, TransportHandler } from '../context.js';
import { OUT_DONT_FRAGMENT } from '../context.js';
import { type InAny, inanyEqual, inanyOwned, inanyToString, parseInAny } from '../inany.js';
import { FlowEntry, type FlowClass } from '../flows.js';
import {
  TCP_ACK, TCP_FIN, TCP_PROTOCOL, TCP_RST, TCP_SYN,
  parseTcp, setTcpChecksum, writeTcpHeader,
  type TcpSegment,
} from '../wire/tcp.js';
import { TCP_LIMITS, TcpFlow, type FlowOwner } from './flow.js';
import { type FlowShare, FlowShares } from './flow-shares.js';
import { seqAdd } from './sequence.js';
import { DnsQueryStream } from '../dns-stream.js';

export { TCP_LIMITS, TCP_TIMING } from './flow.js';

export interface TcpNat {
  outbound(protocol: 'tcp' | 'udp', dst: InAny, dstPort: number): NatDecision;
  /** The guest-side source of a forwarded connection from host address `hostAddress` (Nat.inboundSource). */
  inboundSource(hostAddress: string, family: 4 | 6): InAny;
}

/** Tunables of one translator (defaults from TCP_LIMITS). */
export interface TcpTranslatorOptions {
  /** Global cap on host -> guest ring memory, bytes. */
  hostToGuestBudget?: number;
  /** Global cap on guest -> host bytes queued in Node, bytes. */
  guestToHostBudget?: number;
}

/** Host error codes counted by name ('tcp.host.error.<code>'); anything else is 'tcp.host.error.other'. */
const HOST_ERROR_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'ENETDOWN',
  'ENETRESET', 'EADDRNOTAVAIL', 'EADDRINUSE', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EINVAL', 'EPROTO',
]);

export interface TcpForwardSpec {
  hostAddress: string;
  /** The first host port. */
  hostPort: number;
  /** The first guest port. */
  guestPort: number;
  /** Ports in the range (1 when absent). */
  count?: number;
}

/** A bound forward: its listeners (one per port), its flow share, the behaviours already logged ('client', 'gateway'). */
interface TcpForward {
  spec: TcpForwardSpec;
  /** Unique per forward bound (its log keys). */
  serial: number;
  servers: net.Server[];
  share: FlowShare<TcpFlow>;
  logged: Set<string>;
}

/** A forward's identity among the listeners: its host address and port. */
function forwardKey(spec: Pick<TcpForwardSpec, 'hostAddress' | 'hostPort'>): string {
  return `${spec.hostAddress}|${spec.hostPort}`;
}

/** host address:ports -> guest ports, for the log. */
function forwardLabel(spec: TcpForwardSpec): string {
  const n = spec.count ?? 1;
  const ports = (first: number): string => (n === 1 ? String(first) : `${first}-${first + n - 1}`);
  const host = spec.hostAddress.includes(':') ? `[${spec.hostAddress}]` : spec.hostAddress;
  return `${host}:${ports(spec.hostPort)} -> guest ${ports(spec.guestPort)}`;
}

const EPHEMERAL_FIRST = 49152;
const EPHEMERAL_COUNT = 65536 - EPHEMERAL_FIRST;

export class TcpTranslator implements TransportHandler, FlowOwner {
  private readonly flows: FlowClass<TcpFlow>;
  private readonly servers: net.Server[] = [];
  /** Each listening forward by `forwardKey`: its server and its share of the flow table. */
  private readonly forwardsByKey = new Map<string, TcpForward>();
  private readonly blocked = new Set<TcpFlow>();
  /** maxTcpFlows shared out between the guest's flows and each forward's. */
  private readonly shares: FlowShares<TcpFlow>;
  private readonly shareOf = new Map<TcpFlow, FlowShare<TcpFlow>>();
  /** Host sockets of closed flows still writing guest bytes out (see TcpFlow.close); destroyed by close(). */
  private readonly flushing = new Set<net.Socket>();
  private waitingWritable = false;
  private readonly pendingAcks = new Set<TcpFlow>();
  private ackFlushScheduled = false;
  private readonly pendingPumps = new Set<TcpFlow>();
  private pumpScheduled = false;
  /** The one buffer every onread host read lands in (copied out before the callback returns). */
  private readonly readBuffer = Buffer.allocUnsafe(TCP_LIMITS.readChunk);
  private nextForwardSerial = 1;
  private nextEphemeral = EPHEMERAL_FIRST + Math.floor(Math.random() * EPHEMERAL_COUNT);
  private closed = false;

  // Global memory budgets (see the header comment). Host -> guest: the floor and the shared part.
  private readonly floorLimit: number;
  private floorUsed = 0;
  private readonly sharedLimit: number;
  private sharedUsed = 0;
  /** Flows refused a read by the ring budget, re-checked when memory is freed. */
  private readonly ringWaiters = new Set<TcpFlow>();
  private readonly queueLimit: number;
  private queueUsed = 0;
  /** Flows whose advertised window was shrunk (or data dropped) for the guest -> host budget. */
  private readonly queueWaiters = new Set<TcpFlow>();

  constructor(readonly ctx: StackContext, private readonly nat: TcpNat, options: TcpTranslatorOptions = {}) {
    const ringBudget = options.hostToGuestBudget ?? TCP_LIMITS.hostToGuestBudget;
    this.floorLimit = Math.min(TCP_LIMITS.ringFloor * ctx.config.maxTcpFlows, Math.floor(ringBudget / 2));
    this.sharedLimit = ringBudget - this.floorLimit;
    this.shares = new FlowShares<TcpFlow>(ctx.config);
    this.queueLimit = options.guestToHostBudget ?? TCP_LIMITS.guestToHostBudget;
    this.flows = ctx.flows.addClass<TcpFlow>({
      // The shares (flow-shares.ts) bound the class; flows end by their own timers (flow.ts), never by LRU or idle expiry here.
      name: 'tcp', capacity: Number.POSITIVE_INFINITY, lru: false, idleTimeoutMs: 0,
      onRemove: () => {
        ctx.counters.count('tcp.flows.active', -1);
        ctx.counters.count('tcp.flows.closed');
      },
    });
  }

  /** Number of flows in the table (every state, including connects in flight and lingering ones). */
  get flowCount(): number {
    return this.flows.size;
  }

  /** Bytes charged to the global budgets: host -> guest ring allocations (and growth set aside for reads), guest -> host bytes queued in Node. */
  get memory(): { hostToGuest: number; guestToHost: number } {
    return { hostToGuest: this.floorUsed + this.sharedUsed, guestToHost: this.queueUsed };
  }

  // ------------------------------------------------------------ guest input

  /**
   * One guest segment. `checksumTrusted`: the guest left the checksum partial
   * (virtio NEEDS_CSUM; TSO segments up to 64 KiB): parse without verifying.
   */
  input(meta: IpMeta, segment: Uint8Array, checksumTrusted = false): void {
    try {
      this.inputUnsafe(meta, segment, checksumTrusted);
    } catch (err) {
      this.internalError('input', err);
    }
  }

  private inputUnsafe(meta: IpMeta, bytes: Uint8Array, checksumTrusted: boolean): void {
    if (this.closed) return;
    const parsed = parseTcp(bytes, meta.src, meta.dst, !checksumTrusted);
    if (!parsed.ok) {
      this.ctx.counters.count(`tcp.drop.${parsed.reason}`);
      return;
    }
    const seg = parsed.segment;
    if (seg.options.optionsMalformed) this.ctx.counters.count('tcp.bad_options');
    const now = this.ctx.clock.now();
    const flow = this.ctx.flows.lookup<TcpFlow>(TCP_PROTOCOL, meta.src, seg.srcPort, meta.dst, seg.dstPort)?.value;
    if (flow) {
      // A new SYN on a 4-tuple that is only lingering starts a new connection.
      if (flow.state === 'time_wait' && (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
        flow.close(false);
      } else {
        const entry = flow.entry;
        entry.lastUsed = now; // for listings only: TCP flows end by their own timers, not by the table's expiry
        entry.countFromGuest(seg.payload.length);
        flow.input(seg, now);
        return;
      }
    }
    if (seg.flags & TCP_RST) {
      this.ctx.counters.count('tcp.drop.no_flow');
      return;
    }
    if ((seg.flags & (TCP_SYN | TCP_ACK | TCP_FIN)) !== TCP_SYN) {
      this.ctx.counters.count('tcp.drop.no_flow');
      this.replyRst(meta, seg);
      return;
    }
    this.openOutbound(meta, seg, now);
  }

  private openOutbound(meta: IpMeta, seg: TcpSegment, now: number): void {
    if (seg.dstPort === 0 || seg.srcPort === 0) {
      this.ctx.counters.count('tcp.drop.bad_port');
      return;
    }
    const decision = this.nat.outbound('tcp', meta.dst, seg.dstPort);
    if (decision.kind !== 'host') {
      this.ctx.counters.count('tcp.drop.nat_refused');
      this.replyRst(meta, seg);
      return;
    }
    if (!this.shares.admit(this.shares.outbound)) {
      this.ctx.counters.count('tcp.drop.flow_limit');
      this.replyRst(meta, seg);
      return;
    }
    const entry = new FlowEntry<TcpFlow>(TCP_PROTOCOL, inanyOwned(meta.src), seg.srcPort, inanyOwned(meta.dst), seg.dstPort, now);
    entry.hostAddr = decision.address;
    entry.hostPort = decision.port;
    entry.countFromGuest(seg.payload.length);
    const flow = new TcpFlow(this, entry, 'connecting', now);
    if (decision.dnsQueries) flow.dnsQueries = new DnsQueryStream();
    flow.acceptGuestSyn(seg);
    this.addFlow(flow, this.shares.outbound);
    let socket: net.Socket;
    try {
      socket = this.ctx.host.connectTcp({
        host: decision.address,
        port: decision.port,
        allowHalfOpen: true,
        noDelay: true,
        onread: {
          // Asked for after every read (and once now): each read is sized by the flow.
          buffer: () => flow.hostReadBuffer(this.readBuffer),
          callback: (nread: number, buf: Uint8Array): boolean => {
            this.guard('read', () => flow.onHostData(buf.subarray(0, nread), this.ctx.clock.now()));
            return flow.hostReading; // false: Node stops the handle before it reads again
          },
        },
      });
    } catch (err) {
      this.ctx.logOnce(`tcp.connect.${(err as NodeJS.ErrnoException)?.code ?? 'error'}`, `TCP connect to ${decision.address}:${decision.port} failed: ${String(err)}`);
      flow.onHostError();
      return;
    }
    flow.socket = socket;
    // Paused before it connects: Node then starts no read by itself (not even the first one after
    // 'connect', which a pause from our 'connect' handler would not stop); the flow starts them.
    socket.pause();
    this.attachSocket(flow, socket);
    socket.once('connect', () => this.guard('connect', () => flow.onHostConnected(this.ctx.clock.now())));
  }

  /** Event handlers shared by outbound and inbound flows. */
  private attachSocket(flow: TcpFlow, socket: net.Socket): void {
    // 'data' only fires when the socket was not given onread (accepted sockets, or a HostIO ignoring it).
    socket.on('data', (chunk: Buffer) => this.guard('data', () => flow.onHostChunk(chunk, this.ctx.clock.now())));
    socket.on('end', () => this.guard('end', () => flow.onHostEnd(this.ctx.clock.now())));
    socket.on('drain', () => this.guard('drain', () => flow.onHostDrain()));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // Counter names come from a fixed set, whatever the host reports.
      const code = typeof err?.code === 'string' && HOST_ERROR_CODES.has(err.code) ? err.code : 'other';
      this.ctx.counters.count(`tcp.host.error.${code}`);
      this.guard('error', () => flow.onHostError());
    });
    socket.on('close', (hadError: boolean) => this.guard('close', () => {
      flow.settleHostQueue();
      flow.onHostClose(hadError);
    }));
  }

  private addFlow(flow: TcpFlow, share: FlowShare<TcpFlow>): void {
    this.ctx.flows.insert(this.flows, flow.entry);
    this.shareOf.set(flow, share);
    this.shares.added(share);
    this.ctx.counters.count('tcp.flows.active');
    this.ctx.counters.count('tcp.flows.opened');
  }

  /** RST for a segment that has no connection (RFC 9293 §3.10.7.1). */
  private replyRst(meta: IpMeta, seg: TcpSegment): void {
    let seq = 0;
    let ack = 0;
    let flags = TCP_RST;
    if (seg.flags & TCP_ACK) {
      seq = seg.ack;
    } else {
      ack = seqAdd(seg.seq, seg.payload.length + (seg.flags & TCP_SYN ? 1 : 0) + (seg.flags & TCP_FIN ? 1 : 0));
      flags |= TCP_ACK;
    }
    const out = this.ctx.out.reserve(meta.dst, meta.src, TCP_PROTOCOL, 20, OUT_DONT_FRAGMENT);
    if (!out) {
      this.ctx.counters.count('tcp.link.backpressure');
      return;
    }
    const l4 = out.payload;
    writeTcpHeader(l4, { srcPort: seg.dstPort, dstPort: seg.srcPort, seq, ack, flags, window: 0 });
    setTcpChecksum(l4.subarray(0, 20), meta.dst, meta.src);
    out.commit();
    this.ctx.counters.count('tcp.rst.sent');
  }

  // ------------------------------------------------------------ FlowOwner

  removeFlow(flow: TcpFlow): void {
    this.ctx.flows.remove(flow.entry); // counted by the class's onRemove, once
    const share = this.shareOf.get(flow);
    if (share) {
      this.shareOf.delete(flow);
      this.shares.removed(share, flow);
    }
    this.blocked.delete(flow);
    this.pendingAcks.delete(flow);
    this.pendingPumps.delete(flow);
    this.ringWaiters.delete(flow);
    this.queueWaiters.delete(flow);
  }

  flowLingering(flow: TcpFlow): void {
    const share = this.shareOf.get(flow);
    if (share) this.shares.lingering(share, flow);
  }

  hostFlushing(socket: net.Socket): void {
    this.flushing.add(socket);
    socket.once('close', () => this.flushing.delete(socket));
  }

  ringResized(from: number, to: number): void {
    const floor = TCP_LIMITS.ringFloor;
    this.floorUsed += Math.min(to, floor) - Math.min(from, floor);
    this.sharedUsed += Math.max(0, to - floor) - Math.max(0, from - floor);
    if (to < from && this.ringWaiters.size > 0) {
      const flows = [...this.ringWaiters];
      this.ringWaiters.clear();
      for (const flow of flows) flow.updateHostReading();
    }
  }

  /** Whether a ring may grow from `from` to `to` bytes: its first ringFloor bytes from the floor part, the rest from the shared part. */
  private ringFits(from: number, to: number): boolean {
    const floor = TCP_LIMITS.ringFloor;
    return this.floorUsed + Math.min(to, floor) - Math.min(from, floor) <= this.floorLimit &&
      this.sharedUsed + Math.max(0, to - floor) - Math.max(0, from - floor) <= this.sharedLimit;
  }

  ringRoom(flow: TcpFlow, wanted: number): number {
    const ring = flow.buffer;
    const from = flow.ringCharged;
    // The largest allocation on the ring's doubling path (ringFloor x 2^k) that fits: the one for all of it, or less.
    let to = Math.max(ring.capacityFor(wanted), from);
    while (to > from && !this.ringFits(from, to)) {
      const half = to / 2;
      to = half > from && half >= TCP_LIMITS.ringFloor ? half : from;
    }
    const room = Math.min(wanted, Math.max(0, to - ring.length));
    if (room === wanted) {
      this.ringWaiters.delete(flow);
    } else if (!this.ringWaiters.has(flow)) {
      this.ringWaiters.add(flow);
      this.ctx.counters.count('tcp.host.budget_wait');
    }
    return room;
  }

  ringTight(): boolean {
    return this.sharedUsed * 2 > this.sharedLimit;
  }

  hostQueueCharge(delta: number): void {
    this.queueUsed += delta;
    if (delta < 0 && this.queueWaiters.size > 0 &&
        this.queueLimit - this.queueUsed >= Math.min(this.queueLimit / 4, TCP_LIMITS.recvQueueLimit)) {
      const flows = [...this.queueWaiters];
      this.queueWaiters.clear();
      for (const flow of flows) this.guard('window', () => flow.onHostDrain());
    }
  }

  hostQueueRoom(): number {
    return Math.max(0, this.queueLimit - this.queueUsed);
  }

  waitForHostQueueRoom(flow: TcpFlow): void {
    if (flow.state === 'closed' || this.queueWaiters.has(flow)) return;
    this.queueWaiters.add(flow);
    this.ctx.counters.count('tcp.window.budget_closed');
  }

  blockOnLink(flow: TcpFlow): void {
    this.blocked.add(flow);
    if (this.waitingWritable) return;
    this.waitingWritable = true;
    this.ctx.out.whenWritable(() => this.guard('writable', () => this.onWritable()));
  }

  private onWritable(): void {
    this.waitingWritable = false;
    const flows = [...this.blocked];
    this.blocked.clear();
    const now = this.ctx.clock.now();
    for (let i = 0; i < flows.length; i++) {
      if (this.waitingWritable) {
        // A flow filled the link again. Round robin: the flows not served in
        // this round go first next time, ahead of those that just ran (else
        // one bulk flow that always fills the link would starve the rest).
        const ran = [...this.blocked];
        this.blocked.clear();
        for (const rest of flows.slice(i)) {
          if (rest.state === 'closed') continue;
          rest.linkBlocked = true;
          this.blocked.add(rest);
        }
        for (const flow of ran) this.blocked.add(flow);
        return;
      }
      const flow = flows[i]!;
      if (flow.state === 'closed') continue;
      flow.onLinkWritable(now);
    }
  }

  scheduleAck(flow: TcpFlow): void {
    this.pendingAcks.add(flow);
    if (this.ackFlushScheduled) return;
    this.ackFlushScheduled = true;
    queueMicrotask(() => this.guard('ack', () => this.flushAcks()));
  }

  schedulePump(flow: TcpFlow): void {
    this.pendingPumps.add(flow);
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => this.guard('pump', () => this.flushPumps()));
  }

  private flushPumps(): void {
    this.pumpScheduled = false;
    const flows = [...this.pendingPumps];
    this.pendingPumps.clear();
    const now = this.ctx.clock.now();
    for (const flow of flows) {
      if (flow.state !== 'closed') flow.pump(now);
    }
  }

  private flushAcks(): void {
    this.ackFlushScheduled = false;
    const flows = [...this.pendingAcks];
    this.pendingAcks.clear();
    for (const flow of flows) {
      if (flow.ackPending && flow.state !== 'closed' && !flow.linkBlocked) flow.sendAck();
    }
  }

  // ------------------------------------------------------------ timers

  tick(now: number): void {
    // One flow's failure must not stop the timers of the others.
    for (const entry of this.flows.entries()) {
      try {
        entry.value.tick(now);
      } catch (err) {
        this.internalError('tick', err);
      }
    }
  }

  // ------------------------------------------------------------ forwarding

  /**
   * Listen on hostAddress, ports hostPort .. hostPort + count - 1 (one
   * listener each, one flow share for them all); each accepted connection is
   * forwarded to the guest's matching port (guestPort + i) as a new flow.
   * All or nothing: if one port cannot be bound, those already bound are
   * closed again and the promise rejects with that bind's error.
   */
  async addForward(spec: TcpForwardSpec): Promise<void> {
    const share = this.shares.addForward();
    const forward: TcpForward = { spec, serial: this.nextForwardSerial++, servers: [], share, logged: new Set() };
    const count = spec.count ?? 1;
    try {
      for (let i = 0; i < count; i++) forward.servers.push(await this.listen(spec, i, forward));
    } catch (err) {
      for (const server of forward.servers) server.close();
      this.shares.removeForward(share);
      throw err;
    }
    this.servers.push(...forward.servers);
    this.forwardsByKey.set(forwardKey(spec), forward);
  }

  /** One listener of a forward: host port hostPort + i. */
  private listen(spec: TcpForwardSpec, i: number, forward: TcpForward): Promise<net.Server> {
    const hostPort = spec.hostPort + i;
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.on('connection', (socket) => this.guard('accept', () => this.onAccept(socket, spec.guestPort + i, hostPort, forward)));
    return new Promise<net.Server>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: spec.hostAddress, port: hostPort }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.ctx.logOnce(`tcp.forward.${spec.hostAddress}:${hostPort}`, `TCP forward ${spec.hostAddress}:${hostPort}: ${String(err)}`));
        resolve(server);
      });
    });
  }

  /**
   * Stop forwarding the range that starts at hostAddress:hostPort: its
   * listeners are closed (at once: the ports refuse), flows already
   * accepted go on, or with `closeFlows` are reset both ways. Resolves false
   * when no such forward listens.
   */
  async removeForward(spec: Pick<TcpForwardSpec, 'hostAddress' | 'hostPort'>, closeFlows: boolean): Promise<boolean> {
    const key = forwardKey(spec);
    const forward = this.forwardsByKey.get(key);
    if (!forward) return false;
    this.forwardsByKey.delete(key);
    for (const server of forward.servers) {
      const i = this.servers.indexOf(server);
      if (i >= 0) this.servers.splice(i, 1);
      // server.close() stops listening at once; its callback waits for connections, which are the flows' business.
      server.close();
    }
    this.shares.removeForward(forward.share);
    if (closeFlows) {
      for (const [flow, share] of [...this.shareOf]) if (share === forward.share) this.guard('remove forward', () => flow.abort());
    }
    return true;
  }

  private onAccept(socket: net.Socket, guestPort: number, hostPort: number, forward: TcpForward): void {
    socket.on('error', () => { /* handled per flow below, or the socket is being refused */ });
    // Over IPv6 when the peer is an IPv6 (not IPv4-mapped) address and the guest has an IPv6 address; over IPv4 otherwise.
    const peerText = socket.remoteAddress ?? '';
    const guest6 = this.ctx.guestIpv6();
    const peer = guest6 !== null ? parseInAny(peerText) : null;
    const over6 = guest6 !== null && peer !== null && typeof peer !== 'number';
    const guestAddr: InAny = over6 ? inanyOwned(guest6) : this.ctx.config.guestIp;
    // The client's own address when the guest can be shown it and reply to it (the NAT's inboundSource), else the gateway.
    const remoteAddr: InAny = inanyOwned(this.nat.inboundSource(peerText, over6 ? 6 : 4));
    if (this.closed || !this.shares.admit(forward.share)) {
      this.ctx.counters.count('tcp.forward.flow_limit');
      socket.resetAndDestroy();
      return;
    }
    // The client's own port when the flow table has no such flow yet (it always shows with its address); an ephemeral port of ours otherwise.
    const clientPort = socket.remotePort ?? 0;
    const shownAsGateway = inanyEqual(remoteAddr, over6 ? this.ctx.config.gateway6 : this.ctx.config.gateway);
    let port = clientPort;
    let found = !shownAsGateway && clientPort > 0 && this.ctx.flows.lookup(TCP_PROTOCOL, guestAddr, guestPort, remoteAddr, port) === undefined;
    for (let i = 0; i < EPHEMERAL_COUNT && !found; i++) {
      port = this.nextEphemeral;
      this.nextEphemeral = port + 1 >= 65536 ? EPHEMERAL_FIRST : port + 1;
      found = this.ctx.flows.lookup(TCP_PROTOCOL, guestAddr, guestPort, remoteAddr, port) === undefined;
    }
    if (!found) {
      this.ctx.counters.count('tcp.drop.no_port');
      socket.resetAndDestroy();
      return;
    }
    const behaviour = shownAsGateway ? 'gateway' : 'client';
    if (!forward.logged.has(behaviour)) {
      forward.logged.add(behaviour);
      this.ctx.logOnce(`tcp.forward.${forward.serial}.${behaviour}`,
        shownAsGateway
          ? `TCP forward ${forwardLabel(forward.spec)}: clients such as ${peerText} reach the guest from the gateway ${inanyToString(remoteAddr)}`
          : `TCP forward ${forwardLabel(forward.spec)}: clients reach the guest from their own address (${peerText}); the guest replies through its default route`,
      );
    }
    this.ctx.counters.count(shownAsGateway ? 'tcp.forward.from_gateway' : 'tcp.forward.from_client');
    const now = this.ctx.clock.now();
    const entry = new FlowEntry<TcpFlow>(TCP_PROTOCOL, guestAddr, guestPort, remoteAddr, port, now);
    entry.hostAddr = peerText;
    entry.hostPort = clientPort;
    entry.localPort = hostPort;
    const flow = new TcpFlow(this, entry, 'syn_sent', now);
    flow.socket = socket; // pauseOnConnect: nothing is read until the guest accepts (hostReading is false)
    this.addFlow(flow, forward.share);
    this.ctx.counters.count('tcp.forward.accepted');
    this.attachSocket(flow, socket);
    flow.sendSyn(now);
  }

  // ------------------------------------------------------------ teardown

  close(): void {
    this.closed = true;
    for (const server of this.servers) {
      try {
        server.close();
      } catch {
        /* not listening */
      }
    }
    this.servers.length = 0;
    this.forwardsByKey.clear();
    for (const flow of [...this.flows.entries()].map((e) => e.value)) {
      try {
        flow.close(true);
      } catch {
        /* keep closing the others */
      }
    }
    this.flows.clear();
    for (const socket of this.flushing) socket.destroy();
    this.flushing.clear();
    this.blocked.clear();
    this.pendingAcks.clear();
    this.pendingPumps.clear();
  }

  // ------------------------------------------------------------ helpers

  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.internalError(what, err);
    }
  }

  private internalError(what: string, err: unknown): void {
    this.ctx.counters.count('tcp.error.internal');
    this.ctx.logOnce(`tcp.internal.${what}`, `tcp: internal error in ${what}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  }
}
