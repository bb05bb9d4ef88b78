/**
 * Our own vhost-user frontend: plays the VM monitor (QEMU or
 * cloud-hypervisor) against a backend, for conformance tests, fuzzing and
 * benchmarks.
 *
 * Theory of operation. "Guest memory" is one memfd (native.memfdCreate)
 * mapped into this process, sealed as QEMU's memory-backend-memfd seals it
 * by default (F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL; `sealMemory: false`
 * leaves it unsealed, as cloud-hypervisor and QEMU's seal=off do); its
 * bytes are what a guest's RAM would be, with
 * guest-physical address `guestBase` at byte 0. It is offered to the backend
 * as one region, or as two (the same fd twice at different mmap offsets) to
 * exercise multi-region translation. Each region also gets a made-up
 * "frontend virtual address" (`userAddr`), deliberately different from the
 * guest address and discontiguous between regions, because ring addresses in
 * SET_VRING_ADDR are frontend addresses and the backend must translate them.
 *
 * Negotiation follows one of two real frontends, message for message:
 *
 * - style 'qemu' (QEMU 7.2 vhost-user-net): init = GET_FEATURES,
 *   GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
 *   GET_MAX_MEM_SLOTS, SET_BACKEND_REQ_FD, SET_OWNER, GET_FEATURES,
 *   SET_VRING_CALL per ring (a "masked" notifier); start = SET_FEATURES,
 *   [GET/SET_STATUS FEATURES_OK], ADD_MEM_REG per region (with
 *   CONFIGURE_MEM_SLOTS, else SET_MEM_TABLE), per ring SET_VRING_NUM, BASE,
 *   ADDR, KICK, CALL, [GET/SET_STATUS DRIVER_OK], SET_VRING_ENABLE 1 per ring.
 *   NEED_REPLY only on memory-table and backend-channel messages.
 * - style 'cloud-hypervisor' (virtio-devices/src/vhost_user): init =
 *   SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
 *   GET_QUEUE_NUM (must be >= its number of virtqueues); start =
 *   SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM for all rings, then per ring
 *   ADDR, BASE, CALL, KICK, then SET_VRING_ENABLE 1 for all. With REPLY_ACK,
 *   NEED_REPLY on every message.
 *
 * Replies are matched to requests in order (the protocol is strictly
 * request/reply on one socket); a reply for another request code rejects the
 * waiting promise. `request()` is the raw door for malformed-input tests and
 * `sendRaw()` writes arbitrary bytes.
 *
 * Ownership: the frontend owns its socket, memfd, mapping, eventfds and its
 * end of the backend channel; close() releases all of them.
 */
import { native, Seal, type Mapping } from '../native/index.js';
import { Connection, closeQuietly, type ReceivedMessage } from '../vhost-user/connection.js';
import { UnixListener } from '../vhost-user/listen-socket.js';
import {
  ProtocolFeature,
  Req,
  VHOST_USER_F_PROTOCOL_FEATURES,
  decodeReplyConfig,
  decodeReplyU64,
  decodeReplyVringState,
  encodeConfig,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  hasReplyBody,
  requestFlags,
  requestName,
  type ConfigAccess,
  type MessageHeader,
  type MemoryRegionDesc,
} from '../vhost-user/messages.js';
import { DriverQueue } from '../virtio/driver-queue.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../virtio/features.js';
import { GuestAllocator } from './allocator.js';

export type FrontendStyle = 'qemu' | 'cloud-hypervisor';

const pf = (bit: number): bigint => 1n << BigInt(bit);
const F_PROTOCOL = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);

/** Protocol features QEMU 7.2 asks for (VHOST_USER_PROTOCOL_FEATURE_MASK), less CONFIG for net. */
export const QEMU_PROTOCOL_FEATURES: bigint =
  pf(ProtocolFeature.MQ) |
  pf(ProtocolFeature.LOG_SHMFD) |
  pf(ProtocolFeature.RARP) |
  pf(ProtocolFeature.REPLY_ACK) |
  pf(ProtocolFeature.MTU) |
  pf(ProtocolFeature.BACKEND_REQ) |
  pf(ProtocolFeature.CROSS_ENDIAN) |
  pf(ProtocolFeature.CRYPTO_SESSION) |
  pf(ProtocolFeature.PAGEFAULT) |
  pf(ProtocolFeature.BACKEND_SEND_FD) |
  pf(ProtocolFeature.HOST_NOTIFIER) |
  pf(ProtocolFeature.INFLIGHT_SHMFD) |
  pf(ProtocolFeature.RESET_DEVICE) |
  pf(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  pf(ProtocolFeature.STATUS);

/** Protocol features cloud-hypervisor's vhost-user-net asks for. */
export const CH_PROTOCOL_FEATURES: bigint =
  pf(ProtocolFeature.MQ) |
  pf(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  pf(ProtocolFeature.REPLY_ACK) |
  pf(ProtocolFeature.INFLIGHT_SHMFD) |
  pf(ProtocolFeature.LOG_SHMFD);

/** Virtio features our driver understands (acked when the backend offers them). */
export const DEFAULT_DRIVER_FEATURES: bigint =
  VIRTIO_F_VERSION_1 |
  VIRTIO_NET_F_MRG_RXBUF |
  VIRTIO_RING_F_EVENT_IDX |
  VIRTIO_RING_F_INDIRECT_DESC |
  VIRTIO_NET_F_MAC |
  VIRTIO_NET_F_STATUS |
  VIRTIO_NET_F_MTU |
  VIRTIO_NET_F_CSUM |
  VIRTIO_NET_F_GUEST_CSUM;

/** The seals QEMU's memory-backend-memfd puts on guest RAM by default (seal=on). */
export const QEMU_MEMFD_SEALS = Seal.GROW | Seal.SHRINK | Seal.SEAL;

/** Virtio device status bits. */
export const Status = { ACKNOWLEDGE: 1, DRIVER: 2, DRIVER_OK: 4, FEATURES_OK: 8, NEEDS_RESET: 0x40, FAILED: 0x80 } as const;

export interface FrontendOptions {
  style?: FrontendStyle;
  /** Bytes of guest memory (default 8 MiB; a multiple of 8 KiB when split). */
  memorySize?: number;
  /** Guest-physical address of the first byte (default 0). */
  guestBase?: number;
  /** Made-up frontend virtual address of the first region (default 0x7f00_0000_0000). */
  userBase?: number;
  /** Offer memory as two regions (same memfd, two offsets). */
  splitRegions?: boolean;
  /** Seal the memfd against growing and shrinking, as QEMU's memory-backend-memfd (seal=on) does (default true). */
  sealMemory?: boolean;
  /** Virtqueues to set up (default 2: rx and tx). */
  numQueues?: number;
  /** Ring size (default 256). */
  queueSize?: number;
  /** Virtio features the driver wants (default DEFAULT_DRIVER_FEATURES); acked = this & offered. */
  driverFeatures?: bigint;
  /** Protocol features the frontend supports (default: the style's). */
  protocolFeatures?: bigint;
  /** Reply timeout (default 5000 ms). */
  timeoutMs?: number;
}

export interface Reply {
  header: MessageHeader;
  payload: Uint8Array;
}

export interface RequestOptions {
  needReply?: boolean;
  /** Wait for a reply even if the request has no reply body and NEED_REPLY is clear. */
  expectReply?: boolean;
  timeoutMs?: number;
}

/** One virtqueue as the frontend drives it. */
export interface FrontendQueue {
  readonly index: number;
  readonly driver: DriverQueue;
  readonly kickFd: number;
  readonly callFd: number;
  readonly size: number;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
}

export class VhostUserError extends Error {}

interface Waiter {
  code: number;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | null;
  timedOut: boolean;
}

export class VhostUserFrontend {
  readonly style: FrontendStyle;
  readonly memorySize: number;
  readonly guestBase: number;
  /** Guest memory as bytes: index = guest-physical address - guestBase. */
  readonly memory: Uint8Array;
  /** The regions offered to the backend. */
  readonly regions: MemoryRegionDesc[];
  readonly alloc: GuestAllocator;
  readonly queues: FrontendQueue[] = [];
  readonly numQueues: number;
  readonly queueSize: number;
  /** Closed: resolves with the reason (null: orderly). */
  readonly closed: Promise<string | null>;

  /** Features offered by the backend (GET_FEATURES), acked (SET_FEATURES), protocol features acked. */
  backendFeatures = 0n;
  ackedFeatures = 0n;
  protocolFeatures = 0n;
  backendProtocolFeatures = 0n;
  queueNum: number | null = null;
  maxMemSlots: number | null = null;

  private readonly conn: Connection;
  private readonly memfd: number;
  private readonly mapping: Mapping;
  private readonly waiters: Waiter[] = [];
  private readonly timeoutMs: number;
  private readonly driverFeatures: bigint;
  private readonly supportedProtocol: bigint;
  /** Our end of the backend channel (SET_BACKEND_REQ_FD), the masked call notifiers (QEMU). */
  private backendChannelFd = -1;
  private readonly maskedCallFds: number[] = [];
  private isClosed = false;
  private resolveClosed!: (r: string | null) => void;
  /** Run before fds and memory are released (drivers stop their watchers there). */
  private readonly releaseHooks: Array<() => void> = [];

  private constructor(fd: number, options: FrontendOptions) {
    this.style = options.style ?? 'qemu';
    this.memorySize = options.memorySize ?? 8 * 1024 * 1024;
    this.guestBase = options.guestBase ?? 0;
    this.numQueues = options.numQueues ?? 2;
    this.queueSize = options.queueSize ?? 256;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.driverFeatures = options.driverFeatures ?? DEFAULT_DRIVER_FEATURES;
    this.supportedProtocol = options.protocolFeatures ?? (this.style === 'qemu' ? QEMU_PROTOCOL_FEATURES : CH_PROTOCOL_FEATURES);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));

    const userBase = options.userBase ?? 0x7f00_0000_0000;
    const seals = (options.sealMemory ?? true) ? QEMU_MEMFD_SEALS : 0;
    this.memfd = native.memfdCreate('vhost-user-frontend', this.memorySize, seals);
    try {
      this.mapping = native.mmap(this.memfd, this.memorySize, 0);
    } catch (e) {
      closeQuietly(this.memfd);
      closeQuietly(fd);
      throw e;
    }
    this.memory = new Uint8Array(this.mapping.buffer, 0, this.memorySize);
    if (options.splitRegions) {
      const half = Math.floor(this.memorySize / 2 / 4096) * 4096;
      this.regions = [
        { guestAddr: this.guestBase, size: half, userAddr: userBase, mmapOffset: 0 },
        // Discontiguous in frontend address space on purpose.
        { guestAddr: this.guestBase + half, size: this.memorySize - half, userAddr: userBase + half + 0x1000_0000, mmapOffset: half },
      ];
    } else {
      this.regions = [{ guestAddr: this.guestBase, size: this.memorySize, userAddr: userBase, mmapOffset: 0 }];
    }
    this.alloc = new GuestAllocator(this.guestBase, this.guestBase + this.memorySize);
    this.conn = new Connection(fd, { onMessage: (m) => this.onReply(m), onClose: (r) => this.onClosed(r) }, 'reply');
  }

  /** Connect to a backend listening at `path`. */
  static connect(path: string, options: FrontendOptions = {}): VhostUserFrontend {
    return new VhostUserFrontend(native.unixConnect(path), options);
  }

  /** Use an already connected socket (ownership passes to the frontend). */
  static fromFd(fd: number, options: FrontendOptions = {}): VhostUserFrontend {
    return new VhostUserFrontend(fd, options);
  }

  /** Listen at `path` for a backend that connects to us (the backend's connect mode). */
  static listen(path: string, options: FrontendOptions = {}): FrontendListener {
    return new FrontendListener(path, (fd) => new VhostUserFrontend(fd, options));
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  /** The memfd holding guest memory (owned by the frontend; for tests). */
  get memoryFd(): number {
    return this.memfd;
  }

  /** The underlying connection's socket fd (for tests that write raw bytes). */
  get socketFd(): number {
    return this.conn.fd;
  }

  // ---- raw requests ------------------------------------------------------------

  /**
   * Send one request. Resolves with the reply when one is expected (the
   * request has a reply body, or NEED_REPLY, or expectReply), else with null
   * once it has been handed to the socket.
   */
  request(code: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], options: RequestOptions = {}): Promise<Reply | null> {
    const needReply = options.needReply ?? false;
    const wantReply = hasReplyBody(code) || needReply || (options.expectReply ?? false);
    const bytes = encodeMessage(code, requestFlags(needReply), payload);
    return this.sendAndWait(code, bytes, fds, wantReply, options.timeoutMs);
  }

  /** Write arbitrary bytes (may be a broken message). Optionally wait for one reply, matched to `replyCode`. */
  sendRaw(bytes: Uint8Array, fds: number[] = [], replyCode?: number, timeoutMs?: number): Promise<Reply | null> {
    return this.sendAndWait(replyCode ?? -1, bytes, fds, replyCode !== undefined, timeoutMs);
  }

  private sendAndWait(code: number, bytes: Uint8Array, fds: number[], wantReply: boolean, timeoutMs?: number): Promise<Reply | null> {
    if (this.isClosed) return Promise.reject(new VhostUserError(`${requestName(code)}: connection closed`));
    if (!wantReply) {
      this.conn.send(bytes, fds);
      return Promise.resolve(null);
    }
    return new Promise<Reply | null>((resolve, reject) => {
      const w: Waiter = { code, resolve, reject, timer: null, timedOut: false };
      const ms = timeoutMs ?? this.timeoutMs;
      w.timer = setTimeout(() => {
        w.timedOut = true;
        w.timer = null;
        reject(new VhostUserError(`${requestName(code)}: no reply within ${ms} ms`));
      }, ms);
      this.waiters.push(w);
      this.conn.send(bytes, fds);
    });
  }

  private onReply(msg: ReceivedMessage): void {
    const w = this.waiters.shift();
    if (w === undefined) {
      // An unsolicited message: a protocol error by the backend.
      this.conn.close(`unexpected message ${requestName(msg.header.request)} from the backend`);
      return;
    }
    if (w.timer !== null) clearTimeout(w.timer);
    if (w.timedOut) return;
    if (w.code >= 0 && msg.header.request !== w.code) {
      w.reject(new VhostUserError(`reply for ${requestName(msg.header.request)} while waiting for ${requestName(w.code)}`));
      return;
    }
    w.resolve({ header: msg.header, payload: msg.payload });
  }

  private onClosed(reason: string | null): void {
    this.isClosed = true;
    for (const w of this.waiters.splice(0)) {
      if (w.timer !== null) clearTimeout(w.timer);
      if (!w.timedOut) w.reject(new VhostUserError(`${requestName(w.code)}: connection closed${reason ? ` (${reason})` : ''}`));
    }
    this.releaseResources();
    this.resolveClosed(reason);
  }

  // ---- typed requests ----------------------------------------------------------

  /** Whether this style sets NEED_REPLY on `code` now. */
  private needReplyFor(code: number): boolean {
    if ((this.protocolFeatures & pf(ProtocolFeature.REPLY_ACK)) === 0n) return false;
    if (this.style === 'cloud-hypervisor') return true;
    return code === Req.SET_MEM_TABLE || code === Req.ADD_MEM_REG || code === Req.REM_MEM_REG || code === Req.SET_BACKEND_REQ_FD;
  }

  /** A request without a reply body: waits for the ack when NEED_REPLY is used, throws if it is nonzero. */
  private async set(code: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Promise<void> {
    const needReply = this.needReplyFor(code);
    const r = await this.request(code, payload, fds, { needReply });
    if (r === null) return;
    const v = decodeReplyU64(r.payload);
    if (!v.ok) throw new VhostUserError(`${requestName(code)}: ${v.reason}`);
    if (v.value !== 0n) throw new VhostUserError(`${requestName(code)} refused by the backend (${v.value})`);
  }

  private async getU64(code: number): Promise<bigint> {
    const r = await this.request(code, new Uint8Array(0), [], { needReply: this.needReplyFor(code) });
    const v = decodeReplyU64(r!.payload);
    if (!v.ok) throw new VhostUserError(`${requestName(code)}: ${v.reason}`);
    return v.value;
  }

  getFeatures(): Promise<bigint> {
    return this.getU64(Req.GET_FEATURES);
  }
  setFeatures(features: bigint): Promise<void> {
    return this.set(Req.SET_FEATURES, encodeU64(features));
  }
  getProtocolFeatures(): Promise<bigint> {
    return this.getU64(Req.GET_PROTOCOL_FEATURES);
  }
  setProtocolFeatures(features: bigint): Promise<void> {
    return this.set(Req.SET_PROTOCOL_FEATURES, encodeU64(features));
  }
  setOwner(): Promise<void> {
    return this.set(Req.SET_OWNER);
  }
  async getQueueNum(): Promise<number> {
    return Number(await this.getU64(Req.GET_QUEUE_NUM));
  }
  async getMaxMemSlots(): Promise<number> {
    return Number(await this.getU64(Req.GET_MAX_MEM_SLOTS));
  }
  async getStatus(): Promise<number> {
    return Number(await this.getU64(Req.GET_STATUS));
  }
  setStatus(status: number): Promise<void> {
    return this.set(Req.SET_STATUS, encodeU64(status));
  }
  setMemTable(regions: MemoryRegionDesc[] = this.regions): Promise<void> {
    return this.set(Req.SET_MEM_TABLE, encodeMemTable(regions), regions.map(() => this.memfd));
  }
  addMemReg(region: MemoryRegionDesc): Promise<void> {
    return this.set(Req.ADD_MEM_REG, encodeMemRegion(region), [this.memfd]);
  }
  remMemReg(region: MemoryRegionDesc): Promise<void> {
    return this.set(Req.REM_MEM_REG, encodeMemRegion(region));
  }
  setVringNum(index: number, num: number): Promise<void> {
    return this.set(Req.SET_VRING_NUM, encodeVringState(index, num));
  }
  setVringBase(index: number, base: number): Promise<void> {
    return this.set(Req.SET_VRING_BASE, encodeVringState(index, base));
  }
  setVringEnable(index: number, enable: boolean): Promise<void> {
    return this.set(Req.SET_VRING_ENABLE, encodeVringState(index, enable ? 1 : 0));
  }
  /** SET_VRING_ADDR with guest-physical addresses (translated here to frontend addresses). */
  setVringAddr(index: number, gpa: { descAddr: number; availAddr: number; usedAddr: number }): Promise<void> {
    return this.set(
      Req.SET_VRING_ADDR,
      encodeVringAddr({
        index,
        flags: 0,
        descUser: this.gpaToUser(gpa.descAddr),
        usedUser: this.gpaToUser(gpa.usedAddr),
        availUser: this.gpaToUser(gpa.availAddr),
        logAddr: 0,
      }),
    );
  }
  setVringKick(index: number, fd: number | null): Promise<void> {
    return this.set(Req.SET_VRING_KICK, encodeVringFd(index, fd === null), fd === null ? [] : [fd]);
  }
  setVringCall(index: number, fd: number | null): Promise<void> {
    return this.set(Req.SET_VRING_CALL, encodeVringFd(index, fd === null), fd === null ? [] : [fd]);
  }
  setVringErr(index: number, fd: number | null): Promise<void> {
    return this.set(Req.SET_VRING_ERR, encodeVringFd(index, fd === null), fd === null ? [] : [fd]);
  }
  async getVringBase(index: number): Promise<number> {
    const r = await this.request(Req.GET_VRING_BASE, encodeVringState(index, 0), [], { needReply: this.needReplyFor(Req.GET_VRING_BASE) });
    const v = decodeReplyVringState(r!.payload);
    if (!v.ok) throw new VhostUserError(`GET_VRING_BASE: ${v.reason}`);
    return v.value.num;
  }
  async getConfig(offset: number, size: number): Promise<ConfigAccess> {
    const r = await this.request(Req.GET_CONFIG, encodeConfig(offset, 0, new Uint8Array(size)), [], {
      needReply: this.needReplyFor(Req.GET_CONFIG),
    });
    const v = decodeReplyConfig(r!.payload);
    if (!v.ok) throw new VhostUserError(v.reason);
    return v.value;
  }
  /** SET_BACKEND_REQ_FD with one end of a new socketpair (we keep the other). */
  async setBackendReqFd(): Promise<void> {
    const [ours, theirs] = native.unixSocketPair();
    closeQuietly(this.backendChannelFd);
    this.backendChannelFd = ours;
    try {
      await this.set(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirs]);
    } finally {
      closeQuietly(theirs);
    }
  }

  /** Round trip that proves every earlier request was processed (GET_FEATURES). */
  async sync(): Promise<void> {
    await this.getFeatures();
  }

  // ---- address helpers --------------------------------------------------------

  /** Frontend ("user") address of guest-physical `gpa` (throws if outside memory). */
  gpaToUser(gpa: number): number {
    for (const r of this.regions) {
      if (gpa >= r.guestAddr && gpa - r.guestAddr < r.size) return r.userAddr + (gpa - r.guestAddr);
    }
    // Let callers craft addresses outside memory on purpose: map them past the first region.
    return this.regions[0]!.userAddr + (gpa - this.regions[0]!.guestAddr);
  }

  /** A view of guest memory [gpa, gpa+len). */
  view(gpa: number, len: number): Uint8Array {
    const off = gpa - this.guestBase;
    if (off < 0 || off + len > this.memorySize) throw new RangeError('outside guest memory');
    return this.memory.subarray(off, off + len);
  }

  // ---- negotiation as QEMU / cloud-hypervisor -----------------------------------

  /** The init phase of the chosen style (features, protocol features, queue count, owner). */
  async negotiate(): Promise<void> {
    const hasProto = (bit: number): boolean => (this.protocolFeatures & pf(bit)) !== 0n;
    if (this.style === 'cloud-hypervisor') {
      await this.setOwner();
      this.backendFeatures = await this.getFeatures();
      if ((this.backendFeatures & F_PROTOCOL) !== 0n) {
        this.backendProtocolFeatures = await this.getProtocolFeatures();
        const acked = this.backendProtocolFeatures & this.supportedProtocol;
        await this.setProtocolFeatures(acked);
        this.protocolFeatures = acked; // NEED_REPLY from now on (if REPLY_ACK)
      }
      if (hasProto(ProtocolFeature.MQ)) {
        this.queueNum = await this.getQueueNum();
        if (this.numQueues > this.queueNum) {
          throw new VhostUserError(`backend supports ${this.queueNum} queues, ${this.numQueues} requested`);
        }
      }
      return;
    }
    // QEMU: vhost_user_backend_init, then vhost_dev_init.
    this.backendFeatures = await this.getFeatures();
    if ((this.backendFeatures & F_PROTOCOL) !== 0n) {
      this.backendProtocolFeatures = await this.getProtocolFeatures();
      const acked = this.backendProtocolFeatures & this.supportedProtocol;
      await this.setProtocolFeatures(acked);
      this.protocolFeatures = acked;
      if (hasProto(ProtocolFeature.MQ)) {
        this.queueNum = await this.getQueueNum();
        if (this.queueNum === 0 || Math.ceil(this.numQueues / 2) > this.queueNum) {
          throw new VhostUserError(`backend supports ${this.queueNum} queues`);
        }
      }
      if (hasProto(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
        this.maxMemSlots = await this.getMaxMemSlots();
        if (this.maxMemSlots < this.regions.length) throw new VhostUserError(`backend has only ${this.maxMemSlots} memory slots`);
      }
      if (hasProto(ProtocolFeature.BACKEND_REQ)) await this.setBackendReqFd();
    }
    await this.setOwner();
    this.backendFeatures = await this.getFeatures();
    for (let i = 0; i < this.numQueues; i++) {
      const masked = native.eventfdCreate();
      this.maskedCallFds.push(masked);
      await this.setVringCall(i, masked);
    }
  }

  /** Allocate the rings in guest memory and create kick/call eventfds (no messages). */
  prepareQueues(): void {
    if (this.queues.length > 0) return;
    const eventIdx = (this.ackedFeatures & VIRTIO_RING_F_EVENT_IDX) !== 0n;
    for (let i = 0; i < this.numQueues; i++) {
      const probe = DriverQueue.layout(this.queueSize, 0);
      const at = this.alloc.alloc(probe.end, 4096);
      const layout = DriverQueue.layout(this.queueSize, at);
      const driver = new DriverQueue(this.memory, { size: this.queueSize, ...layout }, { eventIdx, base: this.guestBase });
      this.queues.push({
        index: i,
        driver,
        kickFd: native.eventfdCreate(),
        callFd: native.eventfdCreate(),
        size: this.queueSize,
        descAddr: layout.descAddr,
        availAddr: layout.availAddr,
        usedAddr: layout.usedAddr,
      });
    }
  }

  /** The start phase of the chosen style: features, memory, rings, enable. */
  async start(): Promise<void> {
    const protocol = (this.backendFeatures & F_PROTOCOL) !== 0n ? F_PROTOCOL : 0n;
    this.ackedFeatures = (this.backendFeatures & this.driverFeatures) | protocol;
    const hasProto = (bit: number): boolean => (this.protocolFeatures & pf(bit)) !== 0n;
    this.prepareQueues();
    if (this.style === 'cloud-hypervisor') {
      await this.setFeatures(this.ackedFeatures);
      await this.setMemTable();
      for (const q of this.queues) await this.setVringNum(q.index, q.size);
      for (const q of this.queues) {
        await this.setVringAddr(q.index, q);
        await this.setVringBase(q.index, q.driver.availIdx);
        await this.setVringCall(q.index, q.callFd);
        await this.setVringKick(q.index, q.kickFd);
      }
      for (const q of this.queues) await this.setVringEnable(q.index, true);
      return;
    }
    await this.setFeatures(this.ackedFeatures);
    if (hasProto(ProtocolFeature.STATUS)) {
      const s = await this.getStatus();
      await this.setStatus(s | Status.FEATURES_OK);
    }
    if (hasProto(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      for (const r of this.regions) await this.addMemReg(r);
    } else {
      await this.setMemTable();
    }
    for (const q of this.queues) {
      await this.setVringNum(q.index, q.size);
      await this.setVringBase(q.index, q.driver.availIdx);
      await this.setVringAddr(q.index, q);
      await this.setVringKick(q.index, q.kickFd);
      await this.setVringCall(q.index, q.callFd);
    }
    if (hasProto(ProtocolFeature.STATUS)) {
      const s = await this.getStatus();
      await this.setStatus(s | Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK);
    }
    if (protocol !== 0n) for (const q of this.queues) await this.setVringEnable(q.index, true);
  }

  /** Stop the rings as the style does; returns each ring's next avail index (GET_VRING_BASE). */
  async stop(): Promise<number[]> {
    const protocol = (this.ackedFeatures & F_PROTOCOL) !== 0n;
    if (protocol) for (const q of this.queues) await this.setVringEnable(q.index, false);
    if (this.style === 'qemu' && (this.protocolFeatures & pf(ProtocolFeature.STATUS)) !== 0n) await this.setStatus(0);
    const bases: number[] = [];
    for (const q of this.queues) bases.push(await this.getVringBase(q.index));
    return bases;
  }

  /** negotiate() then start(). */
  async connectAndStart(): Promise<void> {
    await this.negotiate();
    await this.start();
  }

  /** Notify the backend about queue `index` if its suppression asks for it (or always with force). */
  kick(index: number, force = false): void {
    const q = this.queues[index];
    if (q === undefined) throw new RangeError(`no queue ${index}`);
    if (q.driver.needsKick() || force) native.eventfdSignal(q.kickFd);
  }

  /** Register `hook` to run when the frontend closes, before its eventfds and memory are released. */
  onRelease(hook: () => void): void {
    this.releaseHooks.push(hook);
  }

  /** Close the connection and release memory, eventfds and fds. Resolves when closed. */
  close(): Promise<string | null> {
    this.conn.close(null);
    return this.closed;
  }

  private releaseResources(): void {
    // Watchers on our eventfds must go before the fds (a closed fd number may be reused at once).
    for (const hook of this.releaseHooks.splice(0)) {
      try {
        hook();
      } catch {
        /* a hook's failure must not keep fds open */
      }
    }
    for (const q of this.queues) {
      closeQuietly(q.kickFd);
      closeQuietly(q.callFd);
    }
    for (const fd of this.maskedCallFds.splice(0)) closeQuietly(fd);
    closeQuietly(this.backendChannelFd);
    this.backendChannelFd = -1;
    // Views of guest memory held by callers become empty (detached) here.
    native.munmap(this.mapping);
    closeQuietly(this.memfd);
  }
}

/** Listens for a backend in connect mode; each accepted connection becomes a frontend. */
export class FrontendListener {
  private readonly listener: UnixListener;
  private watcher: ReturnType<typeof native.watch> | null;
  private readonly pending: Array<(f: VhostUserFrontend) => void> = [];
  private readonly ready: VhostUserFrontend[] = [];

  constructor(
    readonly path: string,
    private readonly make: (fd: number) => VhostUserFrontend,
  ) {
    this.listener = UnixListener.open(path, 4);
    try {
      this.watcher = native.watch(this.listener.fd, 'r', () => this.onReadable());
    } catch (e) {
      this.listener.close();
      throw e;
    }
  }

  private onReadable(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = native.unixAccept(this.listener.fd);
      } catch {
        return;
      }
      if (fd === null) return;
      const f = this.make(fd);
      const waiter = this.pending.shift();
      if (waiter) waiter(f);
      else this.ready.push(f);
    }
  }

  /** The next backend that connects. */
  accept(): Promise<VhostUserFrontend> {
    const f = this.ready.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => this.pending.push(resolve));
  }

  /** Stop listening, close connections nobody accept()ed yet, remove the socket file if still ours (frontends handed out stay open). */
  close(): void {
    if (this.watcher === null) return;
    this.watcher.close();
    this.watcher = null;
    this.listener.close();
    for (const f of this.ready.splice(0)) void f.close();
  }
}
