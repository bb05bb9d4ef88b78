/**
 * Fuzz target: parseTcp. Input: source and destination address (u32 each),
 * one byte (bit 0: verify the checksum), then the segment. A refusal has a
 * reason from the fixed set; a parsed segment has a header within the bytes
 * and options within their bounds (checked against an independent walk of
 * the option bytes), a verified checksum holds, and writeTcpHeader +
 * setTcpChecksum over the parsed fields and payload give the same fixed
 * header fields and a checksum that verifies.
 */
import {
  parseTcp, setTcpChecksum, writeTcpHeader, tcpHeaderLength, TCP_HEADER_LENGTH, TCP_MAX_WSCALE, TCP_PROTOCOL,
} from '../../../src/net/wire/tcp.js';
import { l4Checksum } from '../../../src/net/wire/checksum.js';
import { FuzzInput, FuzzInputWriter, check, type FuzzTarget } from '../engine/input.js';
import { l4Segments, seedFrames } from '../seeds.js';

const REASONS = new Set(['truncated', 'bad_offset', 'bad_checksum']);

/** The options present as "kind/length", walked the plain way (stop at EOL or at the first length that does not fit). */
function optionsPresent(options: Uint8Array): { present: Set<string>; malformed: boolean } {
  const present = new Set<string>();
  let i = 0;
  while (i < options.length) {
    const kind = options[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const len = options[i + 1];
    if (len === undefined || len < 2 || i + len > options.length) return { present, malformed: true };
    present.add(`${kind}/${len}`);
    i += len;
  }
  return { present, malformed: false };
}

export const target: FuzzTarget = {
  name: 'tcp',
  maxLength: 1600,
  seeds: () => l4Segments(seedFrames(), TCP_PROTOCOL).map((s) => new FuzzInputWriter().u32(s.src).u32(s.dst).u8(1).bytes(s.bytes).finish()),
  run(data) {
    const input = new FuzzInput(data);
    const src = input.u32();
    const dst = input.u32();
    const verify = input.bool();
    const bytes = input.rest();
    const r = parseTcp(bytes, src, dst, verify);
    if (!r.ok) {
      check(REASONS.has(r.reason), `unknown drop reason ${r.reason}`);
      check(verify || r.reason !== 'bad_checksum', 'checksum checked when told not to');
      return;
    }
    const s = r.segment;
    check(s.headerLength >= TCP_HEADER_LENGTH && s.headerLength <= 60 && s.headerLength <= bytes.length, `header length ${s.headerLength}`);
    check(s.payload.length === bytes.length - s.headerLength && s.payload.byteOffset === bytes.byteOffset + s.headerLength, 'payload view');
    if (verify) check(l4Checksum(src, dst, TCP_PROTOCOL, bytes) === 0, 'accepted a bad checksum');
    const o = s.options;
    const walk = optionsPresent(bytes.subarray(TCP_HEADER_LENGTH, s.headerLength));
    check(o.optionsMalformed === walk.malformed, `optionsMalformed ${o.optionsMalformed}, walk says ${walk.malformed}`);
    check((o.mss !== null) === walk.present.has('2/4'), `mss ${o.mss}`);
    check((o.windowScale !== null) === walk.present.has('3/3') && (o.windowScale ?? 0) <= TCP_MAX_WSCALE, `window scale ${o.windowScale}`);
    check(o.sackPermitted === walk.present.has('4/2'), 'SACK-permitted');
    check((o.timestamp !== null) === walk.present.has('8/10'), 'timestamp option');
    // Re-emit: fixed fields, the payload and a fresh checksum.
    const fields = { srcPort: s.srcPort, dstPort: s.dstPort, seq: s.seq, ack: s.ack, flags: s.flags, window: s.window };
    const out = new Uint8Array(tcpHeaderLength({}) + s.payload.length);
    const h = writeTcpHeader(out, fields);
    out.set(s.payload, h);
    setTcpChecksum(out, src, dst);
    check(l4Checksum(src, dst, TCP_PROTOCOL, out) === 0, 'setTcpChecksum left a bad checksum');
    const again = parseTcp(out, src, dst, true);
    check(again.ok, 're-emitted segment does not parse');
    const t = again.segment;
    check(t.srcPort === s.srcPort && t.dstPort === s.dstPort && t.seq === s.seq && t.ack === s.ack && t.flags === s.flags && t.window === s.window, 'fields do not round-trip');
    check(Buffer.compare(t.payload, s.payload) === 0, 'payload does not round-trip');
  },
};
