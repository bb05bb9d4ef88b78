/**
 * The IPv6 wire layer: fixed header, extension-header walker, ICMPv6,
 * UDP over IPv6, the pseudo-header checksum and uncompressed domain lists.
 * Byte-literal fixtures are real frames of the libslirp captures (an echo
 * request from a QEMU guest and libslirp's reply, a DNS answer), copied
 * here so these tests run without the corpus; the corpus replay at the end
 * parses every IPv6 frame of the captures when they are present.
 */
import { describe, it, expect } from 'vitest';
import {
  IPV6_HEADER_LENGTH, MAX_EXTENSION_HEADERS, NEXT_HEADER_AH, NEXT_HEADER_ESP, PARAM_PROBLEM_HEADER_FIELD, PARAM_PROBLEM_INCOMPLETE_CHAIN,
  PARAM_PROBLEM_NEXT_HEADER, PARAM_PROBLEM_OPTION, parseIPv6Packet, walkIPv6Headers, writeIPv6Header, type IPv6ParameterProblem,
  type IPv6UpperLayer, type IPv6View,
} from '../src/net/wire/ipv6.js';
import {
  ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_ERROR_QUOTE_MAX, ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAMETER_PROBLEM,
  ICMPV6_REDIRECT, ICMPV6_TIME_EXCEEDED, ICMPV6_UNREACH_PORT, buildEchoReply, buildEchoRequest, buildIcmpv6Error, icmpv6ErrorAllowed,
  isIcmpv6Error, parseIcmpv6, type Icmpv6View,
} from '../src/net/wire/icmpv6.js';
import { buildUdpIPv6, parseUdpIPv6 } from '../src/net/wire/udp-ipv6.js';
import { l4ChecksumIPv6, pseudoHeaderSumIPv6 } from '../src/net/wire/checksum-ipv6.js';
import { fold } from '../src/net/wire/checksum.js';
import { encodeDomainList, parseDomainList } from '../src/net/wire/domain-list.js';
import { formatIPv6 } from '../src/net/ipv6-address.js';
import { concat, hex } from './helpers/packets.js';
import {
  DNS_IP6, GATEWAY_IP6, GUEST_IP6, NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ICMPV6, NH_NONE, NH_ROUTING, NH_TCP, NH_UDP, checksum6,
  fragmentHeader, ip6, ipv6Packet, optionsHeader, routingHeader, udp6Datagram,
} from './helpers/packets6.js';
import { mulberry32, pattern } from './helpers/prng.js';
import { CORPUS_SKIP_NOTE, ipv6CorpusFrames } from './helpers/corpus6.js';

/** IN_icmp6/ping_10-0-2-2.pcap #0: the guest pings fec0::2 (IPv6 packet, Ethernet header removed). */
const ECHO_REQUEST = hex(
  '6004df3a 0040 3a 40 fec0000000000000505400fffe123456 fec00000000000000000000000000002' +
  '8000 51a6 8c35 0001 c6842a6600000000 66aa0a0000000000' +
  '101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637',
);
/** #1: libslirp's reply (hop limit 255, flow label 0). */
const ECHO_REPLY = hex(
  '6000000000403aff fec00000000000000000000000000002 fec0000000000000505400fffe123456' +
  '8100 50a6 8c35 0001 c6842a6600000000 66aa0a0000000000' +
  '101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637',
);
/** IN_udp6/DNS_freedesktop_1-1-1-1.pcap #1: the DNS answer from 2606:4700:4700::1111 (full checksum). */
const DNS_ANSWER = hex(
  '60000000004411ff 26064700470000000000000000001111 fec0000000000000505400fffe123456' +
  '0035 9301 0044 1963' +
  '4241818000010001000000010b667265656465736b746f70036f72670000010001c00c00010001000004e7000483fcd2b000002904d0000000000000',
);

function view(bytes: Uint8Array): IPv6View {
  const v = parseIPv6Packet(bytes);
  if (typeof v === 'string') throw new Error(`fixture does not parse: ${v}`);
  return v;
}

function upper(packet: Uint8Array): IPv6UpperLayer {
  const w = walkIPv6Headers(view(packet));
  if (typeof w === 'string' || w.kind !== 'upper_layer') throw new Error(`expected an upper layer, got ${JSON.stringify(w)}`);
  return w;
}

function problemOf(packet: Uint8Array): IPv6ParameterProblem {
  const w = walkIPv6Headers(view(packet));
  if (typeof w === 'string' || w.kind !== 'parameter_problem') throw new Error(`expected a parameter problem, got ${JSON.stringify(w)}`);
  return w;
}

function icmp(message: Uint8Array, src: Uint8Array, dst: Uint8Array): Icmpv6View {
  const v = parseIcmpv6(message, src, dst);
  if (typeof v === 'string') throw new Error(`ICMPv6 does not parse: ${v}`);
  return v;
}

const UDP_8 = udp6Datagram({ dst: GATEWAY_IP6, sport: 1000, dport: 2000, payload: new Uint8Array(0) });

describe('IPv6 header', () => {
  it('reads every field of a captured echo request (RFC 8200 §3)', () => {
    const v = view(ECHO_REQUEST);
    expect(v.trafficClass).toBe(0x00);
    expect(v.flowLabel).toBe(0x4df3a);
    expect(v.payloadLength).toBe(64);
    expect(v.nextHeader).toBe(58);
    expect(v.hopLimit).toBe(64);
    expect(formatIPv6(v.src)).toBe('fec0::5054:ff:fe12:3456');
    expect(formatIPv6(v.dst)).toBe('fec0::2');
    expect(v.packet.length).toBe(104);
    expect(v.payload[0]).toBe(0x80);
    const tc = view(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_NONE, payload: new Uint8Array(0), trafficClass: 0xb8, flowLabel: 0xfffff }));
    expect([tc.trafficClass, tc.flowLabel]).toEqual([0xb8, 0xfffff]);
  });

  it('trims trailing Ethernet padding to the payload length', () => {
    const padded = concat(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_UDP, payload: UDP_8 }), new Uint8Array(10));
    const v = view(padded);
    expect(v.packet.length).toBe(48);
    expect(v.payload.length).toBe(8);
  });

  it('refuses short, wrong-version, over-long and jumbo packets with reasons', () => {
    expect(parseIPv6Packet(ECHO_REQUEST.subarray(0, 39))).toBe('truncated');
    expect(parseIPv6Packet(ECHO_REQUEST.subarray(0, 103))).toBe('truncated'); // payload length says 64, 63 present
    expect(parseIPv6Packet(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_NONE, payload: new Uint8Array(0), version: 4 }))).toBe('bad_version');
    const jumbo = ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_HOP_BY_HOP, payload: hex('3a00c2040001000c'), payloadLength: 0 });
    expect(parseIPv6Packet(jumbo)).toBe('jumbogram');
    expect(typeof parseIPv6Packet(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_NONE, payload: new Uint8Array(0) })!)).toBe('object');
  });

  it('writeIPv6Header writes the captured reply header byte for byte', () => {
    const out = new Uint8Array(40);
    writeIPv6Header(out, { src: GATEWAY_IP6, dst: GUEST_IP6, nextHeader: 58, payloadLength: 64, hopLimit: 255 });
    expect(out).toEqual(ECHO_REPLY.subarray(0, 40));
    writeIPv6Header(out, { src: GUEST_IP6, dst: GATEWAY_IP6, nextHeader: 58, payloadLength: 64, flowLabel: 0x4df3a });
    expect(out).toEqual(ECHO_REQUEST.subarray(0, 40));
    writeIPv6Header(out, { src: GUEST_IP6, dst: GATEWAY_IP6, nextHeader: 6, payloadLength: 0, trafficClass: 0xff, flowLabel: 0xfffff, hopLimit: 1 });
    const v = view(out);
    expect([v.trafficClass, v.flowLabel, v.hopLimit, v.nextHeader]).toEqual([0xff, 0xfffff, 1, 6]);
  });
});

describe('IPv6 extension headers (RFC 8200 §4)', () => {
  const pkt = (nextHeader: number, ...parts: Uint8Array[]): Uint8Array =>
    ipv6Packet({ dst: GATEWAY_IP6, nextHeader, payload: concat(...parts) });

  it('no extension header: the upper layer right after the fixed header', () => {
    const u = upper(ECHO_REQUEST);
    expect([u.protocol, u.offset, u.payload.length, u.nextHeaderPointer, u.extensionHeaders, u.fragment]).toEqual([58, 40, 64, 6, 0, null]);
  });

  it('hop-by-hop with Router Alert (an MLD report\'s header, bytes as Linux sends them)', () => {
    const u = upper(pkt(NH_HOP_BY_HOP, hex('3a00 0502 0000 0100'), hex('8f00 0000 0000 0000')));
    expect([u.protocol, u.offset, u.routerAlert, u.nextHeaderPointer, u.extensionHeaders]).toEqual([58, 48, 0, 40, 1]);
  });

  it('hop-by-hop anywhere but first is an unrecognized next header (PP code 1 at the field that named it)', () => {
    const p = problemOf(pkt(NH_DEST_OPTS, optionsHeader(NH_HOP_BY_HOP, []), optionsHeader(NH_UDP, []), UDP_8));
    expect(p).toEqual({ kind: 'parameter_problem', code: PARAM_PROBLEM_NEXT_HEADER, pointer: 40, reason: 'misplaced_hop_by_hop', evenIfMulticast: false });
  });

  it('unrecognized options act on their type\'s two high bits (§4.2)', () => {
    // 00: skipped.
    const skip = upper(pkt(NH_DEST_OPTS, optionsHeader(NH_UDP, [0x1e, 2, 0xaa, 0xbb]), UDP_8));
    expect([skip.protocol, skip.offset]).toEqual([17, 48]);
    // 01: dropped silently.
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, optionsHeader(NH_UDP, [0x5e, 0]), UDP_8)))).toBe('unrecognized_option');
    // 10: PP code 2 at the option type, even to a multicast destination.
    expect(problemOf(pkt(NH_DEST_OPTS, optionsHeader(NH_UDP, [1, 0, 0x9e, 0]), UDP_8)))
      .toEqual({ kind: 'parameter_problem', code: PARAM_PROBLEM_OPTION, pointer: 44, reason: 'unrecognized_option', evenIfMulticast: true });
    // 11: the same, but not to a multicast destination. A Jumbo Payload option (0xc2) in a normal packet is one.
    expect(problemOf(pkt(NH_HOP_BY_HOP, optionsHeader(NH_UDP, [0xc2, 4, 0, 1, 0, 0]), UDP_8)))
      .toEqual({ kind: 'parameter_problem', code: PARAM_PROBLEM_OPTION, pointer: 42, reason: 'unrecognized_option', evenIfMulticast: false });
  });

  it('options that overrun their header, padding beyond 7 bytes and too many options are dropped', () => {
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, hex('1100 1e08 0000 0000'), UDP_8)))).toBe('bad_option_length');
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, hex('1100 0000 0000 001e'), UDP_8)))).toBe('bad_option_length'); // type in the last byte, no length
    expect(walkIPv6Headers(view(pkt(NH_HOP_BY_HOP, hex('1100 0503 0000 0000'), UDP_8)))).toBe('bad_option_length'); // Router Alert is 2 bytes
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, hex('1101 010c 0000 0000 0000 0000 0000 0000'), UDP_8)))).toBe('excess_padding');
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, hex('1101 0000 0000 0000 0000 0000 0000 0000'), UDP_8)))).toBe('excess_padding');
    // Exactly 6 bytes of padding (the most a header with no option needs) is fine.
    expect(upper(pkt(NH_DEST_OPTS, hex('1100 0104 0000 0000'), UDP_8)).protocol).toBe(17);
    const nine = optionsHeader(NH_UDP, Array.from({ length: 9 }, () => [0x1e, 0]).flat());
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, nine, UDP_8)))).toBe('too_many_options');
    const eight = optionsHeader(NH_UDP, Array.from({ length: 8 }, () => [0x1e, 0]).flat());
    expect(upper(pkt(NH_DEST_OPTS, eight, UDP_8)).protocol).toBe(17);
  });

  it('routing header: skipped with segments left 0, otherwise PP code 0 at the routing type (§4.4)', () => {
    const skipped = upper(pkt(NH_ROUTING, routingHeader(NH_UDP, 4, 0), UDP_8));
    expect([skipped.protocol, skipped.offset, skipped.nextHeaderPointer]).toEqual([17, 48, 40]);
    for (const type of [0, 2, 3, 4, 253]) {
      expect(problemOf(pkt(NH_ROUTING, routingHeader(NH_UDP, type, 1, [0, 0, 0, 0, ...GATEWAY_IP6]), UDP_8)))
        .toEqual({ kind: 'parameter_problem', code: PARAM_PROBLEM_HEADER_FIELD, pointer: 42, reason: 'routing_header', evenIfMulticast: false });
    }
  });

  it('fragment header: atomic fragments go on, others stop with their fields (§4.5, RFC 6946)', () => {
    const atomic = upper(pkt(NH_FRAGMENT, fragmentHeader(NH_UDP, 0, false, 0x12345678), UDP_8));
    expect([atomic.protocol, atomic.offset, atomic.fragment, atomic.extensionHeaders]).toEqual([17, 48, null, 1]);
    const first = upper(pkt(NH_FRAGMENT, fragmentHeader(NH_UDP, 0, true, 0xdeadbeef), UDP_8, new Uint8Array(8)));
    expect([first.protocol, first.offset, first.nextHeaderPointer]).toEqual([17, 48, 40]);
    expect(first.fragment).toEqual({ offset: 0, more: true, identification: 0xdeadbeef, headerOffset: 40 });
    const later = upper(pkt(NH_FRAGMENT, fragmentHeader(NH_UDP, 1448, false, 7), new Uint8Array(5)));
    expect(later.fragment).toEqual({ offset: 1448, more: false, identification: 7, headerOffset: 40 });
    expect(later.payload.length).toBe(5);
    // After a destination options header (unfragmentable part) the pointer is that header's next header field.
    const behind = upper(pkt(NH_DEST_OPTS, optionsHeader(NH_FRAGMENT, []), fragmentHeader(NH_TCP, 8, true, 1), new Uint8Array(16)));
    expect([behind.protocol, behind.offset, behind.fragment?.headerOffset]).toEqual([6, 56, 48]);
  });

  it('fragment header problems: length not a multiple of 8, past 65535, incomplete first fragment', () => {
    // M set, payload length 8 + 8 + 5 = 21: PP code 0 at the payload length field.
    expect(problemOf(pkt(NH_FRAGMENT, fragmentHeader(NH_UDP, 8, true, 1), new Uint8Array(13))))
      .toMatchObject({ code: PARAM_PROBLEM_HEADER_FIELD, pointer: 4, reason: 'fragment_length' });
    // Offset 65528 with 16 bytes of data would end at 65544: PP code 0 at the fragment offset.
    expect(problemOf(pkt(NH_FRAGMENT, fragmentHeader(NH_UDP, 65528, false, 1), new Uint8Array(16))))
      .toMatchObject({ code: PARAM_PROBLEM_HEADER_FIELD, pointer: 42, reason: 'fragment_too_long' });
    expect(upper(pkt(NH_FRAGMENT, fragmentHeader(NH_UDP, 65528, false, 1), new Uint8Array(7))).fragment?.offset).toBe(65528);
    // A first fragment whose destination options header runs past its end, or with half a TCP header (RFC 7112): code 3.
    expect(problemOf(pkt(NH_FRAGMENT, fragmentHeader(NH_DEST_OPTS, 0, true, 1), hex('0601 0000 0000 0000'))))
      .toMatchObject({ code: PARAM_PROBLEM_INCOMPLETE_CHAIN, pointer: 0, reason: 'incomplete_chain' });
    expect(problemOf(pkt(NH_FRAGMENT, fragmentHeader(NH_TCP, 0, true, 1), new Uint8Array(16))))
      .toMatchObject({ code: PARAM_PROBLEM_INCOMPLETE_CHAIN });
    expect(upper(pkt(NH_FRAGMENT, fragmentHeader(NH_TCP, 0, true, 1), new Uint8Array(24))).protocol).toBe(6);
  });

  it('ESP, AH and No Next Header end the walk', () => {
    expect(upper(pkt(NEXT_HEADER_ESP, new Uint8Array(16))).protocol).toBe(50);
    const ah = upper(pkt(NH_DEST_OPTS, optionsHeader(NEXT_HEADER_AH, []), new Uint8Array(16)));
    expect([ah.protocol, ah.offset, ah.nextHeaderPointer]).toEqual([51, 48, 40]);
    const none = upper(pkt(NH_DEST_OPTS, optionsHeader(NH_NONE, []), hex('deadbeef')));
    expect([none.protocol, none.payload.length]).toEqual([59, 0]);
  });

  it('bounds: extension header count and total length; truncated headers', () => {
    const chain = (n: number): Uint8Array[] => Array.from({ length: n }, (_, i) => optionsHeader(i === n - 1 ? NH_UDP : NH_DEST_OPTS, []));
    expect(upper(pkt(NH_DEST_OPTS, ...chain(MAX_EXTENSION_HEADERS), UDP_8)).extensionHeaders).toBe(MAX_EXTENSION_HEADERS);
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, ...chain(MAX_EXTENSION_HEADERS + 1), UDP_8)))).toBe('too_many_extension_headers');
    // One header of 1024 bytes (length field 127) fits the byte bound, one of 1032 (128) does not; skippable options fill them.
    const filler = (n: number): number[] => [0x1e, n - 2, ...new Array<number>(n - 2).fill(0)];
    const exactly1024 = Uint8Array.from([NH_UDP, 127, ...filler(257), ...filler(257), ...filler(257), ...filler(251)]);
    expect(upper(pkt(NH_DEST_OPTS, exactly1024, UDP_8)).offset).toBe(40 + 1024);
    const over = Uint8Array.from([NH_UDP, 128, ...filler(257), ...filler(257), ...filler(257), ...filler(257), ...filler(2)]);
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, over, UDP_8)))).toBe('too_many_extension_headers');
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, hex('1100 0104'))))).toBe('truncated_extension');
    expect(walkIPv6Headers(view(pkt(NH_DEST_OPTS, hex('1101 0104 0000 0000'))))).toBe('truncated_extension');
    expect(walkIPv6Headers(view(pkt(NH_ROUTING, hex('1100 0000'))))).toBe('truncated_extension');
    expect(walkIPv6Headers(view(pkt(NH_FRAGMENT, hex('1100 0001'))))).toBe('truncated_extension');
  });
});

describe('checksum over the IPv6 pseudo-header', () => {
  it('matches an independent computation on random segments of every parity', () => {
    const r = mulberry32(0x6c);
    for (let n = 0; n < 300; n++) {
      const src = Uint8Array.from({ length: 16 }, () => Math.floor(r() * 256));
      const dst = Uint8Array.from({ length: 16 }, () => Math.floor(r() * 256));
      const segment = pattern(Math.floor(r() * 3000), n);
      const nh = [6, 17, 58][n % 3]!;
      expect(l4ChecksumIPv6(src, dst, nh, segment)).toBe(checksum6(src, dst, nh, segment));
    }
  });

  it('verifies the captured segments (0 for a correct checksum)', () => {
    expect(l4ChecksumIPv6(GUEST_IP6, GATEWAY_IP6, 58, ECHO_REQUEST.subarray(40))).toBe(0);
    expect(l4ChecksumIPv6(GATEWAY_IP6, GUEST_IP6, 58, ECHO_REPLY.subarray(40))).toBe(0);
    const v = view(DNS_ANSWER);
    expect(l4ChecksumIPv6(v.src, v.dst, 17, v.payload)).toBe(0);
    expect(l4ChecksumIPv6(v.dst, v.src, 17, v.payload)).toBe(0); // the sum is symmetric in src/dst
    expect(l4ChecksumIPv6(v.src, v.dst, 6, v.payload)).not.toBe(0);
  });

  it('pseudoHeaderSumIPv6 counts a length beyond 16 bits (RFC 8200 §8.1: 32-bit length)', () => {
    const a = ip6('::');
    expect(fold(pseudoHeaderSumIPv6(a, a, 17, 0x10000))).toBe(fold(pseudoHeaderSumIPv6(a, a, 17, 1)));
  });
});

describe('ICMPv6 (RFC 4443)', () => {
  it('parses the captured echo request; the reply we build is libslirp\'s byte for byte', () => {
    const req = icmp(ECHO_REQUEST.subarray(40), GUEST_IP6, GATEWAY_IP6);
    expect([req.type, req.code, req.id, req.seq, req.body.length]).toEqual([ICMPV6_ECHO_REQUEST, 0, 0x8c35, 1, 56]);
    expect(buildEchoReply(req, GATEWAY_IP6, GUEST_IP6)).toEqual(ECHO_REPLY.subarray(40));
    const rep = icmp(ECHO_REPLY.subarray(40), GATEWAY_IP6, GUEST_IP6);
    expect([rep.type, rep.id, rep.seq]).toEqual([ICMPV6_ECHO_REPLY, 0x8c35, 1]);
  });

  it('refuses a short message and a wrong checksum (also: the right bytes under the wrong addresses)', () => {
    expect(parseIcmpv6(ECHO_REQUEST.subarray(40, 47), GUEST_IP6, GATEWAY_IP6)).toBe('truncated');
    const bad = ECHO_REQUEST.slice(40);
    bad[20] ^= 1;
    expect(parseIcmpv6(bad, GUEST_IP6, GATEWAY_IP6)).toBe('bad_checksum');
    expect(parseIcmpv6(ECHO_REQUEST.subarray(40), GUEST_IP6, DNS_IP6)).toBe('bad_checksum');
  });

  it('echo request builder round trip', () => {
    const m = buildEchoRequest(0xabcd, 0x1234, pattern(100, 1), GUEST_IP6, GATEWAY_IP6);
    expect(checksum6(GUEST_IP6, GATEWAY_IP6, NH_ICMPV6, m)).toBe(0);
    const v = icmp(m, GUEST_IP6, GATEWAY_IP6);
    expect([v.type, v.id, v.seq]).toEqual([ICMPV6_ECHO_REQUEST, 0xabcd, 0x1234]);
    expect(v.body).toEqual(pattern(100, 1));
  });

  it('errors quote as much of the offending packet as fits in 1280 bytes (§2.4 (c))', () => {
    const small = ECHO_REQUEST;
    const unreach = buildIcmpv6Error(ICMPV6_DEST_UNREACHABLE, ICMPV6_UNREACH_PORT, 0, small, GATEWAY_IP6, GUEST_IP6);
    expect(unreach.length).toBe(8 + small.length);
    const v = icmp(unreach, GATEWAY_IP6, GUEST_IP6);
    expect([v.type, v.code, v.parameter]).toEqual([1, 4, 0]);
    expect(v.body).toEqual(small);
    const big = ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_UDP, payload: pattern(1460, 3) });
    const ptb = buildIcmpv6Error(ICMPV6_PACKET_TOO_BIG, 0, 1280, big, GATEWAY_IP6, GUEST_IP6);
    expect(IPV6_HEADER_LENGTH + ptb.length).toBe(1280);
    expect(ICMPV6_ERROR_QUOTE_MAX).toBe(1232);
    const p = icmp(ptb, GATEWAY_IP6, GUEST_IP6);
    expect(p.parameter).toBe(1280);
    expect(p.body).toEqual(big.subarray(0, 1232));
    const pp = icmp(buildIcmpv6Error(ICMPV6_PARAMETER_PROBLEM, 1, 40, big, GATEWAY_IP6, GUEST_IP6), GATEWAY_IP6, GUEST_IP6);
    expect([pp.type, pp.code, pp.parameter]).toEqual([4, 1, 40]);
  });

  it('when an error may be sent (§2.4 (e))', () => {
    const base = { src: GUEST_IP6, dst: GATEWAY_IP6, linkMulticast: false, icmpv6Type: null };
    expect(icmpv6ErrorAllowed(base, ICMPV6_DEST_UNREACHABLE)).toBe(true);
    expect(icmpv6ErrorAllowed({ ...base, icmpv6Type: ICMPV6_ECHO_REQUEST }, ICMPV6_DEST_UNREACHABLE)).toBe(true);
    expect(icmpv6ErrorAllowed({ ...base, icmpv6Type: ICMPV6_TIME_EXCEEDED }, ICMPV6_DEST_UNREACHABLE)).toBe(false);
    expect(icmpv6ErrorAllowed({ ...base, icmpv6Type: ICMPV6_REDIRECT }, ICMPV6_PARAMETER_PROBLEM)).toBe(false);
    expect(icmpv6ErrorAllowed({ ...base, src: ip6('::') }, ICMPV6_DEST_UNREACHABLE)).toBe(false);
    expect(icmpv6ErrorAllowed({ ...base, src: ip6('ff02::1') }, ICMPV6_PACKET_TOO_BIG)).toBe(false);
    const mcast = { ...base, dst: ip6('ff02::1') };
    expect(icmpv6ErrorAllowed(mcast, ICMPV6_DEST_UNREACHABLE)).toBe(false);
    expect(icmpv6ErrorAllowed(mcast, ICMPV6_PACKET_TOO_BIG)).toBe(true);
    expect(icmpv6ErrorAllowed(mcast, ICMPV6_PARAMETER_PROBLEM, false)).toBe(false);
    expect(icmpv6ErrorAllowed(mcast, ICMPV6_PARAMETER_PROBLEM, true)).toBe(true);
    expect(icmpv6ErrorAllowed({ ...base, linkMulticast: true }, ICMPV6_TIME_EXCEEDED)).toBe(false);
    expect(isIcmpv6Error(127)).toBe(true);
    expect(isIcmpv6Error(128)).toBe(false);
  });
});

describe('UDP over IPv6', () => {
  it('parses the captured DNS answer', () => {
    const v = view(DNS_ANSWER);
    const u = parseUdpIPv6(v.payload, v.src, v.dst);
    if (typeof u === 'string') throw new Error(u);
    expect([u.srcPort, u.dstPort, u.payload.length]).toEqual([53, 0x9301, 60]);
    expect(u.payload.subarray(0, 2)).toEqual(hex('4241'));
  });

  it('refuses zero, wrong and short checksums/lengths', () => {
    const zero = udp6Datagram({ dst: GATEWAY_IP6, sport: 1, dport: 2, payload: pattern(10, 1), checksum: 'zero' });
    expect(parseUdpIPv6(zero, GUEST_IP6, GATEWAY_IP6)).toBe('zero_checksum');
    expect(typeof parseUdpIPv6(zero, GUEST_IP6, GATEWAY_IP6, false)).toBe('object');
    const bad = udp6Datagram({ dst: GATEWAY_IP6, sport: 1, dport: 2, payload: pattern(10, 1), checksum: 'bad' });
    expect(parseUdpIPv6(bad, GUEST_IP6, GATEWAY_IP6)).toBe('bad_checksum');
    expect(parseUdpIPv6(UDP_8.subarray(0, 7), GUEST_IP6, GATEWAY_IP6)).toBe('truncated');
    expect(parseUdpIPv6(udp6Datagram({ dst: GATEWAY_IP6, sport: 1, dport: 2, payload: new Uint8Array(4), length: 7 }), GUEST_IP6, GATEWAY_IP6)).toBe('bad_length');
    expect(parseUdpIPv6(udp6Datagram({ dst: GATEWAY_IP6, sport: 1, dport: 2, payload: new Uint8Array(4), length: 13 }), GUEST_IP6, GATEWAY_IP6)).toBe('truncated');
  });

  it('builder output equals the independent helper and parses back (0 sent as 0xffff)', () => {
    for (let n = 0; n < 50; n++) {
      const payload = pattern(n * 7, n);
      const built = buildUdpIPv6(GUEST_IP6, GATEWAY_IP6, 4000 + n, 53, payload);
      expect(built).toEqual(udp6Datagram({ dst: GATEWAY_IP6, sport: 4000 + n, dport: 53, payload }));
      const u = parseUdpIPv6(built, GUEST_IP6, GATEWAY_IP6);
      if (typeof u === 'string') throw new Error(u);
      expect(u.payload).toEqual(payload);
    }
  });
});

describe('domain lists (RFC 1035 §3.1, uncompressed)', () => {
  it('encodes names one after another and parses them back', () => {
    const bytes = encodeDomainList(['example.com', 'corp.example.net.', 'a']);
    expect(bytes).toEqual(hex('076578616d706c6503636f6d00 04636f7270076578616d706c65036e657400 016100'));
    expect(parseDomainList(bytes, false)).toEqual(['example.com', 'corp.example.net', 'a']);
  });

  it('leaves out names that cannot be encoded', () => {
    expect(encodeDomainList(['', 'a..b', 'x'.repeat(64) + '.com', `${'abcdefg.'.repeat(32)}com`, 'ok'])).toEqual(hex('026f6b00'));
    expect(encodeDomainList(['x'.repeat(63)]).length).toBe(65);
  });

  it('refuses compression, reserved label types, truncation, over-long names; DNSSL padding', () => {
    expect(parseDomainList(hex('03616263 c000'), false)).toBe('compressed_name');
    expect(parseDomainList(hex('4100'), false)).toBe('bad_label');
    expect(parseDomainList(hex('03616263'), false)).toBe('truncated');
    expect(parseDomainList(hex('0461'), false)).toBe('truncated');
    const long = new Uint8Array(300);
    for (let i = 0; i < 4; i++) long.set([63], i * 64);
    expect(parseDomainList(long, false)).toBe('name_too_long');
    expect(parseDomainList(hex('016100 00'), false)).toBe('empty_name');
    expect(parseDomainList(hex('016100 000000 00'), true)).toEqual(['a']);
    expect(parseDomainList(hex('016100 000100'), true)).toBe('bad_padding');
    expect(parseDomainList(new Uint8Array(Array.from({ length: 33 }, () => [1, 0x61, 0]).flat()), false)).toBe('too_many_names');
  });
});

describe.skipIf(ipv6CorpusFrames() === null)(`corpus replay: every IPv6 frame of the libslirp captures (${CORPUS_SKIP_NOTE})`, () => {
  const frames = ipv6CorpusFrames() ?? [];

  it('every frame parses to an upper layer (no extension headers in the captures)', () => {
    expect(frames.length).toBe(37);
    expect(frames.filter((f) => f.error !== null).map((f) => `${f.name}: ${f.error}`)).toEqual([]);
    const protocols: Record<number, number> = {};
    for (const f of frames) protocols[f.upper!.protocol] = (protocols[f.upper!.protocol] ?? 0) + 1;
    expect(protocols).toEqual({ [NH_ICMPV6]: 6, [NH_TCP]: 19, [NH_UDP]: 12 });
    expect(frames.every((f) => f.upper!.extensionHeaders === 0 && f.ip!.packet.length === f.eth.payload.length)).toBe(true);
  });

  it('checksums: ICMPv6 always complete; TCP/UDP complete or a virtio partial checksum (the pseudo-header sum alone)', () => {
    let complete = 0;
    let partial = 0;
    for (const f of frames) {
      const { ip, upper: u } = f;
      const full = l4ChecksumIPv6(ip!.src, ip!.dst, u!.protocol, u!.payload) === 0;
      if (u!.protocol === NH_ICMPV6) {
        expect(full, f.name).toBe(true);
        expect(typeof parseIcmpv6(u!.payload, ip!.src, ip!.dst), f.name).toBe('object');
      }
      if (full) {
        complete++;
        if (u!.protocol === NH_UDP) expect(typeof parseUdpIPv6(u!.payload, ip!.src, ip!.dst), f.name).toBe('object');
        continue;
      }
      // VIRTIO_NET_HDR_F_NEEDS_CSUM: the field holds the folded pseudo-header sum, not yet complemented.
      const at = u!.protocol === NH_TCP ? 16 : 6;
      const stored = (u!.payload[at]! << 8) | u!.payload[at + 1]!;
      expect(stored, f.name).toBe(~fold(pseudoHeaderSumIPv6(ip!.src, ip!.dst, u!.protocol, u!.payload.length)) & 0xffff);
      partial++;
    }
    expect([complete, partial]).toEqual([19, 18]);
  });
});
