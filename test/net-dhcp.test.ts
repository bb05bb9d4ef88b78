import { describe, it, expect } from 'vitest';
import { Stack } from '../src/net/stack.js';
import { CounterSet } from '../src/net/counters.js';
import { FakeLink } from './helpers/fake-link.js';
import { encodeDomainSearch, parseDhcp as parseDhcpWire } from '../src/net/wire/dhcp.js';
import {
  DHCP, GATEWAY_IP, GUEST_IP, GUEST_MAC, DNS_IP, bytes, dhcpMessage, guestDhcpFrame, ip, ipBytes, optionAddresses, optionU32,
  parseDhcp, parseFrame,
} from './helpers/packets.js';

function setup(config: Record<string, unknown> = {}) {
  const link = new FakeLink();
  const counters = new CounterSet();
  let now = 1000;
  const stack = new Stack({ link, counters, clock: { now: () => now }, tcp: null, ping: null, logger: () => {}, config });
  return { link, counters, stack, advance: (ms: number) => (now += ms) };
}

function reply(link: FakeLink) {
  expect(link.sent.length).toBeGreaterThan(0);
  const f = parseFrame(link.sent.shift()!);
  expect(f.ipv4?.checksumOk).toBe(true);
  expect(f.udp?.checksumOk).toBe(true);
  expect(f.udp?.sport).toBe(67);
  expect(f.udp?.dport).toBe(68);
  expect(f.ipv4?.src).toBe(GATEWAY_IP);
  return { frame: f, dhcp: parseDhcp(f.udp!.payload) };
}

const CLIENT_ID = [1, ...GUEST_MAC];

describe('DHCP server', () => {
  it('does the udhcpc handshake (DISCOVER/OFFER, REQUEST/ACK, unicast replies)', () => {
    const { link, counters, stack } = setup();
    const common: [number, number[]][] = [
      [61, CLIENT_ID],
      [57, [0x02, 0x40]],
      [55, [1, 3, 6, 12, 15, 28, 42]],
      [60, Array.from(bytes('udhcp 1.36.1'))],
    ];
    stack.receive(guestDhcpFrame({ xid: 0x1234abcd, options: [[53, [DHCP.DISCOVER]], ...common] }), null);
    const offer = reply(link);
    expect(offer.dhcp.messageType).toBe(DHCP.OFFER);
    expect(offer.dhcp.op).toBe(2);
    expect(offer.dhcp.xid).toBe(0x1234abcd);
    expect(offer.dhcp.yiaddr).toBe(GUEST_IP);
    expect(offer.dhcp.chaddr).toBe('52:54:00:12:34:56');
    // No broadcast flag: unicast to yiaddr at chaddr.
    expect(offer.frame.eth.dst).toBe('52:54:00:12:34:56');
    expect(offer.frame.ipv4?.dst).toBe(GUEST_IP);
    const o = offer.dhcp.options;
    expect(optionAddresses(o.get(54))).toEqual([GATEWAY_IP]);
    expect(optionAddresses(o.get(1))).toEqual([ip('255.255.255.0')]);
    expect(optionAddresses(o.get(3))).toEqual([GATEWAY_IP]);
    expect(optionAddresses(o.get(6))).toEqual([DNS_IP]);
    expect(optionAddresses(o.get(28))).toEqual([ip('10.0.2.255')]);
    expect(optionU32(o.get(51))).toBe(86400);
    expect(optionU32(o.get(58))).toBe(43200);
    expect(optionU32(o.get(59))).toBe(75600);
    expect(Array.from(o.get(26)!)).toEqual([0x05, 0xdc]);
    expect(Array.from(o.get(61)!)).toEqual(CLIENT_ID);
    expect(o.has(12)).toBe(false); // no hostname configured
    // Order: type, server id, lease times, client id, then 55 in the client's order.
    expect(offer.dhcp.order.slice(0, 9)).toEqual([53, 54, 51, 58, 59, 61, 1, 3, 6]);
    expect(offer.dhcp.order.indexOf(28)).toBeLessThan(offer.dhcp.order.indexOf(26));
    expect(offer.frame.udp!.payload.length).toBeGreaterThanOrEqual(300);

    stack.receive(guestDhcpFrame({
      xid: 0x1234abce,
      options: [[53, [DHCP.REQUEST]], [50, ipBytes(GUEST_IP)], [54, ipBytes(GATEWAY_IP)], ...common],
    }), null);
    const ack = reply(link);
    expect(ack.dhcp.messageType).toBe(DHCP.ACK);
    expect(ack.dhcp.yiaddr).toBe(GUEST_IP);
    expect(ack.frame.ipv4?.dst).toBe(GUEST_IP);
    expect(counters.get('dhcp.rx.discover')).toBe(1);
    expect(counters.get('dhcp.tx.ack')).toBe(1);
    expect(stack.dhcp.lease?.mac).toBe('52:54:00:12:34:56');
  });

  it('does the dhclient handshake (broadcast flag, option 55 order, client id, domain search, hostname)', () => {
    const { link, stack } = setup({ hostname: 'vm1', domainSearch: ['example.com', 'lab.example.com'] });
    const prl = [1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42];
    stack.receive(guestDhcpFrame({
      xid: 7, flags: 0x8000,
      options: [[53, [DHCP.DISCOVER]], [61, CLIENT_ID], [55, prl]],
      padTo: 300,
    }), null);
    const offer = reply(link);
    expect(offer.frame.eth.dst).toBe('ff:ff:ff:ff:ff:ff');
    expect(offer.frame.ipv4?.dst).toBe(0xffffffff);
    expect(offer.dhcp.flags).toBe(0x8000);
    // Requested options we have, in the client's order: 1, 28, 3, 15, 6, 119, 12, 26.
    const after = offer.dhcp.order.slice(6);
    expect(after).toEqual([1, 28, 3, 15, 6, 119, 12, 26]);
    expect(new TextDecoder().decode(offer.dhcp.options.get(12))).toBe('vm1');
    expect(new TextDecoder().decode(offer.dhcp.options.get(15))).toBe('example.com');
    // RFC 3397 encoding with a compression pointer for the shared suffix.
    expect(Buffer.from(offer.dhcp.options.get(119)!).toString('hex')).toBe(
      '076578616d706c6503636f6d00' + '036c6162' + 'c000',
    );
    stack.receive(guestDhcpFrame({
      xid: 8, flags: 0x8000,
      options: [[53, [DHCP.REQUEST]], [54, ipBytes(GATEWAY_IP)], [50, ipBytes(GUEST_IP)], [61, CLIENT_ID], [55, prl]],
    }), null);
    const ack = reply(link);
    expect(ack.dhcp.messageType).toBe(DHCP.ACK);
    expect(ack.frame.ipv4?.dst).toBe(0xffffffff);
    // Renewal (ciaddr set, unicast from the client): unicast ACK to ciaddr.
    stack.receive(guestDhcpFrame({
      xid: 9, src: GUEST_IP, dst: GATEWAY_IP, ciaddr: GUEST_IP, dstMac: new Uint8Array([0x52, 0x55, 10, 0, 2, 2]),
      options: [[53, [DHCP.REQUEST]], [61, CLIENT_ID]],
    }), null);
    const renew = reply(link);
    expect(renew.dhcp.messageType).toBe(DHCP.ACK);
    expect(renew.dhcp.ciaddr).toBe(GUEST_IP);
    expect(renew.frame.ipv4?.dst).toBe(GUEST_IP);
  });

  it('NAKs a request for another address (init-reboot), broadcast', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestDhcpFrame({ xid: 5, options: [[53, [DHCP.REQUEST]], [50, ipBytes(ip('192.168.7.20'))]] }), null);
    const nak = reply(link);
    expect(nak.dhcp.messageType).toBe(DHCP.NAK);
    expect(nak.dhcp.yiaddr).toBe(0);
    expect(nak.frame.eth.dst).toBe('ff:ff:ff:ff:ff:ff');
    expect(nak.dhcp.options.has(51)).toBe(false);
    expect(counters.get('dhcp.tx.nak')).toBe(1);
  });

  it('ignores a REQUEST for another server (RFC 2131 4.3.2)', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestDhcpFrame({ xid: 5, options: [[53, [DHCP.REQUEST]], [50, ipBytes(GUEST_IP)], [54, ipBytes(ip('10.0.2.9'))]] }), null);
    expect(link.sent).toHaveLength(0);
    expect(counters.get('dhcp.drop.other_server')).toBe(1);
  });

  it('answers INFORM with an ACK without a lease, unicast to ciaddr', () => {
    const { link, stack } = setup();
    stack.receive(guestDhcpFrame({ xid: 11, src: GUEST_IP, ciaddr: GUEST_IP, options: [[53, [DHCP.INFORM]], [55, [6, 3]]] }), null);
    const ack = reply(link);
    expect(ack.dhcp.messageType).toBe(DHCP.ACK);
    expect(ack.dhcp.yiaddr).toBe(0);
    expect(ack.dhcp.ciaddr).toBe(GUEST_IP);
    expect(ack.frame.ipv4?.dst).toBe(GUEST_IP);
    for (const code of [51, 58, 59]) expect(ack.dhcp.options.has(code)).toBe(false);
    expect(ack.dhcp.order.slice(2, 4)).toEqual([6, 3]);
  });

  it('handles RELEASE and DECLINE', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestDhcpFrame({ xid: 1, options: [[53, [DHCP.REQUEST]], [50, ipBytes(GUEST_IP)]] }), null);
    reply(link);
    expect(stack.dhcp.lease).not.toBeNull();
    stack.receive(guestDhcpFrame({ xid: 2, src: GUEST_IP, ciaddr: GUEST_IP, options: [[53, [DHCP.RELEASE]], [54, ipBytes(GATEWAY_IP)]] }), null);
    expect(stack.dhcp.lease).toBeNull();
    stack.receive(guestDhcpFrame({ xid: 3, options: [[53, [DHCP.DECLINE]], [50, ipBytes(GUEST_IP)]] }), null);
    expect(link.sent).toHaveLength(0);
    expect(counters.get('dhcp.rx.release')).toBe(1);
    expect(counters.get('dhcp.rx.decline')).toBe(1);
  });

  it('drops malformed messages with counted reasons', () => {
    const { link, counters, stack } = setup();
    stack.receive(guestDhcpFrame({ xid: 1, cookie: 0x12345678, options: [[53, [DHCP.DISCOVER]]] }), null);
    // An option running past the end.
    const bad = dhcpMessage({ xid: 1, options: [[53, [DHCP.DISCOVER]]], noEnd: true });
    const truncatedOpt = new Uint8Array(bad.length + 2);
    truncatedOpt.set(bad);
    truncatedOpt[bad.length] = 12;
    truncatedOpt[bad.length + 1] = 40;
    expect(parseDhcpWire(truncatedOpt)).toBe('bad_option');
    stack.receive(guestDhcpFrame({ xid: 1, options: [[55, [1]]] }), null); // no message type (BOOTP)
    stack.receive(guestDhcpFrame({ xid: 1, op: 2, options: [[53, [DHCP.OFFER]]] }), null);
    stack.receive(guestDhcpFrame({ xid: 1, giaddr: ip('10.0.2.9'), options: [[53, [DHCP.DISCOVER]]] }), null);
    expect(link.sent).toHaveLength(0);
    expect(counters.get('dhcp.drop.bad_cookie')).toBe(1);
    expect(counters.get('dhcp.drop.bootp')).toBe(1);
    expect(counters.get('dhcp.drop.not_request')).toBe(1);
    expect(counters.get('dhcp.drop.relayed')).toBe(1);
  });

  it('encodes domain search lists (RFC 3397 example)', () => {
    // RFC 3397 section 3: eng.apple.com, marketing.apple.com
    expect(Buffer.from(encodeDomainSearch(['eng.apple.com', 'marketing.apple.com'])).toString('hex')).toBe(
      '03656e67056170706c6503636f6d00' + '096d61726b6574696e67c004',
    );
  });
});
