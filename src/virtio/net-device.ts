/**
 * The virtio-net device (virtio 1.2 §5.1): one receive queue (0) and one
 * transmit queue (1), offered to a vhost-user session as a `VirtioDevice`
 * and to the network stack as a `NetLink`.
 *
 * Theory of operation.
 *
 * Negotiation. `deviceFeatures` is the one constant OFFERED_FEATURES:
 * VERSION_1, MAC, STATUS, MTU, MRG_RXBUF, EVENT_IDX, INDIRECT_DESC and
 * CTRL_VQ (the frontend, QEMU or cloud-hypervisor, serves the control queue
 * itself; we never see it), plus the offloads: CSUM, HOST_TSO4, HOST_TSO6
 * and HOST_ECN (guest -> us: partial checksums, TCPv4 and TCPv6 frames up
 * to 64 KiB). The header's
 * offload fields travel both ways as `FrameOffload`; the stack trusts
 * partial checksums and never re-segments. The header is 12 bytes with
 * VERSION_1 or MRG_RXBUF, 10 otherwise. Towards the guest we offer
 * GUEST_CSUM, GUEST_TSO4 and GUEST_TSO6: with GUEST_CSUM and a TSO
 * negotiated `reserve` takes frames up to 64 KiB and `commit` passes the
 * stack's NEEDS_CSUM / GSO TCPV4 or TCPV6 fields
 * into the header (anything not negotiated is dropped and counted).
 *
 * Transmit (guest -> stack), once per kick of queue 1: disable kicks, drain
 * the ring, re-enable, re-check (the classic loop, so a chain added between
 * the last pop and the re-enable is never stranded). For each chain: copy the
 * header into a scratch buffer and decode it, check the frame length
 * (>= 14, <= MTU + 14 + 4 for a VLAN tag; GSO frames up to 64 KiB only of
 * a type the guest negotiated: TCPV4 with HOST_TSO4, TCPV6 with HOST_TSO6,
 * the ECN bit with
 * HOST_ECN, a nonzero gso_size; other GSO types are dropped and counted),
 * and hand the frame to
 * `sink.receive(frame, offload)`: as a view straight into guest memory when
 * the frame (after the header) lies in one descriptor, otherwise gathered
 * into a reusable bounce buffer. Each chain is returned with used length 0.
 * Then used.idx is published once, the call fd is signalled once if the
 * guest's suppression (NO_INTERRUPT / used_event) allows, and
 * `sink.batchEnd()` runs. Per event-loop turn at most TX_BUDGET chains
 * (frames for the stack) and TX_WALK_BUDGET descriptors walked (plus the
 * one chain in progress, at most MAX_CHAIN_DESCRIPTORS + 2), whichever runs
 * out first, dropped chains included; the rest is processed on the next
 * turn (setImmediate) so one guest cannot stall the event loop.
 *
 * Receive (stack -> guest) through NetLink: `reserve(len)` pops a receive
 * chain. When the writable space after the header holds the whole frame in
 * one descriptor, the stack gets a view of guest memory itself (zero copy);
 * otherwise a bounce buffer that `commit` scatters: over several chains with
 * MRG_RXBUF (num_buffers set to how many), or over the one chain's
 * descriptors without it. Without MRG_RXBUF a frame that does not fit one
 * chain is dropped and counted (the chain goes back unused). When the guest
 * has posted too few buffers, `reserve` puts back what it popped, asks the
 * guest to kick the receive queue (avail_event / clearing NO_NOTIFY) and
 * returns null; the kick then runs the `onWritable` callback. A receive
 * ring that is stopped, disabled or broken is back-pressure as well: the
 * callback runs once the ring runs again (restart, enable, a new session)
 * and holds buffers. The receive path walks at most RX_WALK_BUDGET
 * descriptors (plus one chain) between yields: once it has, `reserve`
 * returns null (back-pressure, counted `virtio_net.rx.walk_yield`), and on
 * the next turn the budget is refilled, used entries are published and
 * `onWritable` runs (the budget is refilled only there, so no event-loop
 * turn walks more than one budget). A ring full of malformed or too-small
 * chains is thus handed back a budget per turn, never in one stall, and
 * real traffic yields once per RX_WALK_BUDGET descriptors. Chains popped for a
 * reservation that is not used go back to the ring (`SplitQueue.unpop`), or,
 * if a chain was returned after them, to the guest with used length 0
 * (`virtio_net.rx.returned_unused`), so no chain is returned twice. `commit`
 * writes the used entries; `flush` (or an automatic one at the end of the
 * event-loop turn, also after a `reserve` that handed chains back) publishes
 * them and signals once.
 *
 * Buffers that can never hold a frame. Waiting for a kick is right only
 * while the guest can still post: when every slot of the receive ring holds
 * a buffer we popped (popped === queue size) and their room is still short,
 * no kick will ever come. That happens legally with MRG_RXBUF (32 buffers of
 * 1536 bytes cannot take a 64 KiB GSO frame) and, against a SHOULD, without
 * it (GUEST_TSO4 with 1526-byte buffers). Then:
 *  - a GSO-sized frame (over MTU + 18) while GUEST_TSO4/6 are in use: the
 *    device withdraws them (`rxOffloads.tso4/tso6` become false until the
 *    next feature negotiation, counted `virtio_net.rx.gso_withdrawn`),
 *    `reserve` returns null and `onWritable` runs on the next turn, so the
 *    stack (which reads `rxOffloads` per frame) retries with MSS-sized
 *    frames instead of waiting for ever;
 *  - any other frame: `reserve` succeeds and `commit` drops it, counted
 *    `virtio_net.rx.drop.frame_too_big_for_buffers` (as a frame bigger than
 *    one chain without MRG_RXBUF always was), so smaller frames still pass.
 *
 * Failure. Guest mistakes in frames are dropped and counted
 * (`virtio_net.*.drop.*`), as are malformed chains the queue hands back
 * (`virtio_net.{rx,tx}.drop.too_many_descriptors` and `.chain_too_long`). A
 * corrupt ring stops that queue (SplitQueue "broken"), is counted and
 * logged, and is reported through `onBroken`; the process goes on. Nothing
 * on the kick or NetLink paths throws: an unexpected exception there breaks
 * the queue instead.
 */
import type { FdWatcher } from '../native/index.js';
import { native } from '../native/index.js';
import type { Counters } from '../net/context.js';
import type { FrameOffload, FrameSink, NetLink } from '../net/link.js';
import type { QueueSetup, VirtioDevice } from './device.js';
import type { GuestMemory } from './guest-memory.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from './features.js';
import { type ChainDropReason, DescriptorChain, SplitQueue } from './split-queue.js';
import { NetHeaderCodec, VIRTIO_NET_HDR_LEN, emptyOffload, netHeaderLength } from './virtio-net-header.js';

/** Every feature this device offers (the one place to switch offloads on). */
export const OFFERED_FEATURES: bigint =
  VIRTIO_F_VERSION_1 |
  VIRTIO_NET_F_MAC |
  VIRTIO_NET_F_STATUS |
  VIRTIO_NET_F_MTU |
  VIRTIO_NET_F_MRG_RXBUF |
  VIRTIO_RING_F_EVENT_IDX |
  VIRTIO_RING_F_INDIRECT_DESC |
  VIRTIO_NET_F_CTRL_VQ |
  // Guest -> device offloads: partial checksums and TCP segmentation for
  // both families (ECN-marked TSO frames too: we never re-segment, so the
  // CWR rule of §5.1.6.2 is the host kernel's business). No UFO/USO: a GSO
  // frame of those types is dropped and counted.
  VIRTIO_NET_F_CSUM |
  VIRTIO_NET_F_HOST_TSO4 |
  VIRTIO_NET_F_HOST_TSO6 |
  VIRTIO_NET_F_HOST_ECN |
  // Device -> guest: partial checksums and TCPv4/TCPv6 GSO frames up to 64 KiB.
  VIRTIO_NET_F_GUEST_CSUM |
  VIRTIO_NET_F_GUEST_TSO4 |
  VIRTIO_NET_F_GUEST_TSO6;

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;

const ETH_HLEN = 14;
const VLAN_HLEN = 4;
/** Largest GSO frame: a 64 KiB IP packet plus Ethernet and VLAN headers. */
const MAX_GSO_FRAME = 65535 + ETH_HLEN + VLAN_HLEN;
/**
 * Cap on a transmit chain's total length: header + the largest GSO frame +
 * 4 KiB slack for drivers that pad. A longer chain cannot hold a valid
 * frame; the queue hands it back unused (SplitQueue.droppedChains).
 */
export const TX_MAX_CHAIN_BYTES = VIRTIO_NET_HDR_LEN + MAX_GSO_FRAME + 4096;
/**
 * Cap on a receive chain's total length: Linux "big packets" mode posts up
 * to (MAX_SKB_FRAGS + 1) pages, MAX_SKB_FRAGS configurable up to 45: 46
 * pages plus header fit in 256 KiB.
 */
export const RX_MAX_CHAIN_BYTES = 256 * 1024;
/** Chains processed per event-loop turn on the transmit queue (bounds the stack's per-frame work). */
export const TX_BUDGET = 1024;
/**
 * Descriptors walked per event-loop turn on the transmit queue (bounds the
 * ring walk, dropped chains included): 16 per chain of TX_BUDGET, so real
 * traffic (2 to 19 descriptors per frame from Linux) is rarely limited by
 * it, while a ring of chains at MAX_CHAIN_DESCRIPTORS costs about a
 * millisecond per turn.
 */
export const TX_WALK_BUDGET = 16 * TX_BUDGET;
/** Descriptors the receive path walks before it yields one event-loop turn (see the theory of operation). */
export const RX_WALK_BUDGET = 16 * 1024;

/** Counter names for the chains a queue hands back unused, per queue index. */
const CHAIN_DROP_COUNTERS: ReadonlyArray<Record<ChainDropReason, string>> = [
  { too_many_descriptors: 'virtio_net.rx.drop.too_many_descriptors', too_many_bytes: 'virtio_net.rx.drop.chain_too_long' },
  { too_many_descriptors: 'virtio_net.tx.drop.too_many_descriptors', too_many_bytes: 'virtio_net.tx.drop.chain_too_long' },
];

/** Logging hook: warnings only on rare events (broken rings, internal errors). */
export interface DeviceLogger {
  warn(message: string): void;
  /** What a frontend negotiated (once per change of features). */
  info?(message: string): void;
}

export interface VirtioNetDeviceOptions {
  mac: Uint8Array;
  /** MTU offered in config space (68..65535). */
  mtu: number;
  sink: FrameSink;
  counters?: Counters;
  logger?: DeviceLogger;
}

/** Plain counters used when none are given. */
class LocalCounters implements Counters {
  private readonly map = new Map<string, number>();
  count(name: string, n = 1): void {
    this.map.set(name, (this.map.get(name) ?? 0) + n);
  }
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.map);
  }
}

/** Per-queue state. */
class QueueSlot {
  queue: SplitQueue | null = null;
  watcher: FdWatcher | null = null;
  enabled = true;
  callFd = -1;
  /** Where the queue resumes (last stop, or 0). */
  base = 0;
  /** Pending setImmediate (initial kick / budget continuation). */
  immediate: NodeJS.Immediate | null = null;
}

/** Receive reservation modes. */
const RX_NONE = 0;
const RX_DIRECT = 1; // view into the first chain's writable buffer
const RX_BOUNCE = 2; // bounce buffer, scattered over rxOpen chains at commit
const RX_DISCARD = 3; // frame too big for the guest's buffers: dropped at commit

export interface VirtioNetStats {
  txFrames: number;
  txBytes: number;
  /** Transmit frames gathered from several descriptors into the bounce buffer. */
  txGathered: number;
  rxFrames: number;
  rxBytes: number;
  /** Receive frames written through the bounce buffer. */
  rxBounced: number;
  /** Call-fd signals sent. */
  signals: number;
  /** reserve() calls refused for lack of guest buffers. */
  rxBackpressure: number;
}

export class VirtioNetDevice implements VirtioDevice, NetLink {
  readonly deviceFeatures: bigint = OFFERED_FEATURES;
  readonly maxQueues = 2;
  readonly mtu: number;
  readonly mac: Uint8Array;
  readonly counters: Counters;
  readonly stats: VirtioNetStats = {
    txFrames: 0,
    txBytes: 0,
    txGathered: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxBounced: 0,
    signals: 0,
    rxBackpressure: 0,
  };
  onBroken?: (queueIndex: number, reason: string) => void;

  private sink: FrameSink;
  private readonly logger: DeviceLogger | undefined;
  private memory: GuestMemory | null = null;
  private acked = 0n;
  private hdrLen = VIRTIO_NET_HDR_LEN;
  private mrgRxbuf = false;
  /** Bit (1 << gso_type) for every GSO type the negotiated HOST_* features allow (0: none). */
  private hostGsoTypes = 0;
  private hostEcn = false;
  private offloads = { csum: false, tso4: false, tso6: false };
  private readonly slots: [QueueSlot, QueueSlot] = [new QueueSlot(), new QueueSlot()];

  // Transmit scratch.
  private readonly txChain = new DescriptorChain();
  private readonly txHeader = new NetHeaderCodec();
  private readonly txOffload: FrameOffload = emptyOffload();
  private readonly txBounce = new Uint8Array(MAX_GSO_FRAME);

  // Receive state.
  private readonly rxChains: DescriptorChain[] = [new DescriptorChain()];
  private readonly rxHeader = new NetHeaderCodec();
  private readonly rxBounce = new Uint8Array(MAX_GSO_FRAME);
  private rxMode = RX_NONE;
  /** Chains popped for the open reservation. */
  private rxOpen = 0;
  private rxLen = 0;
  private wantWritable = false;
  private writableCallback: (() => void) | null = null;
  /** Descriptors walked on the receive ring since the walk budget was last refilled. */
  private rxWalked = 0;
  /** A retry on the next turn (after GSO was withdrawn or the walk budget ran out): publishes, refills, runs the writable callback. */
  private retryImmediate: NodeJS.Immediate | null = null;
  private readonly retryWritable = (): void => {
    this.retryImmediate = null;
    this.rxWalked = 0;
    this.flush();
    this.runWritableCallback();
  };
  private flushImmediate: NodeJS.Immediate | null = null;
  private readonly autoFlush = (): void => {
    this.flushImmediate = null;
    this.flush();
  };

  constructor(options: VirtioNetDeviceOptions) {
    if (options.mac.length !== 6) throw new RangeError('MAC address must be 6 bytes');
    if (!(Number.isInteger(options.mtu) && options.mtu >= 68 && options.mtu <= 65535)) throw new RangeError(`bad MTU ${options.mtu}`);
    this.mac = Uint8Array.from(options.mac);
    this.mtu = options.mtu;
    this.sink = options.sink;
    this.counters = options.counters ?? new LocalCounters();
    this.logger = options.logger;
  }

  /** The stack's view of this device. */
  get link(): NetLink {
    return this;
  }

  /** Deliver guest frames to another sink from now on. */
  attach(sink: FrameSink): void {
    this.sink = sink;
  }

  /** The negotiated features (0n before SET_FEATURES / after reset). */
  get ackedFeatures(): bigint {
    return this.acked;
  }

  /** The virtio-net header length in use (12, or 10 for legacy without MRG_RXBUF). */
  get headerLength(): number {
    return this.hdrLen;
  }

  /** The split queue behind `index` (tests, diagnostics). */
  queue(index: number): SplitQueue | null {
    return this.slots[index]?.queue ?? null;
  }

  get rxOffloads(): { csum: boolean; tso4: boolean; tso6: boolean } {
    return this.offloads;
  }

  // ---- VirtioDevice ------------------------------------------------------

  /** mac[6], status le16 (LINK_UP), max_virtqueue_pairs le16 (1), mtu le16. */
  configSpace(): Uint8Array {
    const c = new Uint8Array(12);
    const dv = new DataView(c.buffer);
    c.set(this.mac, 0);
    dv.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    dv.setUint16(8, 1, true);
    dv.setUint16(10, this.mtu, true);
    return c;
  }

  setAckedFeatures(features: bigint): void {
    const before = this.acked;
    this.acked = features & OFFERED_FEATURES;
    if (this.acked !== before && this.acked !== 0n) this.logger?.info?.(`virtio-net: frontend negotiated ${describeNetFeatures(this.acked)}`);
    this.hdrLen = netHeaderLength(this.acked);
    this.mrgRxbuf = (this.acked & VIRTIO_NET_F_MRG_RXBUF) !== 0n;
    this.hostGsoTypes =
      ((this.acked & VIRTIO_NET_F_HOST_TSO4) !== 0n ? 1 << VIRTIO_NET_HDR_GSO_TCPV4 : 0) |
      ((this.acked & VIRTIO_NET_F_HOST_TSO6) !== 0n ? 1 << VIRTIO_NET_HDR_GSO_TCPV6 : 0) |
      ((this.acked & VIRTIO_NET_F_HOST_UFO) !== 0n ? 1 << VIRTIO_NET_HDR_GSO_UDP : 0);
    this.hostEcn = (this.acked & VIRTIO_NET_F_HOST_ECN) !== 0n;
    // GUEST_TSO4/6 require GUEST_CSUM (§5.1.3.1): without it they mean nothing.
    const csum = (this.acked & VIRTIO_NET_F_GUEST_CSUM) !== 0n;
    this.offloads = {
      csum,
      tso4: csum && (this.acked & VIRTIO_NET_F_GUEST_TSO4) !== 0n,
      tso6: csum && (this.acked & VIRTIO_NET_F_GUEST_TSO6) !== 0n,
    };
  }

  setMemory(memory: GuestMemory | null): void {
    // The open reservation and every chain view point into the old memory,
    // which may be unmapped as soon as we return.
    this.abort();
    this.txChain.clear();
    for (const c of this.rxChains) c.clear();
    this.memory = memory;
    for (const slot of this.slots) slot.queue?.setMemory(memory);
    if (memory !== null) {
      // Work may have arrived while there was no memory.
      for (let i = 0; i < this.slots.length; i++) if (this.slots[i]!.queue?.isReady) this.scheduleKick(i);
    }
  }

  startQueue(index: number, setup: QueueSetup): void {
    const slot = this.slots[index];
    if (slot === undefined) {
      this.logger?.warn(`virtio-net: no queue ${index} (control queue is served by the frontend)`);
      return;
    }
    this.stopQueue(index);
    slot.callFd = setup.callFd;
    slot.queue = new SplitQueue(
      {
        size: setup.size,
        descAddr: setup.descAddr,
        availAddr: setup.availAddr,
        usedAddr: setup.usedAddr,
        nextAvail: setup.nextAvail,
        eventIdx: setup.eventIdx,
        indirect: setup.indirect,
        maxChainBytes: index === TX_QUEUE ? TX_MAX_CHAIN_BYTES : RX_MAX_CHAIN_BYTES,
        onBroken: (reason) => this.queueBroken(index, reason),
        onDropped: (reason) => this.counters.count(CHAIN_DROP_COUNTERS[index]![reason]),
      },
      this.memory,
    );
    if (slot.queue.isBroken) return;
    if (setup.kickFd >= 0) {
      try {
        slot.watcher = native.watchEventfd(setup.kickFd, () => this.kick(index));
      } catch (err) {
        slot.queue.fail(`cannot watch kick fd ${setup.kickFd}: ${(err as Error).message}`);
        return;
      }
    }
    // Receive kicks matter only under back-pressure.
    if (index === RX_QUEUE) slot.queue.disableNotifications();
    // Entries may be pending already (resumed ring): look once.
    this.scheduleKick(index);
  }

  enableQueue(index: number, enabled: boolean): void {
    const slot = this.slots[index];
    if (slot === undefined) return;
    slot.enabled = enabled;
    if (!enabled && index === RX_QUEUE) this.abort();
    if (enabled && slot.queue !== null) this.scheduleKick(index);
  }

  setCallFd(index: number, callFd: number): void {
    const slot = this.slots[index];
    if (slot !== undefined) slot.callFd = callFd;
  }

  stopQueue(index: number): number {
    const slot = this.slots[index];
    if (slot === undefined) return 0;
    if (slot.watcher !== null) {
      slot.watcher.close();
      slot.watcher = null;
    }
    if (slot.immediate !== null) {
      clearImmediate(slot.immediate);
      slot.immediate = null;
    }
    const q = slot.queue;
    if (q === null) return slot.base;
    if (index === RX_QUEUE) {
      this.abort();
      try {
        this.publishAndSignal(slot);
      } catch (err) {
        this.internalError(q, err);
      }
      if (this.retryImmediate !== null) {
        clearImmediate(this.retryImmediate);
        this.retryImmediate = null;
      }
      if (this.flushImmediate !== null) {
        clearImmediate(this.flushImmediate);
        this.flushImmediate = null;
      }
    }
    slot.base = q.nextAvail;
    slot.queue = null;
    return slot.base;
  }

  kick(index: number): void {
    if (index === TX_QUEUE) this.processTx();
    else if (index === RX_QUEUE) this.processRxKick();
  }

  reset(): void {
    for (let i = 0; i < this.slots.length; i++) {
      this.stopQueue(i);
      const slot = this.slots[i]!;
      slot.base = 0;
      slot.enabled = true;
      slot.callFd = -1;
    }
    this.setAckedFeatures(0n);
    this.rxWalked = 0;
    // wantWritable survives: a stack waiting for buffers is told once the
    // next session's receive ring runs.
    this.txChain.clear();
    for (const c of this.rxChains) c.clear();
  }

  // ---- internals shared by both directions --------------------------------

  private queueBroken(index: number, reason: string): void {
    this.counters.count('virtio_net.ring.broken');
    this.logger?.warn(`virtio-net: queue ${index} stopped: ${reason}`);
    const watcher = this.slots[index]!.watcher;
    if (watcher !== null) {
      // We may be inside this watcher's own callback: close it on the next
      // turn. It stays in the slot so that stopQueue/reset close it at once
      // if they come first (close is idempotent), before the session closes
      // the fd.
      setImmediate(() => watcher.close());
    }
    if (index === RX_QUEUE) {
      this.rxMode = RX_NONE;
      this.rxOpen = 0;
    }
    try {
      this.onBroken?.(index, reason);
    } catch {
      // The session's handler must not break the kick path.
    }
  }

  private scheduleKick(index: number): void {
    const slot = this.slots[index]!;
    if (slot.immediate !== null) return;
    slot.immediate = setImmediate(() => {
      slot.immediate = null;
      this.kick(index);
    });
  }

  /** Publish used entries and signal the call fd if the guest wants it. */
  private publishAndSignal(slot: QueueSlot): void {
    const q = slot.queue;
    if (q === null || !q.publishUsed() || slot.callFd < 0) return;
    try {
      native.eventfdSignal(slot.callFd);
      this.stats.signals++;
    } catch {
      this.counters.count('virtio_net.signal_error');
    }
  }

  private internalError(q: SplitQueue, err: unknown): void {
    // Typically a view over memory that was unmapped under us.
    const message = err instanceof Error ? err.message : String(err);
    q.fail(`internal error: ${message}`);
  }

  // ---- transmit ------------------------------------------------------------

  private processTx(): void {
    const slot = this.slots[TX_QUEUE];
    const q = slot.queue;
    if (q === null || !slot.enabled || !q.isReady) return;
    let frames = 0;
    try {
      const chain = this.txChain;
      let chainsLeft = TX_BUDGET;
      const walkEnd = q.descriptorsWalked + TX_WALK_BUDGET;
      for (;;) {
        q.disableNotifications();
        while (chainsLeft > 0 && q.descriptorsWalked < walkEnd && q.pop(chain, walkEnd - q.descriptorsWalked)) {
          this.transmitChain(chain);
          q.pushUsed(chain.head, 0);
          chainsLeft--;
          frames++;
        }
        if (chainsLeft === 0 || q.descriptorsWalked >= walkEnd) {
          // Keep kicks disabled; go on next turn.
          this.scheduleKick(TX_QUEUE);
          break;
        }
        if (!q.enableNotifications()) break;
      }
      this.publishAndSignal(slot);
    } catch (err) {
      this.internalError(q, err);
    }
    if (frames > 0 && this.sink.batchEnd !== undefined) {
      try {
        this.sink.batchEnd();
      } catch (err) {
        this.counters.count('virtio_net.tx.sink_error');
        this.logger?.warn(`virtio-net: sink.batchEnd threw: ${(err as Error).message}`);
      }
    }
  }

  /** Validate one transmit chain and deliver its frame. */
  private transmitChain(chain: DescriptorChain): void {
    const hdrLen = this.hdrLen;
    const segs = chain.segments;
    const nRead = chain.readableCount;
    const total = chain.readableBytes;
    if (total < hdrLen + ETH_HLEN) {
      this.counters.count('virtio_net.tx.drop.runt');
      return;
    }
    const frameLen = total - hdrLen;
    // Copy the header (possibly split over descriptors) into scratch and
    // find where the frame starts: segment k, offset o.
    const hdr = this.txHeader.bytes;
    let k = 0;
    let o = 0;
    for (let i = 0; i < hdrLen; i++) {
      while (o >= segs[k]!.length) {
        k++;
        o = 0;
      }
      hdr[i] = segs[k]![o++]!;
    }
    while (k < nRead && o >= segs[k]!.length) {
      k++;
      o = 0;
    }
    const hasOffload = this.txHeader.decode(this.txOffload);
    let maxLen = this.mtu + ETH_HLEN + VLAN_HLEN;
    if (hasOffload && this.txOffload.gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
      // Only the GSO types the guest negotiated (HOST_TSO4 -> TCPV4, HOST_TSO6
      // -> TCPV6, and the ECN bit with HOST_ECN); anything else (UDP, UDP_L4,
      // a TSO type not acked) is a driver bug or hostile: drop (§5.1.6.2.1).
      const gso = this.txOffload.gsoType;
      const base = gso & ~VIRTIO_NET_HDR_GSO_ECN;
      if (base > 7 || (this.hostGsoTypes & (1 << base)) === 0 || ((gso & VIRTIO_NET_HDR_GSO_ECN) !== 0 && !this.hostEcn)) {
        this.counters.count('virtio_net.tx.drop.gso_not_negotiated');
        return;
      }
      if (this.txOffload.gsoSize === 0) {
        this.counters.count('virtio_net.tx.drop.bad_gso_size');
        return;
      }
      maxLen = MAX_GSO_FRAME;
    }
    if (frameLen > maxLen) {
      this.counters.count('virtio_net.tx.drop.too_long');
      return;
    }
    const seg = segs[k]!;
    let frame: Uint8Array;
    if (seg.length - o >= frameLen) {
      frame = o === 0 && seg.length === frameLen ? seg : seg.subarray(o, o + frameLen);
    } else {
      const bounce = this.txBounce;
      let pos = 0;
      for (let i = k; i < nRead; i++) {
        const s = segs[i]!;
        const from = i === k ? o : 0;
        if (s.length > from) {
          bounce.set(from === 0 ? s : s.subarray(from), pos);
          pos += s.length - from;
        }
      }
      frame = bounce.subarray(0, frameLen);
      this.stats.txGathered++;
      this.counters.count('virtio_net.tx.gathered');
    }
    this.stats.txFrames++;
    this.stats.txBytes += frameLen;
    try {
      this.sink.receive(frame, hasOffload ? this.txOffload : null);
    } catch (err) {
      this.counters.count('virtio_net.tx.sink_error');
      this.logger?.warn(`virtio-net: sink.receive threw: ${(err as Error).message}`);
    }
  }

  // ---- receive (NetLink) ---------------------------------------------------

  private processRxKick(): void {
    const slot = this.slots[RX_QUEUE];
    const q = slot.queue;
    if (q === null || !slot.enabled || !q.isReady) return;
    if (!this.wantWritable) {
      q.disableNotifications();
      return;
    }
    try {
      // Nothing posted yet: make sure the guest kicks when it posts.
      if (!q.enableNotifications()) return;
      this.wantWritable = false;
      q.disableNotifications();
    } catch (err) {
      this.internalError(q, err);
      return;
    }
    this.runWritableCallback();
  }

  private runWritableCallback(): void {
    const cb = this.writableCallback;
    if (cb === null) return;
    try {
      cb();
    } catch (err) {
      this.counters.count('virtio_net.rx.writable_callback_error');
      this.logger?.warn(`virtio-net: onWritable callback threw: ${(err as Error).message}`);
    }
  }

  private scheduleFlush(): void {
    if (this.flushImmediate === null) this.flushImmediate = setImmediate(this.autoFlush);
  }

  private scheduleWritableRetry(): void {
    if (this.retryImmediate === null) this.retryImmediate = setImmediate(this.retryWritable);
  }

  /**
   * Pop a receive chain with at least `min` writable bytes into rxChains[i]
   * within the walk budget; unusable chains are returned with length 0.
   */
  private popRx(q: SplitQueue, i: number, min: number): boolean {
    while (this.rxChains.length <= i) this.rxChains.push(new DescriptorChain());
    const chain = this.rxChains[i]!;
    for (;;) {
      const walkLeft = RX_WALK_BUDGET - this.rxWalked;
      if (walkLeft <= 0) return false;
      const walkedBefore = q.descriptorsWalked;
      const ok = q.pop(chain, walkLeft);
      this.rxWalked += q.descriptorsWalked - walkedBefore;
      if (!ok) return false;
      if (chain.writableBytes >= min) return true;
      this.counters.count('virtio_net.rx.drop.buffer_too_small');
      q.pushUsed(chain.head, 0);
    }
  }

  /**
   * Put back rxChains[from, to), the chains popped last. Those the queue
   * cannot rewind over (a chain was returned after them) go back to the
   * guest unused instead.
   */
  private putBackRx(q: SplitQueue, from: number, to: number): void {
    const rewound = q.unpop(to - from);
    for (let i = from; i < to - rewound; i++) q.pushUsed(this.rxChains[i]!.head, 0);
    if (to - from > rewound) this.counters.count('virtio_net.rx.returned_unused', to - from - rewound);
  }

  reserve(length: number): Uint8Array | null {
    if (this.rxMode !== RX_NONE) {
      this.counters.count('virtio_net.rx.reserve_while_open');
      this.abort();
    }
    const slot = this.slots[RX_QUEUE];
    const q = slot.queue;
    if (q === null || !slot.enabled || !q.isReady) {
      // Stopped (GET_VRING_BASE, a VM stop, a reconnect), disabled or
      // broken: back-pressure too. The stack's onWritable runs once the ring
      // runs again with buffers, or blocked flows would wait for ever.
      this.wantWritable = true;
      this.stats.rxBackpressure++;
      return null;
    }
    const maxLen = this.offloads.tso4 || this.offloads.tso6 ? MAX_GSO_FRAME : this.mtu + ETH_HLEN + VLAN_HLEN;
    if (!(Number.isInteger(length) && length >= 1 && length <= maxLen)) {
      this.counters.count('virtio_net.rx.drop.bad_length');
      return null;
    }
    try {
      const view = this.reserveChains(q, length);
      // Chains handed back on the way (malformed, too small, put back unused) reach the guest with the turn's flush.
      if (q.pendingUsed > 0) this.scheduleFlush();
      return view;
    } catch (err) {
      this.rxMode = RX_NONE;
      this.rxOpen = 0;
      this.internalError(q, err);
      return null;
    }
  }

  private reserveChains(q: SplitQueue, length: number): Uint8Array | null {
    const hdrLen = this.hdrLen;
    const need = hdrLen + length;
    // Pop as many chains as needed (one without MRG_RXBUF), re-checking once
    // after asking for a kick, so buffers added meanwhile are not missed.
    let popped = 0;
    let have = 0;
    let armed = false;
    for (;;) {
      const ok = this.popRx(q, popped, popped === 0 ? hdrLen : 1);
      if (ok) {
        have += this.rxChains[popped]!.writableBytes;
        popped++;
        if (have >= need || !this.mrgRxbuf) break;
        continue;
      }
      if (q.isBroken) return null;
      if (this.rxWalked >= RX_WALK_BUDGET) {
        // Walked enough for this turn: back-pressure until the next one.
        if (armed) q.disableNotifications();
        this.putBackRx(q, 0, popped);
        this.counters.count('virtio_net.rx.walk_yield');
        this.stats.rxBackpressure++;
        this.scheduleWritableRetry();
        return null;
      }
      if (popped < q.size) {
        if (!armed) {
          armed = true;
          if (q.enableNotifications()) continue;
        } else if (q.available() > 0) {
          continue;
        }
        // Back-pressure: put everything back and wait for a kick.
        this.putBackRx(q, 0, popped);
        this.wantWritable = true;
        this.stats.rxBackpressure++;
        return null;
      }
      // Every slot of the ring holds a buffer we popped: no kick will come.
      break;
    }
    if (armed) q.disableNotifications();
    if (have < need) {
      // It cannot fit: one chain without MRG_RXBUF, the whole ring with it.
      if (length > this.mtu + ETH_HLEN + VLAN_HLEN && (this.offloads.tso4 || this.offloads.tso6)) {
        this.putBackRx(q, 0, popped);
        this.withdrawGso(have - hdrLen);
        return null;
      }
      this.rxOpen = popped;
      this.rxLen = length;
      this.rxMode = RX_DISCARD;
      return this.rxBounce.subarray(0, length);
    }
    this.rxOpen = popped;
    this.rxLen = length;
    if (popped === 1) {
      // Does one writable descriptor hold the whole frame after the header?
      const chain = this.rxChains[0]!;
      const segs = chain.segments;
      let k = chain.readableCount;
      let o = hdrLen;
      while (k < chain.count && o >= segs[k]!.length) {
        o -= segs[k]!.length;
        k++;
      }
      const seg = segs[k]!;
      if (seg.length - o >= length) {
        this.rxMode = RX_DIRECT;
        return seg.subarray(o, o + length);
      }
    }
    this.rxMode = RX_BOUNCE;
    return this.rxBounce.subarray(0, length);
  }

  /**
   * The guest's receive buffers cannot hold a GSO frame (`room` bytes of
   * frame at most): stop offering GSO and let the stack retry with MSS-sized
   * frames on the next turn (see the theory of operation).
   */
  private withdrawGso(room: number): void {
    this.offloads = { csum: this.offloads.csum, tso4: false, tso6: false };
    this.counters.count('virtio_net.rx.gso_withdrawn');
    this.logger?.warn(`virtio-net: receive buffers hold at most ${room} bytes per frame: GSO towards the guest withdrawn`);
    this.scheduleWritableRetry();
  }

  commit(length: number, offload?: FrameOffload): void {
    const mode = this.rxMode;
    if (mode === RX_NONE) {
      this.counters.count('virtio_net.rx.commit_without_reserve');
      return;
    }
    const q = this.slots[RX_QUEUE].queue;
    if (q === null || !q.isReady) {
      this.rxMode = RX_NONE;
      this.rxOpen = 0;
      return;
    }
    if (!(Number.isInteger(length) && length >= 0 && length <= this.rxLen)) {
      this.counters.count('virtio_net.rx.drop.bad_commit_length');
      this.abort();
      return;
    }
    if (mode === RX_DISCARD) {
      this.counters.count('virtio_net.rx.drop.frame_too_big_for_buffers');
      this.abort();
      return;
    }
    if (offload !== undefined && !this.offloadAllowed(offload)) {
      this.counters.count('virtio_net.rx.drop.offload_not_negotiated');
      this.abort();
      return;
    }
    try {
      this.commitChains(q, mode, length, offload);
    } catch (err) {
      this.internalError(q, err);
    }
    this.rxMode = RX_NONE;
    this.rxOpen = 0;
    this.scheduleFlush();
  }

  /** Whether the guest negotiated what `o` asks of it (GUEST_CSUM for flags, GUEST_TSO4/6 for the GSO type). */
  private offloadAllowed(o: FrameOffload): boolean {
    if (o.gsoType === VIRTIO_NET_HDR_GSO_NONE) return this.offloads.csum || (!o.needsCsum && !o.dataValid);
    if (!o.needsCsum || o.gsoSize === 0) return false;
    if (o.gsoType === VIRTIO_NET_HDR_GSO_TCPV4) return this.offloads.tso4;
    if (o.gsoType === VIRTIO_NET_HDR_GSO_TCPV6) return this.offloads.tso6;
    return false;
  }

  private commitChains(q: SplitQueue, mode: number, length: number, offload: FrameOffload | undefined): void {
    const hdrLen = this.hdrLen;
    const total = hdrLen + length;
    // Checked against the negotiated features by commit(); with none negotiated there is nothing to pass on.
    const off = offload !== undefined && this.offloads.csum ? offload : null;
    if (mode === RX_DIRECT) {
      this.rxHeader.encode(off, 1);
      const chain = this.rxChains[0]!;
      writeChain(chain, 0, this.rxHeader.bytes, 0, hdrLen);
      q.pushUsed(chain.head, total);
    } else {
      // How many chains does the final length need?
      let used = 0;
      let room = 0;
      while (room < total && used < this.rxOpen) room += this.rxChains[used++]!.writableBytes;
      // The spare chains first: the frame's used entries must be consecutive (num_buffers).
      this.putBackRx(q, used, this.rxOpen);
      this.rxHeader.encode(off, used);
      let srcPos = 0; // position in the stream header ++ frame
      for (let c = 0; c < used; c++) {
        const chain = this.rxChains[c]!;
        const n = Math.min(chain.writableBytes, total - srcPos);
        let done = 0;
        if (srcPos < hdrLen) {
          const h = Math.min(hdrLen - srcPos, n);
          writeChain(chain, 0, this.rxHeader.bytes, srcPos, h);
          done = h;
        }
        if (done < n) writeChain(chain, done, this.rxBounce, srcPos + done - hdrLen, n - done);
        q.pushUsed(chain.head, n);
        srcPos += n;
      }
      this.stats.rxBounced++;
    }
    this.stats.rxFrames++;
    this.stats.rxBytes += length;
  }

  abort(): void {
    if (this.rxMode === RX_NONE) return;
    const q = this.slots[RX_QUEUE].queue;
    if (q !== null) this.putBackRx(q, 0, this.rxOpen);
    this.rxMode = RX_NONE;
    this.rxOpen = 0;
  }

  send(frame: Uint8Array): boolean {
    const view = this.reserve(frame.length);
    if (view === null) return false;
    view.set(frame);
    this.commit(frame.length);
    return true;
  }

  flush(): void {
    const slot = this.slots[RX_QUEUE];
    const q = slot.queue;
    if (q === null) return;
    try {
      this.publishAndSignal(slot);
    } catch (err) {
      this.internalError(q, err);
    }
  }

  onWritable(callback: () => void): void {
    this.writableCallback = callback;
  }
}

/** Write n bytes of src (from srcOff) into the chain's writable space at offset `at`. */
function writeChain(chain: DescriptorChain, at: number, src: Uint8Array, srcOff: number, n: number): void {
  const segs = chain.segments;
  let k = chain.readableCount;
  while (k < chain.count && at >= segs[k]!.length) {
    at -= segs[k]!.length;
    k++;
  }
  while (n > 0 && k < chain.count) {
    const seg = segs[k]!;
    const m = Math.min(seg.length - at, n);
    if (m === 1) seg[at] = src[srcOff]!;
    else if (m > 0) seg.set(src.subarray(srcOff, srcOff + m), at);
    srcOff += m;
    n -= m;
    at = 0;
    k++;
  }
}

const FEATURE_NAMES: [bigint, string][] = [
  [VIRTIO_NET_F_CSUM, 'csum'], [VIRTIO_NET_F_GUEST_CSUM, 'guest_csum'], [VIRTIO_NET_F_GUEST_TSO4, 'guest_tso4'],
  [VIRTIO_NET_F_GUEST_TSO6, 'guest_tso6'],
  [VIRTIO_NET_F_HOST_TSO4, 'host_tso4'], [VIRTIO_NET_F_HOST_TSO6, 'host_tso6'], [VIRTIO_NET_F_HOST_ECN, 'host_ecn'],
  [VIRTIO_NET_F_HOST_UFO, 'host_ufo'], [VIRTIO_NET_F_MRG_RXBUF, 'mrg_rxbuf'],
];

/** The offload features in `features`, by name ('offloads csum guest_csum ...; mrg_rxbuf'). */
export function describeNetFeatures(features: bigint): string {
  const names = FEATURE_NAMES.filter(([bit]) => (features & bit) !== 0n).map(([, name]) => name);
  return `offloads ${names.length > 0 ? names.join(' ') : 'none'}`;
}
