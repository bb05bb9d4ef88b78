/**
 * The TCP translator against a hostile guest: memory bounds across flows
 * (host -> guest rings, guest -> host bytes queued in Node, also after a flow
 * is gone), fairness between flows parked on link back-pressure, host socket
 * failures (EMFILE on connect, errors after the flow is gone), counter names
 * from a fixed set, SYN options that ask for absurd segment sizes, and TCP
 * to the DNS address carrying nothing but DNS queries.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { FLAG, GuestConn, guestInput, listen, makeTcp, settle, takeTcp, waitFor, TcpTestContext, testNat } from './helpers/tcp-context.js';
import { TcpTranslator, TCP_LIMITS, TCP_TIMING } from '../src/net/tcp/index.js';
import { Nat } from '../src/net/nat.js';
import {
  DNS_IP, GATEWAY_IP, GUEST_IP, bytes, concat, dnsAnswer, dnsAnswerAddress, DNS_OPT_RR, dnsMessage, dnsTcpFrame, dnsTcpMessages, tcpSegment,
} from './helpers/packets.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

const MiB = 1024 * 1024;

/** A loopback server that keeps its accepted sockets; `read` false leaves them paused. */
async function server(o: { read?: boolean; allowHalfOpen?: boolean } = {}) {
  const accepted: net.Socket[] = [];
  const { server: srv, port } = await listen((s) => {
    s.on('error', () => {});
    accepted.push(s);
    if (o.read === false) s.pause();
    else s.resume();
  }, { allowHalfOpen: o.allowHalfOpen ?? true });
  cleanups.push(() => {
    for (const s of accepted) s.destroy();
    srv.close();
  });
  return { port, accepted };
}

/**
 * A net.Socket whose writes never complete (a host peer whose kernel buffers
 * are full): everything written stays in Node's queue (writableLength).
 */
class StuckSocket extends net.Socket {
  override _write(_chunk: unknown, _enc: BufferEncoding, _cb: (err?: Error | null) => void): void {
    /* never completes */
  }
  override _writev(_chunks: unknown, _cb: (err?: Error | null) => void): void {
    /* never completes */
  }
}

describe('hostile guest: memory bounds across TCP flows', () => {
  it('bounds the host -> guest bytes held across all flows by a global budget, and resumes when the guest drains', async () => {
    const budget = 1 * MiB;
    const ctx = new TcpTestContext();
    const tcp = new TcpTranslator(ctx, testNat, { hostToGuestBudget: budget });
    cleanups.push(() => tcp.close());
    const { port, accepted } = await server();
    const flows = 6;
    const perFlow = 3 * MiB;
    const guests: GuestConn[] = [];
    for (let i = 0; i < flows; i++) {
      // 8 MiB guest windows: only the per-flow cap (4 MiB) and the global budget limit what we hold.
      const g = new GuestConn(tcp, ctx, { port: 42000 + i, dstPort: port, wscale: 7, window: 65535 });
      await g.connect();
      guests.push(g);
    }
    await waitFor(() => accepted.length === flows);
    const payload = Buffer.alloc(perFlow, 0x5a);
    for (const s of accepted) s.write(payload);
    // The guest never ACKs: everything read stays in the rings. Let reads run until they stop.
    let last = -1;
    for (let i = 0; i < 200; i++) {
      await settle(10);
      const now = tcp.memory.hostToGuest;
      if (now === last && i > 20) break;
      last = now;
    }
    expect(tcp.memory.hostToGuest).toBeLessThanOrEqual(budget);
    expect(tcp.memory.hostToGuest).toBeGreaterThan(budget / 2);
    expect(ctx.counters.get('tcp.host.budget_wait')).toBeGreaterThan(0);

    // The guest now reads everything: ACKs free the rings, tick trims them, the waiting flows resume.
    for (let round = 0; round < 2000 && guests.some((g) => g.receivedBytes < perFlow); round++) {
      for (const g of guests) {
        if (g.absorb(g.take())) g.send(FLAG.ACK);
      }
      ctx.time += 60;
      tcp.tick(ctx.time);
      expect(tcp.memory.hostToGuest).toBeLessThanOrEqual(budget);
      await settle(2);
    }
    for (const g of guests) expect(g.receivedBytes).toBe(perFlow);
  }, 30_000);

  it('bounds guest -> host bytes queued in Node across flows, including flows already closed', async () => {
    const budget = 256 * 1024;
    const ctx = new TcpTestContext();
    const stuck: StuckSocket[] = [];
    ctx.host.connectTcp = (options) => {
      const s = new StuckSocket({ allowHalfOpen: true });
      s.on('error', () => {});
      stuck.push(s);
      return s.connect(options);
    };
    const tcp = new TcpTranslator(ctx, testNat, { guestToHostBudget: budget });
    cleanups.push(() => {
      tcp.close();
      for (const s of stuck) s.destroy();
    });
    const { port, accepted } = await server({ read: false });
    const chunk = Buffer.alloc(16 * 1024, 0x33);
    // Generation after generation of flows: fill what the window allows, close cleanly both ways, move on.
    for (let gen = 0; gen < 6; gen++) {
      const g = new GuestConn(tcp, ctx, { port: 43000 + gen, dstPort: port, wscale: 7 });
      await g.connect();
      await waitFor(() => accepted.length === gen + 1);
      for (let i = 0; i < 64; i++) {
        const before = g.seq;
        g.write(chunk);
        await settle();
        const acks = g.take();
        const acked = acks.length > 0 ? acks[acks.length - 1]!.ack : before;
        g.seq = acked; // what was not taken is dropped: send it again next time
        if (acked === before) break;
      }
      // Host ends its side; the guest ACKs our FIN and sends its own: the flow lingers, then goes.
      accepted[gen]!.end();
      await waitFor(() => g.absorb(g.take()) && g.gotFin, 3000, 'host FIN');
      g.fin();
      await settle();
      g.take();
      ctx.time += TCP_TIMING.linger + 1;
      tcp.tick(ctx.time);
      expect(tcp.flowCount).toBe(0);
      const queued = stuck.reduce((sum, s) => sum + s.writableLength, 0);
      // One 64 KiB segment beyond the budget at most.
      expect(queued).toBeLessThanOrEqual(budget + 64 * 1024);
    }
    expect(ctx.counters.get('tcp.drop.memory') + ctx.counters.get('tcp.window.budget_closed')).toBeGreaterThan(0);
  }, 30_000);

  it('shrinks a drained ring back to nothing (an idle flow keeps no more than one small read set aside)', async () => {
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    const { port, accepted } = await server();
    const g = new GuestConn(tcp, ctx, { port: 44000, dstPort: port, wscale: 7, window: 65535 });
    await g.connect();
    await waitFor(() => accepted.length === 1);
    accepted[0]!.write(Buffer.alloc(2 * MiB, 1));
    await waitFor(() => tcp.memory.hostToGuest >= MiB, 3000, 'ring growth');
    for (let i = 0; i < 500 && g.receivedBytes < 2 * MiB; i++) {
      if (g.absorb(g.take())) g.send(FLAG.ACK);
      await settle(2);
    }
    expect(g.receivedBytes).toBe(2 * MiB);
    ctx.time += 100;
    tcp.tick(ctx.time);
    expect(tcp.memory.hostToGuest).toBeLessThanOrEqual(TCP_LIMITS.ringFloor);
  }, 20_000);
});

describe('hostile guest: link back-pressure fairness', () => {
  it('a flow that keeps filling the link does not starve the other parked flows', async () => {
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    const { port, accepted } = await server();
    const bulk = new GuestConn(tcp, ctx, { port: 45000, dstPort: port, wscale: 7, window: 65535 });
    await bulk.connect();
    const small = new GuestConn(tcp, ctx, { port: 45001, dstPort: port, wscale: 7, window: 65535 });
    await small.connect();
    await waitFor(() => accepted.length === 2);
    // The link is full: the bulk flow parks first, then the small one.
    ctx.link.full = true;
    accepted[0]!.write(Buffer.alloc(2 * MiB, 7));
    await waitFor(() => tcp.memory.hostToGuest >= 1 * MiB, 3000, 'bulk data read');
    accepted[1]!.write(Buffer.from('interactive'));
    await settle(20);
    expect(ctx.counters.get('tcp.link.backpressure')).toBeGreaterThan(0);
    // The guest posts 8 buffers at a time: the bulk flow could fill them every time.
    for (let round = 0; round < 4; round++) {
      ctx.link.makeWritable(8);
      bulk.absorb(bulk.take());
      small.absorb(small.take());
      if (small.receivedBytes > 0) break;
    }
    expect(small.data().toString()).toBe('interactive');
  });
});

describe('hostile guest: host socket failures', () => {
  it('answers RST when connect throws EMFILE synchronously, and keeps no flow', () => {
    const ctx = new TcpTestContext();
    ctx.host.connectTcp = () => {
      throw Object.assign(new Error('open files'), { code: 'EMFILE' });
    };
    const tcp = new TcpTranslator(ctx, testNat);
    guestInput(tcp, { sport: 46000, dport: 80, seq: 100, flags: FLAG.SYN });
    const out = takeTcp(ctx);
    expect(out.length).toBe(1);
    expect(out[0]!.flags).toBe(FLAG.RST | FLAG.ACK);
    expect(out[0]!.ack).toBe(101);
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.error.internal')).toBe(0);
  });

  it('answers RST when the socket fails asynchronously (EMFILE), with a counter name from the fixed set', async () => {
    const ctx = new TcpTestContext();
    ctx.host.connectTcp = () => {
      const s = new net.Socket();
      process.nextTick(() => s.destroy(Object.assign(new Error('open files'), { code: 'EMFILE' })));
      return s;
    };
    const tcp = new TcpTranslator(ctx, testNat);
    guestInput(tcp, { sport: 46001, dport: 80, seq: 100, flags: FLAG.SYN });
    await waitFor(() => tcp.flowCount === 0);
    const out = takeTcp(ctx);
    expect(out.some((f) => f.flags === (FLAG.RST | FLAG.ACK))).toBe(true);
    expect(ctx.counters.get('tcp.host.error.EMFILE')).toBe(1);
    expect(ctx.counters.get('tcp.error.internal')).toBe(0);
  });

  it('maps host error codes outside the known set to one counter name', async () => {
    const ctx = new TcpTestContext();
    const made: net.Socket[] = [];
    ctx.host.connectTcp = () => {
      const s = new net.Socket();
      made.push(s);
      return s;
    };
    const tcp = new TcpTranslator(ctx, testNat);
    for (let i = 0; i < 50; i++) guestInput(tcp, { sport: 47000 + i, dport: 80, seq: 1, flags: FLAG.SYN });
    made.forEach((s, i) => s.destroy(Object.assign(new Error('weird'), { code: `EWEIRD${i}` })));
    await waitFor(() => tcp.flowCount === 0);
    const names = Object.keys(ctx.counters.snapshot()).filter((n) => n.startsWith('tcp.host.error.'));
    expect(names).toEqual(['tcp.host.error.other']);
    expect(ctx.counters.get('tcp.host.error.other')).toBe(50);
  });

  it('survives host socket events after the flow is gone', async () => {
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    const { port } = await server();
    const g = new GuestConn(tcp, ctx, { port: 48000, dstPort: port });
    let socket: net.Socket | undefined;
    const connect = ctx.host.connectTcp;
    ctx.host.connectTcp = (o) => (socket = connect(o));
    await g.connect();
    g.send(FLAG.RST | FLAG.ACK);
    expect(tcp.flowCount).toBe(0);
    expect(() => {
      socket!.emit('error', Object.assign(new Error('late'), { code: 'ECONNRESET' }));
      socket!.emit('data', Buffer.from('late'));
      socket!.emit('end');
      socket!.emit('drain');
      socket!.emit('close', true);
    }).not.toThrow();
    expect(ctx.counters.get('tcp.error.internal')).toBe(0);
  });
});

describe('hostile guest: SYN options', () => {
  it('never segments below the minimum MSS (SYN with MSS 0 and 1) and clamps window scale 15..255 to 14', async () => {
    for (const [mss, wscale] of [[0, 200], [1, 15]] as const) {
      const { ctx, tcp } = makeTcp();
      cleanups.push(() => tcp.close());
      const { port, accepted } = await server();
      const g = new GuestConn(tcp, ctx, { port: 49000 + mss, dstPort: port, mss, wscale, window: 4 });
      await g.connect();
      await waitFor(() => accepted.length === 1);
      accepted[0]!.write(Buffer.alloc(4096, 1));
      // Window 4 << 14 = 64 KiB: one round of segments.
      await waitFor(() => g.absorb(g.take()) && g.receivedBytes >= 1024, 3000, 'data');
      await settle(10);
      g.absorb(g.take());
      for (const part of g.received) expect(part.length).toBeGreaterThanOrEqual(TCP_LIMITS.minMss);
      expect(g.received[0]!.length).toBe(TCP_LIMITS.minMss);
      expect(g.receivedBytes).toBeGreaterThan(4); // the window was scaled by 14, not by 200 or 15
    }
  });

  it('treats SYN+FIN, SYN+RST and a bare FIN to an unknown 4-tuple as no connection', () => {
    const { ctx, tcp } = makeTcp();
    guestInput(tcp, { sport: 50000, dport: 80, seq: 1, flags: FLAG.SYN | FLAG.FIN });
    guestInput(tcp, { sport: 50001, dport: 80, seq: 1, flags: FLAG.SYN | FLAG.RST });
    guestInput(tcp, { sport: 50002, dport: 80, seq: 1, flags: FLAG.FIN });
    expect(tcp.flowCount).toBe(0);
    expect(ctx.connects.length).toBe(0);
    const out = takeTcp(ctx);
    expect(out.every((f) => (f.flags & FLAG.RST) !== 0)).toBe(true);
    expect(out.length).toBe(2); // no RST answers an RST
  });

  it('does not open more flows than maxTcpFlows under a SYN flood, and reclaims them on timeout', async () => {
    const ctx = new TcpTestContext({ maxTcpFlows: 32 });
    const made: net.Socket[] = [];
    ctx.host.connectTcp = () => {
      const s = new net.Socket(); // never connects: a black-holed destination
      made.push(s);
      return s;
    };
    const tcp = new TcpTranslator(ctx, testNat);
    cleanups.push(() => tcp.close());
    for (let i = 0; i < 1000; i++) guestInput(tcp, { sport: 1024 + i, dport: 80, seq: i, flags: FLAG.SYN });
    expect(tcp.flowCount).toBe(32);
    expect(made.length).toBe(32);
    expect(ctx.counters.get('tcp.drop.flow_limit')).toBe(1000 - 32);
    ctx.time += TCP_TIMING.connectTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    expect(made.every((s) => s.destroyed)).toBe(true);
  });

  it('a SYN flood against a full table costs no scan of the table per SYN', () => {
    const max = 8000;
    const ctx = new TcpTestContext({ maxTcpFlows: max });
    ctx.host.connectTcp = () => new net.Socket(); // connects in flight forever
    const tcp = new TcpTranslator(ctx, testNat);
    cleanups.push(() => tcp.close());
    for (let i = 0; i < max; i++) guestInput(tcp, { sport: 1024 + i, dport: 80, seq: i, flags: FLAG.SYN });
    expect(tcp.flowCount).toBe(max);
    const segments = (dst: number) => Array.from({ length: 3000 }, (_, i) => {
      const seg = tcpSegment({ src: GUEST_IP, dst, sport: 20000 + i, dport: 81, seq: i, flags: FLAG.SYN });
      return { meta: { src: GUEST_IP, dst, protocol: 6, ttl: 64, tos: 0, packet: seg }, seg };
    });
    const toNat = segments(GATEWAY_IP + 100);
    const toLimit = segments(GATEWAY_IP);
    const flood = (batch: typeof toNat): number => {
      const t0 = performance.now();
      for (const { meta, seg } of batch) tcp.input(meta, seg);
      const t = performance.now() - t0;
      ctx.link.take();
      return t;
    };
    // Refused by the NAT (no table work) vs refused by the flow limit: about the same cost.
    flood(toNat);
    flood(toLimit);
    const natRefused = Math.min(flood(toNat), flood(toNat), flood(toNat));
    const limitRefused = Math.min(flood(toLimit), flood(toLimit), flood(toLimit));
    expect(ctx.counters.get('tcp.drop.flow_limit')).toBe(4 * 3000);
    expect(limitRefused).toBeLessThan(natRefused * 2 + 10);
  }, 30_000);
});

/**
 * A DNS-over-TCP resolver on loopback: answers every whole framed message
 * it gets (A 192.0.2.55); keeps each connection's bytes and whether it closed.
 */
async function tcpResolver() {
  const conns: { bytes: Buffer; closed: boolean }[] = [];
  const sockets: net.Socket[] = [];
  const { server: srv, port } = await listen((s) => {
    const conn = { bytes: Buffer.alloc(0), closed: false };
    conns.push(conn);
    sockets.push(s);
    let answered = 0;
    s.on('data', (d) => {
      conn.bytes = Buffer.concat([conn.bytes, d]);
      for (const m of dnsTcpMessages(conn.bytes).slice(answered)) {
        answered++;
        if (m.length > 12) s.write(dnsTcpFrame(dnsAnswer(m, '192.0.2.55')));
      }
    });
    s.on('error', () => {});
    s.on('close', () => {
      conn.closed = true;
    });
  });
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return { port, conns };
}

describe('hostile guest: TCP to the DNS address carries DNS queries only', () => {
  async function dnsConnection(restrict: boolean) {
    const resolver = await tcpResolver();
    const ctx = new TcpTestContext({ restrict, dnsUpstreams: [{ address: '127.0.0.1', port: resolver.port }] });
    const tcp = new TcpTranslator(ctx, new Nat(ctx.config));
    cleanups.push(() => tcp.close());
    const guest = new GuestConn(tcp, ctx, { port: 40053, dst: DNS_IP, dstPort: 53 });
    await guest.connect();
    await waitFor(() => resolver.conns.length === 1, 3000, 'the connection at the resolver');
    return { ctx, tcp, guest, resolver, conn: resolver.conns[0]! };
  }

  for (const restrict of [true, false]) {
    const mode = restrict ? 'with --restrict' : 'without --restrict';

    it(`${mode}: relays framed queries, split anywhere or pipelined, and their answers`, async () => {
      const { ctx, guest, conn } = await dnsConnection(restrict);
      const q1 = dnsTcpFrame(dnsMessage({ id: 1, name: 'one.example.com' }));
      const q2 = dnsTcpFrame(dnsMessage({ id: 2, name: 'two.example.com', ar: 1, rest: DNS_OPT_RR }));
      guest.write(q1.subarray(0, 1)); // half a length
      guest.write(q1.subarray(1, 9)); // the rest of it and part of the message
      guest.write(concat(q1.subarray(9), q2)); // the end of the first and all of the second
      await waitFor(() => {
        guest.absorb(guest.take());
        return dnsTcpMessages(guest.data()).length === 2;
      }, 3000, 'two answers');
      const answers = dnsTcpMessages(guest.data());
      expect(answers.map((a) => (a[0]! << 8) | a[1]!)).toEqual([1, 2]);
      expect(answers.map(dnsAnswerAddress)).toEqual(['192.0.2.55', '192.0.2.55']);
      expect(conn.bytes).toEqual(Buffer.from(concat(q1, q2)));
      expect(ctx.counters.get('dns.tcp.queries')).toBe(2);
    });

    it(`${mode}: resets a stream that is not DNS queries before any of it reaches the resolver`, async () => {
      const { ctx, guest, conn } = await dnsConnection(restrict);
      guest.write(bytes('GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n'));
      await waitFor(() => conn.closed || conn.bytes.length > 0, 3000, 'the resolver\'s connection to close or get bytes');
      expect(conn.bytes.toString('latin1'), 'bytes that reached the resolver').toBe('');
      await waitFor(() => conn.closed, 3000, 'the resolver\'s connection to close');
      expect(guest.take().some((f) => (f.flags & FLAG.RST) !== 0)).toBe(true);
      expect(ctx.counters.get('dns.tcp.drop.too_big')).toBe(1); // "GE" read as a length: 18245
    });
  }

  it('relays the queries before a message that is not one, then resets: the resolver gets only the queries', async () => {
    const { ctx, guest, conn } = await dnsConnection(true);
    const q1 = dnsTcpFrame(dnsMessage({ id: 7, name: 'seven.example.com' }));
    guest.write(q1);
    await waitFor(() => {
      guest.absorb(guest.take());
      return dnsTcpMessages(guest.data()).length === 1;
    }, 3000, 'the answer');
    // Framed right, but an answer (QR set), then a notify (opcode 4): not queries.
    guest.write(dnsTcpFrame(dnsMessage({ id: 8, flags: 0x8180 })));
    guest.write(dnsTcpFrame(dnsMessage({ id: 9, flags: 0x2000 })));
    await waitFor(() => conn.closed || conn.bytes.length > q1.length, 3000, 'the resolver\'s connection to close or get more bytes');
    expect(conn.bytes).toEqual(Buffer.from(q1));
    await waitFor(() => conn.closed, 3000, 'the resolver\'s connection to close');
    expect(ctx.counters.get('dns.tcp.queries')).toBe(1);
    expect(ctx.counters.get('dns.tcp.drop.not_query')).toBe(1);
  });
});

describe('hostile guest: host reads follow the guest window and the budget', () => {
  it('reads nothing for flows whose guest advertises a zero window, and exactly the window once it opens', async () => {
    const flows = 32;
    const perFlow = 512 * 1024;
    const ctx = new TcpTestContext({ maxTcpFlows: 64 });
    const tcp = new TcpTranslator(ctx, testNat);
    cleanups.push(() => tcp.close());
    const { port, accepted } = await server();
    const guests: GuestConn[] = [];
    for (let i = 0; i < flows; i++) {
      // Window 0 from the SYN on: the flow must not take a byte from its host socket.
      const g = new GuestConn(tcp, ctx, { port: 51000 + i, dstPort: port, window: 0 });
      await g.connect();
      guests.push(g);
    }
    await waitFor(() => accepted.length === flows);
    const payloads = accepted.map((_, i) => Buffer.alloc(perFlow, i + 1));
    accepted.forEach((s, i) => s.write(payloads[i]));
    // Meanwhile a flow with an open window moves 2 MiB: the host sockets of the
    // zero-window flows had their data ready all along, and the loop read what it was allowed to.
    const control = new GuestConn(tcp, ctx, { port: 51900, dstPort: port, wscale: 7, window: 65535 });
    await control.connect();
    await waitFor(() => accepted.length === flows + 1);
    const controlBytes = 2 * MiB;
    accepted[flows]!.write(Buffer.alloc(controlBytes, 0xcc));
    for (let round = 0; round < 2000 && control.receivedBytes < controlBytes; round++) {
      if (control.absorb(control.take())) control.send(FLAG.ACK);
      await settle(1);
    }
    expect(control.receivedBytes).toBe(controlBytes);
    expect(ctx.counters.get('tcp.host.read.bytes')).toBe(controlBytes);

    // The guests open a 1000-byte window and never ACK: each flow reads exactly that much.
    const window = 1000;
    for (const g of guests) {
      g.window = window;
      g.send(FLAG.ACK);
    }
    await waitFor(() => guests.every((g) => {
      g.absorb(g.take());
      return g.receivedBytes === window;
    }), 5000, 'each flow filling its window');
    expect(ctx.counters.get('tcp.host.read.bytes')).toBe(controlBytes + flows * window);
    expect(ctx.counters.get('tcp.drop.host_overflow')).toBe(0);

    // Then they read everything: nothing was lost or reordered while the flows waited.
    for (const g of guests) {
      g.window = 65535;
      g.send(FLAG.ACK);
    }
    for (let round = 0; round < 4000 && guests.some((g) => g.receivedBytes < perFlow); round++) {
      for (const g of guests) if (g.absorb(g.take())) g.send(FLAG.ACK);
      await settle(1);
    }
    guests.forEach((g, i) => expect(g.data().equals(payloads[i]!)).toBe(true));
    expect(ctx.counters.get('tcp.rst.sent')).toBe(0);
  }, 60_000);
});

describe('hostile guest: slow flows and the host -> guest budget', () => {
  it('flows that never ACK and fill the budget reset no other flow; those complete their transfers', async () => {
    const budget = 4 * MiB;
    const ctx = new TcpTestContext({ maxTcpFlows: 64 });
    ctx.link.rxOffloads = { csum: true, tso4: true, tso6: false };
    const tcp = new TcpTranslator(ctx, testNat, { hostToGuestBudget: budget });
    cleanups.push(() => tcp.close());
    const { port, accepted } = await server();
    // Never-ACKing flows with 8 MiB windows: they take all the budget they are given.
    const hogs: GuestConn[] = [];
    for (let i = 0; i < 6; i++) {
      const g = new GuestConn(tcp, ctx, { port: 52000 + i, dstPort: port, wscale: 7, window: 65535 });
      await g.connect();
      hogs.push(g);
    }
    await waitFor(() => accepted.length === hogs.length);
    for (const s of accepted) s.write(Buffer.alloc(4 * MiB, 0x11));
    await waitFor(() => ctx.counters.get('tcp.host.budget_wait') > 0, 5000, 'the budget to run out');
    // Ordinary flows start now, with more to send than one flow's ring can hold; their guest ACKs what it gets.
    const ordinary: GuestConn[] = [];
    for (let i = 0; i < 4; i++) {
      const g = new GuestConn(tcp, ctx, { port: 52100 + i, dstPort: port, wscale: 7, window: 65535 });
      await g.connect();
      ordinary.push(g);
    }
    await waitFor(() => accepted.length === hogs.length + ordinary.length);
    const perFlow = 5 * MiB;
    const payloads = ordinary.map((_, i) => Buffer.alloc(perFlow, 0x40 + i));
    payloads.forEach((p, i) => accepted[hogs.length + i]!.write(p));
    let rsts = 0;
    let mostHeld = 0;
    for (let round = 0; round < 20_000 && ordinary.some((g) => g.receivedBytes < perFlow); round++) {
      for (const g of ordinary) {
        const frames = g.take();
        rsts += frames.filter((f) => f.flags & FLAG.RST).length;
        g.absorb(frames);
        // A guest slower than the host: it ACKs every fifth turn.
        if (round % 5 === 4) g.send(FLAG.ACK);
      }
      for (const h of hogs) h.take();
      // Time moves a little (rings are trimmed on ticks), far less than the hogs' retransmission timeouts.
      ctx.time += 1;
      tcp.tick(ctx.time);
      mostHeld = Math.max(mostHeld, tcp.memory.hostToGuest);
      await settle(1);
    }
    expect(rsts).toBe(0);
    expect(ctx.counters.get('tcp.drop.host_overflow')).toBe(0);
    expect(mostHeld).toBeLessThanOrEqual(budget);
    ordinary.forEach((g, i) => expect(g.data().equals(payloads[i]!)).toBe(true));
    // The hogs are still there, still holding what they read: the ordinary flows did not need them gone.
    expect(tcp.flowCount).toBe(hogs.length + ordinary.length);
    expect(ctx.counters.get('tcp.timeout.retransmit')).toBe(0);
  }, 60_000);
});
