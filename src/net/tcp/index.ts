/**
 * TCP translation between the guest and host sockets (passt-style L2<->L4
 * translation; no TCP stack of our own on the host side).
 *
 * Theory of operation. `TcpTranslator` is the dispatcher's handler for IPv4
 * protocol 6. Every guest segment is parsed once through `parseTcp` (length,
 * data offset, options, checksum with the pseudo-header) and looked up in
 * one flow table; the per-connection work is in `flow.ts`, whose header
 * comment holds the whole lifecycle.
 *
 *  - Guest SYN for an unknown 4-tuple: the NAT (`nat.outbound`) says where it
 *    goes; a 'host' decision opens `ctx.host.connectTcp` and the guest hears
 *    nothing until the connect succeeds (SYN-ACK) or fails (RST+ACK). Any
 *    other decision, and the flow limit, answer RST+ACK at once.
 *  - Non-SYN segments for unknown flows are answered with RST as a real TCP
 *    would (RFC 9293 §3.10.7.1), RSTs for unknown flows are dropped; both
 *    are counted as `tcp.drop.no_flow`.
 *  - `addForward` listens on a host address/port; each accepted connection
 *    becomes a flow that sends SYN to config.guestIp:guestPort from the
 *    gateway address and a source port we pick (unique per flow).
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
 * The flow table. A Map keyed by the string "guestIp:guestPort:remoteIp:
 * remotePort" (the guest's view of the 4-tuple; inbound flows use the
 * gateway address and our chosen port as the remote side, so both kinds
 * share one lookup). A guest cannot attack it: entries are created only by
 * SYNs that pass the NAT and the `maxTcpFlows` limit (connect attempts in
 * flight are flows and count), every entry is reclaimed by a timeout, and
 * V8 hashes string keys with a per-process random seed, so the guest cannot
 * choose 4-tuples that collide (see flow-table.ts for the caveats). A full
 * table costs no scan per SYN: the TIME_WAIT flows that may be reclaimed
 * are kept in their own set. Memory per flow is bounded: the host->guest
 * ring is capped at 4 MiB (+ one 256 KiB read) and grows only as far as the
 * guest's window; guest->host bytes queued in Node are capped by the window
 * we advertise (512 KiB).
 *
 * Memory across flows is bounded too (maxTcpFlows x the per-flow caps would
 * be ~19 GiB): two global budgets (TCP_LIMITS.hostToGuestBudget, 192 MiB,
 * and guestToHostBudget, 64 MiB; `TcpTranslatorOptions` for tests). Host ->
 * guest counts the rings' allocations: a flow reads from its host socket
 * only while its next read fits its ring's allocation or the budget; when a
 * ring grows close to the limit every reading flow is re-checked (and
 * paused if its next read no longer fits), so the sum never passes the
 * budget; flows refused wait in a set and are re-checked whenever memory is
 * freed (rings are trimmed from tick(): released when drained, shrunk to
 * fit while the budget is more than half used). Guest -> host counts bytes
 * handed to socket.write() until Node's callback says they reached the
 * kernel, including those of flows already closed and still flushing (their
 * sockets are kept in a set, so close() ends them too): the
 * window we advertise shrinks to what is left, guest data beyond it is
 * dropped ('tcp.drop.memory'), and the flows that were shrunk get a window
 * update when a quarter of the budget (or a flow's 512 KiB) is free again.
 *
 * Host reads of outbound flows use Node's `onread` option: one 256 KiB
 * buffer shared by all flows receives every read (no allocation per read)
 * and is copied into the flow's ring before the callback returns. Accepted
 * (forwarded) sockets cannot take `onread`, so they use 'data' events.
 *
 * Never throws out of input()/tick(): every entry point catches, counts
 * `tcp.error.internal` and logs once.
 */
import * as net from 'node:net';
import type { IPv4Meta, NatDecision, StackContext, TransportHandler } from '../context.js';
import {
  TCP_ACK, TCP_FIN, TCP_PROTOCOL, TCP_RST, TCP_SYN,
  parseTcp, setTcpChecksum, writeTcpHeader,
  type TcpSegment,
} from '../wire/tcp.js';
import { TCP_LIMITS, TcpFlow, type FlowOwner } from './flow.js';
import { seqAdd } from './sequence.js';

export { TCP_LIMITS, TCP_TIMING } from './flow.js';

export interface TcpNat {
  outbound(protocol: 'tcp' | 'udp', dst: number, dstPort: number): NatDecision;
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
  hostPort: number;
  guestPort: number;
}

const EPHEMERAL_FIRST = 49152;
const EPHEMERAL_COUNT = 65536 - EPHEMERAL_FIRST;

function flowKey(guestAddr: number, guestPort: number, remoteAddr: number, remotePort: number): string {
  return `${guestAddr}:${guestPort}:${remoteAddr}:${remotePort}`;
}

export class TcpTranslator implements TransportHandler, FlowOwner {
  private readonly flows = new Map<string, TcpFlow>();
  private readonly servers: net.Server[] = [];
  private readonly blocked = new Set<TcpFlow>();
  /** Flows in TIME_WAIT, oldest first: the ones makeRoom may reclaim (no scan of the whole table per SYN). */
  private readonly lingering = new Set<TcpFlow>();
  /** Host sockets of closed flows still writing guest bytes out (see TcpFlow.close); destroyed by close(). */
  private readonly flushing = new Set<net.Socket>();
  private waitingWritable = false;
  private readonly pendingAcks = new Set<TcpFlow>();
  private ackFlushScheduled = false;
  /** The one buffer every onread host read lands in (copied out before the callback returns). */
  private readonly readBuffer = Buffer.allocUnsafe(TCP_LIMITS.readChunk);
  private nextEphemeral = EPHEMERAL_FIRST + Math.floor(Math.random() * EPHEMERAL_COUNT);
  private closed = false;

  // Global memory budgets (see the header comment).
  private readonly ringLimit: number;
  private ringUsed = 0;
  /** Flows whose host socket is being read. */
  private readonly reading = new Set<TcpFlow>();
  /** Flows refused a read by the ring budget, re-checked when memory is freed. */
  private readonly ringWaiters = new Set<TcpFlow>();
  private readonly queueLimit: number;
  private queueUsed = 0;
  /** Flows whose advertised window was shrunk (or data dropped) for the guest -> host budget. */
  private readonly queueWaiters = new Set<TcpFlow>();

  constructor(readonly ctx: StackContext, private readonly nat: TcpNat, options: TcpTranslatorOptions = {}) {
    this.ringLimit = options.hostToGuestBudget ?? TCP_LIMITS.hostToGuestBudget;
    this.queueLimit = options.guestToHostBudget ?? TCP_LIMITS.guestToHostBudget;
  }

  /** Number of flows in the table (every state, including connects in flight and lingering ones). */
  get flowCount(): number {
    return this.flows.size;
  }

  /** Bytes charged to the global budgets: host -> guest ring allocations, guest -> host bytes queued in Node. */
  get memory(): { hostToGuest: number; guestToHost: number } {
    return { hostToGuest: this.ringUsed, guestToHost: this.queueUsed };
  }

  // ------------------------------------------------------------ guest input

  /**
   * One guest segment. `checksumTrusted`: the guest left the checksum partial
   * (virtio NEEDS_CSUM; TSO segments up to 64 KiB): parse without verifying.
   */
  input(meta: IPv4Meta, segment: Uint8Array, checksumTrusted = false): void {
    try {
      this.inputUnsafe(meta, segment, checksumTrusted);
    } catch (err) {
      this.internalError('input', err);
    }
  }

  private inputUnsafe(meta: IPv4Meta, bytes: Uint8Array, checksumTrusted: boolean): void {
    if (this.closed) return;
    const parsed = parseTcp(bytes, meta.src, meta.dst, !checksumTrusted);
    if (!parsed.ok) {
      this.ctx.counters.count(`tcp.drop.${parsed.reason}`);
      return;
    }
    const seg = parsed.segment;
    if (seg.options.optionsMalformed) this.ctx.counters.count('tcp.bad_options');
    const now = this.ctx.clock.now();
    const key = flowKey(meta.src, seg.srcPort, meta.dst, seg.dstPort);
    const flow = this.flows.get(key);
    if (flow) {
      // A new SYN on a 4-tuple that is only lingering starts a new connection.
      if (flow.state === 'time_wait' && (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
        flow.close(false);
      } else {
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
    this.openOutbound(meta, seg, key, now);
  }

  private openOutbound(meta: IPv4Meta, seg: TcpSegment, key: string, now: number): void {
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
    if (!this.makeRoom()) {
      this.ctx.counters.count('tcp.drop.flow_limit');
      this.replyRst(meta, seg);
      return;
    }
    const flow = new TcpFlow(this, key, { guestAddr: meta.src, guestPort: seg.srcPort, remoteAddr: meta.dst, remotePort: seg.dstPort }, 'connecting', now);
    flow.acceptGuestSyn(seg);
    this.addFlow(flow);
    let socket: net.Socket;
    try {
      socket = this.ctx.host.connectTcp({
        host: decision.address,
        port: decision.port,
        allowHalfOpen: true,
        noDelay: true,
        onread: {
          buffer: this.readBuffer,
          callback: (nread: number, buf: Uint8Array): boolean => {
            this.guard('read', () => flow.onHostData(buf.subarray(0, nread), this.ctx.clock.now()));
            return true; // the flow pauses the socket itself when its window is full
          },
        },
      });
    } catch (err) {
      this.ctx.logOnce(`tcp.connect.${(err as NodeJS.ErrnoException)?.code ?? 'error'}`, `TCP connect to ${decision.address}:${decision.port} failed: ${String(err)}`);
      flow.onHostError();
      return;
    }
    flow.socket = socket;
    this.attachSocket(flow, socket);
    socket.once('connect', () => this.guard('connect', () => flow.onHostConnected(this.ctx.clock.now())));
  }

  /** Event handlers shared by outbound and inbound flows. */
  private attachSocket(flow: TcpFlow, socket: net.Socket): void {
    // 'data' only fires when the socket was not given onread (accepted sockets, or a HostIO ignoring it).
    socket.on('data', (chunk: Buffer) => this.guard('data', () => flow.onHostData(chunk, this.ctx.clock.now())));
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

  /** Make room for one more flow: true if below the limit (possibly after reclaiming a lingering flow). */
  private makeRoom(): boolean {
    const max = this.ctx.config.maxTcpFlows;
    if (this.flows.size < max) return true;
    const oldest = this.lingering.values().next();
    if (oldest.done) return false;
    oldest.value.close(false);
    return this.flows.size < max;
  }

  private addFlow(flow: TcpFlow): void {
    this.flows.set(flow.key, flow);
    this.ctx.counters.count('tcp.flows.active');
    this.ctx.counters.count('tcp.flows.opened');
  }

  /** RST for a segment that has no connection (RFC 9293 §3.10.7.1). */
  private replyRst(meta: IPv4Meta, seg: TcpSegment): void {
    let seq = 0;
    let ack = 0;
    let flags = TCP_RST;
    if (seg.flags & TCP_ACK) {
      seq = seg.ack;
    } else {
      ack = seqAdd(seg.seq, seg.payload.length + (seg.flags & TCP_SYN ? 1 : 0) + (seg.flags & TCP_FIN ? 1 : 0));
      flags |= TCP_ACK;
    }
    const l4 = this.ctx.out.reserveIPv4(meta.dst, meta.src, TCP_PROTOCOL, 20, true);
    if (!l4) {
      this.ctx.counters.count('tcp.link.backpressure');
      return;
    }
    writeTcpHeader(l4, { srcPort: seg.dstPort, dstPort: seg.srcPort, seq, ack, flags, window: 0 });
    setTcpChecksum(l4.subarray(0, 20), meta.dst, meta.src);
    this.ctx.out.commitIPv4();
    this.ctx.counters.count('tcp.rst.sent');
  }

  // ------------------------------------------------------------ FlowOwner

  removeFlow(flow: TcpFlow): void {
    if (this.flows.get(flow.key) === flow) {
      this.flows.delete(flow.key);
      this.ctx.counters.count('tcp.flows.active', -1);
      this.ctx.counters.count('tcp.flows.closed');
    }
    this.blocked.delete(flow);
    this.pendingAcks.delete(flow);
    this.lingering.delete(flow);
    this.reading.delete(flow);
    this.ringWaiters.delete(flow);
    this.queueWaiters.delete(flow);
  }

  flowLingering(flow: TcpFlow): void {
    this.lingering.add(flow);
  }

  hostFlushing(socket: net.Socket): void {
    this.flushing.add(socket);
    socket.once('close', () => this.flushing.delete(socket));
  }

  ringResized(delta: number): void {
    this.ringUsed += delta;
    if (delta > 0) {
      // Close to the limit: re-check every reading flow, so that no two reads together pass it.
      if (this.ringUsed + TCP_LIMITS.sendBufferCap + TCP_LIMITS.readChunk > this.ringLimit) {
        for (const flow of [...this.reading]) flow.updateHostReading();
      }
    } else if (delta < 0 && this.ringWaiters.size > 0) {
      const flows = [...this.ringWaiters];
      this.ringWaiters.clear();
      for (const flow of flows) flow.updateHostReading();
    }
  }

  ringBudgetAllows(flow: TcpFlow, growth: number): boolean {
    if (growth <= 0 || this.ringUsed + growth <= this.ringLimit) {
      this.ringWaiters.delete(flow);
      return true;
    }
    if (!this.ringWaiters.has(flow)) {
      this.ringWaiters.add(flow);
      this.ctx.counters.count('tcp.host.budget_wait');
    }
    return false;
  }

  ringTight(): boolean {
    return this.ringUsed * 2 > this.ringLimit;
  }

  setReading(flow: TcpFlow, reading: boolean): void {
    if (reading && flow.state !== 'closed') this.reading.add(flow);
    else this.reading.delete(flow);
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
    for (const flow of this.flows.values()) {
      try {
        flow.tick(now);
      } catch (err) {
        this.internalError('tick', err);
      }
    }
  }

  // ------------------------------------------------------------ forwarding

  /**
   * Listen on hostAddress:hostPort; each accepted connection is forwarded to
   * config.guestIp:guestPort as a new flow (from the gateway address).
   */
  addForward(spec: TcpForwardSpec): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.on('connection', (socket) => this.guard('accept', () => this.onAccept(socket, spec)));
    this.servers.push(server);
    return new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.servers.splice(this.servers.indexOf(server), 1);
        reject(err);
      };
      server.once('error', onError);
      server.listen({ host: spec.hostAddress, port: spec.hostPort }, () => {
        server.off('error', onError);
        server.on('error', (err) => this.ctx.logOnce(`tcp.forward.${spec.hostAddress}:${spec.hostPort}`, `TCP forward ${spec.hostAddress}:${spec.hostPort}: ${String(err)}`));
        resolve();
      });
    });
  }

  private onAccept(socket: net.Socket, spec: TcpForwardSpec): void {
    socket.on('error', () => { /* handled per flow below, or the socket is being refused */ });
    const guestAddr = this.ctx.config.guestIp;
    const remoteAddr = this.ctx.config.gateway;
    if (this.closed || !this.makeRoom()) {
      this.ctx.counters.count('tcp.drop.flow_limit');
      socket.resetAndDestroy();
      return;
    }
    let key: string | null = null;
    let port = 0;
    for (let i = 0; i < EPHEMERAL_COUNT; i++) {
      port = this.nextEphemeral;
      this.nextEphemeral = port + 1 >= 65536 ? EPHEMERAL_FIRST : port + 1;
      const candidate = flowKey(guestAddr, spec.guestPort, remoteAddr, port);
      if (!this.flows.has(candidate)) {
        key = candidate;
        break;
      }
    }
    if (key === null) {
      this.ctx.counters.count('tcp.drop.no_port');
      socket.resetAndDestroy();
      return;
    }
    const now = this.ctx.clock.now();
    const flow = new TcpFlow(this, key, { guestAddr, guestPort: spec.guestPort, remoteAddr, remotePort: port }, 'syn_sent', now);
    flow.socket = socket;
    flow.hostPaused = true; // pauseOnConnect: nothing is read until the guest accepts
    this.addFlow(flow);
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
    for (const flow of [...this.flows.values()]) {
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
