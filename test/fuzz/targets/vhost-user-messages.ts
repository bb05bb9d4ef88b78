/**
 * Fuzz target: the vhost-user message decoders (src/vhost-user/messages.ts).
 * Input: a 12-byte header, one byte (low 6 bits: how many fds came with
 * the message; bit 7: decode as a reply instead of a request), then the
 * payload.
 *
 * Invariants: the header decoder accepts exactly version 1 with no unknown
 * flag bits, the direction's REPLY bit and a size within MAX_PAYLOAD_SIZE,
 * and an accepted header encodes back to the same 12 bytes. A decoded
 * request payload obeys the documented rules (exact sizes, fd counts, safe
 * integers, non-overlapping regions, config ranges within 256 bytes) and
 * its encoder gives back the same bytes (padding fields aside). The reply
 * decoders accept exactly the sizes they document.
 */
import {
  FLAG_NEED_REPLY, FLAG_REPLY, HEADER_SIZE, MAX_CONFIG_SIZE, MAX_MEM_SLOTS, MAX_PAYLOAD_SIZE, REGION_SIZE, Req, VERSION,
  decodeHeader, decodeReplyConfig, decodeReplyU64, decodeReplyVringState, decodeRequest, encodeConfig, encodeHeader, encodeMemRegion,
  encodeMemTable, encodeMessage, encodeU64, encodeVringAddr, encodeVringFd, encodeVringState, isKnownRequest, regionConflict,
} from '../../../src/vhost-user/messages.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { seedRequests } from '../../helpers/vhost-user-streams.js';

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/** A copy with bytes [from, to) zeroed (padding fields the decoder does not read). */
function zeroed(bytes: Uint8Array, from: number, to: number): Uint8Array {
  const c = bytes.slice();
  c.fill(0, from, to);
  return c;
}

function checkRequest(request: number, payload: Uint8Array, fdCount: number): void {
  const d = decodeRequest(request, payload, fdCount);
  if (!d.ok) {
    check(typeof d.reason === 'string' && d.reason.length > 0, 'refusal without a reason');
    return;
  }
  check(isKnownRequest(request), `unknown request ${request} decoded`);
  const b = d.value;
  switch (b.type) {
    case 'empty':
      check(payload.length === 0 && fdCount === (request === Req.SET_BACKEND_REQ_FD ? 1 : 0), 'empty payload rules');
      break;
    case 'features':
      check(same(encodeU64(b.value), payload) && fdCount === 0, 'features do not round-trip');
      break;
    case 'u64':
      check(Number.isSafeInteger(b.value) && same(encodeU64(b.value), payload) && fdCount === 0, 'u64 does not round-trip');
      if (request === Req.SET_STATUS) check(b.value <= 0xff, `status ${b.value}`);
      break;
    case 'vring-fd':
      check(b.index <= 0xff && same(encodeVringFd(b.index, b.noFd), payload) && fdCount === (b.noFd ? 0 : 1), 'vring fd does not round-trip');
      break;
    case 'vring-state':
      check(same(encodeVringState(b.index, b.num), payload) && fdCount === 0, 'vring state does not round-trip');
      if (request === Req.SET_VRING_ENABLE) check(b.num <= 1, `enable ${b.num}`);
      break;
    case 'vring-addr':
      for (const v of [b.descUser, b.usedUser, b.availUser, b.logAddr]) check(Number.isSafeInteger(v) && v >= 0, `address ${v}`);
      check(same(encodeVringAddr(b), payload) && fdCount === 0, 'vring address does not round-trip');
      break;
    case 'mem-table': {
      check(b.regions.length >= 1 && b.regions.length <= MAX_MEM_SLOTS && fdCount === b.regions.length, `${b.regions.length} regions, ${fdCount} fds`);
      check(payload.length === 8 + REGION_SIZE * b.regions.length, 'table size');
      b.regions.forEach((r, i) => {
        for (const v of [r.guestAddr, r.size, r.userAddr, r.mmapOffset, r.guestAddr + r.size, r.userAddr + r.size, r.mmapOffset + r.size]) {
          check(Number.isSafeInteger(v) && v >= 0, `region ${i}: value ${v}`);
        }
        check(r.size > 0, `region ${i}: zero size`);
        for (let j = 0; j < i; j++) check(regionConflict(b.regions[j]!, r) === null, `regions ${j} and ${i} overlap`);
      });
      check(same(encodeMemTable(b.regions), zeroed(payload, 4, 8)), 'memory table does not round-trip');
      break;
    }
    case 'mem-region': {
      const r = b.region;
      check(r.size > 0 && Number.isSafeInteger(r.guestAddr + r.size) && Number.isSafeInteger(r.userAddr + r.size) && Number.isSafeInteger(r.mmapOffset + r.size), 'region arithmetic');
      check(same(encodeMemRegion(r), zeroed(payload, 0, 8)), 'memory region does not round-trip');
      break;
    }
    case 'config':
      check(b.size >= 1 && b.size <= MAX_CONFIG_SIZE && b.offset + b.size <= MAX_CONFIG_SIZE && b.data.length === b.size && fdCount === 0, 'config range');
      check(same(encodeConfig(b.offset, b.flags, b.data), payload), 'config does not round-trip');
      break;
  }
}

function checkReplies(payload: Uint8Array): void {
  const u = decodeReplyU64(payload);
  check(u.ok === (payload.length === 8), 'u64 reply size rule');
  if (u.ok) check(same(encodeU64(u.value), payload), 'u64 reply does not round-trip');
  const s = decodeReplyVringState(payload);
  check(s.ok === (payload.length === 8), 'vring state reply size rule');
  if (s.ok) check(same(encodeVringState(s.value.index, s.value.num), payload), 'vring state reply does not round-trip');
  const c = decodeReplyConfig(payload);
  if (c.ok) check(payload.length === 12 + c.value.size && same(encodeConfig(c.value.offset, c.value.flags, c.value.data), payload), 'config reply does not round-trip');
  else check(payload.length < 12 || payload.length !== 12 + new DataView(payload.buffer, payload.byteOffset).getUint32(4, true), 'config reply refused though well-sized');
}

export const target: FuzzTarget = {
  name: 'vhost-user-messages',
  maxLength: HEADER_SIZE + 1 + MAX_PAYLOAD_SIZE,
  seeds: () => seedRequests().map((m) => new FuzzInputWriter().bytes(m.bytes.subarray(0, HEADER_SIZE)).u8(m.fds.length).bytes(m.bytes.subarray(HEADER_SIZE)).finish()),
  run(data) {
    const input = new FuzzInput(data);
    const headerBytes = input.take(HEADER_SIZE);
    const extra = input.u8();
    const payload = input.rest();
    const direction = (extra & 0x80) !== 0 ? 'reply' : 'request';
    const h = decodeHeader(headerBytes, direction);
    const hv = new DataView(headerBytes.buffer, headerBytes.byteOffset, headerBytes.length);
    const flags = headerBytes.length === HEADER_SIZE ? hv.getUint32(4, true) : 0;
    const valid = headerBytes.length === HEADER_SIZE && (flags & 3) === VERSION && (flags & ~(3 | FLAG_REPLY | FLAG_NEED_REPLY)) === 0 &&
      ((flags & FLAG_REPLY) !== 0) === (direction === 'reply') && hv.getUint32(8, true) <= MAX_PAYLOAD_SIZE;
    check(h.ok === valid, () => `header ${Buffer.from(headerBytes).toString('hex')} (${direction}): decoder says ${h.ok ? 'ok' : (h as { reason: string }).reason}`);
    if (h.ok) {
      const { request, size } = h.value;
      check(same(encodeHeader(request, h.value.flags, size), headerBytes), 'header does not round-trip');
      check(same(encodeMessage(request, h.value.flags, payload).subarray(0, HEADER_SIZE), encodeHeader(request, h.value.flags, payload.length)), 'encodeMessage header');
    }
    const request = headerBytes.length === HEADER_SIZE ? hv.getUint32(0, true) : 0;
    checkRequest(request, payload, extra & 0x3f);
    checkReplies(payload);
  },
};
