/**
 * Fuzzing the TCP translator's input: random and bit-flipped segments, some
 * with valid checksums so they reach the state machine of live flows.
 * Invariants: input()/tick() never throw, no internal error is counted,
 * the flow table stays within maxTcpFlows, and every frame we emit is a
 * well-formed TCP segment with good checksums.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type * as net from 'node:net';
import { l4Checksum } from '../src/net/wire/checksum.js';
import { parseTcp } from '../src/net/wire/tcp.js';
import { GATEWAY_IP, GUEST_IP, ipv4Packet, tcpSegment } from './helpers/packets.js';
import { FLAG, GuestConn, closedPort, listen, makeTcp, settle, takeTcp, waitFor } from './helpers/tcp-context.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** Deterministic PRNG (xorshift32) so failures reproduce. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  return {
    u32: next,
    int: (n: number) => next() % n,
    bytes: (n: number) => Uint8Array.from({ length: n }, () => next() & 0xff),
  };
}

describe('TCP fuzz', () => {
  it('survives random and bit-flipped segments against live flows', async () => {
    const accepted: net.Socket[] = [];
    const { server, port } = await listen((s) => {
      accepted.push(s);
      s.on('error', () => {});
      s.on('data', () => {});
      s.write('server greeting '.repeat(200));
    });
    const refused = await closedPort();
    const { ctx, tcp } = makeTcp({ maxTcpFlows: 16 });
    cleanups.push(() => {
      tcp.close();
      accepted.forEach((s) => s.destroy());
      server.close();
    });
    // A few real connections so fuzzed segments hit established flows.
    const conns: GuestConn[] = [];
    for (let i = 0; i < 4; i++) {
      const g = new GuestConn(tcp, ctx, { port: 30000 + i, dstPort: port, wscale: i });
      await g.connect();
      conns.push(g);
    }
    await settle(20);
    const r = rng(0xc0ffee);
    const ports = [port, refused, 22, 80];
    let inputs = 0;
    let maxFlows = 0;
    const threw: unknown[] = [];
    for (let round = 0; round < 40; round++) {
      for (let k = 0; k < 250; k++) {
        const live = conns[r.int(conns.length)]!;
        const aimAtLive = r.int(3) !== 0;
        const sport = aimAtLive ? live.port : 30000 + r.int(64);
        const dport = aimAtLive ? live.dstPort : ports[r.int(ports.length)]!;
        const near = (base: number) => (base + (r.int(2) ? r.int(4096) : -r.int(4096)) + (r.int(8) === 0 ? r.u32() : 0)) >>> 0;
        const optLen = r.int(5) * 4;
        let seg = tcpSegment({
          src: GUEST_IP,
          dst: GATEWAY_IP,
          sport,
          dport,
          seq: aimAtLive ? near(live.seq) : r.u32(),
          ack: aimAtLive ? near(live.rcvNxt) : r.u32(),
          flags: r.int(4) === 0 ? r.u32() & 0xff : [FLAG.ACK, FLAG.ACK | FLAG.PSH, FLAG.SYN, FLAG.FIN | FLAG.ACK, FLAG.RST, FLAG.SYN | FLAG.ACK][r.int(6)]!,
          window: r.int(0x10000),
          options: r.bytes(optLen),
          payload: r.bytes(r.int(3) === 0 ? r.int(3000) : r.int(64)),
        });
        const mode = r.int(4);
        if (mode === 1) {
          // Bit flips, checksum left wrong.
          for (let f = 0; f <= r.int(4); f++) seg[r.int(seg.length)]! ^= 1 << r.int(8);
        } else if (mode === 2) {
          // Bit flips in the header, checksum fixed so the parser and state machine see them.
          for (let f = 0; f <= r.int(4); f++) seg[r.int(Math.min(seg.length, 60))]! ^= 1 << r.int(8);
          seg[16] = 0;
          seg[17] = 0;
          const c = l4Checksum(GUEST_IP, GATEWAY_IP, 6, seg);
          seg[16] = c >>> 8;
          seg[17] = c & 0xff;
        } else if (mode === 3) {
          seg = seg.subarray(0, r.int(seg.length + 1)); // truncated
        }
        const meta = { src: GUEST_IP, dst: GATEWAY_IP, protocol: 6, ttl: 64, tos: 0, packet: ipv4Packet({ src: GUEST_IP, dst: GATEWAY_IP, protocol: 6, payload: seg }) };
        try {
          tcp.input(meta, seg);
        } catch (err) {
          threw.push(err);
        }
        inputs++;
        maxFlows = Math.max(maxFlows, tcp.flowCount);
      }
      if (round % 5 === 0) ctx.link.full = r.int(2) === 0; // back-pressure sometimes
      else ctx.link.makeWritable();
      ctx.time += r.int(3000);
      expect(() => tcp.tick(ctx.time)).not.toThrow();
      await settle(1);
      for (const f of takeTcp(ctx)) {
        // Every frame we emit parses with a good checksum (takeTcp checked) and a sane header.
        expect(f.dataOffset).toBeGreaterThanOrEqual(20);
        expect(f.payload.length).toBeLessThanOrEqual(1460);
        expect(parseTcp(ipv4Payload(f), f.src, f.dst, false).ok).toBe(true);
      }
    }
    ctx.link.makeWritable();
    if (process.env.FUZZ_DEBUG) console.log(ctx.counters.snapshot());
    expect(inputs).toBe(10000);
    expect(threw).toEqual([]);
    expect(maxFlows).toBeLessThanOrEqual(16);
    // The fuzz reached the state machine, not only the parser.
    expect(ctx.counters.get('tcp.drop.bad_checksum')).toBeGreaterThan(1000);
    const stateDrops = ['tcp.drop.out_of_window', 'tcp.rx.duplicate', 'tcp.drop.bad_ack', 'tcp.drop.unexpected', 'tcp.drop.out_of_order'];
    expect(stateDrops.reduce((n, k) => n + ctx.counters.get(k), 0)).toBeGreaterThan(100);
    expect(ctx.counters.get('tcp.rst.received')).toBeGreaterThan(0);
    expect(ctx.counters.get('tcp.error.internal')).toBe(0);
    expect(ctx.logs.filter((l) => l.startsWith('tcp.internal'))).toEqual([]);
    // Everything is reclaimed by the timers eventually.
    for (let i = 0; i < 20; i++) {
      ctx.time += 60 * 60 * 1000;
      tcp.tick(ctx.time);
    }
    await waitFor(() => tcp.flowCount === 0);
    expect(ctx.counters.get('tcp.error.internal')).toBe(0);
  }, 30000);

  it('survives pure random bytes', () => {
    const { ctx, tcp } = makeTcp({ maxTcpFlows: 4 });
    cleanups.push(() => tcp.close());
    const r = rng(12345);
    for (let i = 0; i < 5000; i++) {
      const seg = r.bytes(r.int(80));
      const meta = { src: r.u32(), dst: r.u32(), protocol: 6, ttl: 64, tos: 0, packet: seg };
      tcp.input(meta, seg); // a throw fails the test
    }
    expect(tcp.flowCount).toBe(0); // random bytes essentially never carry a valid checksum
    expect(ctx.counters.get('tcp.error.internal')).toBe(0);
  });
});

/** Re-serialise a parsed frame's TCP bytes for parseTcp (header + payload). */
function ipv4Payload(f: { dataOffset: number; payload: Uint8Array; sport: number; dport: number; seq: number; ack: number; flags: number; window: number; options: Uint8Array }): Uint8Array {
  return tcpSegment({ src: 0, dst: 0, sport: f.sport, dport: f.dport, seq: f.seq, ack: f.ack, flags: f.flags, window: f.window, options: f.options, payload: f.payload });
}
