/**
 * vhost-user request streams for the fuzz tests and fuzz targets: a
 * plausible QEMU-like negotiation with random choices in it (`validStream`),
 * each message with the kinds of fd it carries, and `settle`, which lets a
 * session read and answer what was sent (event-loop turns until its message
 * count stops moving).
 */
import {
  Req,
  encodeConfig,
  encodeMemRegion,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFd,
  encodeVringState,
  requestFlags,
} from '../../src/vhost-user/messages.js';
import { OFFERED_PROTOCOL_FEATURES, type VhostUserSession } from '../../src/vhost-user/session.js';
import { VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/features.js';
import { mulberry32 } from './prng.js';

export const MEM_SIZE = 1 << 20;
export const USER = 0x7000_0000_0000;

/** 'mem' = the shared memfd, 'event' = a fresh eventfd, 'zero' = /dev/zero, 'sock' = a socket. */
export type FdKind = 'mem' | 'event' | 'zero' | 'sock';
export const FD_KINDS: FdKind[] = ['mem', 'event', 'zero', 'sock'];

export interface Msg {
  bytes: Uint8Array;
  fds: FdKind[];
}

export function msg(code: number, payload: Uint8Array = new Uint8Array(0), fds: FdKind[] = [], needReply = false): Msg {
  return { bytes: encodeMessage(code, requestFlags(needReply), payload), fds };
}

/** A plausible QEMU-like stream with random choices in it. */
export function validStream(rnd: () => number): Msg[] {
  const nr = (): boolean => rnd() < 0.5;
  const q = (): number => (rnd() < 0.9 ? Math.floor(rnd() * 2) : Math.floor(rnd() * 300));
  const size = [1, 2, 64, 256, 1024][Math.floor(rnd() * 5)]!;
  const ringAt = (): number => USER + Math.floor(rnd() * (MEM_SIZE / 16)) * 16;
  const out: Msg[] = [
    msg(Req.GET_FEATURES),
    msg(Req.GET_PROTOCOL_FEATURES),
    msg(Req.SET_PROTOCOL_FEATURES, encodeU64(OFFERED_PROTOCOL_FEATURES)),
    msg(Req.GET_QUEUE_NUM),
    msg(Req.GET_MAX_MEM_SLOTS),
    msg(Req.SET_OWNER, undefined, [], nr()),
    msg(
      Req.SET_FEATURES,
      encodeU64(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | (nr() ? VIRTIO_RING_F_EVENT_IDX : 0n) | VIRTIO_RING_F_INDIRECT_DESC | (1n << 30n)),
      [],
      nr(),
    ),
  ];
  if (rnd() < 0.5) {
    out.push(msg(Req.SET_MEM_TABLE, encodeMemTable([{ guestAddr: 0, size: MEM_SIZE, userAddr: USER, mmapOffset: 0 }]), ['mem'], nr()));
  } else {
    const half = MEM_SIZE / 2;
    out.push(msg(Req.ADD_MEM_REG, encodeMemRegion({ guestAddr: 0, size: half, userAddr: USER, mmapOffset: 0 }), ['mem'], nr()));
    out.push(msg(Req.ADD_MEM_REG, encodeMemRegion({ guestAddr: half, size: half, userAddr: USER + half, mmapOffset: half }), ['mem'], nr()));
  }
  for (let i = 0; i < 2; i++) {
    const idx = q();
    out.push(msg(Req.SET_VRING_NUM, encodeVringState(idx, size), [], nr()));
    out.push(msg(Req.SET_VRING_BASE, encodeVringState(idx, Math.floor(rnd() * 65536)), [], nr()));
    out.push(msg(Req.SET_VRING_ADDR, encodeVringAddr({ index: idx, flags: 0, descUser: ringAt(), availUser: ringAt(), usedUser: ringAt(), logAddr: 0 }), [], nr()));
    out.push(msg(Req.SET_VRING_KICK, encodeVringFd(idx, false), ['event'], nr()));
    out.push(msg(Req.SET_VRING_CALL, encodeVringFd(idx, false), ['event'], nr()));
    out.push(msg(Req.SET_VRING_ERR, encodeVringFd(idx, false), ['event'], nr()));
    out.push(msg(Req.SET_VRING_ENABLE, encodeVringState(idx, 1), [], nr()));
  }
  const extras: Msg[] = [
    msg(Req.GET_CONFIG, encodeConfig(Math.floor(rnd() * 16), 0, new Uint8Array(1 + Math.floor(rnd() * 12)))),
    msg(Req.SET_STATUS, encodeU64(Math.floor(rnd() * 256)), [], nr()),
    msg(Req.GET_STATUS),
    msg(Req.GET_VRING_BASE, encodeVringState(q(), 0)),
    msg(Req.SET_BACKEND_REQ_FD, undefined, ['event'], nr()),
    msg(Req.SET_VRING_KICK, encodeVringFd(q(), true), [], nr()),
    msg(Req.REM_MEM_REG, encodeMemRegion({ guestAddr: 0, size: MEM_SIZE / 2, userAddr: USER, mmapOffset: 0 }), [], nr()),
    msg(Req.SET_MEM_TABLE, encodeMemTable([{ guestAddr: 0x10000, size: MEM_SIZE - 0x10000, userAddr: USER, mmapOffset: 0x10000 }]), ['mem'], nr()),
    msg(Req.RESET_OWNER, undefined, [], nr()),
    msg(Req.SET_CONFIG, encodeConfig(0, 1, new Uint8Array(6)), [], nr()),
  ];
  for (const e of extras) if (rnd() < 0.5) out.splice(Math.floor(rnd() * (out.length + 1)), 0, e);
  return out;
}

/** A few valid streams (fixed seeds), message by message: seeds for the fuzz targets. */
export function seedRequests(): Msg[] {
  return [1, 2, 3, 4].flatMap((seed) => validStream(mulberry32(seed)));
}

export async function settle(session: VhostUserSession): Promise<void> {
  let last = -1;
  let still = 0;
  while (!session.closed && still < 4) {
    // One event-loop turn: the poll phase delivers the socket's readiness.
    await new Promise((r) => setImmediate(r));
    if (session.stats.messages === last) still++;
    else {
      still = 0;
      last = session.stats.messages;
    }
  }
}

