/**
 * TCP translator: inbound port forwarding (host connects to a listening
 * port -> SYN to the guest from the gateway -> guest SYN-ACK -> relay), and
 * the shares of the flow table between forwards and the guest's own flows.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { GATEWAY_IP, GUEST_IP } from './helpers/packets.js';
import { FLAG, GuestConn, closedPort, hostPeer, makeTcp, settle, waitFor, type SentTcp } from './helpers/tcp-context.js';
import type { StackConfig } from '../src/net/context.js';
import { FlowShares } from '../src/net/tcp/flow-shares.js';
import { TCP_TIMING } from '../src/net/tcp/index.js';
import { seqAdd } from '../src/net/tcp/sequence.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

async function forwarded(guestPort = 8080, config: Partial<StackConfig> = {}) {
  const { ctx, tcp } = makeTcp(config);
  const hostPort = await closedPort();
  await tcp.addForward({ hostAddress: '127.0.0.1', hostPort, guestPort });
  cleanups.push(() => tcp.close());
  const clients: net.Socket[] = [];
  cleanups.push(() => clients.forEach((c) => c.destroy()));
  const connect = (port = hostPort) => {
    const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
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

/** Take every SYN sent to the guest so far. */
function takeSyns(ctx: ReturnType<typeof makeTcp>['ctx']): SentTcp[] {
  const stash = GuestConn.pending(ctx);
  const syns = stash.filter((f) => f.flags === FLAG.SYN);
  GuestConn.stash.set(ctx, stash.filter((f) => f.flags !== FLAG.SYN));
  return syns;
}

describe('TCP flow shares: forwards and the guest', () => {
  // maxTcpFlows 16: with a forward, forwarded connections hold at most 4 (0.25), the guest's own 12.
  const config = { maxTcpFlows: 16 };

  it('host connections to a forward cannot take the slots the guest needs to connect out', async () => {
    const { ctx, tcp, connect } = await forwarded(9000, config);
    const clients = Array.from({ length: 20 }, () => connect());
    // Every connection is either forwarded (a SYN to the guest, which stays silent) or reset at once.
    let syns = 0;
    await waitFor(() => {
      syns += takeSyns(ctx).length;
      return syns + clients.filter((c) => c.events.includes('close')).length === clients.length;
    }, 5000, 'every host connection forwarded or refused');
    expect(syns).toBe(4);
    expect(ctx.counters.get('tcp.forward.flow_limit')).toBe(16);
    expect(clients.filter((c) => c.events.includes('error:ECONNRESET')).length).toBe(16);
    // The guest still connects out, up to its own share.
    const peer = await hostPeer(cleanups);
    for (let i = 0; i < 12; i++) {
      const g = new GuestConn(tcp, ctx, { port: 40000 + i, dstPort: peer.port });
      await g.connect();
    }
    expect(tcp.flowCount).toBe(16);
    const extra = new GuestConn(tcp, ctx, { port: 40100, dstPort: peer.port });
    extra.syn();
    expect(extra.take().map((f) => f.flags)).toEqual([FLAG.RST | FLAG.ACK]);
    expect(ctx.counters.get('tcp.drop.flow_limit')).toBe(1);
    // The silent guest holds the forward's share only until the handshake timeout.
    ctx.time += TCP_TIMING.handshakeTimeout;
    tcp.tick(ctx.time);
    expect(tcp.flowCount).toBe(12);
    connect();
    await waitFor(() => takeSyns(ctx).length === 1, 3000, 'a SYN for a new host connection');
  });

  it('the guest cannot take the slots forwarded connections need', async () => {
    const { ctx, tcp, connect, nextSyn } = await forwarded(9001, config);
    const peer = await hostPeer(cleanups);
    let refused = 0;
    for (let i = 0; i < 16; i++) {
      const g = new GuestConn(tcp, ctx, { port: 41000 + i, dstPort: peer.port });
      g.syn();
      await waitFor(() => {
        const frames = g.take();
        if (frames.some((f) => f.flags === (FLAG.RST | FLAG.ACK))) refused++;
        return frames.length > 0;
      }, 3000, 'an answer to the guest SYN');
    }
    expect(refused).toBe(4);
    expect(ctx.counters.get('tcp.drop.flow_limit')).toBe(4);
    const client = connect();
    const syn = await nextSyn();
    expect(syn.dport).toBe(9001);
    expect(client.events).toEqual([]);
    expect(tcp.flowCount).toBe(13);
  });

  it('one busy forward cannot take the slots of another', async () => {
    const { ctx, tcp, connect } = await forwarded(9002, config);
    const quietPort = await closedPort();
    await tcp.addForward({ hostAddress: '127.0.0.1', hostPort: quietPort, guestPort: 9003 });
    // Two forwards: 2 of the 4 inbound slots each.
    const busy = Array.from({ length: 20 }, () => connect());
    let syns = 0;
    await waitFor(() => {
      syns += takeSyns(ctx).length;
      return syns + busy.filter((c) => c.events.includes('close')).length === busy.length;
    }, 5000, 'every host connection forwarded or refused');
    expect(syns).toBe(2);
    connect(quietPort);
    let syn: SentTcp | undefined;
    await waitFor(() => (syn = takeSyns(ctx)[0]) !== undefined, 3000, 'a SYN for the quiet forward');
    expect(syn!.dport).toBe(9003);
    expect(tcp.flowCount).toBe(3);
  });
});

describe('FlowShares', () => {
  /** A flow that, closed, leaves its share (as the translator's removeFlow does). */
  function flowIn(shares: FlowShares<{ close(): void }>, share: ReturnType<FlowShares<{ close(): void }>['addForward']>) {
    const flow = { closed: false, close: () => { flow.closed = true; shares.removed(share, flow); } };
    shares.added(share);
    return flow;
  }

  it('derives every limit from maxTcpFlows: all for the guest until there are forwards', () => {
    const shares = new FlowShares({ maxTcpFlows: 100, tcpInboundShare: 0.25 });
    expect(shares.outbound.limit).toBe(100);
    const a = shares.addForward();
    expect([shares.outbound.limit, shares.inbound.limit, a.limit]).toEqual([75, 25, 25]);
    const b = shares.addForward();
    expect([a.limit, b.limit]).toEqual([12, 12]);
    const fixed = new FlowShares({ maxTcpFlows: 100, tcpInboundShare: 0.5, tcpForwardShare: 0.75 });
    const [c, d] = [fixed.addForward(), fixed.addForward()];
    expect([fixed.outbound.limit, fixed.inbound.limit, c.limit, d.limit]).toEqual([50, 50, 37, 37]);
    const tiny = new FlowShares({ maxTcpFlows: 2, tcpInboundShare: 0.25 });
    tiny.addForward();
    tiny.addForward();
    expect([tiny.outbound.limit, tiny.inbound.limit]).toEqual([1, 1]);
  });

  it('refuses a full share, after reclaiming its own oldest TIME_WAIT flow, and no other', () => {
    const shares = new FlowShares<{ close(): void }>({ maxTcpFlows: 8, tcpInboundShare: 0.5 });
    const a = shares.addForward();
    const b = shares.addForward();
    // Inbound 4, 2 per forward.
    const inA = [flowIn(shares, a), flowIn(shares, a)];
    expect(shares.admit(a)).toBe(false);
    expect(shares.admit(b)).toBe(true);
    const inB = flowIn(shares, b);
    shares.lingering(b, inB);
    shares.lingering(a, inA[1]!);
    expect(shares.admit(a)).toBe(true); // A's own lingering flow made room
    expect(inA[1]!.closed).toBe(true);
    expect(inB.closed).toBe(false);
    expect([a.count, b.count, shares.inbound.count]).toEqual([1, 1, 2]);
  });

  it('derives the limits again when a forward is removed; its flows still count until they end', () => {
    const shares = new FlowShares<{ close(): void }>({ maxTcpFlows: 100, tcpInboundShare: 0.25 });
    const a = shares.addForward();
    const b = shares.addForward();
    expect([a.limit, b.limit]).toEqual([12, 12]);
    const draining = flowIn(shares, a);
    shares.removeForward(a);
    expect([shares.outbound.limit, shares.inbound.limit, b.limit]).toEqual([75, 25, 25]);
    expect(shares.inbound.count).toBe(1);
    draining.close();
    expect([a.count, shares.inbound.count]).toEqual([0, 0]);
    shares.removeForward(b);
    expect([shares.outbound.limit, shares.inbound.limit]).toEqual([100, 0]);
    shares.removeForward(b); // not there any more: nothing changes
    expect(shares.outbound.limit).toBe(100);
  });
});
