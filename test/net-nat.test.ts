import { describe, it, expect } from 'vitest';
import { Nat, isLocalAddress } from '../src/net/nat.js';
import { resolveStackConfig } from '../src/net/config.js';
import type { NatDecision } from '../src/net/context.js';
import { ip } from './helpers/packets.js';
import { ip6 } from './helpers/packets6.js';

const base = resolveStackConfig({ dnsUpstreams: [{ address: '127.0.0.53', port: 53 }, { address: '192.0.2.53', port: 53 }] });
const nat = new Nat(base);
const restricted = new Nat({ ...base, restrict: true });
const unmapped = new Nat({ ...base, mapGatewayToLoopback: false });
const noUpstream = new Nat({ ...base, dnsUpstreams: [] });

const host = (address: string, port: number): NatDecision => ({ kind: 'host', address, port });
const dnsHost = (address: string, port: number): NatDecision => ({ kind: 'host', address, port, dnsQueries: true });
const local: NatDecision = { kind: 'local' };
const refuse = (reason: string): NatDecision => ({ kind: 'refuse', reason });

describe('Nat.fromGuest', () => {
  const table: [string, Nat, 'tcp' | 'udp' | 'icmp', string, number, NatDecision][] = [
    ['gateway tcp -> loopback', nat, 'tcp', '10.0.2.2', 22, host('127.0.0.1', 22)],
    ['gateway udp -> loopback', nat, 'udp', '10.0.2.2', 5000, host('127.0.0.1', 5000)],
    ['gateway icmp -> local', nat, 'icmp', '10.0.2.2', 0, local],
    ['gateway dhcp -> local', nat, 'udp', '10.0.2.2', 67, local],
    ['gateway unmapped', unmapped, 'tcp', '10.0.2.2', 22, refuse('gateway_unmapped')],
    ['gateway restricted', restricted, 'tcp', '10.0.2.2', 22, refuse('restricted')],
    ['gateway icmp restricted still local', restricted, 'icmp', '10.0.2.2', 0, local],
    ['dns udp 53 -> forwarder', nat, 'udp', '10.0.2.3', 53, local],
    ['dns tcp 53 -> first upstream, queries only', nat, 'tcp', '10.0.2.3', 53, dnsHost('127.0.0.53', 53)],
    ['dns tcp 53 restricted still served, queries only', restricted, 'tcp', '10.0.2.3', 53, dnsHost('127.0.0.53', 53)],
    ['dns tcp 53 without upstream', noUpstream, 'tcp', '10.0.2.3', 53, refuse('no_dns_upstream')],
    ['dns other port', nat, 'udp', '10.0.2.3', 54, refuse('dns_port')],
    ['dns icmp', nat, 'icmp', '10.0.2.3', 0, local],
    ['other guest-network address', nat, 'tcp', '10.0.2.50', 80, refuse('guest_network')],
    ['network broadcast', nat, 'udp', '10.0.2.255', 137, refuse('broadcast')],
    ['limited broadcast dhcp', nat, 'udp', '255.255.255.255', 67, local],
    ['limited broadcast other', nat, 'udp', '255.255.255.255', 68, refuse('broadcast')],
    ['multicast', nat, 'udp', '224.0.0.251', 5353, refuse('multicast')],
    ['loopback', nat, 'tcp', '127.0.0.1', 80, refuse('loopback')],
    ['this network', nat, 'udp', '0.1.2.3', 80, refuse('this_network')],
    ['world tcp', nat, 'tcp', '192.0.2.10', 443, host('192.0.2.10', 443)],
    ['world udp', nat, 'udp', '198.51.100.7', 123, host('198.51.100.7', 123)],
    ['world icmp', nat, 'icmp', '198.51.100.7', 0, host('198.51.100.7', 0)],
    ['world restricted', restricted, 'udp', '198.51.100.7', 123, refuse('restricted')],
    ['world port 0', nat, 'tcp', '192.0.2.10', 0, refuse('bad_port')],
  ];
  for (const [name, n, proto, dst, port, expected] of table) {
    it(name, () => expect(n.fromGuest(proto, ip(dst), port)).toEqual(expected));
  }
});

describe('Nat.toGuestSource / inboundSource', () => {
  const table: [string, Nat, string, number | null][] = [
    ['loopback is the gateway', nat, '127.0.0.1', ip('10.0.2.2')],
    ['mapped v4 loopback', nat, '::ffff:127.0.0.1', ip('10.0.2.2')],
    ['loopback unmapped', unmapped, '127.0.0.1', null],
    ['other loopback', nat, '127.0.0.2', null],
    ['world', nat, '192.0.2.10', ip('192.0.2.10')],
    ['guest network collision', nat, '10.0.2.7', null],
  ];
  for (const [name, n, addr, expected] of table) it(name, () => expect(n.toGuestSource(addr)).toBe(expected));
  it('inbound: unrepresentable sources appear as the gateway', () => {
    expect(nat.inboundSource('::1')).toBe(ip('10.0.2.2'));
    expect(unmapped.inboundSource('127.0.0.1')).toBe(ip('10.0.2.2'));
    expect(nat.inboundSource('192.0.2.10')).toBe(ip('192.0.2.10'));
  });
  it('inbound over IPv6: loopback and IPv4 peers appear as gateway6', () => {
    expect(nat.inboundSource('::1', 6)).toEqual(ip6('fec0::2'));
    expect(nat.inboundSource('127.0.0.1', 6)).toEqual(ip6('fec0::2'));
    expect(nat.inboundSource('2001:db8::7', 6)).toEqual(ip6('2001:db8::7'));
  });
  it('isLocalAddress', () => {
    expect(isLocalAddress(base, ip('10.0.2.2'))).toBe(true);
    expect(isLocalAddress(base, ip('10.0.2.3'))).toBe(true);
    expect(isLocalAddress(base, ip('10.0.2.15'))).toBe(false);
  });
});

describe('Nat for IPv6', () => {
  const noV6 = new Nat({ ...base, ipv6: false });
  const table: [string, Nat, 'tcp' | 'udp' | 'icmp', string, number, NatDecision][] = [
    ['gateway6 tcp -> ::1', nat, 'tcp', 'fec0::2', 22, host('::1', 22)],
    ['router link-local udp -> ::1', nat, 'udp', 'fe80::2', 5000, host('::1', 5000)],
    ['gateway6 icmp -> local', nat, 'icmp', 'fec0::2', 0, local],
    ['gateway6 dhcpv6 -> local', nat, 'udp', 'fec0::2', 547, local],
    ['gateway6 unmapped', unmapped, 'tcp', 'fec0::2', 22, refuse('gateway_unmapped')],
    ['gateway6 restricted', restricted, 'tcp', 'fec0::2', 22, refuse('restricted')],
    ['dns6 udp 53 -> forwarder', nat, 'udp', 'fec0::3', 53, local],
    ['dns6 tcp 53 -> upstream, queries only', nat, 'tcp', 'fec0::3', 53, dnsHost('127.0.0.53', 53)],
    ['dns6 icmp', restricted, 'icmp', 'fec0::3', 0, local],
    ['other prefix address', nat, 'tcp', 'fec0::99', 80, refuse('guest_network')],
    ['link-local', nat, 'tcp', 'fe80::99', 80, refuse('link_local')],
    ['multicast', nat, 'udp', 'ff02::fb', 5353, refuse('multicast')],
    ['loopback', nat, 'tcp', '::1', 80, refuse('loopback')],
    ['world', nat, 'tcp', '2001:db8::10', 443, host('2001:db8::10', 443)],
    ['world restricted', restricted, 'udp', '2001:db8::10', 123, refuse('restricted')],
    ['IPv6 off', noV6, 'tcp', '2001:db8::10', 443, refuse('ipv6')],
  ];
  for (const [name, n, proto, dst, port, expected] of table) {
    it(name, () => expect(n.fromGuest(proto, ip6(dst), port)).toEqual(expected));
  }
  it('shows ::1 as gateway6, world addresses as themselves, nothing else', () => {
    expect(nat.toGuestSource('::1')).toEqual(ip6('fec0::2'));
    expect(unmapped.toGuestSource('::1')).toBeNull();
    expect(nat.toGuestSource('2001:db8::10')).toEqual(ip6('2001:db8::10'));
    expect(nat.toGuestSource('fe80::1')).toBeNull();
    expect(nat.toGuestSource('fec0::15')).toBeNull();
    expect(noV6.toGuestSource('2001:db8::10')).toBeNull();
    expect(isLocalAddress(base, ip6('fec0::3'))).toBe(true);
    expect(isLocalAddress(base, ip6('fec0::15'))).toBe(false);
  });
});
