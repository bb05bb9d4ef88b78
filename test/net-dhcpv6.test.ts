/**
 * DHCPv6: the wire layer (RFC 8415 messages and options) with real bytes
 * (a Solicit, Advertise and Request of an AVM home router's client, as
 * captured and dissected with Wireshark in the test fixtures of the
 * dhcpkit project), every drop reason, builder round trips; and the
 * server's decisions (src/net/dhcpv6.ts) driven from the guest's Ethernet
 * frame to the reply frame and back through the parsers.
 */
import { describe, it, expect } from 'vitest';
import {
  DHCPV6_ADVERTISE, DHCPV6_CONFIRM, DHCPV6_DECLINE, DHCPV6_INFORMATION_REQUEST, DHCPV6_REBIND, DHCPV6_RELEASE, DHCPV6_RENEW, DHCPV6_REPLY,
  DHCPV6_REQUEST, DHCPV6_SOLICIT, MAX_DHCPV6_OPTIONS, OPTION_IA_PD, OPTION_IA_TA, STATUS_NO_ADDRS_AVAIL, STATUS_NO_PREFIX_AVAIL,
  STATUS_NOT_ON_LINK, STATUS_SUCCESS, STATUS_USE_MULTICAST, buildDhcpv6, duidLinkLayer, encodeDhcpv6Option, parseDhcpv6,
  type Dhcpv6Message,
} from '../src/net/wire/dhcpv6.js';
import { parseEthernet } from '../src/net/wire/ethernet.js';
import { parseIPv6Packet, walkIPv6Headers } from '../src/net/wire/ipv6.js';
import { parseUdpIPv6 } from '../src/net/wire/udp-ipv6.js';
import { answerDhcpv6, serverDuid } from '../src/net/dhcpv6.js';
import { defaultIpv6LinkConfig, ipv6ReplyFrame, type Ipv6LinkConfig } from '../src/net/ipv6-link.js';
import { formatIPv6, type IPv6Address } from '../src/net/ipv6-address.js';
import { GUEST_MAC, concat, hex, mac, macString } from './helpers/packets.js';
import { GATEWAY_LL6, GUEST_IP6, GUEST_LL6, NH_UDP, guestIpv6Frame, ip6, ipv6Packet, udp6Datagram } from './helpers/packets6.js';

const SOLICIT = hex(
  '01f350d60008000200000001000a000300013431c43cb2f1000e00000003000c' +
  'c43cb2f1000000000000000000190029c43cb2f10000000000000000001a0019' +
  '0000000000000000000000000000000000000000000000000000140000000600' +
  '1000170038001f0019000300110052005300100004 00000368',
);
const ADVERTISE = hex(
  '02f350d600030028c43cb2f100000000000000000005001820010db8ffff0001' +
  '000c00000000e09c000001770000025800190029c43cb2f10000000000000000' +
  '001a001900000177000002583820010db8ffccfe000000000000000000000100' +
  '0a000300013431c43cb2f10002000e000100011d1d49cf00137265ca42001400' +
  '00001700102001486048600000000000 0000008888',
);
const REQUEST = hex(
  '03f350d60008000200680001000a000300013431c43cb2f10002000e00010001' +
  '1d1d49cf00137265ca4200030028c43cb2f10000000000000000000500182001' +
  '0db8ffff0001000c00000000e09c000001770000025800190029c43cb2f10000' +
  '000000000000001a001900000177000002583820010db8ffccfe000000000000' +
  '000000001400000006001000170038001f001900030011005200530010000400' +
  '000368',
);
const AVM_CLIENT_ID = hex('000300013431c43cb2f1');
const AVM_SERVER_ID = hex('000100011d1d49cf00137265ca42');
const AVM_ORO = [23, 56, 31, 25, 3, 17, 82, 83];

function parsed(bytes: Uint8Array): Dhcpv6Message {
  const m = parseDhcpv6(bytes);
  if (typeof m === 'string') throw new Error(`does not parse: ${m}`);
  return m;
}

const opt = (code: number, value: string | Uint8Array): Uint8Array => encodeDhcpv6Option(code, typeof value === 'string' ? hex(value) : value);
const header = (type: number): Uint8Array => Uint8Array.of(type, 0x12, 0x34, 0x56);

describe('DHCPv6 wire (RFC 8415)', () => {
  it('parses a captured Solicit: elapsed time, client id, rapid commit, IA_NA, IA_PD, ORO; unknown options skipped', () => {
    expect(parsed(SOLICIT)).toEqual({
      type: DHCPV6_SOLICIT, transactionId: 0xf350d6, elapsedTime: 0, clientId: AVM_CLIENT_ID, rapidCommit: true,
      iaNa: [{ iaid: 0xc43cb2f1, t1: 0, t2: 0, addresses: [] }],
      otherIas: [{ code: OPTION_IA_PD, iaid: 0xc43cb2f1 }],
      oro: AVM_ORO,
    });
  });

  it('parses the captured Advertise and Request (IAADDR with lifetimes, a DUID-LLT server id, DNS servers)', () => {
    const address = { address: ip6('2001:db8:ffff:1:c::e09c'), preferredLifetime: 375, validLifetime: 600 };
    expect(parsed(ADVERTISE)).toEqual({
      type: DHCPV6_ADVERTISE, transactionId: 0xf350d6, clientId: AVM_CLIENT_ID, serverId: AVM_SERVER_ID,
      iaNa: [{ iaid: 0xc43cb2f1, t1: 0, t2: 0, addresses: [address] }],
      otherIas: [{ code: OPTION_IA_PD, iaid: 0xc43cb2f1 }],
      dnsServers: [ip6('2001:4860:4860::8888')],
    });
    expect(parsed(REQUEST)).toEqual({
      type: DHCPV6_REQUEST, transactionId: 0xf350d6, elapsedTime: 104, clientId: AVM_CLIENT_ID, serverId: AVM_SERVER_ID,
      iaNa: [{ iaid: 0xc43cb2f1, t1: 0, t2: 0, addresses: [address] }],
      otherIas: [{ code: OPTION_IA_PD, iaid: 0xc43cb2f1 }],
      oro: AVM_ORO,
    });
  });

  it('DUID-LL of a MAC (RFC 8415 §11.4)', () => {
    expect(duidLinkLayer(mac('52:55:0a:00:02:02'))).toEqual(hex('0003 0001 52550a000202'));
  });

  it('builder round trip with every field it writes', () => {
    const msg: Dhcpv6Message = {
      type: DHCPV6_REPLY, transactionId: 0xabcdef, clientId: AVM_CLIENT_ID, serverId: duidLinkLayer(GUEST_MAC), elapsedTime: 0xffff,
      oro: [23, 24], rapidCommit: true, status: { code: STATUS_SUCCESS, message: 'all fine – ünïcode' },
      iaNa: [
        { iaid: 1, t1: 100, t2: 160, addresses: [{ address: ip6('fec0::15'), preferredLifetime: 200, validLifetime: 300 }] },
        { iaid: 2, t1: 0, t2: 0, addresses: [{ address: ip6('fec0::99'), preferredLifetime: 0, validLifetime: 0, status: { code: 4, message: 'x' } }], status: { code: STATUS_NO_ADDRS_AVAIL, message: '' } },
      ],
      otherIas: [{ code: OPTION_IA_TA, iaid: 3, status: { code: STATUS_NO_ADDRS_AVAIL, message: 'no' } }, { code: OPTION_IA_PD, iaid: 4 }],
      preference: 255, dnsServers: [ip6('fec0::3'), ip6('2001:db8::53')], domainList: ['example.com', 'corp.example'], informationRefreshTime: 86400,
    };
    const bytes = buildDhcpv6(msg);
    // IA_TA/IA_PD keep only their identity when parsed (this server never reads their contents).
    expect(parsed(bytes)).toEqual({ ...msg, otherIas: [{ code: OPTION_IA_TA, iaid: 3 }, { code: OPTION_IA_PD, iaid: 4 }] });
    expect(bytes.subarray(0, 4)).toEqual(hex('07abcdef'));
  });

  it('every malformation has its reason', () => {
    const cases: Array<[string, Uint8Array]> = [
      ['truncated', hex('010000')],
      ['relay_message', concat(Uint8Array.of(12, 0), new Uint8Array(32))],
      ['relay_message', concat(Uint8Array.of(13, 0), new Uint8Array(32))],
      ['truncated_option', concat(header(1), hex('0001 000a 0003'))],
      ['truncated_option', concat(header(1), hex('00'))],
      ['duplicate_option', concat(header(1), opt(1, AVM_CLIENT_ID), opt(1, AVM_CLIENT_ID))],
      ['duplicate_option', concat(header(3), opt(2, AVM_SERVER_ID), opt(2, AVM_SERVER_ID))],
      ['duplicate_option', concat(header(1), opt(8, '0000'), opt(8, '0001'))],
      ['duplicate_option', concat(header(1), opt(14, ''), opt(14, ''))],
      ['duplicate_option', concat(header(1), opt(6, '0017'), opt(6, '0018'))],
      ['duplicate_option', concat(header(7), opt(13, '0000'), opt(13, '0000'))],
      ['bad_duid', concat(header(1), opt(1, '0003'))],
      ['bad_duid', concat(header(1), opt(1, new Uint8Array(131)))],
      ['bad_elapsed_time', concat(header(1), opt(8, '000000'))],
      ['bad_oro', concat(header(1), opt(6, '001700'))],
      ['bad_rapid_commit', concat(header(1), opt(14, '00'))],
      ['bad_status_code', concat(header(7), opt(13, '00'))],
      ['bad_ia_na', concat(header(1), opt(3, '0000000100000000000000'))],
      ['bad_iaaddr', concat(header(3), opt(3, concat(hex('000000010000000000000000'), opt(5, new Uint8Array(23)))))],
      ['too_many_addresses', concat(header(3), opt(3, concat(hex('000000010000000000000000'), ...Array.from({ length: 9 }, () => opt(5, new Uint8Array(24))))))],
      ['duplicate_option', concat(header(7), opt(3, concat(hex('000000010000000000000000'), opt(13, '0000'), opt(13, '0000'))))],
      ['duplicate_option', concat(header(7), opt(3, concat(hex('000000010000000000000000'), opt(5, concat(new Uint8Array(24), opt(13, '0000'), opt(13, '0000'))))))],
      ['truncated_option', concat(header(3), opt(3, concat(hex('000000010000000000000000'), hex('0005 0018'))))],
      ['too_many_ias', concat(header(1), ...Array.from({ length: 9 }, (_, i) => opt(3, concat(Uint8Array.of(0, 0, 0, i), new Uint8Array(8)))))],
      ['too_many_ias', concat(header(1), ...Array.from({ length: 9 }, (_, i) => opt(25, concat(Uint8Array.of(0, 0, 0, i), new Uint8Array(8)))))],
      ['bad_ia', concat(header(1), opt(4, '000001'))],
      ['bad_ia', concat(header(1), opt(25, '00000001 00000000 000000'))],
      ['too_many_options', concat(header(1), ...Array.from({ length: MAX_DHCPV6_OPTIONS + 1 }, () => opt(0x7fff, '')))],
      ['bad_preference', concat(header(2), opt(7, ''))],
      ['bad_dns_servers', concat(header(7), opt(23, new Uint8Array(15)))],
      ['domain_list_compressed_name', concat(header(7), opt(24, '03616263 c000'))],
      ['domain_list_truncated', concat(header(7), opt(24, '0361'))],
      ['bad_information_refresh_time', concat(header(7), opt(32, '000000'))],
    ];
    for (const [reason, bytes] of cases) expect(parseDhcpv6(bytes), reason).toBe(reason);
    // The option bound counts sub-options too: 8 IA_NA of 8 addresses each are 72 options.
    const nested = concat(header(3), ...Array.from({ length: 8 }, (_, i) => opt(3, concat(Uint8Array.of(0, 0, 0, i), new Uint8Array(8), ...Array.from({ length: 8 }, () => opt(5, new Uint8Array(24)))))));
    expect(parseDhcpv6(nested)).toBe('too_many_options');
    expect(typeof parseDhcpv6(concat(header(1), ...Array.from({ length: MAX_DHCPV6_OPTIONS }, () => opt(0x7fff, ''))))).toBe('object');
  });
});

describe('DHCPv6 server decisions (src/net/dhcpv6.ts)', () => {
  const ALL_SERVERS = ip6('ff02::1:2');
  const ALL_SERVERS_MAC = mac('33:33:00:01:00:02');

  function config(overrides: Partial<Ipv6LinkConfig> = {}): Ipv6LinkConfig {
    return { ...defaultIpv6LinkConfig(mac('52:55:0a:00:02:02')), searchDomains: ['example.com'], ...overrides };
  }

  /** The guest's frame carrying `dhcp` from port 546 to 547. */
  function clientFrame(dhcp: Uint8Array, src: IPv6Address = GUEST_LL6, dst: IPv6Address = ALL_SERVERS, dstMac = ALL_SERVERS_MAC): Uint8Array {
    const udp = udp6Datagram({ src, dst, sport: 546, dport: 547, payload: dhcp });
    return guestIpv6Frame(ipv6Packet({ src, dst, nextHeader: NH_UDP, payload: udp, hopLimit: 1 }), dstMac);
  }

  /** Frame -> parsers -> answerDhcpv6 -> frame -> parsers: the reply's addresses and message, or the reason. */
  function exchange(cfg: Ipv6LinkConfig, frame: Uint8Array): { src: string; dst: string; dstMac: string; hopLimit: number; sport: number; dport: number; msg: Dhcpv6Message } | string {
    const up = (f: Uint8Array) => {
      const eth = parseEthernet(f);
      if (typeof eth === 'string') throw new Error(eth);
      const ip = parseIPv6Packet(eth.payload);
      if (typeof ip === 'string') throw new Error(ip);
      const u = walkIPv6Headers(ip);
      if (typeof u === 'string' || u.kind !== 'upper_layer' || u.protocol !== NH_UDP) throw new Error('not UDP');
      const udp = parseUdpIPv6(u.payload, ip.src, ip.dst);
      if (typeof udp === 'string') throw new Error(udp);
      return { eth, ip, udp, msg: parsed(udp.payload) };
    };
    const q = up(frame);
    const r = answerDhcpv6(cfg, q.msg, { src: q.ip.src, dst: q.ip.dst, ethSrc: q.eth.src });
    if (typeof r === 'string') return r;
    const a = up(ipv6ReplyFrame(r));
    expect(macString(a.eth.src)).toBe(macString(cfg.gatewayMac));
    return {
      src: formatIPv6(a.ip.src), dst: formatIPv6(a.ip.dst), dstMac: macString(a.eth.dst), hopLimit: a.ip.hopLimit,
      sport: a.udp.srcPort, dport: a.udp.dstPort, msg: a.msg,
    };
  }

  function replyTo(cfg: Ipv6LinkConfig, frame: Uint8Array): Dhcpv6Message {
    const r = exchange(cfg, frame);
    if (typeof r === 'string') throw new Error(`no reply: ${r}`);
    return r.msg;
  }

  const ours = (cfg: Ipv6LinkConfig) => ({
    serverId: serverDuid(cfg), dnsServers: [cfg.dns], domainList: ['example.com'],
  });
  const lease = (cfg: Ipv6LinkConfig, iaid: number) => ({
    iaid, t1: 7200, t2: 11520, addresses: [{ address: cfg.guestAddress, preferredLifetime: 14400, validLifetime: 86400 }],
  });

  it('the captured Solicit (rapid commit) gets a Reply from fe80::2:547 to the client at its MAC: our address in its IA_NA, its IA_PD declined', () => {
    const cfg = config();
    const r = exchange(cfg, clientFrame(SOLICIT));
    if (typeof r === 'string') throw new Error(r);
    expect([r.src, r.dst, r.dstMac, r.sport, r.dport]).toEqual(['fe80::2', 'fe80::5054:ff:fe12:3456', '52:54:00:12:34:56', 547, 546]);
    expect(r.msg).toEqual({
      type: DHCPV6_REPLY, transactionId: 0xf350d6, clientId: AVM_CLIENT_ID, rapidCommit: true, ...ours(cfg),
      iaNa: [lease(cfg, 0xc43cb2f1)],
      otherIas: [{ code: OPTION_IA_PD, iaid: 0xc43cb2f1 }],
    });
    expect(r.msg.serverId).toEqual(hex('0003 0001 52550a000202'));
  });

  it('without rapid commit (in the config, or in the Solicit) it is an Advertise', () => {
    const noRapid = config({ rapidCommit: false });
    const adv = replyTo(noRapid, clientFrame(SOLICIT));
    expect([adv.type, adv.rapidCommit]).toEqual([DHCPV6_ADVERTISE, undefined]);
    expect(adv.iaNa).toEqual([lease(noRapid, 0xc43cb2f1)]);
    const plain = buildDhcpv6({ type: DHCPV6_SOLICIT, transactionId: 1, clientId: AVM_CLIENT_ID, iaNa: [{ iaid: 9, t1: 0, t2: 0, addresses: [] }] });
    expect(replyTo(config(), clientFrame(plain)).type).toBe(DHCPV6_ADVERTISE);
  });

  it('one address: a second IA_NA gets NoAddrsAvail; a Solicit with no IA_NA a top-level NoAddrsAvail', () => {
    const cfg = config();
    const two = buildDhcpv6({ type: DHCPV6_SOLICIT, transactionId: 2, clientId: AVM_CLIENT_ID, iaNa: [1, 2].map((iaid) => ({ iaid, t1: 0, t2: 0, addresses: [] })) });
    expect(replyTo(cfg, clientFrame(two)).iaNa).toEqual([lease(cfg, 1), { iaid: 2, t1: 0, t2: 0, addresses: [], status: { code: STATUS_NO_ADDRS_AVAIL, message: 'one address per client' } }]);
    const none = buildDhcpv6({ type: DHCPV6_SOLICIT, transactionId: 3, clientId: AVM_CLIENT_ID, otherIas: [{ code: OPTION_IA_TA, iaid: 5 }] });
    const r = replyTo(cfg, clientFrame(none));
    expect([r.iaNa, r.status?.code, r.otherIas]).toEqual([undefined, STATUS_NO_ADDRS_AVAIL, [{ code: OPTION_IA_TA, iaid: 5 }]]);
  });

  it('Request and Renew to us get a Reply; an address the client held elsewhere comes back with lifetimes 0', () => {
    const cfg = config();
    expect(exchange(cfg, clientFrame(REQUEST))).toBe('other_server'); // the captured one was for another server
    const held = { address: ip6('2001:db8:ffff:1:c::e09c'), preferredLifetime: 375, validLifetime: 600 };
    for (const type of [DHCPV6_REQUEST, DHCPV6_RENEW]) {
      const req = buildDhcpv6({ type, transactionId: 4, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), iaNa: [{ iaid: 7, t1: 0, t2: 0, addresses: [held] }] });
      const r = replyTo(cfg, clientFrame(req));
      expect(r.type).toBe(DHCPV6_REPLY);
      expect(r.iaNa).toEqual([{ ...lease(cfg, 7), addresses: [...lease(cfg, 7).addresses, { ...held, preferredLifetime: 0, validLifetime: 0 }] }]);
      expect(r.dnsServers).toEqual([cfg.dns]);
    }
    const renewMine = buildDhcpv6({ type: DHCPV6_RENEW, transactionId: 5, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), iaNa: [lease(cfg, 7)] });
    expect(replyTo(cfg, clientFrame(renewMine)).iaNa).toEqual([lease(cfg, 7)]);
  });

  it('Rebind (no server id) gets a Reply; the server-id rules of §16 are enforced per message type', () => {
    const cfg = config();
    const ia = [{ iaid: 7, t1: 0, t2: 0, addresses: [] }];
    expect(replyTo(cfg, clientFrame(buildDhcpv6({ type: DHCPV6_REBIND, transactionId: 6, clientId: AVM_CLIENT_ID, iaNa: ia }))).iaNa).toEqual([lease(cfg, 7)]);
    const cases: Array<[string, Dhcpv6Message]> = [
      ['unexpected_server_id', { type: DHCPV6_REBIND, transactionId: 6, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), iaNa: ia }],
      ['unexpected_server_id', { type: DHCPV6_SOLICIT, transactionId: 6, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg) }],
      ['missing_client_id', { type: DHCPV6_SOLICIT, transactionId: 6, iaNa: ia }],
      ['missing_client_id', { type: DHCPV6_REQUEST, transactionId: 6, serverId: serverDuid(cfg), iaNa: ia }],
      ['missing_server_id', { type: DHCPV6_RENEW, transactionId: 6, clientId: AVM_CLIENT_ID, iaNa: ia }],
      ['other_server', { type: DHCPV6_RELEASE, transactionId: 6, clientId: AVM_CLIENT_ID, serverId: AVM_SERVER_ID, iaNa: ia }],
      ['not_client_message', { type: DHCPV6_ADVERTISE, transactionId: 6, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg) }],
      ['not_client_message', { type: DHCPV6_REPLY, transactionId: 6, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg) }],
    ];
    for (const [reason, msg] of cases) expect(exchange(cfg, clientFrame(buildDhcpv6(msg))), reason).toBe(reason);
  });

  it('Confirm: Success when every address is on the link, NotOnLink otherwise, nothing without addresses', () => {
    const cfg = config();
    const confirm = (addresses: string[]) => buildDhcpv6({
      type: DHCPV6_CONFIRM, transactionId: 8, clientId: AVM_CLIENT_ID,
      iaNa: [{ iaid: 1, t1: 0, t2: 0, addresses: addresses.map((a) => ({ address: ip6(a), preferredLifetime: 0, validLifetime: 0 })) }],
    });
    expect(replyTo(cfg, clientFrame(confirm(['fec0::15', 'fec0::1234']))).status?.code).toBe(STATUS_SUCCESS);
    expect(replyTo(cfg, clientFrame(confirm(['fec0::15', '2001:db8::1']))).status?.code).toBe(STATUS_NOT_ON_LINK);
    expect(exchange(cfg, clientFrame(confirm([])))).toBe('confirm_without_addresses');
  });

  it('Release and Decline are acknowledged with Success', () => {
    const cfg = config();
    for (const type of [DHCPV6_RELEASE, DHCPV6_DECLINE]) {
      const msg = buildDhcpv6({ type, transactionId: 9, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), iaNa: [lease(cfg, 1)] });
      expect(replyTo(cfg, clientFrame(msg))).toEqual({
        type: DHCPV6_REPLY, transactionId: 9, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), status: { code: STATUS_SUCCESS, message: 'success' },
      });
    }
  });

  it('Information-request (stateless): DNS and domains only; with an IA or another server\'s id it is dropped', () => {
    for (const cfg of [config(), config({ dhcpv6Addresses: false })]) {
      const info = buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 10, clientId: AVM_CLIENT_ID, oro: [23, 24] });
      expect(replyTo(cfg, clientFrame(info))).toEqual({ type: DHCPV6_REPLY, transactionId: 10, clientId: AVM_CLIENT_ID, ...ours(cfg) });
      const anonymous = buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 11 });
      expect(replyTo(cfg, clientFrame(anonymous)).clientId).toBeUndefined();
      const withOurId = buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 12, serverId: serverDuid(cfg) });
      expect(replyTo(cfg, clientFrame(withOurId)).dnsServers).toEqual([cfg.dns]);
      expect(exchange(cfg, clientFrame(buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 13, serverId: AVM_SERVER_ID })))).toBe('other_server');
      expect(exchange(cfg, clientFrame(buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 14, iaNa: [lease(cfg, 1)] })))).toBe('information_request_with_ia');
    }
    const noDomains = config({ searchDomains: [] });
    expect(replyTo(noDomains, clientFrame(buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 15 }))).domainList).toBeUndefined();
  });

  it('stateless configuration ignores messages about addresses', () => {
    const cfg = config({ dhcpv6Addresses: false });
    expect(exchange(cfg, clientFrame(SOLICIT))).toBe('stateless');
    const req = buildDhcpv6({ type: DHCPV6_REQUEST, transactionId: 4, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), iaNa: [lease(cfg, 1)] });
    expect(exchange(cfg, clientFrame(req))).toBe('stateless');
  });

  it('unicast to the server: Solicit/Confirm/Rebind/Information-request dropped, Request/Renew/Release/Decline told UseMulticast (§16, §18.4)', () => {
    const cfg = config();
    const toUs = (msg: Uint8Array) => clientFrame(msg, GUEST_LL6, GATEWAY_LL6, cfg.gatewayMac);
    expect(exchange(cfg, toUs(SOLICIT))).toBe('unicast_to_multicast_only');
    expect(exchange(cfg, toUs(buildDhcpv6({ type: DHCPV6_INFORMATION_REQUEST, transactionId: 1 })))).toBe('unicast_to_multicast_only');
    const req = buildDhcpv6({ type: DHCPV6_RENEW, transactionId: 16, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), iaNa: [lease(cfg, 1)] });
    expect(replyTo(cfg, toUs(req))).toEqual({
      type: DHCPV6_REPLY, transactionId: 16, clientId: AVM_CLIENT_ID, serverId: serverDuid(cfg), status: { code: STATUS_USE_MULTICAST, message: 'use multicast' },
    });
  });

  it('only from the link, only to the servers\' group or to us', () => {
    const cfg = config();
    expect(exchange(cfg, clientFrame(SOLICIT, ip6('2001:db8::1')))).toBe('bad_source');
    expect(exchange(cfg, clientFrame(SOLICIT, GATEWAY_LL6))).toBe('bad_source');
    expect(typeof exchange(cfg, clientFrame(SOLICIT, GUEST_IP6))).toBe('object'); // an in-prefix source is accepted
    expect(exchange(cfg, clientFrame(SOLICIT, GUEST_LL6, ip6('ff05::1:3')))).toBe('not_for_us');
    expect(exchange(cfg, clientFrame(SOLICIT, GUEST_LL6, ip6('fec0::99'), cfg.gatewayMac))).toBe('not_for_us');
    const spoofedMac = concat(clientFrame(SOLICIT).subarray(0, 6), mac('33:33:00:00:00:01'), clientFrame(SOLICIT).subarray(12));
    expect(exchange(cfg, spoofedMac)).toBe('bad_source_mac');
  });

  it('declines an IA_PD with NoPrefixAvail and an IA_TA with NoAddrsAvail in the reply bytes', () => {
    const cfg = config();
    const msg = parsed(buildDhcpv6({ type: DHCPV6_SOLICIT, transactionId: 17, clientId: AVM_CLIENT_ID, rapidCommit: true, otherIas: [{ code: OPTION_IA_PD, iaid: 1 }, { code: OPTION_IA_TA, iaid: 2 }] }));
    const r = answerDhcpv6(cfg, msg, { src: GUEST_LL6, dst: ALL_SERVERS, ethSrc: GUEST_MAC });
    if (typeof r === 'string') throw new Error(r);
    const bytes = r.payload.subarray(8);
    // IA_PD: iaid, T1 0, T2 0, status NoPrefixAvail; IA_TA: iaid, status NoAddrsAvail.
    // Lengths by hand: status = 2 + text; IA_PD = 12 + 4 + status; IA_TA = 4 + 4 + status.
    const iaPd = concat(hex('0019 0026 00000001 00000000 00000000 000d 0016'), Uint8Array.of(0, STATUS_NO_PREFIX_AVAIL), new TextEncoder().encode('no prefix delegation'));
    const iaTa = concat(hex('0004 0020 00000002 000d 0018'), Uint8Array.of(0, STATUS_NO_ADDRS_AVAIL), new TextEncoder().encode('one address per client'));
    const find = (needle: Uint8Array): boolean => Buffer.from(bytes).includes(Buffer.from(needle));
    expect(find(iaPd)).toBe(true);
    expect(find(iaTa)).toBe(true);
  });
});
