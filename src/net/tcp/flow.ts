/**
 * One TCP flow: the guest's TCP connection on one side, an ordinary host
 * socket (node:net) on the other, and the minimum of TCP needed to join them.
 *
 * Theory of operation (after passt's tcp.c). We are not a TCP stack: the host
 * kernel runs the real TCP on the host side, and we only speak enough TCP to
 * the guest to move its byte stream in and out of that socket, keeping the
 * two sides' windows in step.
 *
 * Lifecycle (one comment, all of it):
 *
 *   outbound (guest connects out):
 *     guest SYN -> CONNECTING (host connect() in flight; guest SYN
 *       retransmissions absorbed; no answer yet)
 *     host 'connect' -> SYN_RCVD (SYN-ACK sent, retransmitted on RTO)
 *     host error -> RST+ACK to the guest, gone
 *     guest ACK of our SYN -> ESTABLISHED
 *   inbound (a forwarded host port was connected):
 *     accept -> SYN_SENT (SYN to the guest from the gateway, retransmitted;
 *       host socket paused so its data waits in the host kernel)
 *     guest SYN-ACK -> ESTABLISHED (ACK sent, host socket resumed)
 *     guest RST -> host socket destroyed, gone
 *   ESTABLISHED, closing by flags rather than by more states:
 *     guest FIN (in order) -> socket.end() (half-close), FIN ACKed: guestFin
 *     host 'end' -> hostEof; our FIN goes out after the buffered data
 *     guest ACK of our FIN -> finAcked
 *     guestFin && finAcked -> TIME_WAIT (a short linger that re-ACKs
 *       retransmitted FINs), then gone
 *     guest RST -> socket destroyed (resetAndDestroy), gone
 *     host error/reset, retransmission give-up, idle timeout -> RST to the
 *       guest, host socket reset, gone
 *
 * Guest -> host: in-order payload is copied once (Buffer.from) into
 * socket.write() and acknowledged as soon as Node has taken it. On a flow to
 * the DNS address it goes through a DnsQueryStream instead (dns-stream.ts):
 * only whole, checked queries are written, the bytes of an incomplete one
 * are held there (and acknowledged), anything else resets the flow. The window
 * we advertise is what is left of a per-flow budget (RECV_QUEUE_LIMIT) after
 * the bytes Node still holds unsent (socket.writableLength), so a host peer
 * that does not read makes our window shrink to zero; 'drain' reopens it
 * with a window update. The right edge we advertised never moves left, and
 * we accept data up to it. Out-of-order data is dropped with a duplicate ACK
 * (no reassembly queue, as in passt: the guest retransmits); retransmitted
 * data is trimmed to what is new.
 *
 * Host -> guest: bytes read from the host go into a per-flow ring
 * (SendBuffer) holding everything from SND.UNA on. What the ring may hold is
 * the guest's window (capped at 4 MiB), and no read can take more than what
 * is left of it, nor grow the ring past the translator's memory budget
 * (`hostReadRoom`):
 *  - sockets with Node's `onread` (outbound flows) read into a buffer the
 *    flow sizes before each read (`hostReadBuffer`, which Node calls after
 *    every read): up to one 256 KiB read of what the flow may take while
 *    reads come back full, a small one (at most one MSS, and half the
 *    largest window the guest offered) after a short read or while not
 *    reading. The ring growth that read may need is set aside in the budget
 *    when it is sized (`ringReserved`), so nothing done meanwhile can make it
 *    not fit, and a reading flow is stopped only by its own next sizing. A
 *    flow that is not reading starts once that small read fits.
 *  - sockets with 'data' events (accepted ones) hand over Node's chunks:
 *    the flow takes what fits and gives the rest back (socket.unshift) to
 *    Node's stream buffer, which stops reading at its high-water mark.
 * Reading is ours to start and stop (`updateHostReading`): an onread socket
 * is paused before it connects, so Node starts no read of its own (not the
 * one it would start after 'connect'), reads start with socket.read(0) and
 * stop with socket.pause() (which stops the handle), and the onread
 * callback's answer stops Node after any read the flow did not want; a
 * 'data' socket is resumed and paused. So the host kernel's receive buffer,
 * and through it the host peer, sees the guest's flow control, a zero-window
 * flow takes nothing from its socket, and the ring never needs more room
 * than it has (a guest that shrinks its window gets at most what it had
 * offered when the read was sized).
 *
 * Segments of at most the guest's MSS are written straight into the guest's
 * receive buffers (ctx.out.reserve -> header into the handle's payload ->
 * copy from the ring -> checksum -> commit). When the guest negotiated
 * GUEST_TSO4 (ctx.guestOffloads.tso4) a segment is instead up to as many whole
 * MSS as fit a 64 KiB IPv4 packet, sent as one GSO frame (gso_size = MSS)
 * with only the pseudo-header sum in its checksum field (NEEDS_CSUM; the
 * guest treats it as locally generated data, and no byte of payload is
 * summed here) through the stack's offloaded output (reserve with OUT_LARGE, commitOffload). Never beyond the
 * guest's advertised window, either way. Loss recovery: RTO per RFC 6298 (1 s initial, 200 ms
 * floor, exponential backoff, give up after maxRetries) with go-back-N
 * from SND.UNA (an ACK up to the highest sequence ever sent, SND.MAX,
 * stays valid after the rewind), fast retransmit of the first segment on the third duplicate
 * ACK, and a persist timer probing a zero window (an ACK with SEQ=SND.UNA-1
 * that makes the guest answer with its window) while we have data for it or
 * the host side is still open (its data waits in the host socket, which we
 * do not read past the window). No congestion control: the
 * guest link is a memory ring, and loss there means the guest dropped frames.
 * Link back-pressure (reserve -> null) parks the flow until the
 * translator's whenWritable callback.
 *
 * Not used: SACK, timestamps, urgent data (URG is ignored), ECN.
 */
import type * as net from 'node:net';
import type { OutputReservation, StackContext } from '../context.js';
import { OUT_DONT_FRAGMENT, OUT_LARGE } from '../context.js';
import { ipHeaderLength } from '../ip/output.js';
import {
  TCP_ACK, TCP_FIN, TCP_PROTOCOL, TCP_PSH, TCP_RST, TCP_SYN,
  setTcpChecksum, setTcpPartialChecksum, tcpHeaderLength, writeTcpHeader,
  type TcpSegment,
} from '../wire/tcp.js';
import { SendBuffer } from './send-buffer.js';
import type { InAny } from '../inany.js';
import type { FlowEntry } from '../flows.js';
import type { DnsQueryStream } from '../dns-stream.js';
import { seqAdd, seqDiff, seqGt, seqInRange, seqLe, seqLt } from './sequence.js';

/** Tunables, all in one place (milliseconds and bytes). */
export const TCP_TIMING = {
  initialRto: 1000,
  minRto: 200,
  maxRto: 60_000,
  /** Data retransmissions (or unanswered zero-window probes) before the flow is reset. */
  maxRetries: 8,
  /** Host connect() in flight this long -> RST to the guest (BSD/libslirp TCPTV_KEEP_INIT). */
  connectTimeout: 75_000,
  /** SYN_RCVD / SYN_SENT not completed within this -> reset (passt SYN_TIMEOUT). */
  handshakeTimeout: 10_000,
  /** No traffic at all on an established flow for this long -> reset (passt ACT_TIMEOUT). */
  idleTimeout: 2 * 60 * 60 * 1000,
  /** Our FIN is out and the guest has gone quiet for this long -> reset (passt FIN_TIMEOUT). */
  finTimeout: 60_000,
  /** TIME_WAIT-like linger after both directions closed. */
  linger: 2_000,
};

export const TCP_LIMITS = {
  /** Per-flow cap on host -> guest bytes held (sent-unacked + unsent): the ring's largest allocation. */
  sendBufferCap: 4 * 1024 * 1024,
  /**
   * Ring memory each flow can count on (a ring's first allocation): the
   * host -> guest budget keeps this much per flow of maxTcpFlows (at most
   * half of it) apart from the part rings grow into, so flows that never ACK
   * cannot take the memory every other flow needs to move data at all.
   */
  ringFloor: 16 * 1024,
  /**
   * Largest single host read (the shared onread buffer; Node's own 'data'
   * reads are 64 KiB). 256 KiB: one read feeds several 64 KiB GSO frames to
   * the guest, so the runt at the end of each read is rarer.
   */
  readChunk: 256 * 1024,
  /** Per-flow budget for guest -> host bytes queued in Node (the window we advertise). */
  recvQueueLimit: 512 * 1024,
  /** Our window scale shift. */
  windowScale: 7,
  /** Smallest send MSS we honour (Linux tcp_min_snd_mss is 48). */
  minMss: 64,
  /** Largest TCP payload of one GSO frame to the guest: a 65535-byte IPv4 packet less IPv4 and TCP headers (well inside IPv6's 65535-byte payload too). */
  gsoMaxPayload: 65535 - 20 - 20,
  /**
   * Global budgets across all flows (maxTcpFlows x the per-flow caps would be
   * ~18 GiB). Host -> guest: the rings' allocations, and the growth set aside
   * for reads in progress; a flow reads only what fits its ring's allocation
   * or what is left of the budget (its first ringFloor bytes from a part kept
   * for floors), and waits for memory to be freed otherwise. Guest -> host: bytes queued in Node's write queues
   * (also those of flows already closed and still flushing); the window we
   * advertise shrinks to what is left, and guest data beyond it is dropped
   * (the guest retransmits).
   */
  hostToGuestBudget: 192 * 1024 * 1024,
  guestToHostBudget: 64 * 1024 * 1024,
};

export type FlowState = 'connecting' | 'syn_sent' | 'syn_rcvd' | 'established' | 'time_wait' | 'closed';

/** What a flow needs from the translator that owns it. */
export interface FlowOwner {
  readonly ctx: StackContext;
  /** Forget this flow (it is closed). */
  removeFlow(flow: TcpFlow): void;
  /** Park this flow until the link can take frames again. */
  blockOnLink(flow: TcpFlow): void;
  /** Send this flow's pending ACK at the end of the current batch. */
  scheduleAck(flow: TcpFlow): void;
  /** Call this flow's pump() once the current I/O phase is over (its host reads of this turn are in). */
  schedulePump(flow: TcpFlow): void;
  /** The flow entered TIME_WAIT (its slot may be reclaimed for a new flow). */
  flowLingering(flow: TcpFlow): void;
  /** The closed flow's host socket is still writing guest bytes out (destroyed by the owner's close()). */
  hostFlushing(socket: net.Socket): void;
  /** The flow's ring allocation changed from `from` to `to` bytes (host -> guest budget). */
  ringResized(from: number, to: number): void;
  /**
   * How many of `wanted` more bytes the flow's ring may take within the
   * budget (growing, or in the allocation it has); when fewer, the flow is
   * re-checked when memory is freed.
   */
  ringRoom(flow: TcpFlow, wanted: number): number;
  /** True while the host -> guest budget is under pressure: rings are trimmed to fit what they hold. */
  ringTight(): boolean;
  /** Guest -> host bytes queued in Node changed by `delta` (guest -> host budget). */
  hostQueueCharge(delta: number): void;
  /** Bytes left in the guest -> host budget. */
  hostQueueRoom(): number;
  /** Send this flow a window update once the guest -> host budget has room again. */
  waitForHostQueueRoom(flow: TcpFlow): void;
}

/** The guest-side addresses of a flow: our side is "remote" as the guest sees it. */
export interface FlowEndpoints {
  guestAddr: InAny;
  guestPort: number;
  remoteAddr: InAny;
  remotePort: number;
}

function randomIsn(): number {
  const word = new Uint32Array(1);
  globalThis.crypto.getRandomValues(word);
  return word[0]!;
}

export class TcpFlow {
  state: FlowState;
  socket: net.Socket | null = null;
  readonly buffer = new SendBuffer(TCP_LIMITS.sendBufferCap, TCP_LIMITS.ringFloor, (from, to) => {
    this.owner.ringResized(Math.max(from, this.ringReserved), Math.max(to, this.ringReserved));
  });

  // Send side (host -> guest).
  readonly iss = randomIsn();
  sndUna: number;
  sndNxt: number;
  /** Highest sequence number sent so far (SND.NXT before a go-back-N rewind): ACKs up to here are valid. */
  sndMax: number;
  /** The guest's window in bytes (already scaled). */
  sndWnd = 0;
  /** The largest window the guest has offered (sizes the first host read after a pause). */
  private largestWindow = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;
  /** Shift applied to the guest's window fields (0 until negotiated). */
  sndScale = 0;
  /** Segment payload limit towards the guest. */
  sendMss = 536;

  // Receive side (guest -> host).
  irs = 0;
  rcvNxt = 0;
  /** Our shift for the windows we advertise (0 unless both sides sent WS). */
  rcvScale = 0;
  /** Highest right edge we advertised: we accept data up to here. */
  rcvEdge = 0;

  // Closing flags.
  guestFin = false;
  hostEof = false;
  finAcked = false;

  // Timers (absolute ms; 0 = not armed).
  rtoAt = 0;
  rto = TCP_TIMING.initialRto;
  private srtt = -1;
  private rttvar = 0;
  retries = 0;
  private rttSeq = 0;
  private rttStart = -1;
  dupAcks = 0;
  stateSince: number;
  lastActivity: number;
  lingerUntil = 0;

  /** Whether we are reading the host socket (it is paused otherwise; see updateHostReading). */
  hostReading = false;
  /** The socket reads into the buffer hostReadBuffer sizes (Node's onread); false for sockets emitting 'data'. */
  sizedReads = false;
  /** Size of the buffer Node reads into next (sized reads). */
  private nextReadSize = 0;
  /** The last sized read filled its buffer (the host has more): the next one may be large. */
  private lastReadFull = false;
  /** The buffer Node reads into next is a small read (smallRead). */
  private nextReadSmall = true;
  /** Ring allocation set aside in the budget for the next sized read while reading (0 otherwise). */
  private ringReserved = 0;
  /** Guest bytes handed to socket.write() whose write has not completed (charged to the guest -> host budget). */
  hostQueued = 0;
  private hostQueueSettled = false;
  ackPending = false;
  linkBlocked = false;
  private lastWindowField = 0;
  /** On a flow to the DNS address: the check the guest's byte stream passes before it is written to the host. */
  dnsQueries: DnsQueryStream | null = null;
  /** The guest-side addresses and ports (the flow table entry's guest side). */
  readonly ends: FlowEndpoints;

  constructor(
    private readonly owner: FlowOwner,
    /** The flow's entry in the stack's flow table (its guest side is `ends`). */
    readonly entry: FlowEntry<TcpFlow>,
    state: 'connecting' | 'syn_sent',
    now: number,
  ) {
    this.ends = entry;
    entry.value = this;
    this.state = state;
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
    this.sndMax = this.iss;
    this.stateSince = now;
    this.lastActivity = now;
    const mtu = owner.ctx.mtu;
    this.sendMss = Math.max(TCP_LIMITS.minMss, Math.min(536, mtu - ipHeaderLength(entry.guestAddr) - 20));
  }

  private get ctx(): StackContext {
    return this.owner.ctx;
  }

  private count(name: string, n = 1): void {
    this.ctx.counters.count(name, n);
  }

  /** The MSS we advertise: the MTU less the IP header of the flow's family (20, or 40 for IPv6) and 20 of TCP. */
  private ourMss(): number {
    return Math.max(TCP_LIMITS.minMss, this.ctx.mtu - ipHeaderLength(this.ends.guestAddr) - 20);
  }

  private setSendWindow(bytes: number): void {
    this.sndWnd = bytes;
    if (bytes > this.largestWindow) this.largestWindow = bytes;
  }

  /** Take the guest's SYN options (MSS, window scale) and initial window. */
  private takeSynOptions(seg: TcpSegment, weOfferScale: boolean): void {
    const mtuMss = this.ourMss();
    const guestMss = seg.options.mss ?? 536;
    this.sendMss = Math.max(TCP_LIMITS.minMss, Math.min(guestMss, mtuMss));
    if (seg.options.windowScale !== null && weOfferScale) {
      this.sndScale = seg.options.windowScale;
      this.rcvScale = TCP_LIMITS.windowScale;
    } else {
      this.sndScale = 0;
      this.rcvScale = 0;
    }
    this.setSendWindow(seg.window); // windows in SYN segments are never scaled
    // ... but what the guest can take is as much once scaled: the first host read is sized by that.
    this.largestWindow = Math.max(this.largestWindow, seg.window * (1 << this.sndScale));
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
  }

  // ---------------------------------------------------------------- opening

  /** Outbound: the guest's SYN opened this flow; remember its side. */
  acceptGuestSyn(seg: TcpSegment): void {
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.rcvEdge = this.rcvNxt;
    this.takeSynOptions(seg, true);
  }

  /** Outbound: the host connect succeeded; answer the guest's SYN. */
  onHostConnected(now: number): void {
    if (this.state !== 'connecting') return;
    this.state = 'syn_rcvd';
    this.stateSince = now;
    this.lastActivity = now;
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.sendSynAck();
    this.rtoAt = now + this.rto;
    this.updateHostReading();
  }

  private sendSynAck(): void {
    const opts: { mss: number; windowScale?: number } = { mss: this.ourMss() };
    if (this.rcvScale > 0) opts.windowScale = this.rcvScale;
    this.emit(TCP_SYN | TCP_ACK, this.iss, 0, 0, opts);
  }

  /** Inbound: send (or resend) our SYN to the guest. */
  sendSyn(now: number): void {
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.emit(TCP_SYN, this.iss, 0, 0, { mss: this.ourMss(), windowScale: TCP_LIMITS.windowScale });
    if (!this.rtoAt) this.rtoAt = now + this.rto;
  }

  // ----------------------------------------------------------- guest input

  /** A segment from the guest for this flow (parsed, checksum verified). */
  input(seg: TcpSegment, now: number): void {
    this.lastActivity = now;
    switch (this.state) {
      case 'connecting':
        return this.inputConnecting(seg);
      case 'syn_sent':
        return this.inputSynSent(seg, now);
      case 'syn_rcvd':
        return this.inputSynRcvd(seg, now);
      case 'established':
        return this.inputEstablished(seg, now);
      case 'time_wait':
        return this.inputTimeWait(seg);
      case 'closed':
        return;
    }
  }

  private inputConnecting(seg: TcpSegment): void {
    if (seg.flags & TCP_RST) {
      this.count('tcp.rst.received');
      this.close(false);
      return;
    }
    if ((seg.flags & TCP_SYN) && seg.seq === this.irs) {
      this.count('tcp.syn.absorbed'); // retransmitted SYN while the host connect is in flight
      return;
    }
    this.count('tcp.drop.unexpected');
  }

  private inputSynSent(seg: TcpSegment, now: number): void {
    const ackOk = (seg.flags & TCP_ACK) !== 0 && seg.ack === seqAdd(this.iss, 1);
    if ((seg.flags & TCP_ACK) && !ackOk) {
      if (!(seg.flags & TCP_RST)) this.sendRstSeq(seg.ack);
      this.count('tcp.drop.bad_ack');
      return;
    }
    if (seg.flags & TCP_RST) {
      if (ackOk) {
        this.count('tcp.forward.refused');
        this.count('tcp.rst.received');
        this.close(true);
      }
      return;
    }
    if (!(seg.flags & TCP_SYN) || !ackOk) {
      this.count('tcp.drop.unexpected');
      return;
    }
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.rcvEdge = this.rcvNxt;
    this.takeSynOptions(seg, true);
    this.sndUna = seqAdd(this.iss, 1);
    this.sndNxt = this.sndUna;
    this.sampleRttOnHandshake(now);
    this.enterEstablished(now);
    this.sendAck();
    this.updateHostReading();
  }

  private inputSynRcvd(seg: TcpSegment, now: number): void {
    if (seg.flags & TCP_RST) {
      if (seqInRange(seg.seq, this.rcvNxt, seqAdd(this.rcvNxt, Math.max(1, seqDiff(this.rcvEdge, this.rcvNxt))))) {
        this.count('tcp.rst.received');
        this.close(false);
      }
      return;
    }
    if (seg.flags & TCP_SYN) {
      if (seg.seq === this.irs && !(seg.flags & TCP_ACK)) {
        this.count('tcp.syn.retransmit');
        this.sendSynAck();
      } else {
        this.count('tcp.drop.unexpected');
      }
      return;
    }
    if (!(seg.flags & TCP_ACK)) {
      this.count('tcp.drop.unexpected');
      return;
    }
    if (seg.ack !== seqAdd(this.iss, 1)) {
      this.sendRstSeq(seg.ack);
      this.count('tcp.drop.bad_ack');
      return;
    }
    this.sndUna = seg.ack;
    this.setSendWindow(seg.window * (1 << this.sndScale));
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
    this.sampleRttOnHandshake(now);
    this.enterEstablished(now);
    this.inputEstablished(seg, now);
    this.updateHostReading();
  }

  private enterEstablished(now: number): void {
    this.state = 'established';
    this.stateSince = now;
    this.rtoAt = 0;
    this.retries = 0;
    this.count('tcp.flows.established');
  }

  private sampleRttOnHandshake(now: number): void {
    if (this.retries === 0) this.rttSample(Math.max(0, now - this.stateSince));
    this.rto = this.computedRto();
  }

  private inputTimeWait(seg: TcpSegment): void {
    if (seg.flags & TCP_RST) {
      this.close(false);
      return;
    }
    if (seg.flags & TCP_FIN) this.sendAck(); // our ACK of its FIN was lost
  }

  /** RFC 9293 §3.10.7.4 segment arrival, minus what we do not implement. */
  private inputEstablished(seg: TcpSegment, now: number): void {
    const flags = seg.flags;
    let len = seg.payload.length;
    const segLen = len + (flags & TCP_FIN ? 1 : 0);
    const wnd = Math.max(0, seqDiff(this.rcvEdge, this.rcvNxt));

    // 1. Sequence acceptability.
    let acceptable: boolean;
    if (segLen === 0) {
      acceptable = wnd === 0 ? seg.seq === this.rcvNxt : seqInRange(seg.seq, this.rcvNxt, seqAdd(this.rcvNxt, wnd)) || seg.seq === this.rcvNxt;
    } else if (wnd === 0) {
      // Zero window: only our zero-length probe edge is acceptable; still take ACK/FIN info below if exactly in order.
      acceptable = seg.seq === this.rcvNxt && len === 0;
    } else {
      const end = seqAdd(seg.seq, segLen - 1);
      acceptable = seqInRange(seg.seq, this.rcvNxt, seqAdd(this.rcvNxt, wnd)) || seqInRange(end, this.rcvNxt, seqAdd(this.rcvNxt, wnd));
    }
    // Retransmitted, already-acknowledged segments land left of the window: answer with an ACK.
    if (!acceptable) {
      if (flags & TCP_RST) return;
      if (segLen > 0 && seqLe(seqAdd(seg.seq, segLen), this.rcvNxt)) this.count('tcp.rx.duplicate');
      else this.count('tcp.drop.out_of_window');
      // Still learn from its ACK field: a zero-window reply to our probe carries the window we wait for.
      if ((flags & TCP_ACK) && !(flags & TCP_SYN) && !this.processAck(seg, now, segLen > 0)) return;
      this.sendAck();
      return;
    }

    // 2. RST (accepted anywhere in the window; the guest is the only sender here).
    if (flags & TCP_RST) {
      this.count('tcp.rst.received');
      this.close(false);
      return;
    }
    // 3. SYN in the window: challenge ACK (RFC 5961 §4).
    if (flags & TCP_SYN) {
      this.count('tcp.drop.unexpected');
      this.sendAck();
      return;
    }
    // 4. ACK.
    if (!(flags & TCP_ACK)) {
      this.count('tcp.drop.unexpected');
      return;
    }
    if (!this.processAck(seg, now, len > 0 || (flags & TCP_FIN) !== 0)) return;
    if (this.state !== 'established') return; // processAck may finish the flow

    // 5. Data.
    let data = seg.payload;
    let seq = seg.seq;
    if (len > 0) {
      if (this.guestFin) {
        this.count('tcp.drop.after_fin');
        this.sendAck();
        return;
      }
      const skip = seqDiff(this.rcvNxt, seq);
      if (skip > 0) {
        // Partly retransmitted: keep only the new tail.
        data = data.subarray(Math.min(skip, len));
        seq = this.rcvNxt;
        len = data.length;
      } else if (skip < 0) {
        // A hole before it: no reassembly, ask for what we miss.
        this.count('tcp.drop.out_of_order');
        this.sendAck();
        return;
      }
      const room = Math.max(0, seqDiff(this.rcvEdge, this.rcvNxt));
      if (len > room) {
        this.count('tcp.drop.beyond_window', len - room);
        data = data.subarray(0, room);
        len = room;
      }
      if (len > 0) {
        if (!this.writeToHost(data)) return;
        this.rcvNxt = seqAdd(this.rcvNxt, len);
        this.count('tcp.rx.bytes', len);
        this.ackPending = true;
      }
    }
    // 6. FIN, only once everything before it is in.
    if (flags & TCP_FIN) {
      const finSeq = seqAdd(seg.seq, seg.payload.length);
      if (!this.guestFin && finSeq === this.rcvNxt) {
        this.guestFin = true;
        this.rcvNxt = seqAdd(this.rcvNxt, 1);
        try {
          this.socket?.end();
        } catch {
          /* socket already gone: its 'close' handles the flow */
        }
        this.sendAck();
        this.maybeFinished(now);
        return;
      }
      if (this.guestFin && seqAdd(finSeq, 1) === this.rcvNxt) {
        this.sendAck(); // retransmitted FIN
        return;
      }
    }
    if (this.ackPending) this.owner.scheduleAck(this);
  }

  /**
   * ACK field and window of an acceptable segment. Returns false when the
   * segment must be dropped (it acknowledges something we never sent).
   */
  private processAck(seg: TcpSegment, now: number, carriesData: boolean): boolean {
    const ack = seg.ack;
    if (seqGt(ack, this.sndMax)) {
      this.count('tcp.drop.bad_ack');
      this.sendAck();
      return false;
    }
    const oldWnd = this.sndWnd;
    const acked = seqDiff(ack, this.sndUna);
    if (acked > 0) {
      const dataAcked = Math.min(acked, this.buffer.length);
      this.buffer.consume(dataAcked);
      if (acked > dataAcked && this.hostEof) this.finAcked = true;
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack; // an ACK for data sent before a go-back-N rewind
      this.dupAcks = 0;
      this.retries = 0;
      if (this.rttStart >= 0 && seqGt(ack, this.rttSeq)) {
        this.rttSample(now - this.rttStart);
        this.rttStart = -1;
      }
      this.rto = this.computedRto();
      this.rtoAt = seqDiff(this.sndNxt, this.sndUna) > 0 ? now + this.rto : 0;
    }
    // Window update (SND.WL1/WL2 guard against stale segments).
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack))) {
      this.setSendWindow(seg.window * (1 << this.sndScale));
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (oldWnd === 0 && this.sndWnd > 0 && seqDiff(this.sndNxt, this.sndUna) === 0) {
        // The zero window opened: leave persist mode with a fresh timer.
        this.rtoAt = 0;
        this.retries = 0;
        this.rto = this.computedRto();
      }
    }
    if (acked === 0 && !carriesData && this.sndWnd === oldWnd && seqDiff(this.sndNxt, this.sndUna) > 0) {
      this.dupAcks++;
      if (this.dupAcks === 3) this.fastRetransmit(now);
    } else if (acked === 0 && this.sndWnd === 0 && seqDiff(this.sndNxt, this.sndUna) === 0) {
      this.retries = 0; // the guest answers our zero-window probes: it is alive
    }
    if (this.finAcked && this.guestFin) {
      this.maybeFinished(now);
      return false;
    }
    this.pump(now);
    this.updateHostReading();
    return true;
  }

  /**
   * Write guest payload to the host socket (copied: `data` aliases guest
   * memory); through the DNS query check first on a flow to the DNS address.
   * False if the data was not taken (the flow may have been reset).
   */
  private writeToHost(data: Uint8Array): boolean {
    const socket = this.socket;
    if (!socket || socket.destroyed || socket.writableEnded) {
      this.count('tcp.drop.host_closed');
      return false;
    }
    if (this.owner.hostQueueRoom() < data.length) {
      // Every flow together already holds the guest -> host budget in Node: drop (the guest retransmits).
      this.count('tcp.drop.memory');
      this.owner.waitForHostQueueRoom(this);
      return false;
    }
    let bytes: Buffer;
    if (this.dnsQueries) {
      const checked = this.dnsQueries.push(data);
      if (typeof checked === 'string') {
        this.count(`dns.tcp.drop.${checked}`);
        this.abort();
        return false;
      }
      if (checked.queries === 0) return true; // held until its message is whole
      this.count('dns.tcp.queries', checked.queries);
      bytes = checked.bytes;
    } else {
      bytes = Buffer.from(data);
    }
    const n = bytes.length;
    this.hostQueued += n;
    this.owner.hostQueueCharge(n);
    try {
      // Node calls back once per write: when it reached the kernel, or with an error when the socket is destroyed.
      socket.write(bytes, () => this.hostWriteDone(n));
    } catch {
      this.hostWriteDone(n);
      this.count('tcp.drop.host_closed');
      return false;
    }
    return true;
  }

  private hostWriteDone(n: number): void {
    if (this.hostQueueSettled) return;
    this.hostQueued -= n;
    this.owner.hostQueueCharge(-n);
  }

  /** The host socket closed: whatever it still held is gone (later write callbacks are ignored). */
  settleHostQueue(): void {
    if (this.hostQueueSettled) return;
    this.hostQueueSettled = true;
    if (this.hostQueued !== 0) this.owner.hostQueueCharge(-this.hostQueued);
    this.hostQueued = 0;
  }

  // ------------------------------------------------------------ host events

  /**
   * Bytes read from the host socket: never more than hostReadRoom allowed
   * (sized reads, or a 'data' chunk cut down by onHostChunk), so the ring
   * always has room for them.
   */
  onHostData(bytes: Uint8Array, now: number): void {
    if (this.state === 'closed' || this.state === 'time_wait' || this.hostEof) return;
    this.lastActivity = now;
    this.lastReadFull = bytes.length === this.nextReadSize;
    const taken = this.buffer.append(bytes);
    if (taken < bytes.length) {
      // Unreachable (every read is sized to the room); never lose bytes silently.
      this.count('tcp.drop.host_overflow');
      this.abort();
      return;
    }
    this.count('tcp.host.read.bytes', bytes.length);
    if (this.lastReadFull && this.nextReadSmall && this.hostReading) {
      // A small first read came back full: the large one after it usually follows at once, so
      // send both together (one segment train, no runt between) at the end of this I/O phase.
      this.owner.schedulePump(this);
    } else {
      this.pump(now);
    }
    this.updateHostReading();
  }

  onHostEnd(now: number): void {
    if (this.state === 'closed' || this.state === 'time_wait') return;
    this.lastActivity = now;
    this.hostEof = true;
    this.stopHostReading();
    this.pump(now);
  }

  /** Node's write queue for the host drained: reopen the window we advertise. */
  onHostDrain(): void {
    if (this.state !== 'established' || this.guestFin) return;
    const field = this.windowField(false);
    if (field > this.lastWindowField) {
      this.count('tcp.window_update');
      this.sendAck();
    }
  }

  /** Host socket error (refused, reset, unreachable ...). */
  onHostError(): void {
    if (this.state === 'closed') return;
    if (this.state === 'time_wait') {
      this.close(false);
      return;
    }
    if (this.state === 'connecting') {
      this.count('tcp.connect.failed');
      this.sendRstAck(0, this.rcvNxt);
      this.close(false);
      return;
    }
    if (this.state === 'syn_sent') {
      this.close(false);
      return;
    }
    this.count('tcp.host.reset');
    this.abort();
  }

  /** Host socket closed without an error: only matters if we were still waiting on it. */
  onHostClose(hadError: boolean): void {
    if (this.state === 'closed' || this.state === 'time_wait') return;
    if (hadError) return this.onHostError();
    if (this.state === 'connecting' || this.state === 'syn_sent') {
      this.onHostError();
      return;
    }
    // Closed before 'end' reached us (e.g. destroyed from elsewhere): treat as EOF.
    if (!this.hostEof) this.onHostEnd(this.ctx.clock.now());
  }

  /**
   * A chunk from a socket emitting 'data' (no onread): take what the flow
   * may hold, stop reading and give the rest back to the socket.
   */
  onHostChunk(chunk: Buffer, now: number): void {
    if (this.state === 'closed' || this.state === 'time_wait' || this.hostEof) return;
    const room = this.hostReadRoom(chunk.length);
    if (room < chunk.length) {
      this.stopHostReading();
      this.socket?.unshift(chunk.subarray(room));
      if (room === 0) return;
      chunk = chunk.subarray(0, room);
    }
    this.onHostData(chunk, now);
  }

  /**
   * How many of `wanted` bytes the flow may read from the host now: no more
   * than what is left of the guest's window (at most the ring cap) after
   * what the ring holds, and only as far as the budget lets the ring grow.
   */
  private hostReadRoom(wanted: number): number {
    if ((this.state !== 'established' && this.state !== 'syn_rcvd') || this.hostEof) return 0;
    const window = Math.min(TCP_LIMITS.sendBufferCap, this.sndWnd) - this.buffer.length;
    if (window <= 0) return 0;
    return this.owner.ringRoom(this, Math.min(window, wanted));
  }

  /** A small read: at most one MSS, within the ring floor, and within what a guest avoiding silly windows opens. */
  private smallRead(): number {
    return Math.max(1, Math.min(this.sendMss, TCP_LIMITS.ringFloor, this.largestWindow >>> 1));
  }

  /** The ring allocation the budget counts for this flow: what it has, or what its next read may grow it to. */
  get ringCharged(): number {
    return Math.max(this.buffer.capacity, this.ringReserved);
  }

  private reserveRing(capacity: number): void {
    const before = this.ringCharged;
    this.ringReserved = capacity;
    const after = this.ringCharged;
    if (after !== before) this.owner.ringResized(before, after);
  }

  /**
   * Node's onread buffer for the next host read (Node asks after every read,
   * and once when the socket is created): a view of `shared` as long as the
   * flow may take now, its ring growth set aside in the budget; or, when it
   * is not reading (or stops now), as long as the small read it starts with
   * once that fits (updateHostReading).
   */
  hostReadBuffer(shared: Buffer): Buffer {
    this.sizedReads = true;
    if (this.hostReading) {
      const room = this.hostReadRoom(this.lastReadFull ? TCP_LIMITS.readChunk : this.smallRead());
      if (room > 0) {
        this.nextReadSize = room;
        this.nextReadSmall = !this.lastReadFull;
        this.reserveRing(this.buffer.capacityFor(room));
        return shared.subarray(0, room);
      }
      this.stopHostReading();
    }
    this.nextReadSize = this.smallRead();
    this.nextReadSmall = true;
    return shared.subarray(0, this.nextReadSize);
  }

  /**
   * Start host reads when the flow may take its next one. A reading flow is
   * stopped here only if its socket emits 'data'; a sized read is already
   * set aside, and the next sizing stops the flow if nothing more fits.
   */
  updateHostReading(): void {
    const socket = this.socket;
    if (!socket || socket.destroyed) return;
    if (this.hostReading) {
      if (!this.sizedReads && this.hostReadRoom(TCP_LIMITS.readChunk) === 0) this.stopHostReading();
      return;
    }
    const wanted = this.sizedReads ? this.nextReadSize : TCP_LIMITS.readChunk;
    const room = this.hostReadRoom(wanted);
    if (room === 0 || (this.sizedReads && room < wanted)) return;
    this.hostReading = true;
    if (this.sizedReads) this.reserveRing(this.buffer.capacityFor(wanted));
    try {
      // read(0) starts the handle of an onread socket without making the stream flow.
      if (this.sizedReads) socket.read(0);
      else socket.resume();
    } catch {
      /* a socket being torn down: its events close the flow */
    }
  }

  private stopHostReading(): void {
    if (!this.hostReading) return;
    this.hostReading = false;
    this.reserveRing(0);
    try {
      this.socket?.pause(); // stops the handle of an onread socket at once
    } catch {
      /* a socket being torn down: its events close the flow */
    }
  }

  // ------------------------------------------------------------ sending

  /** Window field to put in a segment we send (and remember the right edge). */
  private windowField(syn: boolean): number {
    const socket = this.socket;
    const queued = socket ? socket.writableLength : 0;
    let avail = Math.max(0, TCP_LIMITS.recvQueueLimit - queued);
    const room = this.owner.hostQueueRoom();
    if (room < avail) {
      // The guest -> host budget is nearly spent: offer only what is left (a window update follows when it frees).
      avail = room;
      this.owner.waitForHostQueueRoom(this);
    }
    const scale = syn ? 0 : this.rcvScale;
    let field = Math.min(0xffff, Math.floor(avail / (1 << scale)));
    const owed = seqDiff(this.rcvEdge, this.rcvNxt);
    if (owed > 0 && (field << scale) < owed) field = Math.min(0xffff, Math.ceil(owed / (1 << scale))); // never move the right edge left
    if (this.state === 'syn_sent') return field; // the guest's sequence space is not known yet
    const edge = seqAdd(this.rcvNxt, field << scale);
    if (seqGt(edge, this.rcvEdge)) this.rcvEdge = edge;
    return field;
  }

  /**
   * Build one segment in the guest's receive buffer: header, `dataLen` bytes
   * from the ring at `dataOffset`, checksum. False on link back-pressure.
   */
  private emit(flags: number, seq: number, dataOffset: number, dataLen: number, synOptions?: { mss: number; windowScale?: number }): boolean {
    const headerLen = synOptions ? tcpHeaderLength(synOptions) : 20;
    const { guestAddr, guestPort, remoteAddr, remotePort } = this.ends;
    const gso = this.gsoOutput();
    const out: OutputReservation | null = this.ctx.out.reserve(remoteAddr, guestAddr, TCP_PROTOCOL, headerLen + dataLen,
      gso ? OUT_DONT_FRAGMENT | OUT_LARGE : OUT_DONT_FRAGMENT);
    if (!out) {
      this.count('tcp.link.backpressure');
      this.linkBlocked = true;
      this.owner.blockOnLink(this);
      return false;
    }
    const l4 = out.payload;
    const isSyn = (flags & TCP_SYN) !== 0;
    const window = this.windowField(isSyn);
    writeTcpHeader(l4, {
      srcPort: remotePort,
      dstPort: guestPort,
      seq,
      ack: flags & TCP_ACK ? this.rcvNxt : 0,
      flags,
      window,
      ...(synOptions ?? {}),
    });
    if (dataLen > 0) this.buffer.copyOut(dataOffset, dataLen, l4, headerLen);
    this.entry.countToGuest(dataLen);
    if (gso) {
      // Partial checksum, and one GSO frame of sendMss segments when longer.
      setTcpPartialChecksum(l4, remoteAddr, guestAddr, headerLen + dataLen);
      out.commitOffload(16, headerLen, this.sendMss);
    } else {
      setTcpChecksum(l4.subarray(0, headerLen + dataLen), remoteAddr, guestAddr);
      out.commit();
    }
    if (flags & TCP_ACK) {
      this.ackPending = false;
      this.lastWindowField = window;
    }
    return true;
  }

  /** Whether the guest takes GSO TCP frames of this flow's family now (GUEST_TSO4/TSO6, which imply GUEST_CSUM). */
  private gsoOutput(): boolean {
    const offloads = this.ctx.guestOffloads;
    return typeof this.ends.guestAddr === 'number' ? offloads.tso4 : offloads.tso6;
  }

  /** Largest segment payload to build: the MSS, or as many whole MSS as fit one GSO frame. */
  private maxSegment(): number {
    if (!this.gsoOutput()) return this.sendMss;
    return Math.max(this.sendMss, Math.floor(TCP_LIMITS.gsoMaxPayload / this.sendMss) * this.sendMss);
  }

  /** Send a pure ACK now (or when the link is writable again). */
  sendAck(): void {
    this.ackPending = true;
    if (this.state === 'closed' || this.state === 'connecting' || this.state === 'syn_sent') return;
    this.emit(TCP_ACK, this.sndNxt, 0, 0);
  }

  /** RST with the given sequence number (for an unacceptable ACK). */
  private sendRstSeq(seq: number): void {
    this.emit(TCP_RST, seq, 0, 0);
    this.count('tcp.rst.sent');
  }

  private sendRstAck(seq: number, ack: number): void {
    const saved = this.rcvNxt;
    this.rcvNxt = ack;
    this.emit(TCP_RST | TCP_ACK, seq, 0, 0);
    this.rcvNxt = saved;
    this.count('tcp.rst.sent');
  }

  /** Bytes of data (not FIN) sent but not acknowledged. */
  private dataInFlight(): number {
    return Math.min(Math.max(0, seqDiff(this.sndNxt, this.sndUna)), this.buffer.length);
  }

  private finSent(): boolean {
    if (this.finAcked) return true;
    return this.hostEof && seqDiff(this.sndNxt, this.sndUna) > this.buffer.length;
  }

  /** Send what the guest's window allows from the ring (and our FIN after it). */
  pump(now: number = this.ctx.clock.now()): void {
    if (this.state !== 'established' || this.linkBlocked) return;
    const maxSegment = this.maxSegment();
    for (;;) {
      if (this.finSent()) break;
      const inFlight = this.dataInFlight();
      const unsent = this.buffer.length - inFlight;
      const room = seqDiff(seqAdd(this.sndUna, this.sndWnd), this.sndNxt);
      if (unsent > 0) {
        if (room <= 0) break;
        const len = Math.min(unsent, maxSegment, room);
        // Sender silly-window avoidance: a window-limited runt waits for the ACK that opens more.
        if (len < this.sendMss && len < unsent && inFlight > 0) break;
        const last = len === unsent;
        const fin = last && this.hostEof;
        const flags = TCP_ACK | (last ? TCP_PSH : 0) | (fin ? TCP_FIN : 0);
        const isNew = !seqLt(this.sndNxt, this.sndMax);
        if (!this.emit(flags, this.sndNxt, inFlight, len)) break;
        if (isNew && this.rttStart < 0) {
          // Time one new segment per round trip (Karn: never a retransmitted one).
          this.rttStart = now;
          this.rttSeq = this.sndNxt;
        }
        this.sndNxt = seqAdd(this.sndNxt, len + (fin ? 1 : 0));
        if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
        else this.count('tcp.retransmitted.bytes', len);
        this.count('tcp.tx.bytes', len);
      } else if (this.hostEof) {
        if (!this.emit(TCP_ACK | TCP_FIN, this.sndNxt, 0, 0)) break;
        this.sndNxt = seqAdd(this.sndNxt, 1);
        if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
      } else {
        break;
      }
    }
    this.armTimer(now);
  }

  /** Whether a zero window is probed: we hold unsent data, or the host may have some we did not read. */
  private dataWaiting(): boolean {
    return this.buffer.length - this.dataInFlight() > 0 || !this.hostEof;
  }

  private armTimer(now: number): void {
    const outstanding = seqDiff(this.sndNxt, this.sndUna) > 0;
    if (outstanding || (this.sndWnd === 0 && this.dataWaiting())) {
      if (!this.rtoAt) this.rtoAt = now + this.rto;
    } else {
      this.rtoAt = 0;
    }
  }

  private fastRetransmit(now: number): void {
    const len = Math.min(this.sendMss, this.dataInFlight());
    this.count('tcp.fast_retransmits');
    this.count('tcp.retransmits');
    this.rttStart = -1; // Karn: no sample from retransmitted data
    if (len > 0) {
      const fin = this.hostEof && len === this.buffer.length && this.finSent();
      this.emit(TCP_ACK | (fin ? TCP_FIN : 0), this.sndUna, 0, len);
    } else if (this.finSent()) {
      this.emit(TCP_ACK | TCP_FIN, this.sndUna, 0, 0);
    }
    this.rtoAt = now + this.rto;
  }

  /** Link writable again after back-pressure. */
  onLinkWritable(now: number): void {
    this.linkBlocked = false;
    if (this.state === 'established') this.pump(now);
    if (this.state === 'syn_sent') this.emit(TCP_SYN, this.iss, 0, 0, { mss: this.ourMss(), windowScale: TCP_LIMITS.windowScale });
    if (this.state === 'syn_rcvd') this.sendSynAck();
    if (this.ackPending && !this.linkBlocked) this.sendAck();
    this.updateHostReading();
  }

  // ------------------------------------------------------------ timers

  private rttSample(r: number): void {
    if (this.srtt < 0) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
  }

  private computedRto(): number {
    if (this.srtt < 0) return TCP_TIMING.initialRto;
    const rto = this.srtt + Math.max(10, 4 * this.rttvar);
    return Math.min(TCP_TIMING.maxRto, Math.max(TCP_TIMING.minRto, rto));
  }

  /** Timers for this flow at time `now`. */
  tick(now: number): void {
    const capacity = this.buffer.capacity;
    if (capacity > 0) {
      // Give back ring memory the flow no longer uses (all of it when drained).
      this.buffer.trim(this.owner.ringTight());
      if (this.buffer.capacity !== capacity) this.updateHostReading();
    }
    // What the next read needs set aside shrinks as the guest ACKs what the ring holds.
    if (this.ringReserved > 0) this.reserveRing(this.buffer.capacityFor(this.nextReadSize));
    switch (this.state) {
      case 'connecting':
        if (now - this.stateSince >= TCP_TIMING.connectTimeout) {
          this.count('tcp.timeout.connect');
          this.sendRstAck(0, this.rcvNxt);
          this.close(true);
        }
        return;
      case 'syn_sent':
      case 'syn_rcvd':
        if (now - this.stateSince >= TCP_TIMING.handshakeTimeout) {
          this.count('tcp.timeout.handshake');
          if (this.state === 'syn_rcvd') this.sendRstSeq(this.sndNxt);
          this.close(true);
          return;
        }
        if (this.rtoAt && now >= this.rtoAt) {
          this.retries++;
          this.rto = Math.min(TCP_TIMING.maxRto, this.rto * 2);
          this.rtoAt = now + this.rto;
          this.count('tcp.retransmits');
          if (this.state === 'syn_sent') this.sendSyn(now);
          else this.sendSynAck();
        }
        return;
      case 'time_wait':
        if (now >= this.lingerUntil) this.close(false);
        return;
      case 'closed':
        return;
      case 'established':
        break;
    }
    const idleLimit = this.finSent() && !this.guestFin ? TCP_TIMING.finTimeout : TCP_TIMING.idleTimeout;
    if (now - this.lastActivity >= idleLimit) {
      this.count('tcp.timeout.idle');
      this.abort();
      return;
    }
    if (!this.rtoAt || now < this.rtoAt) return;
    this.rtoAt = 0;
    this.retries++;
    if (this.retries > TCP_TIMING.maxRetries) {
      this.count('tcp.timeout.retransmit');
      this.abort();
      return;
    }
    this.rto = Math.min(TCP_TIMING.maxRto, this.rto * 2);
    this.rttStart = -1;
    if (seqDiff(this.sndNxt, this.sndUna) > 0) {
      // Go back to SND.UNA and resend what the window allows.
      this.count('tcp.retransmits');
      this.sndNxt = this.sndUna;
      this.pump(now);
    } else if (this.sndWnd === 0 && this.dataWaiting()) {
      // Zero-window probe: an old sequence number makes the guest answer with its window.
      this.count('tcp.zero_window_probes');
      this.emit(TCP_ACK, seqAdd(this.sndUna, -1), 0, 0);
      this.rtoAt = now + this.rto;
    } else {
      this.retries = 0;
    }
  }

  // ------------------------------------------------------------ closing

  private maybeFinished(now: number): void {
    if (this.state !== 'established' || !this.guestFin || !this.finAcked) return;
    this.state = 'time_wait';
    this.rtoAt = 0;
    this.lingerUntil = now + TCP_TIMING.linger;
    this.buffer.release();
    this.count('tcp.flows.completed');
    this.owner.flowLingering(this);
  }

  /** RST to the guest and reset the host side. */
  abort(): void {
    if (this.state === 'closed') return;
    if (this.state === 'established' || this.state === 'syn_rcvd') {
      this.sendRstAck(this.sndNxt, this.rcvNxt);
    }
    this.close(true);
  }

  /** Forget the flow; `resetHost` sends a TCP RST to the host peer (instead of a FIN). */
  close(resetHost: boolean): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.rtoAt = 0;
    this.hostReading = false;
    this.reserveRing(0);
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      try {
        if (resetHost || !this.guestFin || !this.hostEof) {
          // resetAndDestroy (SO_LINGER 0 -> RST) is refused by libuv once we shut the write side down.
          if (typeof socket.resetAndDestroy === 'function' && !socket.connecting && !socket.writableEnded) socket.resetAndDestroy();
          else socket.destroy();
        } else if (socket.writableLength > 0) {
          // Both sides closed cleanly but Node still holds guest bytes for a slow host reader:
          // let it flush (the socket ends itself), with a bound.
          socket.setTimeout(TCP_TIMING.finTimeout, () => socket.destroy());
          this.owner.hostFlushing(socket);
        } else {
          socket.destroy();
        }
      } catch {
        /* already gone */
      }
    }
    this.buffer.release();
    this.owner.removeFlow(this);
  }
}
