/**
 * The backend side of one vhost-user connection: a state machine that turns
 * validated frontend requests into calls on a `VirtioDevice`.
 *
 * Theory of operation.
 *
 * Negotiation. GET_FEATURES answers the device's virtio features plus
 * VHOST_USER_F_PROTOCOL_FEATURES (bit 30); SET_FEATURES refuses any bit we
 * did not offer. GET/SET_PROTOCOL_FEATURES offer MQ, REPLY_ACK, BACKEND_REQ,
 * CONFIG, CONFIGURE_MEM_SLOTS and STATUS — nothing that needs shared logs,
 * inflight tracking or in-band notifications. The session accepts requests
 * in any order a real frontend uses: QEMU (GET_FEATURES, GET/SET_PROTOCOL_
 * FEATURES, GET_QUEUE_NUM, ..., SET_OWNER, SET_FEATURES, SET_MEM_TABLE,
 * SET_VRING_*) and cloud-hypervisor (SET_OWNER first, then the same
 * negotiation, then SET_FEATURES, SET_MEM_TABLE, all SET_VRING_NUMs, per
 * ring ADDR/BASE/CALL/KICK, then SET_VRING_ENABLE for every ring).
 *
 * Memory. SET_MEM_TABLE maps every region (native.mmap at its mmap_offset),
 * builds a new GuestMemory, hands it to the device, and only THEN unmaps the
 * previous regions, so a running ring never sees unmapped memory. Region fds
 * are closed right after mapping (the mapping keeps the memory). ADD_MEM_REG
 * / REM_MEM_REG edit the table one region at a time the same way (up to
 * MAX_MEM_SLOTS; every refused region is unmapped and its fd closed).
 *
 * What a region fd may be, and the SIGBUS hazard. A region fd must be a
 * regular file (memfd, tmpfs/shm, hugetlbfs or a plain file: what QEMU and
 * cloud-hypervisor send) and mmap_offset + size must lie within its current
 * size: touching a page of a shared file mapping beyond the end of the file
 * raises SIGBUS, which kills the process. Device files, sockets, pipes and
 * eventfds are refused (their "size" says nothing about what may be
 * touched). That check is made once, at map time. A frontend that later
 * shrinks the file (ftruncate on its memfd) still makes our next access to
 * the cut-off pages fault with SIGBUS; nothing in JavaScript can catch that.
 * Only a seal closes that door: a memfd sealed with F_SEAL_SHRINK can never
 * shrink again, whoever holds it (QEMU's memory-backend-memfd seals
 * GROW|SHRINK|SEAL by default). So before the size check each region's
 * seals are read (fcntl F_GET_SEALS, native.fdSeals):
 *  - sealed against shrinking: accepted;
 *  - a memfd (its /proc/self/fd link is "/memfd:...") without the seal:
 *    accepted with a warning, once per server (`onUnsealedMemory`; once per
 *    session without one): the frontend is then trusted, as by
 *    libvhost-user, passt and rust-vmm, to keep its RAM in place
 *    (cloud-hypervisor, and QEMU with seal=off, send such memfds);
 *  - any other file (tmpfs, hugetlbfs or a plain file, which cannot carry
 *    that seal): accepted silently, trusted the same way;
 * unless `requireSealedMemory` (--require-sealed-memory): then only regions
 * sealed against shrinking are accepted and any other is refused like a
 * bad region (error reply; nothing mapped).
 *
 * Notification fds. Kick, call and err fds must be eventfds (checked through
 * /proc/self/fd when /proc is mounted): a pipe or a regular file as a call
 * fd would make our eventfd write block the whole process once its buffer is
 * full.
 *
 * Rings. Each ring collects: size (SET_VRING_NUM), addresses (SET_VRING_ADDR,
 * frontend addresses translated to guest-physical through the memory table
 * and checked to lie wholly inside it), base (SET_VRING_BASE), kick (an fd,
 * or "poll" when the no-fd bit is set), call and err fds. Per the spec a ring
 * is stopped until the backend gets its kick; we start it (device.startQueue)
 * as soon as the kick has been set and size, addresses and memory are known —
 * the same point at which libvhost-user and rust-vmm start theirs.
 * GET_VRING_BASE stops the ring (device.stopQueue), replies the next avail
 * index and, like those implementations, closes its kick and call fds: a
 * restart needs a new SET_VRING_KICK. Enabling: without
 * VHOST_USER_F_PROTOCOL_FEATURES acked, a started ring is enabled; with it,
 * rings are disabled until SET_VRING_ENABLE 1. An explicit SET_VRING_ENABLE
 * always wins. A polled ring (no kick fd) is kicked from a 1 ms timer.
 *
 * Replies. Requests with a reply body (GET_*) are always answered; if one
 * fails validation, the answer has an empty payload, which every frontend
 * treats as an error (the spec's convention for GET_CONFIG). Other requests
 * get a u64 ack (0 ok, 1 error) when REPLY_ACK was negotiated and the request
 * has NEED_REPLY; otherwise a failure is only logged (the first
 * MAX_LOGGED_REFUSALS of a session; all are counted in `stats`). Unknown
 * request codes are treated the same way: never a crash. A broken header is
 * a framing error: the connection is closed, which resets the session.
 *
 * Config. GET_CONFIG is answered whether or not CONFIG was negotiated (it
 * is read-only and harmless); SET_CONFIG is refused, except a live-migration
 * write that changes nothing (virtio-net has no driver-writable field).
 *
 * Status. SET_STATUS/GET_STATUS keep the virtio status byte, plus
 * NEEDS_RESET (0x40) once the device reported a corrupt ring. Status 0 does
 * not stop rings (QEMU sends it before GET_VRING_BASE); rings are governed
 * by the vring messages only.
 *
 * Handshake. A frontend speaks first, at once: QEMU sends GET_FEATURES
 * and cloud-hypervisor SET_OWNER the moment they are connected, long before
 * the guest runs. A connection that has not delivered one complete request
 * within `handshakeTimeoutMs` (default 10 s) is not a frontend that will
 * ever speak (a stuck process, a connect-only probe) and is closed, so it
 * cannot hold the server's one session slot. Once the first request is in,
 * no timer applies: a negotiated frontend may stay quiet for as long as its
 * guest does not start the device.
 *
 * Teardown (disconnect, framing error, close()): device.reset(), memory
 * withdrawn from the device and unmapped, every fd the session owns (kick,
 * call, err, backend channel, the socket) closed. Nothing is left behind.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { native, errnoCode, Seal, type Mapping } from '../native/index.js';
import { GuestMemory, type GuestMemoryRegion } from '../virtio/guest-memory.js';
import type { VirtioDevice } from '../virtio/device.js';
import { Connection, closeQuietly, type ReceivedMessage } from './connection.js';
import {
  FLAG_NEED_REPLY,
  MAX_MEM_SLOTS,
  ProtocolFeature,
  REPLY_FLAGS,
  Req,
  VHOST_USER_F_PROTOCOL_FEATURES,
  decodeRequest,
  encodeConfig,
  encodeMessage,
  encodeU64,
  encodeVringState,
  hasReplyBody,
  regionConflict,
  requestName,
  type MemoryRegionDesc,
  type RequestBody,
} from './messages.js';

/** Where the session writes what happens. */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export const nullLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Protocol features this backend offers. */
export const OFFERED_PROTOCOL_FEATURES: bigint =
  (1n << BigInt(ProtocolFeature.MQ)) |
  (1n << BigInt(ProtocolFeature.REPLY_ACK)) |
  (1n << BigInt(ProtocolFeature.BACKEND_REQ)) |
  (1n << BigInt(ProtocolFeature.CONFIG)) |
  (1n << BigInt(ProtocolFeature.CONFIGURE_MEM_SLOTS)) |
  (1n << BigInt(ProtocolFeature.STATUS));

/** Refused requests logged per session (the rest are only counted in stats). */
export const MAX_LOGGED_REFUSALS = 100;
/** Largest split-ring size accepted by SET_VRING_NUM. */
export const MAX_QUEUE_SIZE = 32768;
/** Default time a new connection has to deliver its first request. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Virtio status bit DEVICE_NEEDS_RESET. */
export const STATUS_NEEDS_RESET = 0x40;

const F_PROTOCOL = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);
const F_INDIRECT_DESC = 1n << 28n;
const F_EVENT_IDX = 1n << 29n;
const POLL_INTERVAL_MS = 1;
/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface MappedRegion {
  desc: MemoryRegionDesc;
  mapping: Mapping;
}

interface Vring {
  num: number | null;
  /** Guest-physical ring addresses (translated), or null. */
  addr: { desc: number; avail: number; used: number } | null;
  /** The frontend's addresses as sent (to detect a real change on re-send). */
  userAddr: { desc: number; avail: number; used: number } | null;
  base: number;
  /** Kick set: an fd (>= 0) or polling (-1 with kickSet). */
  kickSet: boolean;
  kickFd: number;
  callFd: number;
  errFd: number;
  /** SET_VRING_ENABLE's last word, or null if never sent. */
  enabledExplicit: boolean | null;
  started: boolean;
  /** The enabled state last told to the device while started. */
  deviceEnabled: boolean;
}

type Outcome = { ok: true; body?: Uint8Array } | { ok: false; reason: string };

const OK: Outcome = { ok: true };
function err(reason: string): Outcome {
  return { ok: false, reason };
}

function newVring(): Vring {
  return {
    num: null,
    addr: null,
    userAddr: null,
    base: 0,
    kickSet: false,
    kickFd: -1,
    callFd: -1,
    errFd: -1,
    enabledExplicit: null,
    started: false,
    deviceEnabled: false,
  };
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * Whether `fd` is an eventfd: 'yes', 'no', or 'unknown' when /proc is not
 * there to tell (then it is accepted). `blocking` is true when the eventfd
 * lacks O_NONBLOCK (read from /proc/self/fdinfo).
 */
function eventfdCheck(fd: number): { kind: 'yes' | 'no' | 'unknown'; blocking: boolean } {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return { kind: 'unknown', blocking: false };
  }
  if (target !== 'anon_inode:[eventfd]') return { kind: 'no', blocking: false };
  let blocking = false;
  try {
    const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'));
    if (m !== null) blocking = (parseInt(m[1]!, 8) & 0o4000) === 0; // O_NONBLOCK
  } catch {
    /* no fdinfo: say nothing */
  }
  return { kind: 'yes', blocking };
}

/**
 * How a region's file is guarded against shrinking: 'sealed' (F_SEAL_SHRINK),
 * 'memfd' (a memfd without that seal), or 'file' (anything else: no seal can
 * guard it).
 */
function shrinkGuard(fd: number): 'sealed' | 'memfd' | 'file' {
  let seals: number;
  try {
    seals = native.fdSeals(fd);
  } catch {
    seals = -1;
  }
  if (seals >= 0 && (seals & Seal.SHRINK) !== 0) return 'sealed';
  let target: string | null;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    target = null;
  }
  // Without /proc, a file that takes seals (shmem or hugetlbfs) may be a memfd.
  if (target === null) return seals >= 0 ? 'memfd' : 'file';
  return target.startsWith('/memfd:') ? 'memfd' : 'file';
}

/** The warning for guest memory in an unsealed memfd. */
export const UNSEALED_MEMORY_WARNING =
  'guest memory is a memfd not sealed against shrinking (no F_SEAL_SHRINK): if the frontend shrinks it, this process dies of SIGBUS ' +
  "(QEMU's memory-backend-memfd seals by default; --require-sealed-memory refuses such memory)";

/** A function that logs its first message as a vhost-user warning and ignores the rest. */
export function warnOnce(log: Logger): (message: string) => void {
  let warned = false;
  return (message) => {
    if (warned) return;
    warned = true;
    log.warn(`vhost-user: ${message}`);
  };
}

export interface SessionOptions {
  logger?: Logger;
  /** Accept only memory regions sealed against shrinking (F_SEAL_SHRINK); refuse the others. */
  requireSealedMemory?: boolean;
  /** Told (with UNSEALED_MEMORY_WARNING) each time an unsealed memfd region is accepted; default: a warning once per session. */
  onUnsealedMemory?: (message: string) => void;
  /** Called once when the session has ended and cleaned up (reason null: orderly). */
  onClose?: (reason: string | null) => void;
  /** Close the connection if no complete request arrives within this many ms (default DEFAULT_HANDSHAKE_TIMEOUT_MS; 0 or Infinity: never). */
  handshakeTimeoutMs?: number;
}

/** Counters a test or the CLI can read. */
export interface SessionStats {
  messages: number;
  /** Requests refused (validation or state). */
  errors: number;
  /** Exceptions caught while handling a request (a bug in the session or the device, never expected). */
  internalErrors: number;
  lastError: string | null;
  /** True if the session was closed because no request arrived in time. */
  handshakeTimedOut: boolean;
}

export class VhostUserSession {
  private readonly conn: Connection;
  private readonly log: Logger;
  private readonly onCloseCb: ((reason: string | null) => void) | undefined;
  private readonly vrings: Vring[];
  private regions: MappedRegion[] = [];
  private memory: GuestMemory | null = null;
  private ackedFeatures = 0n;
  private protocolFeatures = 0n;
  private owner = false;
  private status = 0;
  private broken = false;
  private backendReqFd = -1;
  private pollTimer: ReturnType<typeof setInterval> | null = null;
  private handshakeTimer: ReturnType<typeof setTimeout> | null = null;
  private ended = false;
  private warnedBlocking = false;
  private readonly requireSealedMemory: boolean;
  private readonly onUnsealedMemory: (message: string) => void;
  readonly stats: SessionStats = { messages: 0, errors: 0, internalErrors: 0, lastError: null, handshakeTimedOut: false };

  /** Take ownership of connected socket `fd` and serve `device` over it. */
  constructor(
    fd: number,
    private readonly device: VirtioDevice,
    options: SessionOptions = {},
  ) {
    this.log = options.logger ?? nullLogger;
    this.onCloseCb = options.onClose;
    this.requireSealedMemory = options.requireSealedMemory ?? false;
    this.onUnsealedMemory = options.onUnsealedMemory ?? warnOnce(this.log);
    const maxQueues = Math.max(0, Math.min(device.maxQueues | 0, 256));
    this.vrings = Array.from({ length: maxQueues }, newVring);
    this.conn = new Connection(fd, { onMessage: (m) => this.onMessage(m), onClose: (r) => this.teardown(r) }, 'request');
    const handshakeMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    // Infinity (or anything beyond setTimeout's 2^31-1 ms, which Node turns into 1 ms) means never, as 0 does.
    if (handshakeMs > 0 && handshakeMs <= MAX_TIMER_MS) {
      this.handshakeTimer = setTimeout(() => {
        this.handshakeTimer = null;
        this.stats.handshakeTimedOut = true;
        this.conn.close(`no request within ${handshakeMs} ms (handshake timeout)`);
      }, handshakeMs);
      this.handshakeTimer.unref();
    }
  }

  /** A snapshot of the negotiated state (for tests and logs). */
  get state(): {
    owner: boolean;
    ackedFeatures: bigint;
    protocolFeatures: bigint;
    status: number;
    regions: MemoryRegionDesc[];
    rings: Array<{ started: boolean; enabled: boolean; num: number | null; base: number; kickFd: number; callFd: number; errFd: number }>;
    backendReqFd: number;
  } {
    return {
      owner: this.owner,
      ackedFeatures: this.ackedFeatures,
      protocolFeatures: this.protocolFeatures,
      status: this.status,
      regions: this.regions.map((r) => ({ ...r.desc })),
      rings: this.vrings.map((v) => ({
        started: v.started,
        enabled: v.started ? v.deviceEnabled : this.enabledFor(v),
        num: v.num,
        base: v.base,
        kickFd: v.kickFd,
        callFd: v.callFd,
        errFd: v.errFd,
      })),
      backendReqFd: this.backendReqFd,
    };
  }

  /** True once the session has ended. */
  get closed(): boolean {
    return this.ended;
  }

  /** Reply bytes queued because the frontend has not read them yet (bounded: see connection.ts). */
  get pendingReplyBytes(): number {
    return this.conn.pendingWrites;
  }

  /** End the session (closes the socket; cleanup as on disconnect). */
  close(): void {
    this.conn.close(null);
  }

  /**
   * End the session now if the frontend has already closed its end of the
   * socket, without waiting for the event loop to deliver the end of stream
   * (requests it left unread are dropped: nobody is there to answer). True
   * if the session is over.
   */
  endIfFrontendClosed(): boolean {
    if (!this.ended && this.conn.peerClosed) this.conn.close(null);
    return this.ended;
  }

  /** The device reports a corrupt ring: remember NEEDS_RESET and signal the ring's err fd. */
  deviceBroken(queueIndex: number, reason: string): void {
    this.broken = true;
    this.log.error(`vhost-user: queue ${queueIndex} broken: ${reason}`);
    const v = this.vrings[queueIndex];
    if (v !== undefined && v.errFd >= 0) {
      try {
        native.eventfdSignal(v.errFd);
      } catch {
        /* the frontend closed its end: nothing to tell */
      }
    }
  }

  // ---- dispatch --------------------------------------------------------------

  private onMessage(msg: ReceivedMessage): void {
    if (this.ended) return;
    this.stats.messages++;
    if (this.handshakeTimer !== null) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
    const code = msg.header.request;
    const needReply = (msg.header.flags & FLAG_NEED_REPLY) !== 0;
    const decoded = decodeRequest(code, msg.payload, msg.fdCount);
    let outcome: Outcome;
    if (!decoded.ok) {
      outcome = err(decoded.reason);
    } else {
      try {
        outcome = this.handle(code, decoded.value, msg);
      } catch (e) {
        this.stats.internalErrors++;
        outcome = err(`internal error: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    if (this.ended) return;
    if (!outcome.ok) {
      this.stats.errors++;
      this.stats.lastError = `${requestName(code)}: ${outcome.reason}`;
      // A frontend that floods bad requests must not flood the log.
      if (this.stats.errors <= MAX_LOGGED_REFUSALS) this.log.warn(`vhost-user: refused ${this.stats.lastError}`);
      if (this.stats.errors === MAX_LOGGED_REFUSALS) this.log.warn('vhost-user: further refusals in this session are counted, not logged');
    } else {
      this.log.debug(`vhost-user: ${requestName(code)} ok`);
    }
    this.reply(code, needReply, outcome);
  }

  private reply(code: number, needReply: boolean, outcome: Outcome): void {
    if (hasReplyBody(code)) {
      const body = outcome.ok && outcome.body !== undefined ? outcome.body : new Uint8Array(0);
      this.conn.send(encodeMessage(code, REPLY_FLAGS, body));
      return;
    }
    if (needReply && this.hasProtocol(ProtocolFeature.REPLY_ACK)) {
      this.conn.send(encodeMessage(code, REPLY_FLAGS, encodeU64(outcome.ok ? 0 : 1)));
    }
  }

  private hasProtocol(bit: number): boolean {
    return (this.protocolFeatures & (1n << BigInt(bit))) !== 0n;
  }

  private handle(code: number, body: RequestBody, msg: ReceivedMessage): Outcome {
    switch (code) {
      case Req.GET_FEATURES:
        return { ok: true, body: encodeU64(this.device.deviceFeatures | F_PROTOCOL) };
      case Req.SET_FEATURES:
        return this.setFeatures((body as { value: bigint }).value);
      case Req.GET_PROTOCOL_FEATURES:
        return { ok: true, body: encodeU64(OFFERED_PROTOCOL_FEATURES) };
      case Req.SET_PROTOCOL_FEATURES: {
        const value = (body as { value: bigint }).value;
        const extra = value & ~OFFERED_PROTOCOL_FEATURES;
        if (extra !== 0n) return err(`protocol features 0x${extra.toString(16)} not offered`);
        this.protocolFeatures = value;
        return OK;
      }
      case Req.SET_OWNER:
        this.owner = true;
        return OK;
      case Req.RESET_OWNER:
        // Deprecated; the spec recommends ignoring it or disabling all rings.
        this.owner = false;
        for (let i = 0; i < this.vrings.length; i++) {
          this.vrings[i]!.enabledExplicit = false;
          this.syncEnabled(i);
        }
        return OK;
      case Req.SET_MEM_TABLE:
        return this.setMemTable((body as { regions: MemoryRegionDesc[] }).regions, msg);
      case Req.GET_MAX_MEM_SLOTS:
        return { ok: true, body: encodeU64(MAX_MEM_SLOTS) };
      case Req.ADD_MEM_REG:
        return this.addMemReg((body as { region: MemoryRegionDesc }).region, msg);
      case Req.REM_MEM_REG:
        return this.remMemReg((body as { region: MemoryRegionDesc }).region);
      case Req.GET_QUEUE_NUM:
        // The number of virtqueues (libvhost-user and rust-vmm answer the
        // same): cloud-hypervisor compares it with its virtqueue count,
        // QEMU with its queue-pair count, and both are satisfied.
        return { ok: true, body: encodeU64(this.vrings.length) };
      case Req.SET_VRING_NUM:
      case Req.SET_VRING_BASE:
      case Req.GET_VRING_BASE:
      case Req.SET_VRING_ENABLE: {
        const { index, num } = body as { index: number; num: number };
        if (index >= this.vrings.length) return err(`vring index ${index} >= ${this.vrings.length}`);
        if (code === Req.SET_VRING_NUM) return this.setVringNum(index, num);
        if (code === Req.SET_VRING_BASE) return this.setVringBase(index, num);
        if (code === Req.GET_VRING_BASE) return this.getVringBase(index);
        return this.setVringEnable(index, num === 1);
      }
      case Req.SET_VRING_ADDR: {
        const a = body as Extract<RequestBody, { type: 'vring-addr' }>;
        if (a.index >= this.vrings.length) return err(`vring index ${a.index} >= ${this.vrings.length}`);
        return this.setVringAddr(a.index, { desc: a.descUser, avail: a.availUser, used: a.usedUser });
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const { index, noFd } = body as { index: number; noFd: boolean };
        if (index >= this.vrings.length) return err(`vring index ${index} >= ${this.vrings.length}`);
        if (!noFd) {
          // Refused fds stay with the message, which closes them.
          const check = eventfdCheck(msg.fdAt(0));
          if (check.kind === 'no') return err('the fd is not an eventfd');
          if (check.blocking && code !== Req.SET_VRING_KICK && !this.warnedBlocking) {
            this.warnedBlocking = true;
            this.log.warn(`vhost-user: ${requestName(code)} ${index}: blocking eventfd (a saturated counter would block our writes)`);
          }
        }
        const fd = noFd ? -1 : msg.takeFd(0);
        if (code === Req.SET_VRING_KICK) return this.setVringKick(index, fd);
        if (code === Req.SET_VRING_CALL) return this.setVringCall(index, fd);
        const v = this.vrings[index]!;
        closeQuietly(v.errFd);
        v.errFd = fd;
        return OK;
      }
      case Req.GET_CONFIG:
        return this.getConfig(body as Extract<RequestBody, { type: 'config' }>);
      case Req.SET_CONFIG:
        return this.setConfig(body as Extract<RequestBody, { type: 'config' }>);
      case Req.SET_STATUS: {
        const value = (body as { value: number }).value;
        this.status = value;
        if (value === 0) this.broken = false;
        return OK;
      }
      case Req.GET_STATUS:
        return { ok: true, body: encodeU64(this.status | (this.broken ? STATUS_NEEDS_RESET : 0)) };
      case Req.SET_BACKEND_REQ_FD:
        closeQuietly(this.backendReqFd);
        this.backendReqFd = msg.takeFd(0);
        return OK;
      default:
        return err('not handled');
    }
  }

  // ---- features --------------------------------------------------------------

  private setFeatures(value: bigint): Outcome {
    const offered = this.device.deviceFeatures | F_PROTOCOL;
    const extra = value & ~offered;
    if (extra !== 0n) return err(`features 0x${extra.toString(16)} not offered`);
    const anyStarted = this.vrings.some((v) => v.started);
    if (anyStarted && value !== this.ackedFeatures) this.log.warn('vhost-user: SET_FEATURES changed features while rings run');
    this.ackedFeatures = value;
    this.device.setAckedFeatures(value & ~F_PROTOCOL);
    for (let i = 0; i < this.vrings.length; i++) this.syncEnabled(i);
    return OK;
  }

  private enabledFor(v: Vring): boolean {
    return v.enabledExplicit ?? (this.ackedFeatures & F_PROTOCOL) === 0n;
  }

  /** Tell the device a started ring's enabled state if it changed. */
  private syncEnabled(index: number): void {
    const v = this.vrings[index]!;
    if (!v.started) return;
    const want = this.enabledFor(v);
    if (want !== v.deviceEnabled) {
      v.deviceEnabled = want;
      this.device.enableQueue(index, want);
    }
  }

  // ---- memory ----------------------------------------------------------------

  /** Map one region from `fd`; an error string on failure. */
  private mapRegion(desc: MemoryRegionDesc, fd: number): Mapping | string {
    // Seals first: with F_SEAL_SHRINK the size checked below can never shrink.
    const guard = shrinkGuard(fd);
    if (guard !== 'sealed' && this.requireSealedMemory) {
      return guard === 'memfd'
        ? 'memfd not sealed against shrinking (F_SEAL_SHRINK), refused (sealed memory required)'
        : 'not a memfd sealed against shrinking (F_SEAL_SHRINK), refused (sealed memory required)';
    }
    let fdSize: number;
    try {
      fdSize = native.fdSize(fd);
    } catch (e) {
      return `fstat failed: ${errnoCode(e) ?? String(e)}`;
    }
    if (fdSize < 0) return 'the fd is not a regular file (memfd, shm, hugetlbfs or file)';
    if (desc.mmapOffset + desc.size > fdSize) {
      return `region [offset ${desc.mmapOffset}, size ${desc.size}] beyond its file (${fdSize} bytes)`;
    }
    try {
      const m = native.mmap(fd, desc.size, desc.mmapOffset);
      if (m.buffer.byteLength < desc.size) {
        native.munmap(m);
        return 'mapping shorter than the region';
      }
      if (guard === 'memfd') this.onUnsealedMemory(UNSEALED_MEMORY_WARNING);
      return m;
    } catch (e) {
      return `mmap failed: ${errnoCode(e) ?? String(e)}`;
    }
  }

  private buildMemory(regions: MappedRegion[]): GuestMemory | string {
    if (regions.length === 0) return 'no regions';
    const list: GuestMemoryRegion[] = regions.map((r) => ({
      guestAddr: r.desc.guestAddr,
      size: r.desc.size,
      userAddr: r.desc.userAddr,
      bytes: new Uint8Array(r.mapping.buffer, 0, r.desc.size),
    }));
    try {
      return new GuestMemory(list);
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  }

  /** Install a new region set: device first, then unmap what is no longer used. */
  private installMemory(regions: MappedRegion[], memory: GuestMemory | null, unmap: MappedRegion[]): void {
    this.regions = regions;
    this.memory = memory;
    this.device.setMemory(memory);
    for (const r of unmap) native.munmap(r.mapping);
    for (let i = 0; i < this.vrings.length; i++) this.maybeStart(i);
  }

  private setMemTable(descs: MemoryRegionDesc[], msg: ReceivedMessage): Outcome {
    const mapped: MappedRegion[] = [];
    for (let i = 0; i < descs.length; i++) {
      // Region fds are closed once mapped; unused ones are closed by the connection.
      const m = this.withFd(msg, i, (fd) => this.mapRegion(descs[i]!, fd));
      if (typeof m === 'string') {
        for (const r of mapped) native.munmap(r.mapping);
        return err(`region ${i}: ${m}`);
      }
      mapped.push({ desc: descs[i]!, mapping: m });
    }
    const memory = this.buildMemory(mapped);
    if (typeof memory === 'string') {
      for (const r of mapped) native.munmap(r.mapping);
      return err(memory);
    }
    this.installMemory(mapped, memory, this.regions);
    return OK;
  }

  private addMemReg(desc: MemoryRegionDesc, msg: ReceivedMessage): Outcome {
    if (this.regions.length >= MAX_MEM_SLOTS) return err(`all ${MAX_MEM_SLOTS} memory slots in use`);
    for (const r of this.regions) {
      const c = regionConflict(r.desc, desc);
      if (c !== null) return err(c);
    }
    const m = this.withFd(msg, 0, (fd) => this.mapRegion(desc, fd));
    if (typeof m === 'string') return err(m);
    const next = [...this.regions, { desc, mapping: m }];
    const memory = this.buildMemory(next);
    if (typeof memory === 'string') {
      native.munmap(m);
      return err(memory);
    }
    this.installMemory(next, memory, []);
    return OK;
  }

  private remMemReg(desc: MemoryRegionDesc): Outcome {
    // Identified by guest address, user address and size; mmap offset ignored.
    const i = this.regions.findIndex(
      (r) => r.desc.guestAddr === desc.guestAddr && r.desc.userAddr === desc.userAddr && r.desc.size === desc.size,
    );
    if (i < 0) return err('no such memory region');
    const removed = this.regions[i]!;
    const next = this.regions.filter((_, j) => j !== i);
    const memory = next.length === 0 ? null : this.buildMemory(next);
    if (typeof memory === 'string') return err(memory);
    this.installMemory(next, memory, [removed]);
    return OK;
  }

  /** Take fd `i` of a message, use it, close it. */
  private withFd<T>(msg: ReceivedMessage, i: number, use: (fd: number) => T): T {
    const fd = msg.takeFd(i);
    try {
      return use(fd);
    } finally {
      closeQuietly(fd);
    }
  }

  // ---- rings -----------------------------------------------------------------

  private ringSizes(num: number): { desc: number; avail: number; used: number } {
    const ev = (this.ackedFeatures & F_EVENT_IDX) !== 0n ? 2 : 0;
    return { desc: 16 * num, avail: 4 + 2 * num + ev, used: 4 + 8 * num + ev };
  }

  private setVringNum(index: number, num: number): Outcome {
    const v = this.vrings[index]!;
    if (!isPowerOfTwo(num) || num > MAX_QUEUE_SIZE) return err(`queue size ${num} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    if (v.started) return err(`vring ${index} is running`);
    v.num = num;
    this.maybeStart(index);
    return OK;
  }

  private setVringBase(index: number, base: number): Outcome {
    const v = this.vrings[index]!;
    if (base > 0xffff) return err(`vring base ${base} above 65535 (packed rings not supported)`);
    if (v.started) return err(`vring ${index} is running`);
    v.base = base;
    return OK;
  }

  private getVringBase(index: number): Outcome {
    const v = this.vrings[index]!;
    if (v.started) {
      v.base = this.device.stopQueue(index) & 0xffff;
      v.started = false;
      v.deviceEnabled = false;
    }
    // As libvhost-user and rust-vmm: a stopped ring needs a new kick (and call).
    closeQuietly(v.kickFd);
    closeQuietly(v.callFd);
    v.kickFd = -1;
    v.callFd = -1;
    v.kickSet = false;
    this.updatePolling();
    return { ok: true, body: encodeVringState(index, v.base) };
  }

  private setVringEnable(index: number, enabled: boolean): Outcome {
    this.vrings[index]!.enabledExplicit = enabled;
    this.syncEnabled(index);
    return OK;
  }

  private translate(user: { desc: number; avail: number; used: number }, num: number | null): { desc: number; avail: number; used: number } | string {
    const memory = this.memory;
    if (memory === null) return 'no memory table yet';
    const sizes = num === null ? { desc: 1, avail: 1, used: 1 } : this.ringSizes(num);
    const desc = memory.userToGuest(user.desc, sizes.desc);
    const avail = memory.userToGuest(user.avail, sizes.avail);
    const used = memory.userToGuest(user.used, sizes.used);
    if (desc === null) return `descriptor table 0x${user.desc.toString(16)}+${sizes.desc} outside guest memory`;
    if (avail === null) return `available ring 0x${user.avail.toString(16)}+${sizes.avail} outside guest memory`;
    if (used === null) return `used ring 0x${user.used.toString(16)}+${sizes.used} outside guest memory`;
    if (desc % 16 !== 0 || avail % 2 !== 0 || used % 4 !== 0) return 'misaligned ring address';
    return { desc, avail, used };
  }

  private setVringAddr(index: number, user: { desc: number; avail: number; used: number }): Outcome {
    const v = this.vrings[index]!;
    const t = this.translate(user, v.num);
    if (typeof t === 'string') return err(t);
    const same =
      v.userAddr !== null && v.userAddr.desc === user.desc && v.userAddr.avail === user.avail && v.userAddr.used === user.used;
    v.userAddr = user;
    v.addr = t;
    if (v.started && !same) {
      // Moved while running: restart at the same position.
      v.base = this.device.stopQueue(index) & 0xffff;
      v.started = false;
      v.deviceEnabled = false;
    }
    this.maybeStart(index);
    return OK;
  }

  private setVringKick(index: number, fd: number): Outcome {
    const v = this.vrings[index]!;
    if (v.started) {
      // The device watches the kick fd: stop before replacing it.
      v.base = this.device.stopQueue(index) & 0xffff;
      v.started = false;
      v.deviceEnabled = false;
    }
    closeQuietly(v.kickFd);
    v.kickFd = fd;
    v.kickSet = true;
    this.maybeStart(index);
    return OK;
  }

  private setVringCall(index: number, fd: number): Outcome {
    const v = this.vrings[index]!;
    const old = v.callFd;
    v.callFd = fd;
    if (v.started) this.device.setCallFd(index, fd);
    closeQuietly(old);
    return OK;
  }

  /** Start ring `index` if everything it needs is known. */
  private maybeStart(index: number): void {
    const v = this.vrings[index]!;
    if (v.started || !v.kickSet || v.num === null || v.userAddr === null || this.memory === null) return;
    // Re-translate and re-check against the memory table in force now.
    const t = this.translate(v.userAddr, v.num);
    if (typeof t === 'string') {
      this.log.warn(`vhost-user: vring ${index} not started: ${t}`);
      return;
    }
    v.addr = t;
    this.device.startQueue(index, {
      size: v.num,
      descAddr: t.desc,
      availAddr: t.avail,
      usedAddr: t.used,
      nextAvail: v.base,
      kickFd: v.kickFd,
      callFd: v.callFd,
      eventIdx: (this.ackedFeatures & F_EVENT_IDX) !== 0n,
      indirect: (this.ackedFeatures & F_INDIRECT_DESC) !== 0n,
    });
    v.started = true;
    v.deviceEnabled = this.enabledFor(v);
    this.device.enableQueue(index, v.deviceEnabled);
    this.log.debug(`vhost-user: vring ${index} started (size ${v.num}, base ${v.base}, enabled ${v.deviceEnabled})`);
    this.updatePolling();
  }

  /** Run a 1 ms timer while some started ring has no kick fd (polling requested). */
  private updatePolling(): void {
    const need = !this.ended && this.vrings.some((v) => v.started && v.kickFd < 0);
    if (need && this.pollTimer === null) {
      this.pollTimer = setInterval(() => {
        for (let i = 0; i < this.vrings.length; i++) {
          const v = this.vrings[i]!;
          if (v.started && v.kickFd < 0 && v.deviceEnabled) this.device.kick(i);
        }
      }, POLL_INTERVAL_MS);
      this.pollTimer.unref();
    } else if (!need && this.pollTimer !== null) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  // ---- config ----------------------------------------------------------------

  private getConfig(c: { offset: number; size: number; flags: number }): Outcome {
    const space = this.device.configSpace();
    if (c.offset + c.size > space.byteLength) {
      return err(`config range ${c.offset}+${c.size} beyond config space (${space.byteLength} bytes)`);
    }
    return { ok: true, body: encodeConfig(c.offset, c.flags, space.slice(c.offset, c.offset + c.size)) };
  }

  private setConfig(c: { offset: number; size: number; flags: number; data: Uint8Array }): Outcome {
    // The virtio-net config space has no field a driver may write (modern
    // devices); only a migration write that changes nothing is accepted.
    const space = this.device.configSpace();
    if (c.offset + c.size > space.byteLength) return err('config range beyond config space');
    const current = space.subarray(c.offset, c.offset + c.size);
    const unchanged = current.every((b, i) => b === c.data[i]);
    if (c.flags === 1 && unchanged) return OK;
    return err('config space is read-only');
  }

  // ---- teardown --------------------------------------------------------------

  private teardown(reason: string | null): void {
    if (this.ended) return;
    this.ended = true;
    if (reason !== null) this.log.warn(`vhost-user: session ended: ${reason}`);
    else this.log.info('vhost-user: frontend disconnected');
    if (this.pollTimer !== null) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
    if (this.handshakeTimer !== null) {
      clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
    try {
      this.device.reset();
    } catch (e) {
      this.log.error(`vhost-user: device reset failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    try {
      this.device.setMemory(null);
    } catch (e) {
      this.log.error(`vhost-user: device setMemory(null) failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    for (const r of this.regions) native.munmap(r.mapping);
    this.regions = [];
    this.memory = null;
    for (const v of this.vrings) {
      closeQuietly(v.kickFd);
      closeQuietly(v.callFd);
      closeQuietly(v.errFd);
      v.kickFd = v.callFd = v.errFd = -1;
      v.started = false;
    }
    closeQuietly(this.backendReqFd);
    this.backendReqFd = -1;
    this.onCloseCb?.(reason);
  }
}
