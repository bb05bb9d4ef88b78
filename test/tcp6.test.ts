/**
 * TCP over IPv6 through the whole stack (the real TcpTranslator) over the
 * fake link, with real host sockets on ::1: handshake (MSS = MTU - 60),
 * data both ways, close; refused connections answered with RST (also
 * under --restrict); DNS over TCP at the v6 DNS address; a forward on a
 * host IPv6 address reaching the guest over IPv6.
 */
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { fakeLinkStack } from './helpers/stack-rig.js';
import { FLAG, hostPeer, waitFor } from './helpers/tcp-context.js';
import { DNS_IP6, GATEWAY_IP6, GUEST_IP6, guestTcp6Frame, ip6, parseFrame6, type ParsedFrame6 } from './helpers/packets6.js';
import { dnsMessage, dnsTcpFrame, dnsTcpMessages, dnsAnswerAddress } from './helpers/packets.js';
import { stubDnsResolver } from './helpers/stack-rig.js';
import type { FakeLink } from './helpers/fake-link.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function tcpStack(config = {}, extra = {}) {
  return fakeLinkStack(cleanups, { tcp: undefined, ...extra }, config);
}

function tcpFrames(link: FakeLink): (ParsedFrame6 & { tcp: NonNullable<ParsedFrame6['tcp']> })[] {
  return link.sent.splice(0).map(parseFrame6).filter((f): f is ParsedFrame6 & { tcp: NonNullable<ParsedFrame6['tcp']> } => f.tcp !== undefined);
}

describe('TCP over IPv6', () => {
  it('connects to a server on ::1 through gateway6, moves data both ways and closes', async () => {
    const peer = await hostPeer(cleanups, '::1');
    const { link, stack, clock } = tcpStack();
    const seen: ReturnType<typeof tcpFrames> = [];
    const take = () => {
      seen.push(...tcpFrames(link));
      return seen;
    };
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 42000, dport: peer.port, seq: 100, flags: FLAG.SYN, options: { mss: 1440 } }), null);
    await waitFor(() => take().some((f) => f.tcp.flags === (FLAG.SYN | FLAG.ACK)), 3000, 'SYN-ACK');
    const synAck = seen.find((f) => f.tcp.flags === (FLAG.SYN | FLAG.ACK))!;
    expect(synAck.checksumOk).toBe(true);
    expect(synAck.src).toEqual(GATEWAY_IP6);
    expect(synAck.dst).toEqual(GUEST_IP6);
    expect(synAck.tcp.ack).toBe(101);
    expect(synAck.tcp.mss).toBe(1500 - 40 - 20);
    let ack = (synAck.tcp.seq + 1) >>> 0;
    const data = new TextEncoder().encode('GET / over six');
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 42000, dport: peer.port, seq: 101, ack, flags: FLAG.ACK | FLAG.PSH, payload: data }), null);
    await waitFor(() => peer.received().length === data.length, 3000, 'host bytes');
    expect(peer.received().toString()).toBe('GET / over six');
    seen.length = 0;
    peer.accepted[0]!.write('answer over six');
    await waitFor(() => take().some((f) => f.tcp.payload.length > 0), 3000, 'guest bytes');
    const answer = seen.find((f) => f.tcp.payload.length > 0)!;
    expect(answer.checksumOk).toBe(true);
    expect(new TextDecoder().decode(answer.tcp.payload)).toBe('answer over six');
    ack = (answer.tcp.seq + answer.tcp.payload.length) >>> 0;
    // The guest closes; the host sees the end and closes too; the guest acknowledges the FIN.
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 42000, dport: peer.port, seq: 101 + data.length, ack, flags: FLAG.ACK | FLAG.FIN }), null);
    await new Promise<void>((r) => peer.accepted[0]!.once('end', () => r()));
    peer.accepted[0]!.end();
    await waitFor(() => take().some((f) => (f.tcp.flags & FLAG.FIN) !== 0), 3000, 'FIN from the host side');
    const fin = seen.find((f) => (f.tcp.flags & FLAG.FIN) !== 0)!;
    expect(fin.tcp.ack).toBe(101 + data.length + 1);
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 42000, dport: peer.port, seq: 102 + data.length, ack: (fin.tcp.seq + 1) >>> 0, flags: FLAG.ACK }), null);
    // Both directions closed: the flow lingers (TIME_WAIT) and is gone after the linger.
    await waitFor(() => { clock.t += 5000; stack.tick(); return (stack.tcp?.flowCount ?? 0) === 0; }, 3000, 'flow closed');
  });

  it('answers a connection refused by the host with RST, and one refused by --restrict at once', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '::1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const { link, counters, stack } = tcpStack();
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 42001, dport: closed, seq: 5, flags: FLAG.SYN }), null);
    let rst: ReturnType<typeof tcpFrames>[number] | undefined;
    await waitFor(() => (rst = tcpFrames(link).find((f) => (f.tcp.flags & FLAG.RST) !== 0)) !== undefined, 3000, 'RST');
    expect(rst!.tcp.ack).toBe(6);
    expect(rst!.checksumOk).toBe(true);

    const restricted = tcpStack({ restrict: true });
    restricted.stack.receive(guestTcp6Frame({ dst: ip6('2001:db8::80'), sport: 42002, dport: 80, seq: 9, flags: FLAG.SYN }), null);
    const r = tcpFrames(restricted.link);
    expect(r).toHaveLength(1);
    expect(r[0]!.tcp.flags & FLAG.RST).toBe(FLAG.RST);
    expect(r[0]!.src).toEqual(ip6('2001:db8::80'));
    expect(restricted.counters.get('tcp.drop.nat_refused')).toBe(1);
    expect(counters.get('tcp.drop.nat_refused')).toBe(0);
  });

  it('relays DNS over TCP at the IPv6 DNS address to the upstream resolver', async () => {
    const resolver = await stubDnsResolver(cleanups);
    // The upstream answers TCP as well: a tiny TCP front for the stub (length-prefixed messages).
    const tcpFront = net.createServer((s) => {
      s.on('data', async (d) => {
        for (const q of dnsTcpMessages(new Uint8Array(d))) {
          const sock = (await import('node:dgram')).createSocket('udp4');
          sock.on('message', (m) => {
            s.write(dnsTcpFrame(new Uint8Array(m)));
            sock.close();
          });
          sock.send(q, resolver.address().port, '127.0.0.1');
        }
      });
      s.on('error', () => {});
    });
    await new Promise<void>((r) => tcpFront.listen(0, '127.0.0.1', r));
    cleanups.push(() => tcpFront.close());
    const { link, stack } = tcpStack({ dnsUpstreams: [{ address: '127.0.0.1', port: (tcpFront.address() as net.AddressInfo).port }] });
    stack.receive(guestTcp6Frame({ dst: DNS_IP6, sport: 42003, dport: 53, seq: 1, flags: FLAG.SYN }), null);
    let synAck: ReturnType<typeof tcpFrames>[number] | undefined;
    await waitFor(() => (synAck = tcpFrames(link).find((f) => f.tcp.flags === (FLAG.SYN | FLAG.ACK))) !== undefined, 3000, 'SYN-ACK');
    expect(synAck!.src).toEqual(DNS_IP6);
    const query = dnsTcpFrame(dnsMessage({ id: 0x77, name: 'example.com', qtype: 28 }));
    stack.receive(guestTcp6Frame({ dst: DNS_IP6, sport: 42003, dport: 53, seq: 2, ack: (synAck!.tcp.seq + 1) >>> 0, flags: FLAG.ACK | FLAG.PSH, payload: query }), null);
    let answer: ReturnType<typeof tcpFrames>[number] | undefined;
    await waitFor(() => (answer = tcpFrames(link).find((f) => f.tcp.payload.length > 0)) !== undefined, 3000, 'DNS answer');
    const [msg] = dnsTcpMessages(answer!.tcp.payload);
    expect(dnsAnswerAddress(msg!)).toBe('192.0.2.55');
  });

  it('a forward on a host IPv6 address reaches the guest over IPv6 once it has an address', async () => {
    const hostPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '::1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const { link, stack } = tcpStack({}, { forwards: [{ protocol: 'tcp', hostAddress: '::1', hostPort, guestPort: 8080 }] });
    await stack.start();
    // The guest shows its IPv6 address (a DNS query will do).
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 1, dport: 1, seq: 0, flags: FLAG.RST }), null);
    const client = net.connect({ host: '::1', port: hostPort });
    client.on('error', () => {});
    cleanups.push(() => client.destroy());
    let syn: ReturnType<typeof tcpFrames>[number] | undefined;
    await waitFor(() => (syn = tcpFrames(link).find((f) => f.tcp.flags === FLAG.SYN)) !== undefined, 3000, 'SYN to the guest');
    expect(syn!.dst).toEqual(GUEST_IP6);
    expect(syn!.src).toEqual(GATEWAY_IP6);
    expect(syn!.tcp.dport).toBe(8080);
    expect(syn!.tcp.mss).toBe(1440);
    expect(syn!.checksumOk).toBe(true);
    // The guest accepts; bytes flow from the host client to the guest.
    stack.receive(guestTcp6Frame({ dst: GATEWAY_IP6, sport: 8080, dport: syn!.tcp.sport, seq: 500, ack: (syn!.tcp.seq + 1) >>> 0, flags: FLAG.SYN | FLAG.ACK, options: { mss: 1440 } }), null);
    await waitFor(() => tcpFrames(link).some((f) => f.tcp.flags === FLAG.ACK), 3000, 'handshake ACK');
    client.write('through the forward');
    let data: ReturnType<typeof tcpFrames>[number] | undefined;
    await waitFor(() => (data = tcpFrames(link).find((f) => f.tcp.payload.length > 0)) !== undefined, 3000, 'forwarded bytes');
    expect(new TextDecoder().decode(data!.tcp.payload)).toBe('through the forward');
  });
});
