/**
 * The IPv6 layer frame by frame through the fake link (src/net/ip/ipv6.ts):
 * NDP (NS answered for the stack's addresses, DAD probes recorded and not
 * answered, RS -> RA, periodic RAs from the tick), ICMPv6 echo to the
 * gateway, extension headers skipped or refused, fragments reassembled,
 * hop limit, asking for the guest's MAC with NS, bounded guest-address
 * table, --restrict for echo, GSO types checked per family, and --no-ipv6.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { fakeLinkStack } from './helpers/stack-rig.js';
import { GATEWAY_IP, GATEWAY_MAC, GUEST_MAC, concat, guestTcpFrame } from './helpers/packets.js';
import {
  DNS_IP6, GATEWAY_IP6, GATEWAY_LL6, GUEST_IP6, GUEST_LL6, NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ICMPV6, NH_ROUTING, fragmentHeader,
  guestIcmpv6Frame, guestIpv6Frame, icmpv6Message, ip6, ipv6Packet, neighborSolicitation, optionsHeader, parseFrame6, routerSolicitation,
  routingHeader,
} from './helpers/packets6.js';
import { solicitedNodeMulticast } from '../src/net/ipv6-address.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function setup(config = {}) {
  return fakeLinkStack(cleanups, { random: () => 0 }, config);
}

const ALL_NODES_MAC = Uint8Array.of(0x33, 0x33, 0, 0, 0, 1);

function echoRequest(dst: Uint8Array, id: number, seq: number, data: Uint8Array, src = GUEST_IP6): Uint8Array {
  return icmpv6Message({ src, dst, type: 128, parameter: (id << 16) | seq, body: data });
}

describe('NDP through the stack', () => {
  it('answers a neighbour solicitation for the gateway, DNS and link-local router addresses with an NA', () => {
    const { link, counters, stack } = setup();
    for (const target of [GATEWAY_IP6, DNS_IP6, GATEWAY_LL6]) {
      const sn = solicitedNodeMulticast(target);
      stack.receive(guestIcmpv6Frame({ src: GUEST_LL6, dst: sn, type: 135, body: neighborSolicitation(target, GUEST_MAC), dstMac: Uint8Array.of(0x33, 0x33, 0xff, sn[13]!, sn[14]!, sn[15]!) }), null);
      const f = parseFrame6(link.sent.pop()!);
      expect(f.checksumOk).toBe(true);
      expect(f.icmp?.type).toBe(136);
      expect(f.src).toEqual(target);
      expect(f.dst).toEqual(GUEST_LL6);
      expect(f.ethDst).toEqual(GUEST_MAC);
      expect(f.hopLimit).toBe(255);
      expect(f.icmp!.parameter >>> 29).toBe(0b111); // router, solicited, override
      expect(f.icmp!.body.subarray(0, 16)).toEqual(target);
      expect(f.icmp!.body.subarray(16, 24)).toEqual(concat(Uint8Array.of(2, 1), GATEWAY_MAC));
    }
    expect(counters.get('ndp.tx.na')).toBe(3);
    expect(stack.guestMac).toEqual(GUEST_MAC);
  });

  it('does not answer duplicate address detection for the guest\'s address, but records it', () => {
    const { link, counters, stack } = setup();
    const sn = solicitedNodeMulticast(GUEST_IP6);
    stack.receive(guestIcmpv6Frame({ src: new Uint8Array(16), dst: sn, type: 135, body: neighborSolicitation(GUEST_IP6) }), null);
    expect(counters.get('ndp.dad_probe')).toBe(1);
    expect(link.sent).toHaveLength(0);
    expect(stack.ipv6!.guestAddresses.lookup(GUEST_IP6)?.learnedFrom).toBe('dad');
  });

  it('answers a router solicitation with an RA carrying the prefix, MTU and RDNSS, unicast to its source or to all-nodes from ::', () => {
    const { link, counters, stack, clock } = setup();
    stack.receive(guestIcmpv6Frame({ src: GUEST_LL6, dst: ip6('ff02::2'), type: 133, body: routerSolicitation(GUEST_MAC), dstMac: Uint8Array.of(0x33, 0x33, 0, 0, 0, 2) }), null);
    const ra = parseFrame6(link.sent.pop()!);
    expect(ra.icmp?.type).toBe(134);
    expect(ra.checksumOk).toBe(true);
    expect(ra.src).toEqual(GATEWAY_LL6);
    expect(ra.dst).toEqual(GUEST_LL6);
    const options = ra.icmp!.body.subarray(8);
    const types: number[] = [];
    for (let i = 0; i + 2 <= options.length && options[i + 1]! > 0; i += options[i + 1]! * 8) {
      types.push(options[i]!);
      if (options[i] === 3) {
        expect(options[i + 2]).toBe(64);
        expect(options[i + 3]! & 0xc0).toBe(0xc0); // on-link, autonomous
        expect(options.subarray(i + 16, i + 32)).toEqual(ip6('fec0::'));
      }
      if (options[i] === 25) expect(options.subarray(i + 8, i + 24)).toEqual(DNS_IP6);
    }
    expect(types).toEqual(expect.arrayContaining([1, 3, 5, 25]));
    clock.t = 10_000;
    stack.receive(guestIcmpv6Frame({ src: new Uint8Array(16), dst: ip6('ff02::2'), type: 133 }), null);
    const multicast = parseFrame6(link.sent.pop()!);
    expect(multicast.dst).toEqual(ip6('ff02::1'));
    expect(multicast.ethDst).toEqual(ALL_NODES_MAC);
    // A second one from :: within 3 s is not answered to all-nodes again.
    stack.receive(guestIcmpv6Frame({ src: new Uint8Array(16), dst: ip6('ff02::2'), type: 133 }), null);
    expect(counters.get('ndp.ra.rate_limited')).toBe(1);
    expect(counters.get('ndp.tx.ra')).toBe(2);
  });

  it('sends unsolicited RAs from the tick once the guest spoke IPv6, the first ones at most 16 s apart', () => {
    const { link, counters, stack, clock } = setup();
    stack.tick(0);
    expect(counters.get('ndp.tx.ra_unsolicited')).toBe(0); // no IPv6 guest yet
    stack.receive(guestIcmpv6Frame({ src: GUEST_LL6, dst: solicitedNodeMulticast(GATEWAY_LL6), type: 135, body: neighborSolicitation(GATEWAY_LL6, GUEST_MAC) }), null);
    link.sent.length = 0;
    clock.t = 1000;
    stack.tick();
    expect(counters.get('ndp.tx.ra_unsolicited')).toBe(1);
    const ra = parseFrame6(link.sent.pop()!);
    expect(ra.icmp?.type).toBe(134);
    expect(ra.dst).toEqual(ip6('ff02::1'));
    clock.t = 16_999;
    stack.tick();
    expect(counters.get('ndp.tx.ra_unsolicited')).toBe(1);
    clock.t = 17_000;
    stack.tick();
    expect(counters.get('ndp.tx.ra_unsolicited')).toBe(2);
  });

  it('asks for an unknown guest MAC with a neighbour solicitation, at most once a second', () => {
    const { link, counters, stack, clock } = setup();
    expect(stack.out.send(GATEWAY_IP6, GUEST_IP6, NH_ICMPV6, new Uint8Array(8))).toBe(false);
    expect(stack.out.send(GATEWAY_IP6, GUEST_IP6, NH_ICMPV6, new Uint8Array(8))).toBe(false);
    expect(link.sent).toHaveLength(1);
    const ns = parseFrame6(link.sent[0]!);
    expect(ns.icmp?.type).toBe(135);
    expect(ns.dst).toEqual(solicitedNodeMulticast(GUEST_IP6));
    expect(ns.icmp!.body.subarray(0, 16)).toEqual(GUEST_IP6);
    clock.t = 1000;
    stack.out.send(GATEWAY_IP6, GUEST_IP6, NH_ICMPV6, new Uint8Array(8));
    expect(counters.get('ndp.tx.ns')).toBe(2);
  });
});

describe('ICMPv6 and IPv6 input', () => {
  it('answers echo to the gateway and the DNS address locally', () => {
    const { link, counters, stack } = setup();
    const data = Uint8Array.from({ length: 56 }, (_, i) => i);
    for (const dst of [GATEWAY_IP6, DNS_IP6]) {
      stack.receive(guestIpv6Frame(ipv6Packet({ dst, nextHeader: NH_ICMPV6, payload: echoRequest(dst, 0x1234, 7, data) })), null);
      const reply = parseFrame6(link.sent.pop()!);
      expect(reply.checksumOk).toBe(true);
      expect(reply.icmp).toMatchObject({ type: 129, code: 0, parameter: (0x1234 << 16) | 7 });
      expect(reply.icmp!.body).toEqual(data);
      expect(reply.src).toEqual(dst);
      expect(reply.dst).toEqual(GUEST_IP6);
      expect(reply.ethDst).toEqual(GUEST_MAC);
    }
    expect(counters.get('icmpv6.echo.local')).toBe(2);
  });

  it('skips padding options and refuses unknown options, routing headers and protocols with a parameter problem', () => {
    const { link, counters, stack } = setup();
    const echo = echoRequest(GATEWAY_IP6, 1, 1, new Uint8Array(8));
    // Hop-by-hop with PadN only, then a destination options header: skipped.
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_HOP_BY_HOP, payload: concat(optionsHeader(NH_DEST_OPTS, []), optionsHeader(NH_ICMPV6, []), echo) })), null);
    expect(parseFrame6(link.sent.pop()!).icmp?.type).toBe(129);
    // An unknown option whose type's high bits are 10: parameter problem code 2 pointing at it.
    const withOption = ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_DEST_OPTS, payload: concat(optionsHeader(NH_ICMPV6, [0x87, 2, 0, 0]), echo) });
    stack.receive(guestIpv6Frame(withOption), null);
    const pp = parseFrame6(link.sent.pop()!);
    expect(pp.icmp).toMatchObject({ type: 4, code: 2, parameter: 42 });
    expect(pp.checksumOk).toBe(true);
    expect(pp.icmp!.body).toEqual(withOption);
    // A routing header with segments left: code 0 at the routing type.
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_ROUTING, payload: concat(routingHeader(NH_ICMPV6, 4, 1), echo) })), null);
    expect(parseFrame6(link.sent.pop()!).icmp).toMatchObject({ type: 4, code: 0, parameter: 42 });
    // An unknown upper layer: code 1 at the Next Header field.
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: 253, payload: new Uint8Array(8) })), null);
    expect(parseFrame6(link.sent.pop()!).icmp).toMatchObject({ type: 4, code: 1, parameter: 6 });
    expect(counters.get('ipv6.drop.unrecognized_option')).toBe(1);
    expect(counters.get('ipv6.drop.routing_header')).toBe(1);
    expect(counters.get('ipv6.drop.protocol')).toBe(1);
  });

  it('reassembles fragments (out of order) and answers the whole echo', () => {
    const { link, counters, stack } = setup();
    const data = Uint8Array.from({ length: 2000 }, (_, i) => i & 0xff);
    const echo = echoRequest(GATEWAY_IP6, 9, 3, data);
    const pieces = [echo.subarray(0, 1232), echo.subarray(1232)];
    const frag = (i: number) => guestIpv6Frame(ipv6Packet({
      dst: GATEWAY_IP6, nextHeader: NH_FRAGMENT, payload: concat(fragmentHeader(NH_ICMPV6, i * 1232, i === 0, 0xabcd), pieces[i]!),
    }));
    stack.receive(frag(1), null);
    expect(link.sent).toHaveLength(0);
    stack.receive(frag(0), null);
    expect(counters.get('ipv6.frag.reassembled')).toBe(1);
    // The reply exceeds the MTU: it comes back in fragments too.
    expect(counters.get('ipv6.tx.fragmented')).toBe(1);
    const parts = link.sent.map(parseFrame6);
    expect(parts.length).toBe(2);
    const whole = concat(...parts.map((p) => p.upper));
    expect(parts.every((p) => p.fragment !== null && p.protocol === NH_ICMPV6)).toBe(true);
    expect(whole[0]).toBe(129);
    expect(whole.subarray(8)).toEqual(data);
    expect(stack.ipv6!.reassembler.pending).toBe(0);
  });

  it('ignores NDP that came in fragments (RFC 6980)', () => {
    const { link, counters, stack } = setup();
    const body = neighborSolicitation(GATEWAY_IP6, GUEST_MAC);
    const ns = icmpv6Message({ src: GUEST_LL6, dst: solicitedNodeMulticast(GATEWAY_IP6), type: 135, body });
    const frag = (off: number, more: boolean, piece: Uint8Array) => guestIpv6Frame(ipv6Packet({
      src: GUEST_LL6, dst: solicitedNodeMulticast(GATEWAY_IP6), hopLimit: 255, nextHeader: NH_FRAGMENT, payload: concat(fragmentHeader(NH_ICMPV6, off, more, 99), piece),
    }));
    stack.receive(frag(0, true, ns.subarray(0, 16)), null);
    stack.receive(frag(16, false, ns.subarray(16)), null);
    expect(counters.get('ipv6.frag.reassembled')).toBe(1);
    expect(counters.get('ndp.drop.fragmented')).toBe(1);
    expect(link.sent).toHaveLength(0);
  });

  it('expires an incomplete datagram with time exceeded (code 1), and answers hop limit 1 to a remote address with code 0', () => {
    const { link, counters, stack, clock } = setup();
    const echo = echoRequest(GATEWAY_IP6, 9, 3, new Uint8Array(64));
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_FRAGMENT, payload: concat(fragmentHeader(NH_ICMPV6, 0, true, 5), echo.subarray(0, 32)) })), null);
    clock.t = 30_000;
    stack.tick();
    expect(counters.get('ipv6.frag.drop.timeout')).toBe(1);
    const te = parseFrame6(link.sent.find((f) => parseFrame6(f).icmp?.type === 3)!);
    expect(te.icmp?.code).toBe(1);
    link.sent.length = 0;
    const remote = ip6('2001:db8::1');
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: remote, nextHeader: NH_ICMPV6, hopLimit: 1, payload: echoRequest(remote, 1, 1, new Uint8Array(8)) })), null);
    expect(parseFrame6(link.sent.pop()!).icmp).toMatchObject({ type: 3, code: 0 });
    expect(counters.get('ipv6.drop.hop_limit_exceeded')).toBe(1);
  });

  it('drops packets from sources the guest may not own and multicast it does not listen to (counted)', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestIpv6Frame(ipv6Packet({ src: ip6('2001:db8::5'), dst: GATEWAY_IP6, nextHeader: NH_ICMPV6, payload: echoRequest(GATEWAY_IP6, 1, 1, new Uint8Array(8), ip6('2001:db8::5')) })), null);
    stack.receive(guestIpv6Frame(ipv6Packet({ src: GATEWAY_IP6, dst: GATEWAY_IP6, nextHeader: NH_ICMPV6, payload: new Uint8Array(8) })), null);
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: ip6('ff02::16'), nextHeader: NH_ICMPV6, payload: new Uint8Array(8) })), null);
    expect(counters.get('ipv6.drop.bad_src')).toBe(2);
    expect(counters.get('ipv6.drop.multicast')).toBe(1);
    expect(link.sent).toHaveLength(0);
  });

  it('keeps a bounded table of guest addresses whatever the guest probes', () => {
    const { link, stack } = setup();
    for (let i = 0; i < 1000; i++) {
      const a = ip6(`fec0::${(i + 0x100).toString(16)}`);
      stack.receive(guestIcmpv6Frame({ src: new Uint8Array(16), dst: solicitedNodeMulticast(a), type: 135, body: neighborSolicitation(a) }), null);
    }
    const table = stack.ipv6!.guestAddresses;
    expect(table.size).toBe(table.capacity);
    expect(table.lookup(ip6('fec0::4e7'))?.learnedFrom).toBe('dad'); // the most recent stays
    expect(link.sent).toHaveLength(0);
  });

  it('under --restrict refuses echo to the world but answers it for the gateway', () => {
    const { link, counters, stack } = setup({ restrict: true });
    const remote = ip6('2001:db8::1');
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: remote, nextHeader: NH_ICMPV6, payload: echoRequest(remote, 1, 1, new Uint8Array(8)) })), null);
    expect(counters.get('icmpv6.drop.nat_restricted')).toBe(1);
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_ICMPV6, payload: echoRequest(GATEWAY_IP6, 1, 1, new Uint8Array(8)) })), null);
    expect(link.sent.map(parseFrame6).map((f) => f.icmp?.type)).toEqual([129]);
  });

  it('drops a GSO frame that is not TCP, or whose gso_type is TCPV4 (counted)', () => {
    const { counters, stack } = setup();
    const offload = (gsoType: number) => ({ needsCsum: false, dataValid: false, csumStart: 0, csumOffset: 0, gsoType, gsoSize: 1400, hdrLen: 74 });
    const echo = guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_ICMPV6, payload: echoRequest(GATEWAY_IP6, 1, 1, new Uint8Array(8)) }));
    stack.receive(echo, offload(4));
    expect(counters.get('ipv6.drop.gso_not_tcp')).toBe(1);
    const syn = guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: 6, payload: new Uint8Array(20) }));
    stack.receive(syn, offload(1));
    expect(counters.get('ipv6.drop.gso_wrong_family')).toBe(1);
    // And the other way round: TCPV6 on an IPv4 packet.
    stack.receive(guestTcpFrame({ dst: GATEWAY_IP, sport: 1, dport: 2, flags: 0x10 }), offload(4));
    expect(counters.get('ipv4.drop.gso_wrong_family')).toBe(1);
  });

  it('drops every IPv6 frame with IPv6 off, counted', () => {
    const { link, counters, stack } = setup({ ipv6: false });
    expect(stack.ipv6).toBeNull();
    stack.receive(guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_ICMPV6, payload: echoRequest(GATEWAY_IP6, 1, 1, new Uint8Array(8)) })), null);
    stack.receive(guestIcmpv6Frame({ src: new Uint8Array(16), dst: ip6('ff02::2'), type: 133 }), null);
    expect(counters.get('eth.drop.ipv6')).toBe(2);
    expect(link.sent).toHaveLength(0);
  });
});
