/**
 * TCP translator: retransmission timers on an injected clock, closing
 * (FIN both ways, half-close, RST both ways), timeouts and the flow limit.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type * as net from 'node:net';
import { FLAG, GuestConn, listen, makeTcp, settle, takeTcp, waitFor } from './helpers/tcp-context.js';
import { TCP_TIMING } from '../src/net/tcp/index.js';
import { seqAdd } from '../src/net/tcp/sequence.js';
import { FakeTcpSocket } from './helpers/fake-tcp-socket.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function server() {
  const accepted: net.Socket[] = [];
  const received = new Map<net.Socket, Buffer[]>();
  const events: string[] = [];
  const { server: srv, port } = await listen((s) => {
    accepted.push(s);
    received.set(s, []);
    s.on('data', (d) => received.get(s)!.push(d));
    s.on('end', () => events.push('end'));
    s.on('error', (e: NodeJS.ErrnoException) => events.push(`error:${e.code}`));
    s.on('close', () => events.push('close'));
  }, { allowHalfOpen: true });
  cleanups.push(() => {
    for (const s of accepted) s.destroy();
    srv.close();
  });
  return { port, accepted, events, data: (i = 0) => Buffer.concat(received.get(accepted[i]!) ?? []) };
}

async function connected(o: { window?: number; wscale?: number } = {}) {
  const srv = await server();
  const { ctx, tcp } = makeTcp();
  cleanups.push(() => tcp.close());
  const g = new GuestConn(tcp, ctx, { port: 42000, dstPort: srv.port, ...o });
  await g.connect();
  await waitFor(() => srv.accepted.length === 1);
  return { ...srv, ctx, tcp, g, host: srv.accepted[0]! };
}

describe('TCP retransmission', () => {
  it('retransmits from SND.UNA on RTO with exponential backoff, then gives up with RST', async () => {
    const { ctx, tcp, g, host, events } = await connected();
    host.write(Buffer.alloc(3000, 0x41));
    await waitFor(() => ctx.link.sent.length >= 3);
    const first = g.take();
    expect(first.map((f) => f.payload.length)).toEqual([1460, 1460, 80]);
    const una = first[0]!.seq;
    // The handshake gave an RTT sample of ~0 on this clock, so the RTO is the 200 ms floor.
    ctx.time += 199;
    tcp.tick(ctx.time);
    expect(g.take().length).toBe(0);
    ctx.time += 1;
    tcp.tick(ctx.time);
    const again = g.take();
    expect(again.map((f) => f.seq)).toEqual([una, seqAdd(una, 1460), seqAdd(una, 2920)]); // go-back-N
    expect(ctx.counters.get('tcp.retransmits')).toBe(1);
    // Backoff: next after 400 ms, not 200.
    ctx.time += 200;
    tcp.tick(ctx.time);
    expect(g.take().length).toBe(0);
    ctx.time += 200;
    tcp.tick(ctx.time);
    expect(g.take().length).toBe(3);
    // The guest ACKs part: the timer restarts at the (backed-off) RTO and only the rest is resent.
    g.absorb(again.slice(0, 1));
    g.send(FLAG.ACK);
    ctx.time += 4000;
    tcp.tick(ctx.time);
    const rest = g.take();
    expect(rest[0]!.seq).toBe(seqAdd(una, 1460));
    // Now silence until give-up.
    for (let i = 0; i < TCP_TIMING.maxRetries + 2; i++) {
      ctx.time += TCP_TIMING.maxRto;
      tcp.tick(ctx.time);
    }
    const last = g.take();
    expect(last[last.length - 1]!.flags & FLAG.RST).toBeTruthy();
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.timeout.retransmit')).toBe(1);
    await waitFor(() => events.includes('error:ECONNRESET'));
  });

  it('accepts an ACK for data sent before a go-back-N rewind, and resumes after link back-pressure', async () => {
    const { ctx, tcp, g, host } = await connected();
    host.write(Buffer.alloc(1460 * 4, 0x43));
    await waitFor(() => ctx.link.sent.length >= 4);
    const segs = g.take();
    expect(segs.length).toBe(4);
    ctx.link.room = 1; // the guest has one receive buffer left
    ctx.time += 200;
    tcp.tick(ctx.time);
    const resent = g.take();
    expect(resent.length).toBe(1);
    expect(resent[0]!.seq).toBe(segs[0]!.seq);
    expect(ctx.counters.get('tcp.link.backpressure')).toBeGreaterThan(0);
    // The original transmission's ACK arrives now: beyond the rewound SND.NXT, still valid.
    g.absorb(segs);
    g.send(FLAG.ACK);
    expect(ctx.counters.get('tcp.drop.bad_ack')).toBe(0);
    ctx.link.makeWritable();
    ctx.time += 10_000;
    tcp.tick(ctx.time);
    expect(g.take().length).toBe(0); // nothing left to (re)send
    host.write('more');
    await waitFor(() => g.absorb(g.take()));
    expect(g.data().subarray(1460 * 4).toString()).toBe('more');
  });

  it('fast-retransmits the first unacknowledged segment on the third duplicate ACK', async () => {
    const { ctx, tcp, g, host } = await connected();
    host.write(Buffer.alloc(1460 * 5, 0x42));
    await waitFor(() => ctx.link.sent.length >= 5);
    const segs = g.take();
    expect(segs.length).toBe(5);
    g.absorb(segs.slice(0, 1)); // second segment "lost"
    g.send(FLAG.ACK);
    g.send(FLAG.ACK);
    g.send(FLAG.ACK);
    expect(g.take().length).toBe(0);
    g.send(FLAG.ACK); // third duplicate
    const rx = g.take();
    expect(rx.length).toBe(1);
    expect(rx[0]!.seq).toBe(segs[1]!.seq);
    expect(rx[0]!.payload.length).toBe(1460);
    expect(ctx.counters.get('tcp.fast_retransmits')).toBe(1);
    g.absorb(rx);
    g.absorb(segs.slice(2));
    g.send(FLAG.ACK);
    expect(g.receivedBytes).toBe(1460 * 5);
    ctx.time += 5000;
    tcp.tick(ctx.time);
    expect(g.take().length).toBe(0); // nothing outstanding: no timer
  });

  it('retransmits SYN-ACK and resets a handshake the guest never completes', async () => {
    const srv = await server();
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    const g = new GuestConn(tcp, ctx, { port: 42001, dstPort: srv.port });
    g.syn();
    await waitFor(() => ctx.link.sent.length > 0);
    const synAck = g.take()[0]!;
    ctx.time += 1000;
    tcp.tick(ctx.time);
    const re = g.take();
    expect(re.length).toBe(1);
    expect(re[0]!.flags).toBe(FLAG.SYN | FLAG.ACK);
    expect(re[0]!.seq).toBe(synAck.seq);
    ctx.time += TCP_TIMING.handshakeTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.timeout.handshake')).toBe(1);
    await waitFor(() => srv.events.includes('error:ECONNRESET'));
  });
});

describe('TCP close', () => {
  it('half-closes: guest FIN -> host end, host keeps sending, then host FIN -> flow gone after linger', async () => {
    const { ctx, tcp, g, host, events, data } = await connected();
    g.write(Buffer.from('request'));
    g.fin();
    const [finAck] = g.take();
    expect(finAck!.ack).toBe(g.seq); // data and FIN acknowledged at once
    await waitFor(() => events.includes('end'));
    expect(data().toString()).toBe('request');
    host.write('response after half-close');
    await waitFor(() => g.absorb(g.take()));
    g.send(FLAG.ACK);
    expect(g.data().toString()).toBe('response after half-close');
    host.end();
    await waitFor(() => g.absorb(g.take()) && g.gotFin);
    g.send(FLAG.ACK);
    expect(tcp.flowCount).toBe(1); // lingering
    g.send(FLAG.FIN | FLAG.ACK, undefined, { seq: seqAdd(g.seq, -1) }); // retransmitted FIN: re-ACKed
    expect(g.take()[0]!.ack).toBe(g.seq);
    ctx.time += TCP_TIMING.linger;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.flows.completed')).toBe(1);
    await waitFor(() => events.includes('close'));
    expect(events.filter((e) => e.startsWith('error'))).toEqual([]);
  });

  it('host closes first: FIN after all data, the guest can still send', async () => {
    const { tcp, g, host, events, data } = await connected();
    host.end('bye');
    await waitFor(() => g.absorb(g.take()) && g.gotFin);
    expect(g.data().toString()).toBe('bye');
    g.send(FLAG.ACK);
    g.write(Buffer.from('late words'));
    await waitFor(() => data().length === 10);
    expect(data().toString()).toBe('late words');
    g.fin();
    await waitFor(() => events.includes('end'));
    await settle();
    expect(g.take().some((f) => f.ack === g.seq)).toBe(true);
    expect(tcp.flowCount).toBe(1); // lingering
  });

  it('guest RST destroys the host socket', async () => {
    const { ctx, tcp, g, events } = await connected();
    g.send(FLAG.RST, undefined, { seq: g.seq });
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.rst.received')).toBe(1);
    await waitFor(() => events.includes('close'));
    expect(events).toContain('error:ECONNRESET');
  });

  it('an RST outside the window is ignored', async () => {
    const { tcp, g } = await connected();
    g.send(FLAG.RST, undefined, { seq: seqAdd(g.seq, 5_000_000) });
    expect(tcp.flowCount).toBe(1);
  });

  it('host reset -> RST to the guest', async () => {
    const { ctx, tcp, g, host } = await connected();
    host.resetAndDestroy();
    let rst;
    await waitFor(() => (rst = g.take().find((f) => f.flags & FLAG.RST)) !== undefined);
    expect(rst!.ack).toBe(g.seq);
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.host.reset')).toBe(1);
  });
  it('close() also ends the host socket of a flow that closed cleanly while Node still held guest bytes (found by the fuzzer)', async () => {
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    const sockets: FakeTcpSocket[] = [];
    ctx.host.connectTcp = (options) => {
      const s = new FakeTcpSocket(options);
      sockets.push(s);
      return s.asSocket();
    };
    const g = new GuestConn(tcp, ctx, { port: 42001, dstPort: 8080 });
    const handshake = g.connect();
    sockets[0]!.connect();
    await handshake;
    const host = sockets[0]!;
    g.write(new Uint8Array(1000)); // the host never takes these: Node keeps them queued
    g.fin();
    host.peerEnd();
    await waitFor(() => g.absorb(g.take()) && g.gotFin);
    g.send(FLAG.ACK);
    ctx.time += TCP_TIMING.linger;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    expect(host.writableLength).toBe(1000);
    expect(host.destroyed).toBe(false); // still flushing, bounded by its FIN timeout
    tcp.close();
    expect(host.destroyed).toBe(true);
  });
});

describe('TCP timeouts and limits', () => {
  it('resets established flows idle for the idle timeout', async () => {
    const { ctx, tcp, g, events } = await connected();
    ctx.time += TCP_TIMING.idleTimeout - 1;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(1);
    ctx.time += 1;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    expect(g.take().some((f) => f.flags & FLAG.RST)).toBe(true);
    expect(ctx.counters.get('tcp.timeout.idle')).toBe(1);
    await waitFor(() => events.includes('close'));
  });

  it('resets a flow whose FIN the guest acknowledged but which then went silent (FIN_WAIT forever)', async () => {
    const { ctx, tcp, g, host } = await connected();
    host.end();
    await waitFor(() => g.absorb(g.take()) && g.gotFin);
    g.send(FLAG.ACK);
    ctx.time += TCP_TIMING.finTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
  });

  it('a host connect that never completes is reset after the connect timeout', async () => {
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    // 10.0.2.2 -> 127.0.0.1 on a port, but replace connectTcp by one that never connects.
    const { Socket } = await import('node:net');
    ctx.host.connectTcp = () => new Socket();
    const g = new GuestConn(tcp, ctx, { port: 42002, dstPort: 9, isn: 41 });
    g.syn();
    ctx.time += TCP_TIMING.connectTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    const [rst] = g.take();
    expect(rst!.flags).toBe(FLAG.RST | FLAG.ACK);
    expect(rst!.ack).toBe(42);
  });

  it('bounds a SYN flood by maxTcpFlows; other flows keep working; stale ones are reclaimed', async () => {
    const srv = await server();
    const { ctx, tcp } = makeTcp({ maxTcpFlows: 8 });
    cleanups.push(() => tcp.close());
    const good = new GuestConn(tcp, ctx, { port: 43000, dstPort: srv.port });
    await good.connect();
    await waitFor(() => srv.accepted.length === 1);
    for (let i = 0; i < 200; i++) new GuestConn(tcp, ctx, { port: 50000 + i, dstPort: srv.port, isn: i }).syn();
    expect(tcp.flowCount).toBe(8);
    expect(ctx.connects.length).toBe(8);
    expect(ctx.counters.get('tcp.drop.flow_limit')).toBe(193);
    const rsts = takeTcp(ctx);
    expect(rsts.length).toBe(193);
    expect(rsts.every((f) => f.flags === (FLAG.RST | FLAG.ACK) && f.ack === ((f.dport - 50000 + 1) >>> 0))).toBe(true);
    // The established flow still moves data.
    good.write(Buffer.from('still here'));
    await waitFor(() => srv.data(0).toString() === 'still here');
    srv.accepted[0]!.write('yes');
    await waitFor(() => good.absorb(good.take()));
    expect(good.data().toString()).toBe('yes');
    // The flood's half-open flows time out; the slots come back.
    await waitFor(() => srv.accepted.length === 8);
    ctx.time += TCP_TIMING.handshakeTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(1);
    const later = new GuestConn(tcp, ctx, { port: 43001, dstPort: srv.port });
    await later.connect();
    expect(tcp.flowCount).toBe(2);
  });
});
