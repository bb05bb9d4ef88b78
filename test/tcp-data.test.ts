/**
 * TCP translator: moving data both ways, windows (guest's and ours), out of
 * order / overlapping / retransmitted guest segments.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import type * as net from 'node:net';
import { FLAG, GuestConn, listen, makeTcp, settle, waitFor, type SentTcp } from './helpers/tcp-context.js';
import { seqAdd, seqDiff } from '../src/net/tcp/sequence.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function connected(o: { wscale?: number; window?: number; mss?: number; port?: number; pauseServer?: boolean } = {}) {
  const accepted: net.Socket[] = [];
  const received: Buffer[] = [];
  const { server, port } = await listen((s) => {
    accepted.push(s);
    s.on('error', () => {});
    if (o.pauseServer) s.pause();
    s.on('data', (d) => received.push(d));
  }, { allowHalfOpen: true });
  const { ctx, tcp } = makeTcp();
  const g = new GuestConn(tcp, ctx, { port: o.port ?? 41000, dstPort: port, ...o });
  if (o.wscale === undefined && !('wscale' in o)) g.wscale = 7;
  await g.connect();
  await waitFor(() => accepted.length === 1);
  cleanups.push(() => {
    tcp.close();
    for (const s of accepted) s.destroy();
    server.close();
  });
  const host = accepted[0]!;
  const hostData = () => Buffer.concat(received);
  return { ctx, tcp, g, host, hostData };
}

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

describe('TCP data', () => {
  it('moves data both ways with correct sequence numbers and checksums', async () => {
    const { g, host, hostData } = await connected();
    g.write(Buffer.from('hello, host'));
    await settle();
    const [ack] = g.take(); // takeTcp verified IPv4 and TCP checksums
    expect(ack!.flags).toBe(FLAG.ACK);
    expect(ack!.ack).toBe(g.seq);
    await waitFor(() => hostData().length === 11);
    expect(hostData().toString()).toBe('hello, host');

    host.write('hello, guest');
    await waitFor(() => g.absorb(g.take()));
    expect(g.data().toString()).toBe('hello, guest');
    expect(g.rcvNxt).toBe(seqAdd(g.peerIsn, 1 + 12));
  });

  it('coalesces ACKs for one batch of guest segments', async () => {
    const { g, hostData } = await connected();
    for (let i = 0; i < 5; i++) g.write(Buffer.from(`part${i};`));
    expect(g.take().length).toBe(0); // the ACK goes out after the batch
    await settle();
    const acks = g.take();
    expect(acks.length).toBe(1);
    expect(acks[0]!.ack).toBe(g.seq);
    await waitFor(() => hostData().length === 30);
    expect(hostData().toString()).toBe('part0;part1;part2;part3;part4;');
  });

  it('transfers 2 MB host -> guest never exceeding the guest window', async () => {
    const { ctx, g, host } = await connected({ wscale: 2, window: 16384 }); // 64 KiB guest window
    const payload = pattern(2 * 1024 * 1024);
    host.write(payload);
    host.end();
    let ackedUpTo = g.rcvNxt;
    let windowBytes = 16384 * 4;
    let maxBeyond = -Infinity;
    let maxSegment = 0;
    const deadline = Date.now() + 20000;
    while (!g.gotFin) {
      if (Date.now() > deadline) throw new Error(`stalled at ${g.receivedBytes}`);
      const frames = g.take();
      for (const f of frames) {
        const end = seqAdd(f.seq, f.payload.length);
        maxBeyond = Math.max(maxBeyond, seqDiff(end, seqAdd(ackedUpTo, windowBytes)));
        maxSegment = Math.max(maxSegment, f.payload.length);
      }
      if (g.absorb(frames)) {
        // ACK everything, alternating the window between 64 KiB and 8 KiB.
        windowBytes = (g.receivedBytes / 65536) % 2 < 1 ? 16384 * 4 : 2048 * 4;
        g.window = windowBytes / 4;
        g.send(FLAG.ACK);
        ackedUpTo = g.rcvNxt;
      } else {
        await settle(1);
      }
    }
    expect(maxBeyond).toBeLessThanOrEqual(0);
    expect(maxSegment).toBe(1460);
    expect(g.receivedBytes).toBe(payload.length);
    expect(createHash('sha256').update(g.data()).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(ctx.counters.get('tcp.retransmits')).toBe(0);
  });

  it('stops at a zero guest window, probes it, and resumes on the window update', async () => {
    const { ctx, tcp, g, host } = await connected({ wscale: 0, window: 3000 });
    host.write(pattern(10000));
    await waitFor(() => ctx.link.sent.length >= 2);
    await settle(20);
    let frames = g.take();
    // The flow read exactly the window from the host: two full segments and the 80-byte rest.
    expect(frames.map((f) => f.payload.length)).toEqual([1460, 1460, 80]);
    expect(ctx.counters.get('tcp.host.read.bytes')).toBe(3000);
    g.absorb(frames);
    g.window = 0;
    g.send(FLAG.ACK); // all acked, window closed
    await settle(20);
    expect(g.take().filter((f) => f.payload.length > 0).length).toBe(0);
    // Persist timer: a zero-length probe with an old sequence number.
    ctx.time += 1000;
    tcp.tick(ctx.time);
    frames = g.take();
    expect(frames.length).toBe(1);
    expect(frames[0]!.payload.length).toBe(0);
    expect(frames[0]!.seq).toBe(seqAdd(g.rcvNxt, -1));
    expect(ctx.counters.get('tcp.zero_window_probes')).toBe(1);
    g.send(FLAG.ACK); // the guest answers the probe, still zero
    expect(g.take().length).toBe(0);
    ctx.time += 2000; // backed off
    tcp.tick(ctx.time);
    expect(g.take().length).toBe(1);
    // Window update.
    g.window = 65535;
    g.send(FLAG.ACK);
    await waitFor(() => {
      g.absorb(g.take());
      return g.receivedBytes === 10000;
    });
    expect(ctx.counters.get('tcp.retransmits')).toBe(0);
  });

  it('shrinks our window to zero when the host does not read, and reopens it on drain', async () => {
    const { ctx, g, host, hostData } = await connected({ pauseServer: true, wscale: 7 });
    const chunk = { length: 32 * 1024 };
    let window = Infinity;
    let sent = 0;
    const written: Buffer[] = [];
    const deadline = Date.now() + 20000;
    while (window > 0) {
      if (Date.now() > deadline) throw new Error('window never closed');
      const room = Math.min(window, chunk.length);
      const piece = pattern(room, sent + 1);
      g.write(piece); // a TSO-sized segment: we accept any size within our window
      written.push(piece);
      sent += room;
      await settle(1);
      const acks = g.take();
      const last = acks[acks.length - 1];
      if (!last) continue;
      expect(last.ack).toBe(g.seq); // everything taken in order
      window = last.window * 128;
    }
    expect(ctx.counters.get('tcp.drop.beyond_window')).toBe(0);
    // Beyond the zero window: not taken, answered with an ACK of what we have.
    const before = g.seq;
    g.send(FLAG.ACK | FLAG.PSH, Buffer.from('x'));
    const [reject] = g.take();
    expect(reject!.ack).toBe(before);
    expect(reject!.window).toBe(0);
    // The host reads again: Node's queue drains and we announce the window.
    host.resume();
    let update: SentTcp | undefined;
    await waitFor(() => {
      update = g.take().find((f) => f.window > 0);
      return update !== undefined;
    }, 10000, 'window update');
    expect(update!.ack).toBe(before);
    expect(ctx.counters.get('tcp.window_update')).toBeGreaterThanOrEqual(1);
    await waitFor(() => hostData().length === sent, 10000, 'host read everything');
    expect(hostData().equals(Buffer.concat(written))).toBe(true);
  });

  it('pauses on link back-pressure and resumes when the guest posts buffers', async () => {
    const { ctx, g, host } = await connected();
    ctx.link.full = true;
    host.write(pattern(5000, 7));
    await waitFor(() => ctx.counters.get('tcp.link.backpressure') > 0);
    await settle(10);
    expect(ctx.link.sent.length).toBe(0);
    ctx.link.makeWritable(2); // room for two frames only
    const first = g.take();
    expect(first.length).toBe(2);
    g.absorb(first);
    ctx.link.makeWritable();
    await waitFor(() => {
      g.absorb(g.take());
      return g.receivedBytes === 5000;
    });
    expect(g.data().equals(pattern(5000, 7))).toBe(true);
  });

  it('drops out-of-order data with a duplicate ACK, then takes it in order', async () => {
    const { ctx, g, hostData } = await connected();
    const base = g.seq;
    g.send(FLAG.ACK | FLAG.PSH, Buffer.from('WORLD'), { seq: seqAdd(base, 5) });
    const [dup] = g.take(); // immediate duplicate ACK
    expect(dup!.ack).toBe(base);
    expect(ctx.counters.get('tcp.drop.out_of_order')).toBe(1);
    g.send(FLAG.ACK | FLAG.PSH, Buffer.from('HELLO'), { seq: base });
    g.send(FLAG.ACK | FLAG.PSH, Buffer.from('WORLD'), { seq: seqAdd(base, 5) });
    await settle();
    const acks = g.take();
    expect(acks[acks.length - 1]!.ack).toBe(seqAdd(base, 10));
    await waitFor(() => hostData().length === 10);
    expect(hostData().toString()).toBe('HELLOWORLD');
  });

  it('trims overlapping and ignores retransmitted data', async () => {
    const { ctx, g, hostData } = await connected();
    const base = g.seq;
    g.send(FLAG.ACK, Buffer.from('0123456789'), { seq: base });
    g.send(FLAG.ACK, Buffer.from('56789abcde'), { seq: seqAdd(base, 5) }); // half old, half new
    g.send(FLAG.ACK, Buffer.from('0123'), { seq: base }); // entirely old
    await settle();
    const acks = g.take();
    expect(acks.length).toBeGreaterThanOrEqual(1);
    expect(acks[acks.length - 1]!.ack).toBe(seqAdd(base, 15));
    await waitFor(() => hostData().length >= 15);
    await settle(20);
    expect(hostData().toString()).toBe('0123456789abcde');
    expect(ctx.counters.get('tcp.rx.duplicate')).toBe(1);
  });

  it('drops segments outside the window and ACKs that acknowledge unsent data', async () => {
    const { ctx, g, hostData } = await connected();
    g.send(FLAG.ACK, Buffer.from('far'), { seq: seqAdd(g.seq, 10_000_000) });
    let [ack] = g.take();
    expect(ack!.ack).toBe(g.seq);
    expect(ctx.counters.get('tcp.drop.out_of_window')).toBe(1);
    g.send(FLAG.ACK, Buffer.from('bad'), { ack: seqAdd(g.rcvNxt, 1000) });
    [ack] = g.take();
    expect(ack!.ack).toBe(g.seq);
    expect(ctx.counters.get('tcp.drop.bad_ack')).toBe(1);
    await settle(20);
    expect(hostData().length).toBe(0);
  });
});
