/**
 * Random-input fuzzing of every parser and of Stack.receive: thousands of
 * random and bit-flipped frames of both families (the IPv6 parsers alone
 * are fuzzed in fuzz-ipv6.test.ts); nothing may throw, no exception may be
 * caught inside the stack, every frame the stack sends must parse with
 * good checksums, and state stays bounded. The stack runs restricted with
 * socket factories that refuse, so no fuzzed frame can reach the network.
 */
import { describe, it, expect } from 'vitest';
import { Stack } from '../src/net/stack.js';
import { CounterSet } from '../src/net/counters.js';
import { parseEthernet } from '../src/net/wire/ethernet.js';
import { parseArp } from '../src/net/wire/arp.js';
import { parseIPv4Packet } from '../src/net/wire/ipv4.js';
import { parseIcmp } from '../src/net/wire/icmp.js';
import { parseUdp } from '../src/net/wire/udp.js';
import { parseDhcp } from '../src/net/wire/dhcp.js';
import { checkDnsQuery, parseDnsName, parseDnsQuery } from '../src/net/wire/dns.js';
import { DnsQueryStream } from '../src/net/dns-stream.js';
import { parseForwardSpec } from '../src/net/forward.js';
import { parseResolvConf } from '../src/net/resolv-conf.js';
import { FakeLink } from './helpers/fake-link.js';
import { builtFrames } from './fuzz/seeds.js';
import {
  GATEWAY_IP, GUEST_MAC, TCP_FLAGS, ip, ipv4Packet, ethernetFrame, ETH_IPV4, concat, dnsMessage, dnsTcpFrame, dnsTcpMessages, sentFrameProblem,
} from './helpers/packets.js';
import { isKnownCounterName } from './helpers/counter-names.js';
import {
  DNS_IP6, GATEWAY_IP6, GUEST_IP6, GUEST_LL6, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ICMPV6, NH_UDP, fragmentHeader, guestIcmpv6Frame, guestIpv6Frame,
  guestTcp6Frame, icmpv6Message, ip6, ipv6Packet, neighborSolicitation, optionsHeader, parseFrame6, routerSolicitation, udp6Datagram,
} from './helpers/packets6.js';
import { ipv6CorpusFrames } from './helpers/corpus6.js';
import { solicitedNodeMulticast } from '../src/net/ipv6-address.js';
import { buildDhcpv6 } from '../src/net/wire/dhcpv6.js';

function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

function randomBytes(r: () => number, max: number): Uint8Array {
  const n = Math.floor(r() * max);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

describe('fuzz: parsers', () => {
  it('never throw on random input', () => {
    const r = rng(0xc0ffee);
    for (let i = 0; i < 20000; i++) {
      const b = randomBytes(r, i % 10 === 0 ? 600 : 80);
      const a = Math.floor(r() * 0xffffffff);
      expect(() => {
        parseEthernet(b);
        parseArp(b);
        parseIPv4Packet(b);
        parseIPv4Packet(b, false);
        parseIcmp(b);
        parseUdp(b, a, a ^ 0x5555, r() < 0.5);
        parseDhcp(b);
        parseDnsQuery(b);
        checkDnsQuery(b);
        parseDnsName(b, Math.floor(r() * (b.length + 2)));
      }).not.toThrow();
    }
  });

  it('DNS over TCP: whatever the stream, only whole checked queries come out', () => {
    const r = rng(53);
    const query = dnsTcpFrame(dnsMessage({ id: 1, name: 'fuzz.example.com' }));
    for (let i = 0; i < 2000; i++) {
      // Good queries with a few bytes flipped, cut into random chunks.
      const stream = concat(...Array.from({ length: 1 + Math.floor(r() * 4) }, () => query));
      for (let k = Math.floor(r() * 3); k > 0; k--) stream[Math.floor(r() * stream.length)] = Math.floor(r() * 256);
      const s = new DnsQueryStream();
      const out: Uint8Array[] = [];
      for (let pos = 0; pos < stream.length;) {
        const n = 1 + Math.floor(r() * 40);
        const got = s.push(stream.subarray(pos, pos + n));
        pos += n;
        if (typeof got === 'string') break;
        out.push(got.bytes);
      }
      const passed = concat(...out);
      const messages = dnsTcpMessages(passed);
      expect(concat(...messages.map(dnsTcpFrame))).toEqual(passed); // whole messages, nothing else
      for (const m of messages) expect(typeof checkDnsQuery(m)).toBe('object');
    }
  });

  it('DHCP and DNS parsers survive structured mutations', () => {
    const r = rng(42);
    const base = builtFrames()[5]!.subarray(42);
    for (let i = 0; i < 5000; i++) {
      const m = base.slice(0, Math.floor(r() * (base.length + 1)));
      for (let k = 0; k < 4; k++) if (m.length) m[Math.floor(r() * m.length)] = Math.floor(r() * 256);
      expect(() => parseDhcp(m)).not.toThrow();
    }
    // Pointer chains and loops in DNS names.
    for (let i = 0; i < 5000; i++) {
      const m = new Uint8Array(12 + Math.floor(r() * 40));
      for (let j = 12; j < m.length; j++) m[j] = r() < 0.3 ? 0xc0 : Math.floor(r() * 64);
      const q = parseDnsName(m, 12);
      expect(typeof q === 'string' || q.next <= m.length).toBe(true);
    }
  });

  it('config-time parsers throw only Errors', () => {
    const r = rng(7);
    for (let i = 0; i < 2000; i++) {
      const s = Buffer.from(randomBytes(r, 24)).toString('latin1');
      try {
        parseForwardSpec(`${r() < 0.5 ? 'tcp' : 'udp'}:${s}`);
      } catch (e) {
        expect(e).toBeInstanceOf(Error);
      }
      expect(() => parseResolvConf(`nameserver ${s}\nsearch ${s}`)).not.toThrow();
    }
  });
});

describe('fuzz: Stack.receive', () => {
  function makeStack(withTcp = false) {
    const link = new FakeLink();
    const counters = new CounterSet();
    const clock = { t: 0, now() { return this.t; } };
    const refuse = () => {
      throw new Error('no sockets while fuzzing');
    };
    const stack = new Stack({
      link, counters, clock, ping: null, logger: () => {}, ...(withTcp ? {} : { tcp: null }),
      config: { restrict: true, dnsUpstreams: [] },
      udpSocket: refuse,
      host: { createUdpSocket: refuse, connectTcp: refuse },
    });
    return { link, counters, clock, stack };
  }

  function checkOutput(link: FakeLink) {
    for (const f of link.take()) expect(sentFrameProblem(f)).toBeNull();
  }

  it('random frames: nothing throws, counters move, output well-formed', () => {
    const { link, counters, clock, stack } = makeStack();
    const r = rng(1234);
    const N = 5000;
    for (let i = 0; i < N; i++) {
      const frame = randomBytes(r, 200);
      // Half the time make it look like IPv4/ARP to get past the Ethernet layer.
      if (frame.length >= 14 && r() < 0.5) {
        frame[12] = r() < 0.7 ? 0x08 : 0x86;
        frame[13] = r() < 0.7 ? 0x00 : 0x06;
        if (frame.length > 14 && r() < 0.5) frame[14] = 0x45;
      }
      expect(() => stack.receive(frame, null)).not.toThrow();
      if (i % 500 === 0) {
        clock.t += 10_000;
        stack.tick();
      }
      checkOutput(link);
    }
    expect(counters.get('eth.rx.frames')).toBe(N);
    expect(counters.get('stack.drop.exception')).toBe(0);
    expect(counters.sum('eth.drop.') + counters.sum('ipv4.drop.') + counters.sum('arp.')).toBeGreaterThan(N / 2);
  });

  it('bit-flipped valid frames (and bogus offload headers): nothing throws, state stays bounded', () => {
    const { link, counters, clock, stack } = makeStack();
    const r = rng(99);
    const seeds = builtFrames();
    const N = 20000;
    for (let i = 0; i < N; i++) {
      const frame = seeds[i % seeds.length]!.slice();
      const flips = 1 + Math.floor(r() * 4);
      for (let k = 0; k < flips; k++) {
        const at = Math.floor(r() * frame.length);
        frame[at] = frame[at]! ^ (1 << Math.floor(r() * 8));
      }
      const cut = r() < 0.1 ? frame.subarray(0, Math.floor(r() * frame.length)) : frame;
      const offload = r() < 0.05
        ? { needsCsum: true, dataValid: r() < 0.5, csumStart: Math.floor(r() * 100), csumOffset: Math.floor(r() * 40), gsoType: 0, gsoSize: 0, hdrLen: 0 }
        : null;
      expect(() => stack.receive(cut, offload)).not.toThrow();
      if (i % 1000 === 0) {
        clock.t += 5_000;
        stack.tick();
      }
      checkOutput(link);
    }
    expect(counters.get('eth.rx.frames')).toBe(N);
    expect(counters.get('stack.drop.exception')).toBe(0);
    expect(counters.get('stack.tick.exception')).toBe(0);
    expect(stack.reassembler.pending).toBeLessThanOrEqual(stack.reassembler.limits.maxDatagrams);
    expect(stack.udp.flowCount).toBe(0);
    expect(stack.dns.pendingCount).toBe(0);
    // Good frames in the mix were still served.
    expect(counters.get('arp.tx.reply') + counters.get('icmp.echo.local') + counters.get('dhcp.tx.offer')).toBeGreaterThan(0);
  });

  it('bit-flipped frames with the real TCP translator (restricted: every SYN refused)', () => {
    const { link, counters, clock, stack } = makeStack(true);
    const r = rng(2024);
    const seeds = builtFrames();
    const tcpSeed = seeds[7]!;
    for (let i = 0; i < 5000; i++) {
      const frame = (i % 2 ? tcpSeed : seeds[i % seeds.length]!).slice();
      for (let k = 0; k < 1 + Math.floor(r() * 3); k++) {
        const at = 14 + Math.floor(r() * (frame.length - 14));
        frame[at] = frame[at]! ^ (1 << Math.floor(r() * 8));
      }
      expect(() => stack.receive(frame, null)).not.toThrow();
      if (i % 500 === 0) {
        clock.t += 5_000;
        stack.tick();
      }
      checkOutput(link);
    }
    expect(counters.get('stack.drop.exception')).toBe(0);
    expect(stack.tcp?.flowCount).toBe(0);
    stack.close();
  });

  it('fragment storms and bogus GSO/offload headers: reassembler within its bounds, counter names from a fixed set', () => {
    const { link, counters, clock, stack } = makeStack(true);
    const r = rng(4242);
    const limits = stack.reassembler.limits;
    const N = 20000;
    for (let i = 0; i < N; i++) {
      let frame: Uint8Array;
      let offload = null;
      if (i % 3 !== 0) {
        // A fragment: few ids so datagrams collide, overlap, complete and time out.
        const len = 8 * Math.floor(r() * 190) + (r() < 0.2 ? Math.floor(r() * 8) : 0);
        const payload = new Uint8Array(len);
        for (let j = 0; j < Math.min(len, 40); j++) payload[j] = Math.floor(r() * 256);
        const optLen = r() < 0.2 ? 4 * Math.floor(r() * 11) : 0;
        const options = optLen > 0 ? new Uint8Array(optLen).fill(1) : undefined;
        frame = ethernetFrame({
          etherType: ETH_IPV4,
          payload: ipv4Packet({
            dst: r() < 0.5 ? GATEWAY_IP : ip('192.0.2.1'), protocol: [1, 6, 17, 47][Math.floor(r() * 4)]!, payload,
            id: Math.floor(r() * 100), mf: r() < 0.7, fragmentOffset: 8 * Math.floor(r() * 8200), ...(options ? { options } : {}),
          }),
        });
      } else {
        frame = builtFrames()[7]!.slice(); // a TCP SYN
        offload = {
          needsCsum: r() < 0.8, dataValid: r() < 0.3, csumStart: Math.floor(r() * 80), csumOffset: Math.floor(r() * 40),
          gsoType: [0, 1, 3, 4, 5, 0x81][Math.floor(r() * 6)]!, gsoSize: Math.floor(r() * 70000), hdrLen: Math.floor(r() * 200),
        };
      }
      expect(() => stack.receive(frame, offload)).not.toThrow();
      expect(stack.reassembler.pending).toBeLessThanOrEqual(limits.maxDatagrams);
      expect(stack.reassembler.bufferedBytes).toBeLessThanOrEqual(limits.maxBytes);
      if (i % 500 === 0) {
        clock.t += 7_000;
        stack.tick();
      }
      checkOutput(link);
    }
    clock.t += limits.timeoutMs;
    stack.tick();
    expect(stack.reassembler.pending).toBe(0);
    expect(stack.reassembler.bufferedBytes).toBe(0);
    expect(counters.get('stack.drop.exception')).toBe(0);
    expect(counters.get('stack.tick.exception')).toBe(0);
    expect(counters.get('ipv4.frag.rx')).toBeGreaterThan(N / 2);
    const names = Object.keys(counters.snapshot());
    expect(names.length).toBeLessThan(120);
    for (const n of names) expect(isKnownCounterName(n), n).toBe(true);
    stack.close();
  });

  it('unmodified corpus is answered (sanity for the fuzz corpus)', () => {
    const { link, counters, stack } = makeStack();
    for (const f of builtFrames()) stack.receive(f, null);
    checkOutput(link);
    expect(counters.get('arp.tx.reply')).toBe(1);
    expect(counters.get('icmp.echo.local')).toBe(2); // plain + reassembled
    expect(counters.get('dhcp.tx.offer')).toBe(1);
    expect(counters.get('dhcp.tx.ack')).toBe(1);
  });
});

describe('fuzz: Stack.receive with IPv6 frames', () => {
  function makeStack() {
    const link = new FakeLink();
    const counters = new CounterSet();
    const clock = { t: 0, now() { return this.t; } };
    const refuse = () => {
      throw new Error('no sockets while fuzzing');
    };
    const stack = new Stack({
      link, counters, clock, ping: null, logger: () => {}, random: rng(5),
      config: { restrict: true, dnsUpstreams: [] },
      udpSocket: refuse,
      host: { createUdpSocket: refuse, connectTcp: refuse },
    });
    return { link, counters, clock, stack };
  }

  function seeds6(): Uint8Array[] {
    const echo = icmpv6Message({ dst: GATEWAY_IP6, type: 128, parameter: 0x10001, body: new Uint8Array(64) });
    const solicit = buildDhcpv6({ type: 1, transactionId: 5, clientId: Uint8Array.of(0, 3, 0, 1, 1, 2, 3, 4, 5, 6), rapidCommit: true, iaNa: [{ iaid: 1, t1: 0, t2: 0, addresses: [] }] });
    const list = [
      guestIcmpv6Frame({ src: GUEST_LL6, dst: solicitedNodeMulticast(GATEWAY_IP6), type: 135, body: neighborSolicitation(GATEWAY_IP6, GUEST_MAC) }),
      guestIcmpv6Frame({ src: new Uint8Array(16), dst: solicitedNodeMulticast(GUEST_IP6), type: 135, body: neighborSolicitation(GUEST_IP6) }),
      guestIcmpv6Frame({ src: GUEST_LL6, dst: ip6('ff02::2'), type: 133, body: routerSolicitation(GUEST_MAC) }),
      guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_ICMPV6, payload: echo })),
      guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_HOP_BY_HOP, payload: concat(optionsHeader(NH_ICMPV6, [0x3e, 2, 0, 0]), echo) })),
      guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_FRAGMENT, payload: concat(fragmentHeader(NH_ICMPV6, 0, true, 77), echo.subarray(0, 40)) })),
      guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_FRAGMENT, payload: concat(fragmentHeader(NH_ICMPV6, 40, false, 77), echo.subarray(40)) })),
      guestIpv6Frame(ipv6Packet({ src: GUEST_LL6, dst: ip6('ff02::1:2'), nextHeader: NH_UDP, payload: udp6Datagram({ src: GUEST_LL6, dst: ip6('ff02::1:2'), sport: 546, dport: 547, payload: solicit }) })),
      guestIpv6Frame(ipv6Packet({ dst: DNS_IP6, nextHeader: NH_UDP, payload: udp6Datagram({ dst: DNS_IP6, sport: 999, dport: 53, payload: dnsMessage({ id: 3, qtype: 28 }) }) })),
      guestTcp6Frame({ dst: GATEWAY_IP6, sport: 1000, dport: 22, flags: TCP_FLAGS.SYN, seq: 1, options: { mss: 1440 } }),
    ];
    for (const f of ipv6CorpusFrames() ?? []) if (f.eth.src.every((b, i) => b === GUEST_MAC[i])) list.push(f.frame);
    return list;
  }

  function checkOutput6(link: FakeLink) {
    for (const f of link.take()) {
      if (f[12] !== 0x86 || f[13] !== 0xdd) continue;
      const p = parseFrame6(f);
      if (p.fragment === null) expect(p.checksumOk).toBe(true);
      expect(p.src[0]).not.toBe(0xff); // never from a multicast source
    }
  }

  it('random IPv6-looking frames: nothing throws, drops counted', () => {
    const { link, counters, clock, stack } = makeStack();
    const r = rng(6666);
    const N = 5000;
    for (let i = 0; i < N; i++) {
      const frame = randomBytes(r, 300);
      if (frame.length >= 15) {
        frame[12] = 0x86;
        frame[13] = 0xdd;
        frame[14] = 0x60 | (frame[14]! & 0x0f);
        if (frame.length >= 20 && r() < 0.5) {
          frame[18] = (frame.length - 54) >>> 8 & 0xff;
          frame[19] = (frame.length - 54) & 0xff;
        }
      }
      expect(() => stack.receive(frame, null)).not.toThrow();
      if (i % 500 === 0) {
        clock.t += 10_000;
        stack.tick();
      }
      checkOutput6(link);
    }
    expect(counters.get('stack.drop.exception')).toBe(0);
    expect(counters.sum('eth.drop.') + counters.sum('ipv6.drop.')).toBeGreaterThan(N / 2);
  });

  it('bit-flipped IPv6 frames (NDP, echo, extension headers, fragments, DHCPv6, DNS, TCP, the corpus): nothing throws, state bounded, good frames served', () => {
    const { link, counters, clock, stack } = makeStack();
    const r = rng(8080);
    const seeds = seeds6();
    const N = 20000;
    for (let i = 0; i < N; i++) {
      const frame = seeds[i % seeds.length]!.slice();
      if (i % 4 !== 0) {
        for (let k = 1 + Math.floor(r() * 4); k > 0; k--) {
          const at = 14 + Math.floor(r() * (frame.length - 14));
          frame[at] = frame[at]! ^ (1 << Math.floor(r() * 8));
        }
      }
      const cut = r() < 0.1 ? frame.subarray(0, Math.floor(r() * frame.length)) : frame;
      const offload = r() < 0.05
        ? { needsCsum: true, dataValid: false, csumStart: 54 + Math.floor(r() * 8), csumOffset: r() < 0.5 ? 16 : 6, gsoType: r() < 0.5 ? 4 : 0, gsoSize: 1400, hdrLen: 74 }
        : null;
      expect(() => stack.receive(cut, offload)).not.toThrow();
      if (i % 1000 === 0) {
        clock.t += 5_000;
        stack.tick();
      }
      checkOutput6(link);
    }
    expect(counters.get('stack.drop.exception')).toBe(0);
    expect(counters.get('stack.tick.exception')).toBe(0);
    const v6 = stack.ipv6!;
    expect(v6.reassembler.pending).toBeLessThanOrEqual(v6.reassembler.limits.maxDatagrams);
    expect(v6.reassembler.bufferedBytes).toBeLessThanOrEqual(v6.reassembler.limits.maxBytes);
    expect(v6.guestAddresses.size).toBeLessThanOrEqual(v6.guestAddresses.capacity);
    expect(stack.udp.flowCount).toBe(0);
    expect(counters.get('ndp.tx.na')).toBeGreaterThan(0);
    expect(counters.get('icmpv6.echo.local')).toBeGreaterThan(0);
    expect(counters.get('dhcpv6.tx.replies')).toBeGreaterThan(0);
  });

  it('a flood of router solicitations from :: yields at most one multicast RA per 3 s', () => {
    const { link, counters, clock, stack } = makeStack();
    const rs = guestIcmpv6Frame({ src: new Uint8Array(16), dst: ip6('ff02::2'), type: 133 });
    for (let i = 0; i < 10_000; i++) {
      clock.t = i; // 10 s in all
      stack.receive(rs, null);
    }
    expect(counters.get('ndp.tx.ra')).toBe(4); // at 0, 3000, 6000, 9000 ms
    expect(counters.get('ndp.ra.rate_limited')).toBe(10_000 - 4);
    expect(link.take().length).toBe(4);
  });
});
