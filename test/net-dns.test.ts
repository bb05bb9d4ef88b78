import { describe, it, expect, afterEach } from 'vitest';
import type * as dgram from 'node:dgram';
import { parseDnsName, parseDnsQuery } from '../src/net/wire/dns.js';
import { MAX_PENDING } from '../src/net/dns.js';
import { DNS_IP, GUEST_IP, dnsQuery as query, guestUdpFrame, hex, parseFrame } from './helpers/packets.js';
import { fakeLinkStack, loopbackUdp, stubDnsResolver } from './helpers/stack-rig.js';
import { waitForValue } from './helpers/wait.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function stubResolver(seen: number[] = []): Promise<dgram.Socket> {
  return stubDnsResolver(cleanups, seen);
}

function deadResolver(): Promise<dgram.Socket> {
  return loopbackUdp(cleanups, () => {});
}

function setup(upstreams: { address: string; port: number }[]) {
  return fakeLinkStack(cleanups, {}, { dnsUpstreams: upstreams });
}

describe('wire/dns', () => {
  it('parses names with compression and stops pointer loops', () => {
    const msg = hex('0000 0000 0000 0000 0000 0000 03 777777 07 6578616d706c65 03 636f6d 00 c0 10');
    const a = parseDnsName(msg, 12);
    expect(a).toEqual({ name: 'www.example.com', next: 29 });
    expect(parseDnsName(msg, 29)).toEqual({ name: 'example.com', next: 31 });
    const loop = hex('0000 0000 0000 0000 0000 0000 c0 0c');
    expect(parseDnsName(loop, 12)).toBe('pointer_loop');
    expect(parseDnsName(hex('0000 0000 0000 0000 0000 0000 05 6162'), 12)).toBe('truncated');
    expect(parseDnsName(hex('0000 0000 0000 0000 0000 0000 80 00'), 12)).toBe('bad_label');
    expect(parseDnsQuery(query(1, 'a.b'))).toMatchObject({ header: { id: 1, qdcount: 1, qr: false }, question: { name: 'a.b', type: 1, cls: 1 } });
  });
});

describe('DNS forwarder', () => {
  it('relays a query to the upstream and the answer back with the guest id and ports', async () => {
    const seen: number[] = [];
    const up = await stubResolver(seen);
    const { link, counters, stack } = setup([{ address: '127.0.0.1', port: up.address().port }]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5353, dport: 53, payload: query(0x1234, 'www.example.com') }), null);
    const f = await waitForValue(() => link.sent.map(parseFrame).find((x) => x.udp));
    expect(f.ipv4).toMatchObject({ src: DNS_IP, dst: GUEST_IP, checksumOk: true });
    expect(f.udp).toMatchObject({ sport: 53, dport: 5353, checksumOk: true });
    const answer = f.udp!.payload;
    expect((answer[0]! << 8) | answer[1]!).toBe(0x1234);
    expect(Array.from(answer.subarray(answer.length - 4))).toEqual([192, 0, 2, 55]);
    expect(seen).toHaveLength(1);
    expect(counters.get('dns.tx.answers')).toBe(1);
  });

  it('tries the next upstream on timeout, and gives up after the last', async () => {
    const dead = await deadResolver();
    const seen: number[] = [];
    const up = await stubResolver(seen);
    const { link, counters, stack, clock } = setup([
      { address: '127.0.0.1', port: dead.address().port },
      { address: '127.0.0.1', port: up.address().port },
    ]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: query(0x77, 'retry.test') }), null);
    await new Promise((r) => setTimeout(r, 50));
    expect(link.sent.filter((f) => parseFrame(f).udp)).toHaveLength(0);
    clock.t = 2000;
    stack.tick();
    expect(counters.get('dns.retry')).toBe(1);
    const f = await waitForValue(() => link.sent.map(parseFrame).find((x) => x.udp));
    expect((f.udp!.payload[0]! << 8) | f.udp!.payload[1]!).toBe(0x77);

    const only = setup([{ address: '127.0.0.1', port: dead.address().port }]);
    only.stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5001, dport: 53, payload: query(0x78, 'x.test') }), null);
    only.clock.t = 2000;
    only.stack.tick();
    only.clock.t = 4000;
    only.stack.tick();
    expect(only.counters.get('dns.timeout')).toBe(1);
    expect(only.stack.dns.pendingCount).toBe(0);
  });

  it('bounds the pending table', async () => {
    const dead = await deadResolver();
    const { counters, stack } = setup([{ address: '127.0.0.1', port: dead.address().port }]);
    for (let i = 0; i < MAX_PENDING + 50; i++) {
      stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 10000 + i, dport: 53, payload: query(i, 'flood.test') }), null);
    }
    expect(stack.dns.pendingCount).toBe(MAX_PENDING);
    expect(counters.get('dns.evicted')).toBe(50);
  });

  it('drops malformed queries with counted reasons', () => {
    const { link, counters, stack } = setup([{ address: '127.0.0.1', port: 9 }]);
    const noQuestion = query(1, 'a.b');
    noQuestion[5] = 0;
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: noQuestion }), null);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: query(1, 'a.b', 0x8180) }), null);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: hex('0001 0100 0001 0000 0000 0000 c0 0c 0001 0001') }), null);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: hex('0001 01') }), null);
    expect(counters.get('dns.drop.bad_qdcount')).toBe(1);
    expect(counters.get('dns.drop.not_query')).toBe(1);
    expect(counters.get('dns.drop.pointer_loop')).toBe(1);
    expect(counters.get('dns.drop.truncated')).toBe(1);
    expect(stack.dns.pendingCount).toBe(0);
    expect(link.sent).toHaveLength(0);
  });

  it('drops queries when no upstream is configured', () => {
    const { counters, stack } = setup([]);
    stack.receive(guestUdpFrame({ dst: DNS_IP, sport: 5000, dport: 53, payload: query(1, 'a.b') }), null);
    expect(counters.get('dns.drop.no_upstream')).toBe(1);
  });
});
