/**
 * Fuzzing the IPv6 wire layer and the NDP/DHCPv6 decisions with a seeded
 * PRNG: random bytes, and bit flips, byte changes, truncations and
 * extensions of well-formed seeds (builder output and, when present, every
 * IPv6 frame of the libslirp captures). Lengths and checksums are fixed up
 * after a mutation half of the time so that the deeper parsers (options,
 * NDP, DHCPv6) see mutated content rather than only bad checksums. No
 * parser may throw; every reason must come from the parser's fixed set;
 * every accepted result must be consistent with its input; every reply a
 * decision function makes must parse back with good checksums.
 */
import { describe, it, expect } from 'vitest';
import { parseIPv6Packet, walkIPv6Headers } from '../src/net/wire/ipv6.js';
import { finishIcmpv6Checksum, parseIcmpv6 } from '../src/net/wire/icmpv6.js';
import {
  buildNeighborAdvertisement, buildNeighborSolicitation, buildRouterAdvertisement, buildRouterSolicitation, parseNdp,
} from '../src/net/wire/ndp.js';
import { buildUdpIPv6, parseUdpIPv6 } from '../src/net/wire/udp-ipv6.js';
import { buildDhcpv6, duidLinkLayer, parseDhcpv6, OPTION_IA_PD } from '../src/net/wire/dhcpv6.js';
import { parseDomainList } from '../src/net/wire/domain-list.js';
import { parseEthernet } from '../src/net/wire/ethernet.js';
import { l4ChecksumIPv6 } from '../src/net/wire/checksum-ipv6.js';
import { GuestIPv6Addresses, ndpInput } from '../src/net/ndp.js';
import { answerDhcpv6 } from '../src/net/dhcpv6.js';
import { defaultIpv6LinkConfig, ipv6ReplyFrame, type Ipv6LinkReply } from '../src/net/ipv6-link.js';
import { formatIPv6, parseIPv6, solicitedNodeMulticast } from '../src/net/ipv6-address.js';
import { GATEWAY_MAC, GUEST_MAC, concat } from './helpers/packets.js';
import {
  DNS_IP6, GATEWAY_IP6, GATEWAY_LL6, GUEST_IP6, GUEST_LL6, NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ICMPV6, NH_ROUTING, NH_TCP, NH_UDP,
  fragmentHeader, ip6, ipv6Packet, optionsHeader, routingHeader, udp6Datagram,
} from './helpers/packets6.js';
import { mulberry32 } from './helpers/prng.js';
import { ipv6CorpusFrames } from './helpers/corpus6.js';

const REASONS = {
  ipv6: ['truncated', 'bad_version', 'jumbogram'],
  walk: ['truncated_extension', 'excess_padding', 'bad_option_length', 'too_many_options', 'unrecognized_option', 'too_many_extension_headers'],
  problem: ['misplaced_hop_by_hop', 'unrecognized_option', 'routing_header', 'fragment_length', 'fragment_too_long', 'incomplete_chain'],
  icmpv6: ['truncated', 'bad_checksum'],
  ndp: [
    'not_ndp', 'bad_code', 'truncated', 'truncated_option', 'zero_length_option', 'too_many_options', 'bad_link_layer_option',
    'unspecified_source_with_link_layer', 'source_not_link_local', 'multicast_target', 'unspecified_source_not_solicited_node',
    'solicited_to_multicast',
  ],
  udp: ['truncated', 'bad_length', 'zero_checksum', 'bad_checksum'],
  domainList: ['compressed_name', 'bad_label', 'truncated', 'name_too_long', 'too_many_names', 'empty_name', 'bad_padding'],
  dhcpv6: [
    'truncated', 'relay_message', 'truncated_option', 'too_many_options', 'duplicate_option', 'bad_duid', 'bad_elapsed_time', 'bad_oro',
    'bad_rapid_commit', 'bad_status_code', 'bad_ia_na', 'bad_iaaddr', 'too_many_addresses', 'too_many_ias', 'bad_ia', 'bad_preference',
    'bad_dns_servers', 'bad_information_refresh_time', 'domain_list_compressed_name', 'domain_list_bad_label', 'domain_list_truncated',
    'domain_list_name_too_long', 'domain_list_too_many_names', 'domain_list_empty_name',
  ],
  ndpDecision: [
    'ns_bad_source', 'ns_not_ours', 'dad_probe', 'dad_probe_not_guest_address', 'ns_wrong_destination', 'rs_bad_source',
    'na_address_conflict', 'na_learned', 'na_not_guest_address', 'ra_from_guest',
  ],
  dhcpv6Decision: [
    'bad_source', 'bad_source_mac', 'not_for_us', 'unicast_to_multicast_only', 'information_request_with_ia', 'other_server',
    'missing_client_id', 'unexpected_server_id', 'stateless', 'confirm_without_addresses', 'missing_server_id', 'not_client_message',
  ],
};

/** Tallies of outcomes per parser, to show the fuzzing reached past the first check. */
class Outcomes {
  readonly seen = new Map<string, number>();
  note(parser: keyof typeof REASONS | 'ok', what: string): void {
    const key = `${parser}:${what}`;
    this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
  }
  count(prefix: string): number {
    let n = 0;
    for (const [k, v] of this.seen) if (k.startsWith(prefix)) n += v;
    return n;
  }
  distinct(prefix: string): number {
    return [...this.seen.keys()].filter((k) => k.startsWith(prefix)).length;
  }
}

function reason(o: Outcomes, parser: keyof typeof REASONS, r: string): void {
  expect(REASONS[parser], `${parser} gave an unknown reason`).toContain(r);
  o.note(parser, r);
}

const cfg = defaultIpv6LinkConfig(GATEWAY_MAC);
cfg.searchDomains = ['example.com'];

function checkReply(r: Ipv6LinkReply): void {
  const eth = parseEthernet(ipv6ReplyFrame(r));
  if (typeof eth === 'string') throw new Error(eth);
  const ip = parseIPv6Packet(eth.payload);
  if (typeof ip === 'string') throw new Error(ip);
  expect(l4ChecksumIPv6(ip.src, ip.dst, ip.nextHeader, ip.payload)).toBe(0);
  if (ip.nextHeader === NH_ICMPV6) {
    const icmp = parseIcmpv6(ip.payload, ip.src, ip.dst);
    if (typeof icmp === 'string') throw new Error(icmp);
    expect(typeof parseNdp(icmp, ip.src, ip.dst)).toBe('object');
  } else {
    const udp = parseUdpIPv6(ip.payload, ip.src, ip.dst);
    if (typeof udp === 'string') throw new Error(udp);
    expect(typeof parseDhcpv6(udp.payload)).toBe('object');
  }
}

/** The full guest-input pipeline on one IPv6 packet: every stage checked. */
function run(o: Outcomes, packet: Uint8Array, guest: GuestIPv6Addresses, ethSrc: Uint8Array): void {
  const ip = parseIPv6Packet(packet);
  if (typeof ip === 'string') return reason(o, 'ipv6', ip);
  expect(ip.packet.length).toBe(40 + ip.payloadLength);
  o.note('ok', 'ipv6');
  const u = walkIPv6Headers(ip);
  if (typeof u === 'string') return reason(o, 'walk', u);
  if (u.kind === 'parameter_problem') {
    expect(u.pointer).toBeGreaterThanOrEqual(0);
    expect(u.pointer).toBeLessThan(ip.packet.length);
    return reason(o, 'problem', u.reason);
  }
  expect(u.offset).toBeGreaterThanOrEqual(40);
  expect(u.offset).toBeLessThanOrEqual(ip.packet.length);
  expect(u.nextHeaderPointer).toBeLessThan(u.offset);
  o.note('ok', 'walk');
  if (u.fragment) return;
  if (u.protocol === NH_ICMPV6) {
    const icmp = parseIcmpv6(u.payload, ip.src, ip.dst);
    if (typeof icmp === 'string') return reason(o, 'icmpv6', icmp);
    o.note('ok', 'icmpv6');
    const msg = parseNdp(icmp, ip.src, ip.dst);
    if (typeof msg === 'string') return reason(o, 'ndp', msg);
    o.note('ok', 'ndp');
    const r = ndpInput(cfg, msg, { src: ip.src, dst: ip.dst, ethSrc }, guest, 0);
    if (typeof r === 'string') return reason(o, 'ndpDecision', r);
    o.note('ok', 'ndpDecision');
    checkReply(r);
  } else if (u.protocol === NH_UDP) {
    const udp = parseUdpIPv6(u.payload, ip.src, ip.dst);
    if (typeof udp === 'string') return reason(o, 'udp', udp);
    o.note('ok', 'udp');
    const msg = parseDhcpv6(udp.payload);
    if (typeof msg === 'string') return reason(o, 'dhcpv6', msg);
    o.note('ok', 'dhcpv6');
    const r = answerDhcpv6(cfg, msg, { src: ip.src, dst: ip.dst, ethSrc });
    if (typeof r === 'string') return reason(o, 'dhcpv6Decision', r);
    o.note('ok', 'dhcpv6Decision');
    checkReply(r);
  }
}

/** Well-formed IPv6 packets of every kind the walker and the decisions handle. */
function seeds(): Uint8Array[] {
  const icmp = (src: Uint8Array, dst: Uint8Array, m: Uint8Array, ...ext: Uint8Array[]) =>
    ipv6Packet({ src, dst, nextHeader: ext.length ? NH_DEST_OPTS : NH_ICMPV6, hopLimit: 255, payload: concat(...ext, m) });
  const dhcp = (m: Uint8Array, dst = ip6('ff02::1:2')) =>
    ipv6Packet({ src: GUEST_LL6, dst, nextHeader: NH_UDP, payload: buildUdpIPv6(GUEST_LL6, dst, 546, 547, m) });
  const sn = solicitedNodeMulticast(GATEWAY_IP6);
  const duid = duidLinkLayer(GUEST_MAC);
  const ia = [{ iaid: 1, t1: 0, t2: 0, addresses: [{ address: cfg.guestAddress, preferredLifetime: 1, validLifetime: 2 }] }];
  const udp8 = udp6Datagram({ dst: GATEWAY_IP6, sport: 1, dport: 2, payload: new Uint8Array(8) });
  const list = [
    icmp(GUEST_IP6, sn, buildNeighborSolicitation(GATEWAY_IP6, { sourceLinkLayer: GUEST_MAC }, GUEST_IP6, sn)),
    icmp(ip6('::'), solicitedNodeMulticast(GUEST_LL6), buildNeighborSolicitation(GUEST_LL6, {}, ip6('::'), solicitedNodeMulticast(GUEST_LL6))),
    icmp(GUEST_LL6, ip6('ff02::2'), buildRouterSolicitation({ sourceLinkLayer: GUEST_MAC }, GUEST_LL6, ip6('ff02::2'))),
    icmp(GUEST_IP6, ip6('ff02::1'), buildNeighborAdvertisement({ router: false, solicited: false, override: true, target: GUEST_IP6, options: { targetLinkLayer: GUEST_MAC } }, GUEST_IP6, ip6('ff02::1'))),
    icmp(GATEWAY_LL6, GUEST_LL6, buildRouterAdvertisement({
      curHopLimit: 64, managed: true, other: true, routerLifetime: 1800, reachableTime: 0, retransTimer: 0,
      options: { sourceLinkLayer: GATEWAY_MAC, mtu: 1500, prefixes: [{ prefixLength: 64, onLink: true, autonomous: true, validLifetime: 1, preferredLifetime: 1, prefix: cfg.prefix }], rdnss: [{ lifetime: 1, servers: [DNS_IP6] }], dnssl: [{ lifetime: 1, domains: ['a.example'] }] },
    }, GATEWAY_LL6, GUEST_LL6)),
    dhcp(buildDhcpv6({ type: 1, transactionId: 1, clientId: duid, rapidCommit: true, elapsedTime: 0, oro: [23, 24], iaNa: ia, otherIas: [{ code: OPTION_IA_PD, iaid: 2 }] })),
    dhcp(buildDhcpv6({ type: 3, transactionId: 2, clientId: duid, serverId: duidLinkLayer(GATEWAY_MAC), iaNa: ia })),
    dhcp(buildDhcpv6({ type: 4, transactionId: 3, clientId: duid, iaNa: ia })),
    dhcp(buildDhcpv6({ type: 11, transactionId: 4, clientId: duid, oro: [23, 24] })),
    dhcp(buildDhcpv6({ type: 7, transactionId: 5, serverId: duid, dnsServers: [DNS_IP6], domainList: ['example.com'], status: { code: 0, message: 'ok' } })),
    ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_HOP_BY_HOP, payload: concat(optionsHeader(NH_DEST_OPTS, [5, 2, 0, 0]), optionsHeader(NH_ROUTING, [0x1e, 1, 0]), routingHeader(NH_FRAGMENT, 4, 0), fragmentHeader(NH_UDP, 0, true, 9), udp8, new Uint8Array(8)) }),
    ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_FRAGMENT, payload: concat(fragmentHeader(NH_TCP, 64, false, 9), new Uint8Array(30)) }),
  ];
  for (const f of ipv6CorpusFrames() ?? []) if (f.ip) list.push(f.ip.packet.slice());
  return list;
}

/** Recompute the payload length and the upper-layer checksum of a mutated packet, where it can be found. */
function fixUp(p: Uint8Array): void {
  if (p.length < 40) return;
  const len = Math.min(p.length - 40, 0xffff);
  p[4] = len >>> 8;
  p[5] = len & 0xff;
  const ip = parseIPv6Packet(p);
  if (typeof ip === 'string') return;
  const u = walkIPv6Headers(ip);
  if (typeof u === 'string' || u.kind !== 'upper_layer' || u.fragment) return;
  const seg = u.payload;
  if (u.protocol === NH_ICMPV6 && seg.length >= 4) finishIcmpv6Checksum(seg, ip.src, ip.dst);
  if (u.protocol === NH_UDP && seg.length >= 8) {
    seg[4] = seg.length >>> 8;
    seg[5] = seg.length & 0xff;
    seg[6] = 0;
    seg[7] = 0;
    const c = l4ChecksumIPv6(ip.src, ip.dst, NH_UDP, seg) || 0xffff;
    seg[6] = c >>> 8;
    seg[7] = c & 0xff;
  }
}

function mutate(r: () => number, seed: Uint8Array): Uint8Array {
  let p: Uint8Array = seed.slice();
  const edits = 1 + Math.floor(r() * 4);
  for (let e = 0; e < edits; e++) {
    const k = r();
    if (k < 0.4 && p.length > 0) p[Math.floor(r() * p.length)]! ^= 1 << Math.floor(r() * 8);
    else if (k < 0.7 && p.length > 0) p[Math.floor(r() * p.length)] = Math.floor(r() * 256);
    else if (k < 0.85) p = p.slice(0, Math.floor(r() * (p.length + 1)));
    else p = concat(p, Uint8Array.from({ length: Math.floor(r() * 24) }, () => Math.floor(r() * 256)));
  }
  if (r() < 0.5) fixUp(p);
  return p;
}

describe('fuzz: IPv6 wire parsers and link services', () => {
  it('random bytes: nothing throws, reasons from the fixed sets', () => {
    const r = mulberry32(0x1f6);
    const o = new Outcomes();
    const guest = new GuestIPv6Addresses(cfg);
    for (let i = 0; i < 15000; i++) {
      const n = Math.floor(r() * (i % 10 === 0 ? 1500 : 120));
      const b = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
      if (b.length > 0 && r() < 0.7) b[0] = 0x60 | (b[0]! & 0x0f); // mostly version 6
      if (b.length >= 40 && r() < 0.5) fixUp(b); // and often a consistent payload length
      run(o, b, guest, GUEST_MAC);
      const d = parseDhcpv6(b);
      if (typeof d === 'string') reason(o, 'dhcpv6', d);
      const l = parseDomainList(b.subarray(0, 300), r() < 0.5);
      if (typeof l === 'string') reason(o, 'domainList', l);
      else expect(l.length).toBeLessThanOrEqual(32);
      const src = b.length >= 16 ? b.subarray(0, 16) : GUEST_IP6;
      const u = parseUdpIPv6(b, src, GATEWAY_IP6, r() < 0.5);
      if (typeof u === 'string') reason(o, 'udp', u);
      else expect(u.datagram.length).toBeLessThanOrEqual(b.length);
      const text = String.fromCharCode(...b.subarray(0, 40).map((x) => ':.0123456789abcdef%'.charCodeAt(x % 19)));
      const a = parseIPv6(text);
      if (a !== null) expect(parseIPv6(formatIPv6(a))).toEqual(a);
    }
    expect(o.count('ok:walk')).toBeGreaterThan(1000);
    expect(guest.size).toBeLessThanOrEqual(16);
  });

  it('mutated well-formed packets: every stage reached, nothing throws, replies parse back', () => {
    const r = mulberry32(0x5eed6);
    const o = new Outcomes();
    const guest = new GuestIPv6Addresses(cfg);
    const list = seeds();
    // The seeds themselves go all the way.
    for (const s of list) run(o, s, guest, GUEST_MAC);
    for (let i = 0; i < 40000; i++) {
      const p = mutate(r, list[i % list.length]!);
      run(o, p, guest, r() < 0.05 ? Uint8Array.of(0x33, 0x33, 0, 0, 0, 1) : GUEST_MAC);
    }
    // Evidence that the fuzzing went deep: each stage accepted input and each parser refused it in several ways.
    for (const stage of ['ipv6', 'walk', 'icmpv6', 'ndp', 'ndpDecision', 'udp', 'dhcpv6', 'dhcpv6Decision']) {
      expect(o.count(`ok:${stage}`), stage).toBeGreaterThan(50);
    }
    expect(o.distinct('walk:')).toBeGreaterThanOrEqual(3);
    expect(o.distinct('problem:')).toBeGreaterThanOrEqual(4);
    expect(o.distinct('ndp:')).toBeGreaterThanOrEqual(6);
    expect(o.distinct('dhcpv6:')).toBeGreaterThanOrEqual(8);
    expect(o.distinct('dhcpv6Decision:')).toBeGreaterThanOrEqual(5);
    expect(guest.size).toBeLessThanOrEqual(16);
  });
});
