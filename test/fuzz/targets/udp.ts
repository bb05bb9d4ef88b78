/**
 * Fuzz target: parseUdp. Input: source and destination address (u32 each),
 * one byte (bit 0: verify the checksum), then the datagram. Drop reasons
 * come from a fixed set; a parsed datagram is trimmed to its length field,
 * a verified nonzero checksum holds, and writeUdp over the same payload
 * gives the same ports and length and a checksum that verifies.
 */
import { parseUdp, writeUdp, UDP_HEADER_LENGTH } from '../../../src/net/wire/udp.js';
import { l4Checksum } from '../../../src/net/wire/checksum.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { l4Segments, seedFrames } from '../seeds.js';

const REASONS = new Set(['truncated', 'bad_length', 'bad_checksum']);

export const target: FuzzTarget = {
  name: 'udp',
  maxLength: 1600,
  seeds: () => l4Segments(seedFrames(), 17).map((s) => new FuzzInputWriter().u32(s.src).u32(s.dst).u8(1).bytes(s.bytes).finish()),
  run(data) {
    const input = new FuzzInput(data);
    const src = input.u32();
    const dst = input.u32();
    const verify = input.bool();
    const bytes = input.rest();
    const u = parseUdp(bytes, src, dst, verify);
    if (typeof u === 'string') {
      check(REASONS.has(u), `unknown drop reason ${u}`);
      check(verify || u !== 'bad_checksum', 'checksum checked when told not to');
      return;
    }
    const length = (bytes[4]! << 8) | bytes[5]!;
    check(u.datagram.length === length && length >= UDP_HEADER_LENGTH && length <= bytes.length, `datagram length ${u.datagram.length}, field ${length}`);
    check(u.payload.length === length - UDP_HEADER_LENGTH, 'payload view');
    const stored = (bytes[6]! << 8) | bytes[7]!;
    if (verify && stored !== 0) check(l4Checksum(src, dst, 17, u.datagram) === 0, 'accepted a bad checksum');
    const out = u.datagram.slice();
    writeUdp(out, src, dst, u.srcPort, u.dstPort);
    check(Buffer.compare(out.subarray(0, 6), u.datagram.subarray(0, 6)) === 0, 'header does not round-trip');
    check(l4Checksum(src, dst, 17, out) === 0 && (out[6]! | out[7]!) !== 0, 'writeUdp left a bad checksum');
  },
};
