/**
 * TCP translator: opening connections (guest SYN -> host connect -> SYN-ACK),
 * refusals, option negotiation, unknown flows, bad segments.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type * as net from 'node:net';
import { GATEWAY_IP, GUEST_IP } from './helpers/packets.js';
import { FLAG, GuestConn, closedPort, guestInput, listen, makeTcp, settle, takeTcp, waitFor } from './helpers/tcp-context.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function setup(over = {}) {
  const accepted: net.Socket[] = [];
  const { server, port } = await listen((s) => {
    accepted.push(s);
    s.on('error', () => {});
  });
  const { ctx, tcp } = makeTcp(over);
  cleanups.push(() => {
    tcp.close();
    for (const s of accepted) s.destroy();
    server.close();
  });
  return { ctx, tcp, server, port, accepted };
}

describe('TCP handshake', () => {
  it('answers SYN with SYN-ACK only after the host connect succeeded, absorbing SYN retransmissions', async () => {
    const { ctx, tcp, port, accepted } = await setup();
    const g = new GuestConn(tcp, ctx, { port: 40001, dstPort: port, isn: 0xfffffff0, wscale: 6, mss: 1400 });
    g.syn();
    g.syn(); // retransmitted while the connect is in flight
    expect(ctx.link.sent.length).toBe(0); // nothing until the host side exists
    expect(tcp.flowCount).toBe(1);
    expect(ctx.connects.length).toBe(1);
    expect(ctx.connects[0]).toMatchObject({ host: '127.0.0.1', port, allowHalfOpen: true });
    expect(typeof ctx.connects[0]!.onread?.callback).toBe('function'); // one shared read buffer, no allocation per read
    expect(ctx.counters.get('tcp.syn.absorbed')).toBe(1);
    await waitFor(() => ctx.link.sent.length > 0);
    const [synAck, ...rest] = takeTcp(ctx);
    expect(rest.length).toBe(0);
    await waitFor(() => accepted.length === 1);
    expect(synAck!.flags).toBe(FLAG.SYN | FLAG.ACK);
    expect(synAck!.src).toBe(GATEWAY_IP);
    expect(synAck!.dst).toBe(GUEST_IP);
    expect(synAck!.sport).toBe(port);
    expect(synAck!.dport).toBe(40001);
    expect(synAck!.ack).toBe(0xfffffff1);
    expect(synAck!.mss).toBe(1460); // MTU 1500 - 40
    expect(synAck!.wscale).toBe(7);
    expect(synAck!.sackPermitted).toBeUndefined();
    expect(synAck!.timestamp).toBeUndefined();
    expect(synAck!.window).toBe(65535); // unscaled in a SYN
    // Option bytes exactly: MSS 1460, NOP, WS 7.
    expect([...synAck!.options]).toEqual([2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
  });

  it('resends SYN-ACK when the guest retransmits its SYN after it', async () => {
    const { ctx, tcp, port } = await setup();
    const g = new GuestConn(tcp, ctx, { port: 40002, dstPort: port });
    g.syn();
    await waitFor(() => ctx.link.sent.length > 0);
    const first = takeTcp(ctx)[0]!;
    g.syn();
    const again = takeTcp(ctx);
    expect(again.length).toBe(1);
    expect(again[0]!.flags).toBe(FLAG.SYN | FLAG.ACK);
    expect(again[0]!.seq).toBe(first.seq);
  });

  it('answers RST+ACK when the host refuses the connection', async () => {
    const { ctx, tcp } = makeTcp();
    cleanups.push(() => tcp.close());
    const port = await closedPort();
    const g = new GuestConn(tcp, ctx, { port: 40003, dstPort: port, isn: 1000 });
    g.syn();
    await waitFor(() => ctx.link.sent.length > 0);
    const [rst] = takeTcp(ctx);
    expect(rst!.flags).toBe(FLAG.RST | FLAG.ACK);
    expect(rst!.seq).toBe(0);
    expect(rst!.ack).toBe(1001);
    await waitFor(() => tcp.flowCount === 0);
    expect(ctx.counters.get('tcp.connect.failed')).toBe(1);
    expect(ctx.counters.get('tcp.host.error.ECONNREFUSED')).toBe(1);
  });

  it('answers RST+ACK at once when the NAT refuses the destination', () => {
    const { ctx, tcp } = makeTcp();
    const g = new GuestConn(tcp, ctx, { port: 40004, dstPort: 80, dst: 0x0a090909, isn: 5 });
    g.syn();
    const [rst] = takeTcp(ctx);
    expect(rst!.flags).toBe(FLAG.RST | FLAG.ACK);
    expect(rst!.ack).toBe(6);
    expect(rst!.src).toBe(0x0a090909);
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.drop.nat_refused')).toBe(1);
    expect(ctx.connects.length).toBe(0);
  });

  it('does not scale windows when the guest offers no window scale, and honours its MSS', async () => {
    const { ctx, tcp, port, accepted } = await setup();
    const g = new GuestConn(tcp, ctx, { port: 40005, dstPort: port, mss: 500 });
    g.wscale = undefined;
    const synAck = await g.connect();
    expect(synAck.wscale).toBeUndefined();
    await waitFor(() => accepted.length === 1);
    accepted[0]!.write(Buffer.alloc(3000, 0x61));
    await waitFor(() => ctx.link.sent.length >= 6);
    const frames = g.take();
    expect(frames.every((f) => f.payload.length <= 500)).toBe(true);
    expect(frames.reduce((n, f) => n + f.payload.length, 0)).toBe(3000);
    // Unscaled window: the field is the byte count itself (our budget is larger than 64 KiB).
    expect(frames[0]!.window).toBe(65535);
  });

  it('scales our window by 7 once negotiated', async () => {
    const { ctx, tcp, port } = await setup();
    const g = new GuestConn(tcp, ctx, { port: 40006, dstPort: port, wscale: 2 });
    await g.connect();
    g.write(Buffer.from('x'));
    await settle();
    const [ack] = g.take();
    expect(ack!.ack).toBe(g.seq);
    expect(ack!.window).toBe(Math.floor((512 * 1024) / 128)); // 512 KiB budget, shift 7
  });

  it('answers segments for unknown flows with RST and drops RSTs silently', () => {
    const { ctx, tcp } = makeTcp();
    guestInput(tcp, { sport: 1234, dport: 80, seq: 77, ack: 0x12345678, flags: FLAG.ACK });
    let [rst] = takeTcp(ctx);
    expect(rst!.flags).toBe(FLAG.RST);
    expect(rst!.seq).toBe(0x12345678);
    guestInput(tcp, { sport: 1234, dport: 80, seq: 77, flags: FLAG.FIN, payload: new Uint8Array(3) });
    [rst] = takeTcp(ctx);
    expect(rst!.flags).toBe(FLAG.RST | FLAG.ACK);
    expect(rst!.ack).toBe(77 + 3 + 1);
    guestInput(tcp, { sport: 1234, dport: 80, seq: 77, flags: FLAG.RST });
    expect(takeTcp(ctx).length).toBe(0);
    expect(ctx.counters.get('tcp.drop.no_flow')).toBe(3);
    expect(tcp.flowCount).toBe(0);
  });

  it('drops and counts bad checksums and malformed headers without answering', () => {
    const { ctx, tcp } = makeTcp();
    guestInput(tcp, { sport: 1234, dport: 80, flags: FLAG.SYN, badChecksum: true });
    guestInput(tcp, { sport: 1234, dport: 80, flags: FLAG.SYN, dataOffset: 3 });
    const meta = { src: GUEST_IP, dst: GATEWAY_IP, protocol: 6, ttl: 64, tos: 0, packet: new Uint8Array(0) };
    tcp.input(meta, new Uint8Array(10));
    expect(ctx.link.sent.length).toBe(0);
    expect(ctx.counters.get('tcp.drop.bad_checksum')).toBe(1);
    expect(ctx.counters.get('tcp.drop.bad_offset')).toBe(1);
    expect(ctx.counters.get('tcp.drop.truncated')).toBe(1);
    expect(tcp.flowCount).toBe(0);
  });

  it('answers a wrong ACK in SYN_RCVD with RST and stays open for the right one', async () => {
    const { ctx, tcp, port } = await setup();
    const g = new GuestConn(tcp, ctx, { port: 40007, dstPort: port });
    g.syn();
    await waitFor(() => ctx.link.sent.length > 0);
    const synAck = g.take()[0]!;
    g.seq++;
    g.send(FLAG.ACK, undefined, { ack: synAck.seq + 5 });
    const [rst] = g.take();
    expect(rst!.flags).toBe(FLAG.RST);
    expect(rst!.seq).toBe(synAck.seq + 5);
    g.rcvNxt = synAck.seq + 1;
    g.write(Buffer.from('ok'));
    await settle();
    const [ack] = g.take();
    expect(ack!.flags & FLAG.ACK).toBeTruthy();
    expect(ack!.ack).toBe(g.seq);
    expect(ctx.counters.get('tcp.flows.established')).toBe(1);
  });
});
