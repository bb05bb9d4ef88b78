import { describe, expect, it } from 'vitest';
import {
  TCP_ACK, TCP_SYN, parseTcp, setTcpChecksum, tcpHeaderLength, writeTcpHeader,
} from '../src/net/wire/tcp.js';
import { seqAdd, seqDiff, seqGe, seqGt, seqInRange, seqLe, seqLt } from '../src/net/tcp/sequence.js';
import { SendBuffer } from '../src/net/tcp/send-buffer.js';
import { l4Checksum } from '../src/net/wire/checksum.js';
import { GATEWAY_IP, GUEST_IP, hex, tcpSegment } from './helpers/packets.js';

const SRC = 0x0a00020f; // 10.0.2.15
const DST = 0x0a000202; // 10.0.2.2

describe('TCP header parse', () => {
  // A Linux SYN: 10.0.2.15:40000 -> 10.0.2.2:80, seq 0x01020304, MSS 1460, SACK-perm, TS, NOP, WS 7.
  const syn = hex(
    '9c40 0050 01020304 00000000 a002 faf0 0000 0000' +
      '020405b4 0402080a 00001000 00000000 01030307',
  );
  new DataView(syn.buffer).setUint16(16, l4Checksum(SRC, DST, 6, syn), false);

  it('parses fields and options from a byte literal', () => {
    const r = parseTcp(syn, SRC, DST);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const s = r.segment;
    expect(s.srcPort).toBe(40000);
    expect(s.dstPort).toBe(80);
    expect(s.seq).toBe(0x01020304);
    expect(s.ack).toBe(0);
    expect(s.headerLength).toBe(40);
    expect(s.flags).toBe(TCP_SYN);
    expect(s.window).toBe(64240);
    expect(s.options).toEqual({ mss: 1460, windowScale: 7, sackPermitted: true, timestamp: { value: 4096, echo: 0 }, optionsMalformed: false });
    expect(s.payload.length).toBe(0);
  });

  it('rejects a bad checksum unless told not to verify', () => {
    const bad = syn.slice();
    bad[17]! ^= 0xff;
    expect(parseTcp(bad, SRC, DST)).toEqual({ ok: false, reason: 'bad_checksum' });
    expect(parseTcp(bad, SRC, DST, false).ok).toBe(true);
    // Wrong pseudo-header (other destination) fails too.
    expect(parseTcp(syn, SRC, DST + 1)).toEqual({ ok: false, reason: 'bad_checksum' });
  });

  it('rejects truncated headers and bad data offsets', () => {
    expect(parseTcp(syn.subarray(0, 19), SRC, DST, false)).toEqual({ ok: false, reason: 'truncated' });
    const small = syn.slice();
    small[12] = 0x40; // 16 bytes
    expect(parseTcp(small, SRC, DST, false)).toEqual({ ok: false, reason: 'bad_offset' });
    const big = syn.slice(0, 24);
    big[12] = 0xf0; // 60 bytes, have 24
    expect(parseTcp(big, SRC, DST, false)).toEqual({ ok: false, reason: 'bad_offset' });
  });

  it('keeps reserved bits visible and ignores them', () => {
    const seg = tcpSegment({ src: SRC, dst: DST, sport: 1, dport: 2, flags: TCP_ACK });
    seg[12] = (seg[12]! & 0xf0) | 0x0e;
    new DataView(seg.buffer).setUint16(16, 0);
    new DataView(seg.buffer).setUint16(16, l4Checksum(SRC, DST, 6, seg), false);
    const r = parseTcp(seg, SRC, DST);
    expect(r.ok && r.segment.reserved).toBe(0x0e);
  });

  it('stops at malformed options, keeping what came before', () => {
    // MSS, then an option of length 0, then WS (never reached).
    const opts = Uint8Array.from([2, 4, 0x05, 0xb4, 0x1e, 0x00, 1, 1, 3, 3, 7, 1]);
    const seg = tcpSegment({ src: SRC, dst: DST, sport: 1, dport: 2, flags: TCP_SYN, options: opts });
    const r = parseTcp(seg, SRC, DST);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.segment.options.mss).toBe(1460);
    expect(r.segment.options.windowScale).toBeNull();
    expect(r.segment.options.optionsMalformed).toBe(true);
    // Length running past the header.
    const over = tcpSegment({ src: SRC, dst: DST, sport: 1, dport: 2, flags: TCP_SYN, options: Uint8Array.from([8, 10, 0, 0]) });
    const r2 = parseTcp(over, SRC, DST);
    expect(r2.ok && r2.segment.options).toMatchObject({ timestamp: null, optionsMalformed: true });
  });

  it('clamps window scale to 14 and ignores wrong-length MSS', () => {
    const seg = tcpSegment({ src: SRC, dst: DST, sport: 1, dport: 2, flags: TCP_SYN, options: Uint8Array.from([2, 3, 5, 1, 3, 3, 30, 1]) });
    const r = parseTcp(seg, SRC, DST);
    expect(r.ok && r.segment.options).toMatchObject({ mss: null, windowScale: 14, optionsMalformed: false });
  });

  it('returns the payload as a view of the input (zero copy)', () => {
    const seg = tcpSegment({ src: SRC, dst: DST, sport: 1, dport: 2, flags: TCP_ACK, payload: Uint8Array.from([1, 2, 3]) });
    const r = parseTcp(seg, SRC, DST);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect([...r.segment.payload]).toEqual([1, 2, 3]);
    expect(r.segment.payload.buffer).toBe(seg.buffer);
  });
});

describe('TCP header emit', () => {
  it('writes a SYN-ACK with MSS and window scale, byte for byte', () => {
    const out = new Uint8Array(tcpHeaderLength({ mss: 1460, windowScale: 7 }));
    expect(out.length).toBe(28);
    writeTcpHeader(out, { srcPort: 80, dstPort: 40000, seq: 0xdeadbeef, ack: 0x01020305, flags: TCP_SYN | TCP_ACK, window: 65535, mss: 1460, windowScale: 7 });
    setTcpChecksum(out, DST, SRC);
    const expected = hex('0050 9c40 deadbeef 01020305 7012 ffff 0000 0000 020405b4 01030307');
    expected[16] = out[16]!;
    expected[17] = out[17]!;
    expect([...out]).toEqual([...expected]);
    expect(l4Checksum(DST, SRC, 6, out)).toBe(0);
    const r = parseTcp(out, DST, SRC);
    expect(r.ok && r.segment.options).toMatchObject({ mss: 1460, windowScale: 7, sackPermitted: false, timestamp: null });
  });

  it('round-trips a data segment through parse', () => {
    const payload = Uint8Array.from({ length: 101 }, (_, i) => i * 7);
    const seg = new Uint8Array(20 + payload.length);
    writeTcpHeader(seg, { srcPort: 5, dstPort: 6, seq: 0xffffffff, ack: 1, flags: TCP_ACK, window: 70000 });
    seg.set(payload, 20);
    setTcpChecksum(seg, GATEWAY_IP, GUEST_IP);
    const r = parseTcp(seg, GATEWAY_IP, GUEST_IP);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.segment.seq).toBe(0xffffffff);
    expect(r.segment.window).toBe(0xffff); // clamped to the field
    expect([...r.segment.payload]).toEqual([...payload]);
  });
});

describe('sequence arithmetic', () => {
  it('wraps at 2^32', () => {
    expect(seqAdd(0xffffffff, 1)).toBe(0);
    expect(seqAdd(0xfffffff0, 0x20)).toBe(0x10);
    expect(seqAdd(5, -6)).toBe(0xffffffff);
    expect(seqDiff(0x10, 0xfffffff0)).toBe(0x20);
    expect(seqDiff(0xfffffff0, 0x10)).toBe(-0x20);
    expect(seqLt(0xfffffff0, 0x10)).toBe(true);
    expect(seqGt(0x10, 0xfffffff0)).toBe(true);
    expect(seqLe(7, 7) && seqGe(7, 7)).toBe(true);
    expect(seqLt(7, 7)).toBe(false);
    expect(seqInRange(2, 0xfffffffe, 5)).toBe(true);
    expect(seqInRange(5, 0xfffffffe, 5)).toBe(false);
    expect(seqInRange(0xfffffffd, 0xfffffffe, 5)).toBe(false);
  });
});

describe('SendBuffer', () => {
  it('appends, wraps, consumes and copies out across the wrap', () => {
    const b = new SendBuffer(64, 16);
    expect(b.capacity).toBe(0); // nothing allocated until used
    const data = Uint8Array.from({ length: 40 }, (_, i) => i);
    expect(b.append(data)).toBe(40);
    expect(b.capacity).toBe(64);
    b.consume(30);
    expect(b.length).toBe(10);
    const more = Uint8Array.from({ length: 50 }, (_, i) => 100 + i);
    expect(b.append(more)).toBe(50); // wraps
    const out = new Uint8Array(60);
    b.copyOut(0, 60, out, 0);
    expect([...out]).toEqual([...data.subarray(30), ...more]);
    expect(b.append(new Uint8Array(10))).toBe(4); // cap reached
    expect(b.free).toBe(0);
    const mid = new Uint8Array(5);
    b.copyOut(8, 5, mid, 0);
    expect([...mid]).toEqual([38, 39, 100, 101, 102]);
  });

  it('grows by doubling while keeping order', () => {
    const b = new SendBuffer(1 << 20, 16);
    let next = 0;
    let front = 0;
    for (let round = 0; round < 50; round++) {
      const chunk = Uint8Array.from({ length: 37 + round * 13 }, () => next++ & 0xff);
      b.append(chunk);
      const drop = Math.floor(b.length / 3);
      const check = new Uint8Array(b.length);
      b.copyOut(0, b.length, check, 0);
      let bad = 0;
      for (let i = 0; i < check.length; i++) if (check[i] !== ((front + i) & 0xff)) bad++;
      expect(bad).toBe(0);
      b.consume(drop);
      front += drop;
    }
    expect(b.capacity).toBeLessThanOrEqual(4096);
  });
});
