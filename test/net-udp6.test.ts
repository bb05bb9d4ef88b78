/**
 * UDP over IPv6 through the stack, frame by frame over the fake link with
 * real host sockets on ::1: DHCPv6 (stateless and stateful with rapid
 * commit), a flow to a udp6 server reached through gateway6, ICMPv6 port
 * unreachable relayed from the socket's IPV6_RECVERR queue, DNS at the v6
 * DNS address, --restrict, and a UDP forward on a host IPv6 address.
 */
import * as dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { fakeLinkStack, stubDnsResolver } from './helpers/stack-rig.js';
import { GUEST_MAC, dnsAnswerAddress, dnsMessage } from './helpers/packets.js';
import {
  DNS_IP6, GATEWAY_IP6, GATEWAY_LL6, GUEST_IP6, GUEST_LL6, NH_UDP, guestIpv6Frame, ip6, ipv6Packet, parseFrame6, udp6Datagram,
} from './helpers/packets6.js';
import { waitForValue } from './helpers/wait.js';
import {
  DHCPV6_INFORMATION_REQUEST, DHCPV6_REPLY, DHCPV6_SOLICIT, buildDhcpv6, duidLinkLayer, parseDhcpv6, type Dhcpv6Message,
} from '../src/net/wire/dhcpv6.js';
import type { FakeLink } from './helpers/fake-link.js';
import { inanyToString } from '../src/net/inany.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function guestUdp6(src: Uint8Array, dst: Uint8Array, sport: number, dport: number, payload: Uint8Array, dstMac?: Uint8Array): Uint8Array {
  return guestIpv6Frame(ipv6Packet({ src, dst, nextHeader: NH_UDP, payload: udp6Datagram({ src, dst, sport, dport, payload }) }), dstMac);
}

async function udp6Server(onMessage: (msg: Buffer, rinfo: dgram.RemoteInfo, sock: dgram.Socket) => void): Promise<dgram.Socket> {
  const sock = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  await new Promise<void>((r) => sock.bind(0, '::1', r));
  sock.on('message', (m, r) => onMessage(m, r, sock));
  cleanups.push(() => sock.close());
  return sock;
}

function udp6Frames(link: FakeLink) {
  return link.sent.map(parseFrame6).filter((f) => f.udp !== undefined);
}

function dhcpv6Exchange(message: Dhcpv6Message, config = {}) {
  const { link, counters, stack } = fakeLinkStack(cleanups, {}, config);
  const payload = buildDhcpv6(message);
  const allServers = ip6('ff02::1:2');
  stack.receive(guestUdp6(GUEST_LL6, allServers, 546, 547, payload, Uint8Array.of(0x33, 0x33, 0, 1, 0, 2)), null);
  const frames = udp6Frames(link);
  expect(frames).toHaveLength(1);
  const f = frames[0]!;
  expect(f.checksumOk).toBe(true);
  expect(f.src).toEqual(GATEWAY_LL6);
  expect(f.dst).toEqual(GUEST_LL6);
  expect(f.ethDst).toEqual(GUEST_MAC);
  expect(f.udp).toMatchObject({ sport: 547, dport: 546 });
  const reply = parseDhcpv6(f.udp!.payload);
  if (typeof reply === 'string') throw new Error(reply);
  return { reply, counters };
}

describe('DHCPv6 through the stack', () => {
  const clientId = duidLinkLayer(GUEST_MAC);

  it('answers an information-request (stateless) with the DNS address', () => {
    const { reply, counters } = dhcpv6Exchange({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 0x123456, clientId, oro: [23, 24] });
    expect(reply.type).toBe(DHCPV6_REPLY);
    expect(reply.transactionId).toBe(0x123456);
    expect(reply.dnsServers).toEqual([DNS_IP6]);
    expect(reply.iaNa).toBeUndefined();
    expect(counters.get('dhcpv6.tx.replies')).toBe(1);
  });

  it('answers a solicit with rapid commit with a reply assigning prefix::15', () => {
    const { reply } = dhcpv6Exchange({
      type: DHCPV6_SOLICIT, transactionId: 7, clientId, rapidCommit: true, iaNa: [{ iaid: 1, t1: 0, t2: 0, addresses: [] }],
    });
    expect(reply.type).toBe(DHCPV6_REPLY);
    expect(reply.rapidCommit).toBe(true);
    expect(reply.clientId).toEqual(clientId);
    expect(inanyToString(reply.iaNa![0]!.addresses[0]!.address)).toBe('fec0::15');
  });

  it('assigns the address of a configured prefix', () => {
    const { reply } = dhcpv6Exchange({
      type: DHCPV6_SOLICIT, transactionId: 8, clientId, rapidCommit: true, iaNa: [{ iaid: 1, t1: 0, t2: 0, addresses: [] }],
    }, { network6: ip6('fd00:1:2:3::') });
    expect(inanyToString(reply.iaNa![0]!.addresses[0]!.address)).toBe('fd00:1:2:3::15');
    expect(reply.dnsServers!.map(inanyToString)).toEqual(['fd00:1:2:3::3']);
  });
});

describe('UDP flows over IPv6', () => {
  it('carries a datagram to a udp6 server on ::1 through gateway6 and its answer back', async () => {
    const { link, counters, stack } = fakeLinkStack(cleanups);
    const server = await udp6Server((m, r, sock) => sock.send(Buffer.concat([Buffer.from('re:'), m]), r.port, r.address));
    const port = server.address().port;
    stack.receive(guestUdp6(GUEST_IP6, GATEWAY_IP6, 40000, port, new TextEncoder().encode('hello v6')), null);
    const [f] = await waitForValue(() => udp6Frames(link).length > 0 && udp6Frames(link));
    expect(f!.checksumOk).toBe(true);
    expect(f!.src).toEqual(GATEWAY_IP6);
    expect(f!.dst).toEqual(GUEST_IP6);
    expect(f!.udp).toMatchObject({ sport: port, dport: 40000 });
    expect(new TextDecoder().decode(f!.udp!.payload)).toBe('re:hello v6');
    expect(counters.get('udp.flows.created')).toBe(1);
  });

  it('relays ICMPv6 port unreachable for a closed port on ::1, quoting the datagram', async () => {
    const { link, counters, stack } = fakeLinkStack(cleanups);
    const closed = await udp6Server(() => {});
    const port = closed.address().port;
    await new Promise<void>((r) => closed.close(() => r()));
    cleanups.pop();
    const sent = guestUdp6(GUEST_IP6, GATEWAY_IP6, 40001, port, Uint8Array.of(1, 2, 3));
    stack.receive(sent, null);
    // A second datagram makes the pending error surface if the first receive did not.
    setTimeout(() => stack.receive(guestUdp6(GUEST_IP6, GATEWAY_IP6, 40001, port, Uint8Array.of(4)), null), 20);
    const f = await waitForValue(() => link.sent.map(parseFrame6).find((p) => p.icmp?.type === 1));
    expect(f.icmp?.code).toBe(4);
    expect(f.checksumOk).toBe(true);
    expect(f.src).toEqual(GATEWAY_IP6);
    expect(f.dst).toEqual(GUEST_IP6);
    // The quote is the guest's IPv6 header and UDP header.
    expect(f.icmp!.body.subarray(0, 48)).toEqual(sent.subarray(14, 62));
    expect(counters.get('udp.port_unreachable')).toBeGreaterThanOrEqual(1);
  });

  it('serves DNS at the IPv6 DNS address', async () => {
    const resolver = await stubDnsResolver(cleanups);
    const { link, counters, stack } = fakeLinkStack(cleanups, {}, { dnsUpstreams: [{ address: '127.0.0.1', port: resolver.address().port }] });
    const query = dnsMessage({ id: 0x4242, name: 'example.com', qtype: 28 });
    stack.receive(guestUdp6(GUEST_IP6, DNS_IP6, 5353, 53, query), null);
    const [f] = await waitForValue(() => udp6Frames(link).length > 0 && udp6Frames(link));
    expect(f!.src).toEqual(DNS_IP6);
    expect(f!.udp).toMatchObject({ sport: 53, dport: 5353 });
    expect(f!.checksumOk).toBe(true);
    expect(dnsAnswerAddress(f!.udp!.payload)).toBe('192.0.2.55');
    expect(counters.get('dns.tx.answers')).toBe(1);
  });

  it('under --restrict refuses IPv6 destinations with administratively prohibited', () => {
    const { link, counters, stack } = fakeLinkStack(cleanups, {}, { restrict: true });
    stack.receive(guestUdp6(GUEST_IP6, ip6('2001:db8::1'), 40002, 123, Uint8Array.of(1)), null);
    stack.receive(guestUdp6(GUEST_IP6, GATEWAY_IP6, 40002, 123, Uint8Array.of(1)), null);
    expect(counters.get('udp.drop.nat_restricted')).toBe(2);
    const errors = link.sent.map(parseFrame6).filter((f) => f.icmp?.type === 1);
    expect(errors.map((f) => f.icmp!.code)).toEqual([1, 1]);
    expect(counters.get('udp.flows.created')).toBe(0);
  });

  it('forwards datagrams from a host IPv6 address to the guest over IPv6 once it has an address, and its answers back', async () => {
    const hostPort = await freeUdp6Port();
    const { link, stack } = fakeLinkStack(cleanups, { forwards: [{ protocol: 'udp', hostAddress: '::1', hostPort, guestPort: 7000 }] });
    await stack.start();
    // The guest shows its address (any packet from it).
    stack.receive(guestUdp6(GUEST_IP6, DNS_IP6, 1, 9, new Uint8Array(0)), null);
    const answers: Buffer[] = [];
    const client = await udp6Server((m) => answers.push(m));
    client.send(Buffer.from('ping'), hostPort, '::1');
    const [f] = await waitForValue(() => udp6Frames(link).length > 0 && udp6Frames(link));
    expect(f!.dst).toEqual(GUEST_IP6);
    expect(f!.src).toEqual(GATEWAY_IP6);
    expect(f!.udp?.dport).toBe(7000);
    expect(f!.checksumOk).toBe(true);
    stack.receive(guestUdp6(GUEST_IP6, GATEWAY_IP6, 7000, f!.udp!.sport, new TextEncoder().encode('pong')), null);
    const got = await waitForValue(() => answers[0]);
    expect(got.toString()).toBe('pong');
  });
});

async function freeUdp6Port(): Promise<number> {
  const s = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  await new Promise<void>((r) => s.bind(0, '::1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
