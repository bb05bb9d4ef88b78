/**
 * Neighbor Discovery: the wire layer (RFC 4861 messages and options,
 * RFC 8106 RDNSS/DNSSL) with byte-literal fixtures, validity checks and
 * builder round trips; and the stack's decisions (src/net/ndp.ts) driven
 * frame by frame from Ethernet bytes to the reply frame. The NS of the
 * libslirp capture is answered with the very NA libslirp sent.
 */
import { describe, it, expect } from 'vitest';
import { parseEthernet } from '../src/net/wire/ethernet.js';
import { parseIPv6Packet, walkIPv6Headers } from '../src/net/wire/ipv6.js';
import { parseIcmpv6 } from '../src/net/wire/icmpv6.js';
import {
  MAX_NDP_OPTIONS, buildNeighborAdvertisement, encodeNdpOptions, buildNeighborSolicitation, buildRouterAdvertisement, buildRouterSolicitation,
  ndpHopLimitValid, parseNdp, type NdpMessage, type NdpOptions, type RouterAdvertisement,
} from '../src/net/wire/ndp.js';
import {
  GuestIPv6Addresses, MAX_GUEST_ADDRESSES, MAX_INITIAL_RTR_ADVERT_INTERVAL_MS, ndpInput, routerAdvertisement,
  unsolicitedAdvertisementDelayMs,
} from '../src/net/ndp.js';
import { defaultIpv6LinkConfig, ipv6ReplyFrame, validateIpv6LinkConfig, type Ipv6LinkConfig, type Ipv6LinkReply } from '../src/net/ipv6-link.js';
import { formatIPv6, solicitedNodeMulticast, type IPv6Address } from '../src/net/ipv6-address.js';
import { GUEST_MAC, concat, hex, mac, macString } from './helpers/packets.js';
import {
  DNS_IP6, GATEWAY_IP6, GATEWAY_LL6, GUEST_IP6, GUEST_LL6, NH_ICMPV6, checksum6, guestIpv6Frame, icmpv6Message, ip6, ipv6Packet,
} from './helpers/packets6.js';
import { CORPUS_SKIP_NOTE, ipv6CorpusFrames } from './helpers/corpus6.js';

/** IN_ndp/ndp.pcap #0: the guest asks for fec0::2 (whole frame). */
const CAPTURED_NS = hex(
  '3333ff000002 525400123456 86dd 6000000000203aff fec0000000000000505400fffe123456 ff0200000000000000000001ff000002' +
  '8700 71a0 00000000 fec00000000000000000000000000002 0101 525400123456',
);
/** #1: libslirp answers (R, S, O; its gateway MAC 52:56:00:00:00:02). */
const CAPTURED_NA = hex(
  '525400123456 525600000002 86dd 6000000000203aff fec00000000000000000000000000002 fec0000000000000505400fffe123456' +
  '8800 c347 e0000000 fec00000000000000000000000000002 0201 525600000002',
);
const LIBSLIRP_GATEWAY_MAC = mac('52:56:00:00:00:02');

/** Ethernet frame -> NDP message and packet facts, through the real parsers; throws with the reason otherwise. */
function ndpOf(frame: Uint8Array): { msg: NdpMessage; src: IPv6Address; dst: IPv6Address; ethSrc: Uint8Array; hopLimit: number } {
  const eth = parseEthernet(frame);
  if (typeof eth === 'string') throw new Error(eth);
  const ip = parseIPv6Packet(eth.payload);
  if (typeof ip === 'string') throw new Error(ip);
  const u = walkIPv6Headers(ip);
  if (typeof u === 'string' || u.kind !== 'upper_layer' || u.protocol !== NH_ICMPV6) throw new Error(`not ICMPv6: ${JSON.stringify(u)}`);
  const icmp = parseIcmpv6(u.payload, ip.src, ip.dst);
  if (typeof icmp === 'string') throw new Error(icmp);
  const msg = parseNdp(icmp, ip.src, ip.dst);
  if (typeof msg === 'string') throw new Error(msg);
  return { msg, src: ip.src, dst: ip.dst, ethSrc: eth.src, hopLimit: ip.hopLimit };
}

/** parseNdp on a message built by the independent helper: the message or the reason. */
function parse(type: number, body: Uint8Array, src: IPv6Address = GUEST_LL6, dst: IPv6Address = GATEWAY_LL6, code = 0, parameter = 0): NdpMessage | string {
  const m = icmpv6Message({ src, dst, type, code, parameter, body });
  const icmp = parseIcmpv6(m, src, dst);
  if (typeof icmp === 'string') return `icmp:${icmp}`;
  return parseNdp(icmp, src, dst);
}

function reply(r: Ipv6LinkReply | string): Ipv6LinkReply {
  if (typeof r === 'string') throw new Error(`expected a reply, got '${r}'`);
  return r;
}

function config(overrides: Partial<Ipv6LinkConfig> = {}): Ipv6LinkConfig {
  return { ...defaultIpv6LinkConfig(mac('52:55:0a:00:02:02')), searchDomains: ['example.com'], ...overrides };
}

describe('NDP wire (RFC 4861)', () => {
  it('parses the captured Neighbor Solicitation and Advertisement', () => {
    const ns = ndpOf(CAPTURED_NS);
    expect(ns.hopLimit).toBe(255);
    expect(ns.msg.type).toBe(135);
    if (ns.msg.type !== 135) return;
    expect(formatIPv6(ns.msg.target)).toBe('fec0::2');
    expect(macString(ns.msg.options.sourceLinkLayer!)).toBe('52:54:00:12:34:56');
    const na = ndpOf(CAPTURED_NA);
    if (na.msg.type !== 136) throw new Error('not an NA');
    expect([na.msg.router, na.msg.solicited, na.msg.override]).toEqual([true, true, true]);
    expect(formatIPv6(na.msg.target)).toBe('fec0::2');
    expect(macString(na.msg.options.targetLinkLayer!)).toBe('52:56:00:00:00:02');
  });

  it('a Router Solicitation with its source link-layer option (bytes by hand, §4.1)', () => {
    const rs = parse(133, hex('0101 525400123456'), GUEST_LL6, ip6('ff02::2'));
    expect(rs).toEqual({ type: 133, options: { sourceLinkLayer: GUEST_MAC } });
  });

  it('the Router Advertisement builder writes §4.2/§4.6 and RFC 8106 layouts byte for byte', () => {
    const gw = mac('52:55:0a:00:02:02');
    const built = buildRouterAdvertisement({
      curHopLimit: 64, managed: true, other: true, routerLifetime: 1800, reachableTime: 0, retransTimer: 0,
      options: {
        sourceLinkLayer: gw, mtu: 1500,
        prefixes: [{ prefixLength: 64, onLink: true, autonomous: true, validLifetime: 86400, preferredLifetime: 14400, prefix: ip6('fec0::') }],
        rdnss: [{ lifetime: 1800, servers: [DNS_IP6] }],
        dnssl: [{ lifetime: 1800, domains: ['example.com'] }],
      },
    }, GATEWAY_LL6, ip6('ff02::1'));
    const expected = hex(
      '8600 0000 40c0 0708 00000000 00000000' +
      '0101 52550a000202' +
      '0501 0000 000005dc' +
      '0304 40 c0 00015180 00003840 00000000 fec00000000000000000000000000000' +
      '1903 0000 00000708 fec00000000000000000000000000003' +
      '1f03 0000 00000708 076578616d706c6503636f6d00 000000',
    );
    expect(built.length).toBe(expected.length);
    expect(built.subarray(4)).toEqual(expected.subarray(4));
    expect(built.subarray(0, 2)).toEqual(expected.subarray(0, 2));
    expect(checksum6(GATEWAY_LL6, ip6('ff02::1'), NH_ICMPV6, built)).toBe(0);
  });

  it('builders round-trip through the parser', () => {
    const options: NdpOptions = {
      sourceLinkLayer: GUEST_MAC, mtu: 9000,
      prefixes: [
        { prefixLength: 64, onLink: true, autonomous: false, validLifetime: 0xffffffff, preferredLifetime: 0, prefix: ip6('fd00:1::') },
        { prefixLength: 48, onLink: false, autonomous: true, validLifetime: 5, preferredLifetime: 4, prefix: ip6('2001:db8:1::') },
      ],
      rdnss: [{ lifetime: 60, servers: [DNS_IP6, ip6('2001:4860:4860::8888')] }],
      dnssl: [{ lifetime: 60, domains: ['a.example', 'b.example.org'] }],
      nonce: hex('010203040506'),
    };
    const ra: RouterAdvertisement = {
      type: 134, curHopLimit: 255, managed: false, other: true, routerLifetime: 0xffff, reachableTime: 30000, retransTimer: 1000, options,
    };
    const raBytes = buildRouterAdvertisement(ra, GATEWAY_LL6, GUEST_LL6);
    expect(parse(134, raBytes.subarray(8), GATEWAY_LL6, GUEST_LL6, 0, new DataView(raBytes.buffer).getUint32(4))).toEqual(ra);
    const check = (bytes: Uint8Array, src: IPv6Address, dst: IPv6Address): NdpMessage | string => {
      const icmp = parseIcmpv6(bytes, src, dst);
      return typeof icmp === 'string' ? icmp : parseNdp(icmp, src, dst);
    };
    expect(check(buildRouterSolicitation({ sourceLinkLayer: GUEST_MAC }, GUEST_LL6, ip6('ff02::2')), GUEST_LL6, ip6('ff02::2')))
      .toEqual({ type: 133, options: { sourceLinkLayer: GUEST_MAC } });
    const sn = solicitedNodeMulticast(GATEWAY_IP6);
    expect(check(buildNeighborSolicitation(GATEWAY_IP6, { sourceLinkLayer: GUEST_MAC }, GUEST_IP6, sn), GUEST_IP6, sn))
      .toEqual({ type: 135, target: GATEWAY_IP6, options: { sourceLinkLayer: GUEST_MAC } });
    for (const [router, solicited, override] of [[true, true, true], [false, false, false], [false, true, false]] as const) {
      const na = { type: 136 as const, router, solicited, override, target: GUEST_IP6, options: { targetLinkLayer: GUEST_MAC } };
      expect(check(buildNeighborAdvertisement(na, GUEST_IP6, GATEWAY_IP6), GUEST_IP6, GATEWAY_IP6)).toEqual(na);
    }
  });

  it('validity checks of §6.1 and §7.1 give their reasons', () => {
    const target = (a: IPv6Address): Uint8Array => a; // the 4 reserved bytes are the helper's `parameter`
    const sn = solicitedNodeMulticast(GATEWAY_IP6);
    expect(parse(135, target(GATEWAY_IP6), GUEST_IP6, sn, 1)).toBe('bad_code');
    expect(parse(135, target(GATEWAY_IP6).subarray(0, 15), GUEST_IP6, sn)).toBe('truncated');
    expect(parse(136, target(GATEWAY_IP6).subarray(0, 15), GUEST_IP6, sn)).toBe('truncated');
    expect(parse(134, new Uint8Array(7), GATEWAY_LL6, GUEST_LL6)).toBe('truncated');
    expect(parse(135, target(ip6('ff02::1')), GUEST_IP6, sn)).toBe('multicast_target');
    expect(parse(136, target(ip6('ff02::1')), GUEST_IP6, GATEWAY_IP6)).toBe('multicast_target');
    expect(parse(135, concat(target(GATEWAY_IP6), hex('0100 525400123456')), GUEST_IP6, sn)).toBe('zero_length_option');
    expect(parse(135, concat(target(GATEWAY_IP6), hex('0102 525400123456')), GUEST_IP6, sn)).toBe('truncated_option');
    expect(parse(135, concat(target(GATEWAY_IP6), hex('01')), GUEST_IP6, sn)).toBe('truncated_option');
    expect(parse(135, concat(target(GATEWAY_IP6), hex('0102 525400123456 0000000000000000')), GUEST_IP6, sn)).toBe('bad_link_layer_option');
    // DAD (source ::): only to a solicited-node address, and never with a source link-layer option.
    expect(parse(135, target(GATEWAY_IP6), ip6('::'), GATEWAY_IP6)).toBe('unspecified_source_not_solicited_node');
    expect(parse(135, concat(target(GATEWAY_IP6), hex('0101 525400123456')), ip6('::'), sn)).toBe('unspecified_source_with_link_layer');
    expect(parse(133, hex('0101 525400123456'), ip6('::'), ip6('ff02::2'))).toBe('unspecified_source_with_link_layer');
    expect(parse(134, new Uint8Array(8), GATEWAY_IP6, GUEST_LL6)).toBe('source_not_link_local');
    expect(parse(136, target(GUEST_IP6), GUEST_IP6, ip6('ff02::1'), 0, 0x40000000)).toBe('solicited_to_multicast');
    expect(typeof parse(136, target(GUEST_IP6), GUEST_IP6, ip6('ff02::1'), 0, 0x20000000)).toBe('object');
    const many = concat(target(GATEWAY_IP6), ...Array.from({ length: MAX_NDP_OPTIONS + 1 }, () => hex('c801 000000000000')));
    expect(parse(135, many, GUEST_IP6, sn)).toBe('too_many_options');
    expect(parse(137, new Uint8Array(32), GUEST_IP6, GATEWAY_IP6)).toBe('not_ndp');
    expect(parse(128, new Uint8Array(32), GUEST_IP6, GATEWAY_IP6)).toBe('not_ndp');
    expect(ndpHopLimitValid(255)).toBe(true);
    expect(ndpHopLimitValid(254)).toBe(false);
  });

  it('malformed prefix, MTU, RDNSS and DNSSL options are ignored, unknown options skipped', () => {
    const body = concat(
      new Uint8Array(8),
      hex('0303 40c0 00000001 00000001 00000000 00000000 0000 0000'), // prefix information of length 3 (must be 4)
      hex('0502 0000 000005dc 0000000000000000'), // MTU of length 2
      hex('1902 0000 00000708 0000000000000000'), // RDNSS with no full address
      hex('1f02 0000 00000708 03616263 c000 0000'), // DNSSL with a compression pointer
      hex('fe01 0102 0304 0506'), // unknown
      hex('0101 52550a000202'),
    );
    expect(parse(134, body, GATEWAY_LL6, GUEST_LL6)).toEqual({
      type: 134, curHopLimit: 0, managed: false, other: false, routerLifetime: 0, reachableTime: 0, retransTimer: 0,
      options: { sourceLinkLayer: mac('52:55:0a:00:02:02') },
    });
  });
});

describe('IPv6 link configuration', () => {
  it('the defaults are valid; each inconsistency is refused naming its field', () => {
    expect(() => validateIpv6LinkConfig(config())).not.toThrow();
    const bad: Array<[Partial<Ipv6LinkConfig>, RegExp]> = [
      [{ gatewayMac: mac('33:33:00:00:00:01') }, /gatewayMac/],
      [{ prefixLength: 0 }, /prefixLength/],
      [{ prefixLength: 56 }, /SLAAC needs a \/64/],
      [{ gatewayLinkLocal: ip6('fec0::2') }, /gatewayLinkLocal/],
      [{ gateway: ip6('fe80::2') }, /gateway must be/],
      [{ dns: ip6('fd00::3') }, /dns fd00::3 is outside the prefix/],
      [{ guestAddress: ip6('ff02::1') }, /guestAddress must be/],
      [{ guestAddress: ip6('fec0::2') }, /guestAddress must differ/],
      [{ mtu: 1279 }, /mtu/],
      [{ searchDomains: ['a..b'] }, /search domain 'a..b'/],
      [{ searchDomains: ['exämple.com'] }, /search domain/],
      [{ routerLifetime: 65536 }, /routerLifetime/],
      [{ validLifetime: -1 }, /validLifetime/],
      [{ preferredLifetime: 86401 }, /preferredLifetime must not exceed/],
      [{ maxRtrAdvIntervalMs: 3999 }, /maxRtrAdvIntervalMs/],
    ];
    for (const [overrides, message] of bad) expect(() => validateIpv6LinkConfig(config(overrides)), message.source).toThrow(message);
    expect(() => validateIpv6LinkConfig(config({ prefixLength: 56, slaac: false }))).not.toThrow();
  });

  it('the search list must leave the RA within the MTU (computed size = built size)', () => {
    const domains = (n: number): string[] => Array.from({ length: n }, (_, i) => `${'a'.repeat(60)}.ex${i.toString().padStart(3, '0')}`);
    const fits = config({ mtu: 1280, searchDomains: domains(16) });
    expect(() => validateIpv6LinkConfig(fits)).not.toThrow();
    expect(40 + routerAdvertisement(fits).payload.length).toBe(40 + 88 + 8 + 16 * 68); // each name: 1 + 60 + 1 + 5 + 1 bytes
    expect(() => validateIpv6LinkConfig(config({ mtu: 1280, searchDomains: domains(17) }))).toThrow(/larger than the MTU/);
    expect(() => validateIpv6LinkConfig(config({ mtu: 1500, searchDomains: domains(17) }))).not.toThrow();
  });

  it('options too long for their one-byte length field are left out rather than wrapped', () => {
    const servers = Array.from({ length: 128 }, () => DNS_IP6);
    expect(encodeNdpOptions({ rdnss: [{ lifetime: 1, servers }] }).length).toBe(0);
    expect(encodeNdpOptions({ rdnss: [{ lifetime: 1, servers: servers.slice(1) }] }).length).toBe(255 * 8);
    const names = Array.from({ length: 40 }, (_, i) => `${'b'.repeat(60)}.x${i}`);
    expect(encodeNdpOptions({ dnssl: [{ lifetime: 1, domains: names }] }).length).toBe(0);
  });
});

describe('NDP decisions (src/net/ndp.ts)', () => {
  const now = 1000;

  function answer(cfg: Ipv6LinkConfig, frame: Uint8Array, guest = new GuestIPv6Addresses(cfg)): Ipv6LinkReply | string {
    const n = ndpOf(frame);
    expect(ndpHopLimitValid(n.hopLimit)).toBe(true);
    return ndpInput(cfg, n.msg, n, guest, now);
  }

  function guestNdpFrame(src: IPv6Address, dst: IPv6Address, message: Uint8Array, dstMac?: Uint8Array): Uint8Array {
    return guestIpv6Frame(ipv6Packet({ src, dst, nextHeader: NH_ICMPV6, hopLimit: 255, payload: message }), dstMac);
  }

  it('the captured NS is answered with the very NA libslirp sent', () => {
    const cfg = config({ gatewayMac: LIBSLIRP_GATEWAY_MAC });
    const guest = new GuestIPv6Addresses(cfg);
    expect(ipv6ReplyFrame(reply(answer(cfg, CAPTURED_NS, guest)))).toEqual(CAPTURED_NA);
    expect(guest.lookup(GUEST_IP6)).toMatchObject({ learnedFrom: 'ns', mac: GUEST_MAC, firstSeen: now });
  });

  it('answers for the router\'s link-local and the DNS address; unicast NUD without an option goes to the Ethernet source', () => {
    const cfg = config();
    for (const target of [GATEWAY_LL6, DNS_IP6]) {
      const sn = solicitedNodeMulticast(target);
      const ns = buildNeighborSolicitation(target, { sourceLinkLayer: GUEST_MAC }, GUEST_LL6, sn);
      const r = reply(answer(cfg, guestNdpFrame(GUEST_LL6, sn, ns)));
      expect([formatIPv6(r.src), formatIPv6(r.dst), macString(r.dstMac), r.hopLimit]).toEqual([formatIPv6(target), 'fe80::5054:ff:fe12:3456', '52:54:00:12:34:56', 255]);
      const na = ndpOf(ipv6ReplyFrame(r)).msg;
      expect(na).toEqual({ type: 136, router: true, solicited: true, override: true, target, options: { targetLinkLayer: cfg.gatewayMac } });
    }
    const nud = buildNeighborSolicitation(GATEWAY_IP6, {}, GUEST_IP6, GATEWAY_IP6);
    const r = reply(answer(cfg, guestNdpFrame(GUEST_IP6, GATEWAY_IP6, nud)));
    expect([formatIPv6(r.dst), macString(r.dstMac)]).toEqual(['fec0::5054:ff:fe12:3456', macString(GUEST_MAC)]);
  });

  it('does not answer for other addresses, to the wrong destination, or from outside the link', () => {
    const cfg = config();
    const guest = new GuestIPv6Addresses(cfg);
    const other = ip6('fec0::99');
    const ns = buildNeighborSolicitation(other, { sourceLinkLayer: GUEST_MAC }, GUEST_IP6, solicitedNodeMulticast(other));
    expect(answer(cfg, guestNdpFrame(GUEST_IP6, solicitedNodeMulticast(other), ns), guest)).toBe('ns_not_ours');
    expect(guest.lookup(GUEST_IP6)?.learnedFrom).toBe('ns'); // the asker is still learned
    const wrong = solicitedNodeMulticast(other);
    const nsWrong = buildNeighborSolicitation(GATEWAY_IP6, {}, GUEST_IP6, wrong);
    expect(answer(cfg, guestNdpFrame(GUEST_IP6, wrong, nsWrong))).toBe('ns_wrong_destination');
    const offLink = ip6('2001:db8::1');
    const nsOff = buildNeighborSolicitation(GATEWAY_IP6, {}, offLink, solicitedNodeMulticast(GATEWAY_IP6));
    expect(answer(cfg, guestNdpFrame(offLink, solicitedNodeMulticast(GATEWAY_IP6), nsOff))).toBe('ns_bad_source');
    const spoof = buildNeighborSolicitation(GATEWAY_IP6, {}, DNS_IP6, solicitedNodeMulticast(GATEWAY_IP6));
    expect(answer(cfg, guestNdpFrame(DNS_IP6, solicitedNodeMulticast(GATEWAY_IP6), spoof))).toBe('ns_bad_source');
  });

  it('DAD probes: the guest\'s tentative address is recorded, unanswered; a probe for ours gets an NA to all-nodes', () => {
    const cfg = config();
    const guest = new GuestIPv6Addresses(cfg);
    const sn = solicitedNodeMulticast(GUEST_LL6);
    const probe = buildNeighborSolicitation(GUEST_LL6, {}, ip6('::'), sn);
    expect(answer(cfg, guestNdpFrame(ip6('::'), sn, probe, mac('33:33:ff:12:34:56')), guest)).toBe('dad_probe');
    expect(guest.lookup(GUEST_LL6)).toMatchObject({ learnedFrom: 'dad', mac: GUEST_MAC });
    expect(guest.size).toBe(1);
    const offPrefix = ip6('2001:db8::5');
    const snOff = solicitedNodeMulticast(offPrefix);
    expect(answer(cfg, guestNdpFrame(ip6('::'), snOff, buildNeighborSolicitation(offPrefix, {}, ip6('::'), snOff)), guest))
      .toBe('dad_probe_not_guest_address');
    const snGw = solicitedNodeMulticast(GATEWAY_IP6);
    const conflict = reply(answer(cfg, guestNdpFrame(ip6('::'), snGw, buildNeighborSolicitation(GATEWAY_IP6, {}, ip6('::'), snGw)), guest));
    expect([formatIPv6(conflict.src), formatIPv6(conflict.dst), macString(conflict.dstMac)]).toEqual(['fec0::2', 'ff02::1', '33:33:00:00:00:01']);
    expect(ndpOf(ipv6ReplyFrame(conflict)).msg).toMatchObject({ type: 136, solicited: false, override: true, target: GATEWAY_IP6 });
    expect(guest.size).toBe(1);
  });

  it('RS gets the RA: M/O flags, router lifetime, prefix, MTU, RDNSS, DNSSL; from :: it goes to all-nodes', () => {
    const cfg = config({ mtu: 1400, searchDomains: ['example.com', 'corp.example'] });
    const guest = new GuestIPv6Addresses(cfg);
    const rs = buildRouterSolicitation({ sourceLinkLayer: GUEST_MAC }, GUEST_LL6, ip6('ff02::2'));
    const r = reply(answer(cfg, guestNdpFrame(GUEST_LL6, ip6('ff02::2'), rs, mac('33:33:00:00:00:02')), guest));
    expect([formatIPv6(r.src), formatIPv6(r.dst), macString(r.srcMac), macString(r.dstMac), r.hopLimit])
      .toEqual(['fe80::2', 'fe80::5054:ff:fe12:3456', '52:55:0a:00:02:02', '52:54:00:12:34:56', 255]);
    expect(ndpOf(ipv6ReplyFrame(r)).msg).toEqual({
      type: 134, curHopLimit: 64, managed: true, other: true, routerLifetime: 1800, reachableTime: 0, retransTimer: 0,
      options: {
        sourceLinkLayer: cfg.gatewayMac, mtu: 1400,
        prefixes: [{ prefixLength: 64, onLink: true, autonomous: true, validLifetime: 86400, preferredLifetime: 14400, prefix: ip6('fec0::') }],
        rdnss: [{ lifetime: 1800, servers: [DNS_IP6] }],
        dnssl: [{ lifetime: 1800, domains: ['example.com', 'corp.example'] }],
      },
    });
    expect(guest.lookup(GUEST_LL6)?.learnedFrom).toBe('rs');
    const anon = buildRouterSolicitation({}, ip6('::'), ip6('ff02::2'));
    const m = reply(answer(cfg, guestNdpFrame(ip6('::'), ip6('ff02::2'), anon, mac('33:33:00:00:00:02'))));
    expect([formatIPv6(m.dst), macString(m.dstMac)]).toEqual(['ff02::1', '33:33:00:00:00:01']);
    expect(m.payload).toEqual(routerAdvertisement(cfg).payload);
  });

  it('RA variants: stateless DHCPv6, no SLAAC, no search domains', () => {
    const cfg = config({ dhcpv6Addresses: false, slaac: false, searchDomains: [] });
    const ra = ndpOf(ipv6ReplyFrame(routerAdvertisement(cfg))).msg;
    if (ra.type !== 134) throw new Error('not an RA');
    expect([ra.managed, ra.other]).toEqual([false, true]);
    expect(ra.options.prefixes![0]!.autonomous).toBe(false);
    expect(ra.options.dnssl).toBeUndefined();
  });

  it('NA and RA from the guest', () => {
    const cfg = config();
    const guest = new GuestIPv6Addresses(cfg);
    const na = buildNeighborAdvertisement({ router: false, solicited: false, override: true, target: GUEST_IP6, options: { targetLinkLayer: GUEST_MAC } }, GUEST_IP6, ip6('ff02::1'));
    expect(answer(cfg, guestNdpFrame(GUEST_IP6, ip6('ff02::1'), na), guest)).toBe('na_learned');
    expect(guest.lookup(GUEST_IP6)?.learnedFrom).toBe('na');
    const conflict = buildNeighborAdvertisement({ router: false, solicited: false, override: true, target: DNS_IP6, options: {} }, GUEST_IP6, ip6('ff02::1'));
    expect(answer(cfg, guestNdpFrame(GUEST_IP6, ip6('ff02::1'), conflict), guest)).toBe('na_address_conflict');
    const ra = buildRouterAdvertisement({ curHopLimit: 64, managed: false, other: false, routerLifetime: 1800, reachableTime: 0, retransTimer: 0, options: {} }, GUEST_LL6, ip6('ff02::1'));
    expect(answer(cfg, guestNdpFrame(GUEST_LL6, ip6('ff02::1'), ra), guest)).toBe('ra_from_guest');
  });

  it('the learned-address table is bounded: the least recently seen entry makes room', () => {
    const cfg = config();
    const guest = new GuestIPv6Addresses(cfg);
    for (let i = 0; i < MAX_GUEST_ADDRESSES + 4; i++) {
      expect(guest.learn(ip6(`fec0::${(i + 1).toString(16)}:1`), GUEST_MAC, 'source', i)).toBe(true);
      if (i === 2) guest.learn(ip6('fec0::1:1'), mac('52:54:00:00:00:01'), 'source', 100); // refresh the first
    }
    expect(guest.size).toBe(MAX_GUEST_ADDRESSES);
    expect(guest.lookup(ip6('fec0::1:1'))?.mac).toEqual(mac('52:54:00:00:00:01'));
    for (const gone of ['fec0::2:1', 'fec0::3:1', 'fec0::4:1', 'fec0::5:1']) expect(guest.lookup(ip6(gone)), gone).toBeUndefined();
    for (const kept of ['fec0::6:1', 'fec0::10:1', 'fec0::14:1']) expect(guest.lookup(ip6(kept)), kept).toBeDefined();
    for (const no of ['::', 'ff02::1', 'fec0::2', 'fe80::2', 'fec0::3', '2001:db8::1', '::1']) {
      expect(guest.learn(ip6(no), GUEST_MAC, 'source', 200), no).toBe(false);
    }
    expect(guest.learn(ip6('fec0::abcd'), mac('33:33:00:00:00:01'), 'source', 200)).toBe(false);
    guest.forget(ip6('fec0::1:1'));
    expect(guest.size).toBe(MAX_GUEST_ADDRESSES - 1);
  });

  it('unsolicited RA spacing (RFC 4861 §6.2.4)', () => {
    const cfg = config();
    expect(unsolicitedAdvertisementDelayMs(cfg, 0, 0)).toBe(MAX_INITIAL_RTR_ADVERT_INTERVAL_MS);
    expect(unsolicitedAdvertisementDelayMs(cfg, 2, 0.99)).toBe(MAX_INITIAL_RTR_ADVERT_INTERVAL_MS);
    expect(unsolicitedAdvertisementDelayMs(cfg, 3, 0)).toBe(200_000);
    expect(unsolicitedAdvertisementDelayMs(cfg, 10, 0.5)).toBe(400_000);
    expect(unsolicitedAdvertisementDelayMs({ ...cfg, maxRtrAdvIntervalMs: 9000 }, 0, 0.5)).toBe(6000);
  });
});

describe.skipIf(ipv6CorpusFrames() === null)(`corpus replay: NDP in the libslirp captures (${CORPUS_SKIP_NOTE})`, () => {
  it('every NDP frame parses with its expected type and options; each guest NS is answered as libslirp did', () => {
    const frames = ipv6CorpusFrames() ?? [];
    const cfg = config({ gatewayMac: LIBSLIRP_GATEWAY_MAC });
    const seen: string[] = [];
    frames.forEach((f, i) => {
      if (f.upper?.protocol !== NH_ICMPV6 || f.upper.payload[0]! < 133 || f.upper.payload[0]! > 137) return;
      const n = ndpOf(f.frame);
      expect(ndpHopLimitValid(n.hopLimit), f.name).toBe(true);
      seen.push(`${f.name} ${n.msg.type}`);
      if (n.msg.type === 135) {
        expect(n.msg.options.sourceLinkLayer, f.name).toEqual(GUEST_MAC);
        const r = ndpInput(cfg, n.msg, n, new GuestIPv6Addresses(cfg), 0);
        expect(ipv6ReplyFrame(reply(r)), f.name).toEqual(frames[i + 1]!.frame);
      }
      if (n.msg.type === 136) expect(n.msg.options.targetLinkLayer, f.name).toEqual(LIBSLIRP_GATEWAY_MAC);
    });
    expect(seen).toEqual(['IN_icmp6/ndp.pcap#0 135', 'IN_icmp6/ndp.pcap#1 136']);
  });
});
