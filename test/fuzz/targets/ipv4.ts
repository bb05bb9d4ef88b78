/**
 * Fuzz target: parseIPv4Packet. Input: one byte (bit 0: verify the header
 * checksum), then the packet. Drop reasons come from a fixed set; a parsed
 * header lies within the bytes, its views are consistent, the checksum holds
 * when it was verified, and writing the fields of an option-less header back
 * gives the same header (the checksum field up to its two encodings of zero).
 */
import { parseIPv4Packet, writeIPv4Header, IPV4_HEADER_LENGTH } from '../../../src/net/wire/ipv4.js';
import { checksum } from '../../../src/net/wire/checksum.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { ipv4Packets, seedFrames } from '../seeds.js';

const REASONS = new Set(['truncated', 'bad_version', 'bad_ihl', 'bad_length', 'bad_checksum', 'reserved_flag']);

export const target: FuzzTarget = {
  name: 'ipv4',
  maxLength: 1600,
  seeds: () => ipv4Packets(seedFrames()).map((p) => new FuzzInputWriter().u8(1).bytes(p).finish()),
  run(data) {
    const input = new FuzzInput(data);
    const verify = input.bool();
    const bytes = input.rest();
    const p = parseIPv4Packet(bytes, verify);
    if (typeof p === 'string') {
      check(REASONS.has(p), `unknown drop reason ${p}`);
      check(verify || p !== 'bad_checksum', 'checksum checked when told not to');
      return;
    }
    check(p.headerLength >= IPV4_HEADER_LENGTH && p.headerLength <= 60 && p.headerLength % 4 === 0, `header length ${p.headerLength}`);
    check(p.totalLength >= p.headerLength && p.totalLength <= bytes.length, `total length ${p.totalLength} of ${bytes.length}`);
    check(p.packet.length === p.totalLength && p.packet.byteOffset === bytes.byteOffset, 'packet view');
    check(p.payload.length === p.totalLength - p.headerLength && p.payload.byteOffset === bytes.byteOffset + p.headerLength, 'payload view');
    check(p.fragmentOffset % 8 === 0 && p.fragmentOffset <= 0xfff8, `fragment offset ${p.fragmentOffset}`);
    if (verify) check(checksum(bytes.subarray(0, p.headerLength)) === 0, 'accepted a bad header checksum');
    if (p.headerLength === IPV4_HEADER_LENGTH) {
      const out = new Uint8Array(IPV4_HEADER_LENGTH);
      writeIPv4Header(out, {
        src: p.src, dst: p.dst, protocol: p.protocol, totalLength: p.totalLength, id: p.id, ttl: p.ttl, tos: p.tos,
        dontFragment: p.dontFragment, moreFragments: p.moreFragments, fragmentOffset: p.fragmentOffset,
      });
      check(checksum(out) === 0, 'written header has a bad checksum');
      out[10] = bytes[10]!;
      out[11] = bytes[11]!;
      check(Buffer.compare(out, bytes.subarray(0, IPV4_HEADER_LENGTH)) === 0, 'header does not round-trip');
    }
  },
};
