/**
 * vhost-user wire format: request codes, the 12-byte header, and a typed,
 * validating decoder and an encoder for every payload we speak — used by
 * both sides (the backend session and our own test frontend).
 *
 * Theory of operation. A vhost-user message is a header of three u32 fields
 * (request, flags, size), followed by exactly `size` payload bytes; file
 * descriptors travel beside the first bytes as SCM_RIGHTS. The spec says
 * "machine native byte order"; every host we run on is little-endian, so all
 * fields are read and written through DataView with littleEndian = true.
 *
 * Validation happens in two layers, the way rust-vmm's `vhost` crate does it:
 *
 * 1. The header (`decodeHeader`): version must be 1 (flags bits 0-1), no flag
 *    bits other than REPLY (bit 2) and NEED_REPLY (bit 3), the REPLY bit must
 *    match the direction (requests never carry it, replies always do), and
 *    `size` must not exceed MAX_PAYLOAD_SIZE. A bad header means the stream
 *    can no longer be trusted: the connection is closed.
 *
 * 2. The payload (`decodeRequest`): each request code has one payload shape
 *    and one file-descriptor rule, and the size must be EXACTLY that of the
 *    shape (a memory table: exactly 8 + 32 * nregions). Every u64 that is an
 *    address, size or offset must be <= Number.MAX_SAFE_INTEGER (we do the
 *    arithmetic on JS numbers), region arithmetic (addr + size) must not
 *    overflow, and regions of one table must not overlap. Feature masks stay
 *    bigint. A payload error is not a framing error: the stream is still in
 *    sync, so the request is answered with an error (or ignored) and the
 *    connection goes on.
 *
 * MAX_PAYLOAD_SIZE is 4096 (rust-vmm's MAX_MSG_SIZE): the largest payload we
 * accept is a memory table of MAX_MEM_SLOTS = 32 regions (8 + 32 * 32 =
 * 1032 bytes); a config access is at most 12 + 256 bytes.
 *
 * Padding fields (memory table, single region) are not checked: frontends
 * are not consistent about zeroing them and they carry no meaning.
 */

/** Requests from the frontend to the backend (the "front-end message types"). */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  /** a.k.a. SET_SLAVE_REQ_FD */
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

/** Requests from the backend to the frontend on the backend channel (SET_BACKEND_REQ_FD). */
export const BackendReq = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
  SHARED_OBJECT_ADD: 6,
  SHARED_OBJECT_REMOVE: 7,
  SHARED_OBJECT_LOOKUP: 8,
} as const;

const REQUEST_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(Req).map(([k, v]) => [v, k]));

/** Human-readable name of a frontend request code (for logs). */
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `UNKNOWN(${code >>> 0})`;
}

/** Protocol feature bits (VHOST_USER_PROTOCOL_F_*), as bit numbers. */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** VHOST_USER_F_PROTOCOL_FEATURES: virtio feature bit 30 reused by vhost-user. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** VHOST_F_LOG_ALL (virtio feature bit 26): dirty logging for migration. */
export const VHOST_F_LOG_ALL = 26;

export const HEADER_SIZE = 12;
export const VERSION = 0x1;
export const VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** Largest payload accepted (see the theory of operation). */
export const MAX_PAYLOAD_SIZE = 4096;
/** Memory slots offered (GET_MAX_MEM_SLOTS) and the largest SET_MEM_TABLE accepted. */
export const MAX_MEM_SLOTS = 32;
/** Most fds one message may carry (a full memory table). */
export const MAX_FDS_PER_MESSAGE = MAX_MEM_SLOTS;
/** VHOST_USER_MAX_CONFIG_SIZE. */
export const MAX_CONFIG_SIZE = 256;
/** Bytes of one memory region description. */
export const REGION_SIZE = 32;
/** Bits 0-7 of a SET_VRING_KICK/CALL/ERR u64: the vring index. */
export const VRING_IDX_MASK = 0xff;
/** Bit 8 of a SET_VRING_KICK/CALL/ERR u64: no fd attached (polling). */
export const VRING_NOFD_MASK = 0x100;
/** SET_VRING_ADDR flags bit 0: VHOST_VRING_F_LOG. */
export const VRING_F_LOG = 0x1;
/** Config flags: 0 = writable fields, 1 = live migration. */
export const CONFIG_FLAG_MIGRATION = 0x1;

export interface MessageHeader {
  request: number;
  flags: number;
  size: number;
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string };

function ok<T>(value: T): Decoded<T> {
  return { ok: true, value };
}
function fail<T>(reason: string): Decoded<T> {
  return { ok: false, reason };
}

/** One memory region as the frontend describes it. All fields are safe integers. */
export interface MemoryRegionDesc {
  guestAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

export interface VringAddr {
  index: number;
  flags: number;
  /** Frontend (user) addresses of the three parts of the ring. */
  descUser: number;
  usedUser: number;
  availUser: number;
  /** Guest address for used-ring logging (ignored: no LOG_SHMFD). */
  logAddr: number;
}

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  /** Exactly `size` bytes (a copy, not a view of the receive buffer). */
  data: Uint8Array;
}

/** The decoded payload of a frontend request. */
export type RequestBody =
  | { type: 'empty' }
  | { type: 'features'; value: bigint }
  | { type: 'u64'; value: number }
  | { type: 'vring-fd'; index: number; noFd: boolean }
  | { type: 'vring-state'; index: number; num: number }
  | ({ type: 'vring-addr' } & VringAddr)
  | { type: 'mem-table'; regions: MemoryRegionDesc[] }
  | { type: 'mem-region'; region: MemoryRegionDesc }
  | ({ type: 'config' } & ConfigAccess);

type PayloadKind = RequestBody['type'] | 'unsupported';
/** How many fds a request carries: none, exactly one, one per region, one unless the no-fd bit is set, or zero-or-one (closed unused). */
type FdRule = 'none' | 'one' | 'per-region' | 'vring' | 'optional';

interface RequestSpec {
  payload: PayloadKind;
  fds: FdRule;
  /** Why an unsupported request is refused. */
  why?: string;
}

const SPECS: ReadonlyMap<number, RequestSpec> = new Map<number, RequestSpec>([
  [Req.GET_FEATURES, { payload: 'empty', fds: 'none' }],
  [Req.SET_FEATURES, { payload: 'features', fds: 'none' }],
  [Req.SET_OWNER, { payload: 'empty', fds: 'none' }],
  [Req.RESET_OWNER, { payload: 'empty', fds: 'none' }],
  [Req.SET_MEM_TABLE, { payload: 'mem-table', fds: 'per-region' }],
  [Req.SET_LOG_BASE, { payload: 'unsupported', fds: 'optional', why: 'LOG_SHMFD not offered' }],
  [Req.SET_LOG_FD, { payload: 'unsupported', fds: 'optional', why: 'LOG_SHMFD not offered' }],
  [Req.SET_VRING_NUM, { payload: 'vring-state', fds: 'none' }],
  [Req.SET_VRING_ADDR, { payload: 'vring-addr', fds: 'none' }],
  [Req.SET_VRING_BASE, { payload: 'vring-state', fds: 'none' }],
  [Req.GET_VRING_BASE, { payload: 'vring-state', fds: 'none' }],
  [Req.SET_VRING_KICK, { payload: 'vring-fd', fds: 'vring' }],
  [Req.SET_VRING_CALL, { payload: 'vring-fd', fds: 'vring' }],
  [Req.SET_VRING_ERR, { payload: 'vring-fd', fds: 'vring' }],
  [Req.GET_PROTOCOL_FEATURES, { payload: 'empty', fds: 'none' }],
  [Req.SET_PROTOCOL_FEATURES, { payload: 'features', fds: 'none' }],
  [Req.GET_QUEUE_NUM, { payload: 'empty', fds: 'none' }],
  [Req.SET_VRING_ENABLE, { payload: 'vring-state', fds: 'none' }],
  [Req.SEND_RARP, { payload: 'unsupported', fds: 'none', why: 'RARP not offered' }],
  [Req.NET_SET_MTU, { payload: 'unsupported', fds: 'none', why: 'MTU protocol feature not offered' }],
  [Req.SET_BACKEND_REQ_FD, { payload: 'empty', fds: 'one' }],
  [Req.IOTLB_MSG, { payload: 'unsupported', fds: 'none', why: 'IOMMU_PLATFORM not offered' }],
  [Req.SET_VRING_ENDIAN, { payload: 'unsupported', fds: 'none', why: 'CROSS_ENDIAN not offered' }],
  [Req.GET_CONFIG, { payload: 'config', fds: 'none' }],
  [Req.SET_CONFIG, { payload: 'config', fds: 'none' }],
  [Req.CREATE_CRYPTO_SESSION, { payload: 'unsupported', fds: 'none', why: 'CRYPTO_SESSION not offered' }],
  [Req.CLOSE_CRYPTO_SESSION, { payload: 'unsupported', fds: 'none', why: 'CRYPTO_SESSION not offered' }],
  [Req.POSTCOPY_ADVISE, { payload: 'unsupported', fds: 'none', why: 'PAGEFAULT not offered' }],
  [Req.POSTCOPY_LISTEN, { payload: 'unsupported', fds: 'none', why: 'PAGEFAULT not offered' }],
  [Req.POSTCOPY_END, { payload: 'unsupported', fds: 'none', why: 'PAGEFAULT not offered' }],
  [Req.GET_INFLIGHT_FD, { payload: 'unsupported', fds: 'none', why: 'INFLIGHT_SHMFD not offered' }],
  [Req.SET_INFLIGHT_FD, { payload: 'unsupported', fds: 'optional', why: 'INFLIGHT_SHMFD not offered' }],
  [Req.GPU_SET_SOCKET, { payload: 'unsupported', fds: 'optional', why: 'not a GPU device' }],
  [Req.RESET_DEVICE, { payload: 'unsupported', fds: 'none', why: 'RESET_DEVICE not offered' }],
  [Req.VRING_KICK, { payload: 'unsupported', fds: 'none', why: 'INBAND_NOTIFICATIONS not offered' }],
  [Req.GET_MAX_MEM_SLOTS, { payload: 'empty', fds: 'none' }],
  [Req.ADD_MEM_REG, { payload: 'mem-region', fds: 'one' }],
  [Req.REM_MEM_REG, { payload: 'mem-region', fds: 'optional' }],
  [Req.SET_STATUS, { payload: 'u64', fds: 'none' }],
  [Req.GET_STATUS, { payload: 'empty', fds: 'none' }],
  [Req.GET_SHARED_OBJECT, { payload: 'unsupported', fds: 'none', why: 'SHARED_OBJECT not offered' }],
  [Req.SET_DEVICE_STATE_FD, { payload: 'unsupported', fds: 'optional', why: 'DEVICE_STATE not offered' }],
  [Req.CHECK_DEVICE_STATE, { payload: 'unsupported', fds: 'none', why: 'DEVICE_STATE not offered' }],
]);

/** True if `code` is a request code this module knows (supported or not). */
export function isKnownRequest(code: number): boolean {
  return SPECS.has(code);
}

/**
 * Requests whose reply carries a body whether or not NEED_REPLY is set. Of
 * those we support: GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
 * GET_MAX_MEM_SLOTS, GET_STATUS (u64), GET_VRING_BASE (vring state),
 * GET_CONFIG (config).
 */
export function hasReplyBody(code: number): boolean {
  switch (code) {
    case Req.GET_FEATURES:
    case Req.GET_PROTOCOL_FEATURES:
    case Req.GET_QUEUE_NUM:
    case Req.GET_MAX_MEM_SLOTS:
    case Req.GET_STATUS:
    case Req.GET_VRING_BASE:
    case Req.GET_CONFIG:
      return true;
    default:
      return false;
  }
}

// ---- little-endian field helpers -----------------------------------------

function dv(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Read a u64 at `off` as a JS number, or null if it is above Number.MAX_SAFE_INTEGER. */
export function readU64Safe(view: DataView, off: number): number | null {
  const lo = view.getUint32(off, true);
  const hi = view.getUint32(off + 4, true);
  if (hi > 0x1fffff) return null; // >= 2^53
  return hi * 0x1_0000_0000 + lo;
}

function writeU64(view: DataView, off: number, value: number | bigint): void {
  view.setBigUint64(off, BigInt.asUintN(64, typeof value === 'bigint' ? value : BigInt(value)), true);
}

// ---- header ----------------------------------------------------------------

/**
 * Decode and validate a 12-byte header. `direction` is what we expect to
 * receive: 'request' (backend side: REPLY must be clear) or 'reply'
 * (frontend side: REPLY must be set, NEED_REPLY clear).
 */
export function decodeHeader(bytes: Uint8Array, direction: 'request' | 'reply' = 'request'): Decoded<MessageHeader> {
  if (bytes.byteLength < HEADER_SIZE) return fail(`short header (${bytes.byteLength} bytes)`);
  const v = dv(bytes);
  const request = v.getUint32(0, true);
  const flags = v.getUint32(4, true);
  const size = v.getUint32(8, true);
  if ((flags & VERSION_MASK) !== VERSION) return fail(`unsupported version ${flags & VERSION_MASK}`);
  if ((flags & ~(VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY)) !== 0) {
    return fail(`reserved flag bits set (0x${(flags >>> 0).toString(16)})`);
  }
  if (direction === 'request' && (flags & FLAG_REPLY) !== 0) return fail('REPLY flag set on a request');
  if (direction === 'reply' && (flags & FLAG_REPLY) === 0) return fail('REPLY flag missing on a reply');
  if (size > MAX_PAYLOAD_SIZE) return fail(`payload size ${size} above maximum ${MAX_PAYLOAD_SIZE}`);
  return ok({ request, flags, size });
}

/** Encode a header (flags given whole; use `requestFlags`/`REPLY_FLAGS`). */
export function encodeHeader(request: number, flags: number, size: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = dv(out);
  v.setUint32(0, request >>> 0, true);
  v.setUint32(4, flags >>> 0, true);
  v.setUint32(8, size >>> 0, true);
  return out;
}

/** Flags for a request, optionally asking for a reply-ack. */
export function requestFlags(needReply: boolean): number {
  return VERSION | (needReply ? FLAG_NEED_REPLY : 0);
}

export const REPLY_FLAGS = VERSION | FLAG_REPLY;

/** Header + payload in one buffer (raw: no validation, so tests can craft anything). */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  out.set(encodeHeader(request, flags, payload.byteLength), 0);
  out.set(payload, HEADER_SIZE);
  return out;
}

// ---- payload decoding ------------------------------------------------------

function expectSize(payload: Uint8Array, want: number, what: string): string | null {
  return payload.byteLength === want ? null : `${what}: payload size ${payload.byteLength}, expected ${want}`;
}

function checkFds(rule: FdRule, fdCount: number, expected: number): string | null {
  switch (rule) {
    case 'none':
      return fdCount === 0 ? null : `${fdCount} unexpected fd(s)`;
    case 'one':
    case 'per-region':
    case 'vring':
      return fdCount === expected ? null : `expected ${expected} fd(s), got ${fdCount}`;
    case 'optional':
      return fdCount <= 1 ? null : `expected at most 1 fd, got ${fdCount}`;
  }
}

function decodeRegion(v: DataView, off: number, what: string): Decoded<MemoryRegionDesc> {
  const guestAddr = readU64Safe(v, off);
  const size = readU64Safe(v, off + 8);
  const userAddr = readU64Safe(v, off + 16);
  const mmapOffset = readU64Safe(v, off + 24);
  if (guestAddr === null || size === null || userAddr === null || mmapOffset === null) {
    return fail(`${what}: value above 2^53`);
  }
  if (size === 0) return fail(`${what}: zero size`);
  if (!Number.isSafeInteger(guestAddr + size)) return fail(`${what}: guest address + size overflows`);
  if (!Number.isSafeInteger(userAddr + size)) return fail(`${what}: user address + size overflows`);
  if (!Number.isSafeInteger(mmapOffset + size)) return fail(`${what}: mmap offset + size overflows`);
  return ok({ guestAddr, size, userAddr, mmapOffset });
}

function rangesOverlap(a: number, aLen: number, b: number, bLen: number): boolean {
  return a < b + bLen && b < a + aLen;
}

/**
 * Why two regions cannot coexist (overlap in guest-physical or frontend
 * address space), or null if they can.
 */
export function regionConflict(a: MemoryRegionDesc, b: MemoryRegionDesc): string | null {
  if (rangesOverlap(a.guestAddr, a.size, b.guestAddr, b.size)) return 'regions overlap in guest address space';
  if (rangesOverlap(a.userAddr, a.size, b.userAddr, b.size)) return 'regions overlap in frontend address space';
  return null;
}

/**
 * Decode and validate a request payload. `fdCount` is how many fds arrived
 * with the message (the caller keeps and closes them). Unknown request codes
 * and known-but-unsupported ones fail with a reason.
 */
export function decodeRequest(request: number, payload: Uint8Array, fdCount: number): Decoded<RequestBody> {
  const spec = SPECS.get(request);
  if (spec === undefined) return fail(`unknown request ${request >>> 0}`);
  const name = requestName(request);
  if (spec.payload === 'unsupported') return fail(`${name} not supported (${spec.why ?? 'not offered'})`);
  const v = dv(payload);
  let err: string | null;
  switch (spec.payload) {
    case 'empty': {
      if ((err = expectSize(payload, 0, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, 1)) !== null) return fail(`${name}: ${err}`);
      return ok({ type: 'empty' });
    }
    case 'features': {
      if ((err = expectSize(payload, 8, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, 0)) !== null) return fail(`${name}: ${err}`);
      return ok({ type: 'features', value: v.getBigUint64(0, true) });
    }
    case 'u64': {
      if ((err = expectSize(payload, 8, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, 0)) !== null) return fail(`${name}: ${err}`);
      const value = readU64Safe(v, 0);
      if (value === null) return fail(`${name}: value above 2^53`);
      if (request === Req.SET_STATUS && value > 0xff) return fail(`${name}: status ${value} wider than 8 bits`);
      return ok({ type: 'u64', value });
    }
    case 'vring-fd': {
      if ((err = expectSize(payload, 8, name)) !== null) return fail(err);
      const lo = v.getUint32(0, true);
      const hi = v.getUint32(4, true);
      if (hi !== 0 || (lo & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) !== 0) {
        return fail(`${name}: reserved bits set in 0x${v.getBigUint64(0, true).toString(16)}`);
      }
      const noFd = (lo & VRING_NOFD_MASK) !== 0;
      if ((err = checkFds(spec.fds, fdCount, noFd ? 0 : 1)) !== null) return fail(`${name}: ${err}`);
      return ok({ type: 'vring-fd', index: lo & VRING_IDX_MASK, noFd });
    }
    case 'vring-state': {
      if ((err = expectSize(payload, 8, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, 0)) !== null) return fail(`${name}: ${err}`);
      const index = v.getUint32(0, true);
      const num = v.getUint32(4, true);
      if (request === Req.SET_VRING_ENABLE && num > 1) return fail(`${name}: enable value ${num} is not 0 or 1`);
      return ok({ type: 'vring-state', index, num });
    }
    case 'vring-addr': {
      if ((err = expectSize(payload, 40, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, 0)) !== null) return fail(`${name}: ${err}`);
      const index = v.getUint32(0, true);
      const flags = v.getUint32(4, true);
      if ((flags & ~VRING_F_LOG) !== 0) return fail(`${name}: unknown flags 0x${(flags >>> 0).toString(16)}`);
      const descUser = readU64Safe(v, 8);
      const usedUser = readU64Safe(v, 16);
      const availUser = readU64Safe(v, 24);
      const logAddr = readU64Safe(v, 32);
      if (descUser === null || usedUser === null || availUser === null || logAddr === null) {
        return fail(`${name}: address above 2^53`);
      }
      return ok({ type: 'vring-addr', index, flags, descUser, usedUser, availUser, logAddr });
    }
    case 'mem-table': {
      if (payload.byteLength < 8) return fail(`${name}: payload size ${payload.byteLength}, expected at least 8`);
      const n = v.getUint32(0, true);
      if (n === 0) return fail(`${name}: no regions`);
      if (n > MAX_MEM_SLOTS) return fail(`${name}: ${n} regions, at most ${MAX_MEM_SLOTS}`);
      if ((err = expectSize(payload, 8 + n * REGION_SIZE, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, n)) !== null) return fail(`${name}: ${err}`);
      const regions: MemoryRegionDesc[] = [];
      for (let i = 0; i < n; i++) {
        const r = decodeRegion(v, 8 + i * REGION_SIZE, `${name} region ${i}`);
        if (!r.ok) return r;
        for (let j = 0; j < i; j++) {
          const c = regionConflict(regions[j]!, r.value);
          if (c !== null) return fail(`${name}: ${c} (regions ${j} and ${i})`);
        }
        regions.push(r.value);
      }
      return ok({ type: 'mem-table', regions });
    }
    case 'mem-region': {
      if ((err = expectSize(payload, 8 + REGION_SIZE, name)) !== null) return fail(err);
      if ((err = checkFds(spec.fds, fdCount, 1)) !== null) return fail(`${name}: ${err}`);
      const r = decodeRegion(v, 8, name);
      if (!r.ok) return r;
      return ok({ type: 'mem-region', region: r.value });
    }
    case 'config': {
      if (payload.byteLength < 12) return fail(`${name}: payload size ${payload.byteLength}, expected at least 12`);
      if ((err = checkFds(spec.fds, fdCount, 0)) !== null) return fail(`${name}: ${err}`);
      const offset = v.getUint32(0, true);
      const size = v.getUint32(4, true);
      const flags = v.getUint32(8, true);
      if (size === 0 || size > MAX_CONFIG_SIZE) return fail(`${name}: config size ${size} not in 1..${MAX_CONFIG_SIZE}`);
      if (offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE) {
        return fail(`${name}: config range ${offset}+${size} beyond ${MAX_CONFIG_SIZE}`);
      }
      if ((flags & ~CONFIG_FLAG_MIGRATION) !== 0) return fail(`${name}: unknown config flags 0x${(flags >>> 0).toString(16)}`);
      if ((err = expectSize(payload, 12 + size, name)) !== null) return fail(err);
      return ok({ type: 'config', offset, size, flags, data: payload.slice(12, 12 + size) });
    }
  }
}

// ---- payload encoding (both directions) ------------------------------------

/** A u64 payload (a feature mask, a status, a vring index with flags, an ack). */
export function encodeU64(value: number | bigint): Uint8Array {
  const out = new Uint8Array(8);
  writeU64(dv(out), 0, value);
  return out;
}

/** The u64 of SET_VRING_KICK/CALL/ERR: index in bits 0-7, bit 8 when no fd is attached. */
export function encodeVringFd(index: number, noFd: boolean): Uint8Array {
  return encodeU64((index & VRING_IDX_MASK) | (noFd ? VRING_NOFD_MASK : 0));
}

/** A vring state description (index u32, num u32). */
export function encodeVringState(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = dv(out);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, num >>> 0, true);
  return out;
}

/** A vring address description (index, flags, desc, used, avail, log). */
export function encodeVringAddr(a: VringAddr): Uint8Array {
  const out = new Uint8Array(40);
  const v = dv(out);
  v.setUint32(0, a.index >>> 0, true);
  v.setUint32(4, a.flags >>> 0, true);
  writeU64(v, 8, a.descUser);
  writeU64(v, 16, a.usedUser);
  writeU64(v, 24, a.availUser);
  writeU64(v, 32, a.logAddr);
  return out;
}

function writeRegion(v: DataView, off: number, r: MemoryRegionDesc): void {
  writeU64(v, off, r.guestAddr);
  writeU64(v, off + 8, r.size);
  writeU64(v, off + 16, r.userAddr);
  writeU64(v, off + 24, r.mmapOffset);
}

/** A memory regions description (nregions, padding, regions). */
export function encodeMemTable(regions: readonly MemoryRegionDesc[]): Uint8Array {
  const out = new Uint8Array(8 + regions.length * REGION_SIZE);
  const v = dv(out);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => writeRegion(v, 8 + i * REGION_SIZE, r));
  return out;
}

/** A single memory region description (padding u64, region). */
export function encodeMemRegion(r: MemoryRegionDesc): Uint8Array {
  const out = new Uint8Array(8 + REGION_SIZE);
  writeRegion(dv(out), 8, r);
  return out;
}

/** A config space access (offset, size, flags, then `data` — size is data.length). */
export function encodeConfig(offset: number, flags: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.byteLength);
  const v = dv(out);
  v.setUint32(0, offset >>> 0, true);
  v.setUint32(4, data.byteLength, true);
  v.setUint32(8, flags >>> 0, true);
  out.set(data, 12);
  return out;
}

// ---- reply decoding (frontend side) ----------------------------------------

/** A u64 reply body as bigint (features, counts, acks). */
export function decodeReplyU64(payload: Uint8Array): Decoded<bigint> {
  if (payload.byteLength !== 8) return fail(`u64 reply: payload size ${payload.byteLength}, expected 8`);
  return ok(dv(payload).getBigUint64(0, true));
}

/** A vring state reply body (GET_VRING_BASE). */
export function decodeReplyVringState(payload: Uint8Array): Decoded<{ index: number; num: number }> {
  if (payload.byteLength !== 8) return fail(`vring state reply: payload size ${payload.byteLength}, expected 8`);
  const v = dv(payload);
  return ok({ index: v.getUint32(0, true), num: v.getUint32(4, true) });
}

/** A config reply body (GET_CONFIG); a zero-length reply is the backend's error indication. */
export function decodeReplyConfig(payload: Uint8Array): Decoded<ConfigAccess> {
  if (payload.byteLength === 0) return fail('GET_CONFIG refused by the backend (empty reply)');
  if (payload.byteLength < 12) return fail(`config reply: payload size ${payload.byteLength}, expected at least 12`);
  const v = dv(payload);
  const offset = v.getUint32(0, true);
  const size = v.getUint32(4, true);
  const flags = v.getUint32(8, true);
  if (payload.byteLength !== 12 + size) return fail(`config reply: payload size ${payload.byteLength}, expected ${12 + size}`);
  return ok({ offset, size, flags, data: payload.slice(12) });
}
