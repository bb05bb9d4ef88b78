/**
 * The whole stack against a hostile guest, frame by frame: what it can reach
 * (restrict, no-map-gw, loopback/broadcast/multicast/this-network
 * destinations, the DNS address on other ports, source-route options,
 * fragments), the DNS forwarder relaying only DNS-shaped queries, DHCP
 * handing out nothing but guestIp, and the operator-facing side effects a
 * guest can cause (log lines, pcap write failures, counter names).
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Stack } from '../src/net/stack.js';
import type { StackConfig } from '../src/net/context.js';
import { CounterSet } from '../src/net/counters.js';
import { PcapWriter } from '../src/net/pcap.js';
import { FakeLink } from './helpers/fake-link.js';
import {
  DHCP, DNS_IP, ETH_IPV4, GATEWAY_IP, GUEST_IP, PROTO_TCP, TCP_FLAGS, DNS_OPT_RR, dnsMessage, ethernetFrame, guestArpFrame, guestDhcpFrame, guestTcpFrame,
  guestUdpFrame, ip, ipBytes, ipv4Packet, parseDhcp, parseFrame, tcpSegment,
} from './helpers/packets.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function setup(config: Partial<StackConfig> = {}, extra: { pcap?: PcapWriter } = {}) {
  const link = new FakeLink();
  const counters = new CounterSet();
  const clock = { t: 0, now() { return this.t; } };
  const logs: string[] = [];
  const connects: net.TcpNetConnectOpts[] = [];
  const sockets: net.Socket[] = [];
  const stack = new Stack({
    link, counters, clock, ping: null, logger: (m) => logs.push(m), config, ...extra,
    host: {
      // Record where the stack would connect; never connect anywhere.
      connectTcp: (o) => {
        connects.push(o);
        const s = new net.Socket();
        sockets.push(s);
        return s;
      },
    },
  });
  cleanups.push(() => {
    stack.close();
    for (const s of sockets) s.destroy();
  });
  stack.receive(guestArpFrame({ tpa: GATEWAY_IP }), null);
  link.take();
  return { link, counters, stack, clock, logs, connects };
}

function syn(dst: number, dport: number, sport = 40000): Uint8Array {
  return guestTcpFrame({ dst, sport, dport, seq: 1000, flags: TCP_FLAGS.SYN });
}

function sentTcpFlags(link: FakeLink): number[] {
  return link.take().map((f) => parseFrame(f).tcp?.flags ?? -1);
}

describe('hostile guest: reachability', () => {
  const forbidden: [string, number, number][] = [
    ['loopback 127.0.0.1', ip('127.0.0.1'), 22],
    ['loopback 127.1.2.3', ip('127.1.2.3'), 22],
    ['0.0.0.0 (Linux: the local host)', 0, 22],
    ['0.1.2.3 (this network)', ip('0.1.2.3'), 22],
    ['limited broadcast', 0xffffffff, 22],
    ['directed broadcast of the guest network', ip('10.0.2.255'), 22],
    ['the guest network address', ip('10.0.2.0'), 22],
    ['multicast', ip('224.0.0.1'), 22],
    ['class E', ip('240.0.0.1'), 22],
    ['another address of the guest network', ip('10.0.2.77'), 22],
    ['the DNS address on a port other than 53', DNS_IP, 22],
    ['the DNS address on port 80', DNS_IP, 80],
  ];
  for (const [name, dst, port] of forbidden) {
    it(`never connects for ${name}`, () => {
      const { link, stack, connects } = setup({ dnsUpstreams: [{ address: '127.0.0.53', port: 53 }] });
      stack.receive(syn(dst, port), null);
      expect(connects).toEqual([]);
      // Answered with RST+ACK, or (broadcast/multicast/0.0.0.0 sources of replies) not at all.
      for (const flags of sentTcpFlags(link)) expect(flags).toBe(TCP_FLAGS.RST | TCP_FLAGS.ACK);
    });
  }

  it('with --restrict reaches nothing outside, not even the host through the gateway', () => {
    const { stack, connects, counters } = setup({ restrict: true, dnsUpstreams: [{ address: '127.0.0.53', port: 53 }] });
    stack.receive(syn(ip('192.0.2.1'), 80), null);
    stack.receive(syn(GATEWAY_IP, 22, 40001), null);
    expect(connects).toEqual([]);
    expect(counters.get('tcp.drop.nat_refused')).toBe(2);
    // The stack's own DNS service stays (TCP 53 to the DNS address goes to the configured upstream only).
    stack.receive(syn(DNS_IP, 53, 40002), null);
    expect(connects.map((c) => `${c.host}:${c.port}`)).toEqual(['127.0.0.53:53']);
  });

  it('with the gateway unmapped reaches nothing on the host loopback', () => {
    const { stack, connects } = setup({ mapGatewayToLoopback: false });
    stack.receive(syn(GATEWAY_IP, 22), null);
    stack.receive(syn(ip('127.0.0.1'), 22, 40001), null);
    expect(connects).toEqual([]);
  });

  it('ignores a loose source route naming 127.0.0.1: the destination is the header\'s', () => {
    const { stack, connects } = setup();
    // LSRR (131), length 7, pointer 4, one hop 127.0.0.1; then EOL padding.
    const options = Uint8Array.from([131, 7, 4, 127, 0, 0, 1, 0]);
    const dst = ip('192.0.2.1');
    const seg = tcpSegment({ dst, sport: 40000, dport: 80, seq: 1, flags: TCP_FLAGS.SYN });
    const frame = ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst, protocol: PROTO_TCP, payload: seg, options }) });
    stack.receive(frame, null);
    expect(connects.map((c) => c.host)).toEqual(['192.0.2.1']);
  });

  it('decides on the reassembled header: fragments cannot change the port after the fact', () => {
    const { stack, connects, counters } = setup({ dnsUpstreams: [{ address: '127.0.0.53', port: 53 }] });
    const seg53 = tcpSegment({ dst: DNS_IP, sport: 40000, dport: 53, seq: 1, flags: TCP_FLAGS.SYN });
    const seg22 = tcpSegment({ dst: DNS_IP, sport: 40000, dport: 22, seq: 1, flags: TCP_FLAGS.SYN });
    const frag = (payload: Uint8Array, offset: number, mf: boolean, id: number) =>
      ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst: DNS_IP, protocol: PROTO_TCP, payload, id, mf, fragmentOffset: offset }) });
    // 1. The first 8 bytes say port 53, an overlapping rewrite says 22: the datagram is dropped.
    stack.receive(frag(seg53.subarray(0, 8), 0, true, 1), null);
    stack.receive(frag(seg22.subarray(0, 16), 0, true, 1), null);
    stack.receive(frag(seg22.subarray(16), 16, false, 1), null);
    expect(counters.get('ipv4.frag.drop.overlap')).toBe(1);
    // 2. Whole, in order, port 22: refused on the reassembled header.
    stack.receive(frag(seg22.subarray(0, 8), 0, true, 2), null);
    stack.receive(frag(seg22.subarray(8), 8, false, 2), null);
    expect(counters.get('ipv4.frag.reassembled')).toBe(1);
    expect(connects).toEqual([]);
    // 3. The same for port 53 goes to the upstream resolver, and only there.
    stack.receive(frag(seg53.subarray(0, 8), 0, true, 3), null);
    stack.receive(frag(seg53.subarray(8), 8, false, 3), null);
    expect(connects.map((c) => `${c.host}:${c.port}`)).toEqual(['127.0.0.53:53']);
  });

  it('counts a reassembled datagram past 65535 bytes (first fragment with options) as too big', () => {
    const { stack, counters } = setup();
    const dst = ip('192.0.2.1');
    const options = new Uint8Array(40).fill(1); // 40 bytes of NOPs: a 60-byte header
    const body = new Uint8Array(65488); // 60 + 65488 = 65548 > 65535, yet every fragment fits on its own
    const chunk = 1480 - 40;
    for (let off = 0; off < body.length; off += chunk) {
      const last = off + chunk >= body.length;
      const piece = body.subarray(off, Math.min(body.length, off + chunk));
      const opts = off === 0 ? { options } : {};
      stack.receive(ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst, protocol: 17, payload: piece, id: 9, mf: !last, fragmentOffset: off, ...opts }) }), null);
    }
    expect(counters.get('ipv4.frag.reassembled')).toBe(0);
    expect(counters.get('ipv4.frag.drop.too_big')).toBe(1);
    expect(stack.reassembler.pending).toBe(0);
    expect(stack.reassembler.bufferedBytes).toBe(0);
  });
});

describe('hostile guest: DNS forwarder relays only DNS-shaped queries', () => {
  it('relays a plain query and one with an OPT record, and nothing else', async () => {
    const upstream = dgram.createSocket('udp4');
    await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', r));
    cleanups.push(() => upstream.close());
    const seen: Buffer[] = [];
    upstream.on('message', (m) => seen.push(m));
    const { stack, counters } = setup({ dnsUpstreams: [{ address: '127.0.0.1', port: upstream.address().port }] });
    const send = (payload: Uint8Array, sport = 5353) => stack.receive(guestUdpFrame({ dst: DNS_IP, sport, dport: 53, payload }), null);
    send(dnsMessage({ id: 1 }));
    send(dnsMessage({ id: 2, ar: 1, rest: DNS_OPT_RR }));
    // Not queries, or not shaped like one:
    send(dnsMessage({ id: 3, flags: 0x2800 })); // opcode UPDATE
    send(dnsMessage({ id: 4, flags: 0x2000 })); // opcode NOTIFY
    send(dnsMessage({ id: 5, an: 1, rest: [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4] })); // an answer in a query
    send(dnsMessage({ id: 6, rest: [1, 2, 3, 4] })); // trailing bytes no record accounts for
    send(dnsMessage({ id: 7, ar: 1, rest: [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 9, 1] })); // RDLENGTH past the end
    send(dnsMessage({ id: 8, ar: 1, rest: [...DNS_OPT_RR, ...new Array(5000).fill(0)] })); // oversized
    await new Promise((r) => setTimeout(r, 100));
    expect(seen.length).toBe(2);
    expect(counters.get('dns.tx.queries')).toBe(2);
    expect(counters.sum('dns.drop.')).toBe(6);
    expect(stack.dns.pendingCount).toBe(2);
  });
});

describe('hostile guest: DHCP', () => {
  it('gives no address but guestIp, whatever is asked, and does not flood the log', () => {
    const { link, stack, counters, logs } = setup();
    for (let i = 0; i < 3000; i++) {
      const chaddr = Uint8Array.from([0x52, 0x54, (i >>> 16) & 0xff, (i >>> 8) & 0xff, i & 0xff, 1]);
      const want = ip('10.0.2.99');
      stack.receive(guestDhcpFrame({ xid: i, chaddr, options: [[53, [DHCP.REQUEST]], [50, ipBytes(want)]] }), null);
      stack.receive(guestDhcpFrame({ xid: i, chaddr, options: [[53, [DHCP.DECLINE]], [50, ipBytes(GUEST_IP)]] }), null);
    }
    for (const f of link.take()) {
      const p = parseFrame(f);
      const d = p.udp ? parseDhcp(p.udp.payload) : undefined;
      if (d && d.yiaddr !== 0) expect(d.yiaddr).toBe(GUEST_IP);
    }
    expect(counters.get('dhcp.tx.nak')).toBe(3000);
    expect(logs.length).toBeLessThanOrEqual(4);
  });
});

describe('hostile guest: operator-facing side effects', () => {
  it('a failing pcap file is turned off and logged, never thrown out of receive/batchEnd/tick', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pcap-'));
    const file = path.join(dir, 'x.pcap');
    closeSync(openSync(file, 'w'));
    const fd = openSync(file, 'r'); // writes fail with EBADF
    cleanups.push(() => {
      try {
        closeSync(fd);
      } catch {
        /* closed */
      }
      rmSync(dir, { recursive: true, force: true });
    });
    const pcap = new PcapWriter(fd);
    const { stack, counters, logs } = setup({}, { pcap });
    expect(() => {
      for (let i = 0; i < 2000; i++) stack.receive(guestUdpFrame({ dst: ip('10.0.2.77'), sport: 1000, dport: 1000, payload: new Uint8Array(100) }), null);
      stack.batchEnd();
      stack.tick(1);
      stack.close();
    }).not.toThrow();
    expect(counters.get('pcap.error')).toBe(1);
    expect(logs.some((l) => l.includes('pcap'))).toBe(true);
  });

  it('keeps counter names to a fixed set whatever the guest sends', () => {
    const { stack, counters } = setup();
    let x = 12345;
    const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
    for (let i = 0; i < 20000; i++) {
      const len = 15 + (rnd() % 80);
      const f = new Uint8Array(len);
      for (let j = 0; j < len; j++) f[j] = rnd();
      f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56], 6);
      if (i % 2 === 0) f.set([0x08, 0x00, 0x45], 12);
      stack.receive(f, null);
      // ICMP errors of every type and code, and protocols 0..255.
      stack.receive(ethernetFrame({ etherType: ETH_IPV4, payload: ipv4Packet({ dst: GATEWAY_IP, protocol: i & 0xff, payload: Uint8Array.from([i & 0xff, rnd(), 0, 0, 0, 0, 0, 0]) }) }), null);
    }
    const names = Object.keys(counters.snapshot());
    expect(names.length).toBeLessThan(150);
    for (const n of names) expect(n).toMatch(/^[a-z0-9]+(\.[a-z0-9_]+)+$/);
  });
});
