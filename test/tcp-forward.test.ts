/**
 * TCP translator: inbound port forwarding (host connects to a listening
 * port -> SYN to the guest from the gateway -> guest SYN-ACK -> relay).
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { GATEWAY_IP, GUEST_IP } from './helpers/packets.js';
import { FLAG, GuestConn, closedPort, makeTcp, settle, waitFor, type SentTcp } from './helpers/tcp-context.js';
import { TCP_TIMING } from '../src/net/tcp/index.js';
import { seqAdd } from '../src/net/tcp/sequence.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function forwarded(guestPort = 8080) {
  const { ctx, tcp } = makeTcp();
  const hostPort = await closedPort();
  await tcp.addForward({ hostAddress: '127.0.0.1', hostPort, guestPort });
  cleanups.push(() => tcp.close());
  const clients: net.Socket[] = [];
  cleanups.push(() => clients.forEach((c) => c.destroy()));
  const connect = () => {
    const c = net.connect({ host: '127.0.0.1', port: hostPort, allowHalfOpen: true });
    const got: Buffer[] = [];
    const events: string[] = [];
    c.on('data', (d) => got.push(d));
    c.on('end', () => events.push('end'));
    c.on('error', (e: NodeJS.ErrnoException) => events.push(`error:${e.code}`));
    c.on('close', () => events.push('close'));
    clients.push(c);
    return { socket: c, data: () => Buffer.concat(got).toString(), events };
  };
  const nextSyn = async (): Promise<SentTcp> => {
    let syn: SentTcp | undefined;
    await waitFor(() => (syn = takeSyn(ctx)) !== undefined, 3000, 'SYN to the guest');
    return syn!;
  };
  return { ctx, tcp, hostPort, connect, nextSyn, guestPort };
}

function takeSyn(ctx: ReturnType<typeof makeTcp>['ctx']): SentTcp | undefined {
  const stash = GuestConn.pending(ctx);
  const i = stash.findIndex((f) => f.flags === FLAG.SYN);
  return i < 0 ? undefined : stash.splice(i, 1)[0];
}

describe('TCP port forwarding', () => {
  it('turns a host connection into a SYN to the guest and relays both ways once it answers', async () => {
    const { ctx, tcp, connect, nextSyn } = await forwarded(8080);
    const client = connect();
    client.socket.write('early bytes'); // held until the guest accepts
    const syn = await nextSyn();
    expect(syn.src).toBe(GATEWAY_IP);
    expect(syn.dst).toBe(GUEST_IP);
    expect(syn.dport).toBe(8080);
    expect(syn.sport).toBeGreaterThanOrEqual(49152);
    expect(syn.mss).toBe(1460);
    expect(syn.wscale).toBe(7);
    expect(tcp.flowCount).toBe(1);
    await settle(20);
    expect(ctx.link.sent.length).toBe(0); // no data before the handshake

    // SYN retransmitted on timeout (initial RTO 1 s).
    ctx.time += 999;
    tcp.tick(ctx.time);
    expect(takeSyn(ctx)).toBeUndefined();
    ctx.time += 1;
    tcp.tick(ctx.time);
    const again = takeSyn(ctx);
    expect(again?.seq).toBe(syn.seq);

    // The guest accepts.
    const g = new GuestConn(tcp, ctx, { port: 8080, dstPort: syn.sport, isn: 0x7000 });
    g.rcvNxt = seqAdd(syn.seq, 1);
    g.send(FLAG.SYN | FLAG.ACK, undefined, { options: { mss: 1460, wscale: 7 } });
    g.seq = seqAdd(g.seq, 1);
    const [ack] = g.take();
    expect(ack!.flags & FLAG.ACK).toBeTruthy();
    expect(ack!.seq).toBe(seqAdd(syn.seq, 1));
    expect(ack!.ack).toBe(0x7001);
    await waitFor(() => g.absorb(g.take()) && g.receivedBytes === 11);
    expect(g.data().toString()).toBe('early bytes');
    g.send(FLAG.ACK);
    g.write(Buffer.from('guest says hi'));
    await waitFor(() => client.data() === 'guest says hi');
    // Close from the host side: FIN reaches the guest after the data.
    client.socket.end();
    await waitFor(() => g.absorb(g.take()) && g.gotFin);
    g.send(FLAG.ACK);
    g.fin();
    await waitFor(() => client.events.includes('end'));
    expect(ctx.counters.get('tcp.forward.accepted')).toBe(1);
  });

  it('uses a distinct source port per forwarded connection', async () => {
    const { connect, nextSyn, tcp } = await forwarded(8081);
    connect();
    const a = await nextSyn();
    connect();
    const b = await nextSyn();
    expect(a.sport).not.toBe(b.sport);
    expect(tcp.flowCount).toBe(2);
  });

  it('guest RST to our SYN resets the host connection', async () => {
    const { ctx, tcp, connect, nextSyn } = await forwarded(8082);
    const client = connect();
    const syn = await nextSyn();
    const g = new GuestConn(tcp, ctx, { port: 8082, dstPort: syn.sport, isn: 0 });
    g.send(FLAG.RST | FLAG.ACK, undefined, { seq: 0, ack: seqAdd(syn.seq, 1) });
    expect(tcp.flowCount).toBe(0);
    expect(ctx.counters.get('tcp.forward.refused')).toBe(1);
    await waitFor(() => client.events.includes('close'));
    expect(client.events).toContain('error:ECONNRESET');
  });

  it('gives up when the guest never answers', async () => {
    const { ctx, tcp, connect, nextSyn } = await forwarded(8083);
    const client = connect();
    await nextSyn();
    ctx.time += TCP_TIMING.handshakeTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(0);
    await waitFor(() => client.events.includes('close'));
  });

  it('rejects a forward whose port is taken', async () => {
    const { hostPort } = await forwarded(8084);
    const { tcp: tcp2 } = makeTcp();
    cleanups.push(() => tcp2.close());
    await expect(tcp2.addForward({ hostAddress: '127.0.0.1', hostPort, guestPort: 1 })).rejects.toThrow(/EADDRINUSE/);
  });
});
