/**
 * IPv6 addresses: RFC 4291 text in, RFC 5952 text out (the RFCs' own
 * examples, and Node's URL serializer as an independent oracle for random
 * addresses), prefixes, the special ranges, solicited-node and multicast
 * MACs, EUI-64 (checked against the guest of the libslirp captures).
 */
import { describe, it, expect } from 'vitest';
import { isIPv6 } from 'node:net';
import {
  ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ALL_NODES, ALL_ROUTERS, IPV6_LOOPBACK, IPV6_UNSPECIFIED, addressFromMac, compareIPv6, copyIPv6,
  formatIPv6, interfaceIdFromMac, ipv4MappedAddress, ipv6Equals, ipv6Network, ipv6PrefixMatch, isIPv4Mapped, isLinkLocalIPv6,
  isLoopbackIPv6, isMulticastIPv6, isSolicitedNodeMulticast, isUnicastIPv6, isUnspecifiedIPv6, linkLocalFromMac, mappedIPv4,
  multicastMac, multicastScope, parseIPv6, solicitedNodeMulticast, viewIPv6, writeIPv6,
} from '../src/net/ipv6-address.js';
import { GUEST_MAC, hex, ip, macString } from './helpers/packets.js';
import { mulberry32 } from './helpers/prng.js';
import { ip6 } from './helpers/packets6.js';

describe('IPv6 text', () => {
  it('parses RFC 4291 §2.2 forms into the right bytes', () => {
    expect(parseIPv6('2001:DB8:0:0:8:800:200C:417A')).toEqual(hex('20010db80000000000080800200c417a'));
    expect(parseIPv6('2001:db8::8:800:200c:417a')).toEqual(hex('20010db80000000000080800200c417a'));
    expect(parseIPv6('ff01::101')).toEqual(hex('ff010000000000000000000000000101'));
    expect(parseIPv6('::1')).toEqual(hex('00000000000000000000000000000001'));
    expect(parseIPv6('::')).toEqual(new Uint8Array(16));
    expect(parseIPv6('0:0:0:0:0:0:13.1.68.3')).toEqual(hex('0000000000000000000000000d014403'));
    expect(parseIPv6('::FFFF:129.144.52.38')).toEqual(hex('00000000000000000000ffff81903426'));
    expect(parseIPv6('1::')).toEqual(hex('00010000000000000000000000000000'));
    expect(parseIPv6('1:2:3:4:5:6:7::')).toEqual(hex('00010002000300040005000600070000'));
    expect(parseIPv6('::2:3:4:5:6:7:8')).toEqual(hex('00000002000300040005000600070008'));
  });

  it('refuses malformed text with null', () => {
    for (const bad of [
      '', ':', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', 'g::', '12345::', 'fe80::1%eth0', '::1.2.3',
      '::256.1.1.1', '1.2.3.4::', '1:2:3:4:5:6:7:8::', '1::2:3:4:5:6:7:8', ':1::', '1::2:', '::1.2.3.4:5', '1:2:3:4:5:6:7:1.2.3.4', '::01.2.3.4',
      ' ::1', '::1 ', '[::1]', '0x1::',
    ]) {
      expect(parseIPv6(bad), bad).toBeNull();
    }
  });

  it('formats RFC 5952 canonical text (its §4 examples)', () => {
    const cases: Array<[string, string]> = [
      ['2001:0db8::0001', '2001:db8::1'],
      ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // §4.2.2: one zero group is not compressed
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // §4.2.3: the longest run
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // §4.2.3: the first of equal runs
      ['2001:DB8::AAAA', '2001:db8::aaaa'], // §4.3: lowercase
      ['0:0:0:0:0:0:0:0', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['1:0:0:0:0:0:0:0', '1::'],
      ['fe80:0:0:0:5054:ff:fe12:3456', 'fe80::5054:ff:fe12:3456'],
      ['::ffff:c000:0201', '::ffff:192.0.2.1'], // §5: IPv4-mapped in mixed notation
      ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
    ];
    for (const [input, canonical] of cases) expect(formatIPv6(ip6(input)), input).toBe(canonical);
  });

  it('agrees with Node (URL serializer, net.isIPv6) on random addresses and round-trips', () => {
    const r = mulberry32(6);
    for (let n = 0; n < 3000; n++) {
      const a = new Uint8Array(16);
      // Mostly zero groups so that runs of every length and position occur.
      for (let g = 0; g < 8; g++) {
        if (r() < 0.55) continue;
        a[2 * g] = r() < 0.5 ? 0 : Math.floor(r() * 256);
        a[2 * g + 1] = Math.floor(r() * 256);
      }
      const text = formatIPv6(a);
      expect(parseIPv6(text), text).toEqual(a);
      expect(isIPv6(text), text).toBe(true);
      if (!isIPv4Mapped(a)) expect(text).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
      const upper = text.toUpperCase();
      expect(parseIPv6(upper), upper).toEqual(a);
    }
  });

  it('agrees with net.isIPv6 about which strings are addresses', () => {
    // Valid texts (full, compressed, mixed) with one random edit each: about half stay valid.
    const r = mulberry32(61);
    const alphabet = '0123456789abcdefABCDEF:.';
    const seeds = ['2001:db8::8:800:200c:417a', '::ffff:129.144.52.38', '1:2:3:4:5:6:7:8', '::', 'fe80::1', '1::', '0:0:0:0:0:0:13.1.68.3'];
    let valid = 0;
    for (let n = 0; n < 20000; n++) {
      let s = seeds[n % seeds.length]!;
      const at = Math.floor(r() * (s.length + 1));
      const c = alphabet[Math.floor(r() * alphabet.length)]!;
      const edit = Math.floor(r() * 3);
      s = edit === 0 ? s.slice(0, at) + c + s.slice(at) : edit === 1 ? s.slice(0, at) + s.slice(at + 1) : s.slice(0, at) + c + s.slice(at + 1);
      expect(parseIPv6(s) !== null, s).toBe(isIPv6(s));
      if (isIPv6(s)) valid++;
    }
    expect(valid).toBeGreaterThan(5000);
  });
});

describe('IPv6 address helpers', () => {
  it('equality, order, copies and views', () => {
    const a = ip6('fe80::1');
    const b = ip6('fe80::2');
    expect(ipv6Equals(a, ip6('fe80:0::1'))).toBe(true);
    expect(ipv6Equals(a, b)).toBe(false);
    expect(compareIPv6(a, b)).toBe(-1);
    expect(compareIPv6(b, a)).toBe(1);
    expect(compareIPv6(a, a)).toBe(0);
    expect(compareIPv6(ip6('1::'), ip6('::ffff'))).toBe(1);
    const buf = new Uint8Array(40);
    writeIPv6(buf, 8, b);
    const view = viewIPv6(buf, 8);
    const copy = copyIPv6(buf, 8);
    buf[23] = 9;
    expect(formatIPv6(view)).toBe('fe80::9');
    expect(formatIPv6(copy)).toBe('fe80::2');
  });

  it('prefix match at every length, and the network of a prefix', () => {
    const a = ip6('2001:db8:abcd:12ff::1');
    expect(ipv6PrefixMatch(a, ip6('2001:db8:abcd:1200::'), 56)).toBe(true);
    expect(ipv6PrefixMatch(a, ip6('2001:db8:abcd:1300::'), 56)).toBe(false);
    expect(ipv6PrefixMatch(a, ip6('2001:db8:abcd:1300::'), 55)).toBe(true);
    expect(ipv6PrefixMatch(a, ip6('::'), 0)).toBe(true);
    expect(ipv6PrefixMatch(a, a, 128)).toBe(true);
    expect(ipv6PrefixMatch(a, ip6('2001:db8:abcd:12ff::2'), 128)).toBe(false);
    expect(ipv6PrefixMatch(a, ip6('2001:db8:abcd:12ff::2'), 126)).toBe(true);
    // Bit by bit against a reference on random pairs.
    const r = mulberry32(7);
    for (let n = 0; n < 500; n++) {
      const x = Uint8Array.from({ length: 16 }, () => Math.floor(r() * 256));
      const y = x.slice();
      const flip = Math.floor(r() * 128);
      y[flip >>> 3]! ^= 0x80 >>> (flip & 7);
      for (const len of [flip, flip + 1]) expect(ipv6PrefixMatch(x, y, len)).toBe(len <= flip);
    }
    expect(formatIPv6(ipv6Network(ip6('fec0::5054:ff:fe12:3456'), 64))).toBe('fec0::');
    expect(formatIPv6(ipv6Network(ip6('2001:db8:ffff:ffff::'), 33))).toBe('2001:db8:8000::');
  });

  it('special ranges', () => {
    expect(isUnspecifiedIPv6(IPV6_UNSPECIFIED)).toBe(true);
    expect(isUnspecifiedIPv6(IPV6_LOOPBACK)).toBe(false);
    expect(isLoopbackIPv6(ip6('::1'))).toBe(true);
    expect(isLoopbackIPv6(ip6('::2'))).toBe(false);
    expect(isLinkLocalIPv6(ip6('fe80::1'))).toBe(true);
    expect(isLinkLocalIPv6(ip6('febf::1'))).toBe(true);
    expect(isLinkLocalIPv6(ip6('fec0::1'))).toBe(false);
    expect(isLinkLocalIPv6(ip6('fe7f::1'))).toBe(false);
    expect(isMulticastIPv6(ALL_NODES)).toBe(true);
    expect(isMulticastIPv6(ip6('fe80::1'))).toBe(false);
    expect(multicastScope(ALL_ROUTERS)).toBe(2);
    expect(multicastScope(ip6('ff0e::1'))).toBe(0xe);
    expect(formatIPv6(ALL_DHCP_RELAY_AGENTS_AND_SERVERS)).toBe('ff02::1:2');
    expect(isUnicastIPv6(ip6('fec0::2'))).toBe(true);
    for (const not of ['::', '::1', 'ff02::1', '::ffff:10.0.2.2']) expect(isUnicastIPv6(ip6(not)), not).toBe(false);
  });

  it('IPv4-mapped addresses carry stack IPv4 numbers both ways', () => {
    const m = ipv4MappedAddress(ip('10.0.2.15'));
    expect(formatIPv6(m)).toBe('::ffff:10.0.2.15');
    expect(mappedIPv4(m)).toBe(ip('10.0.2.15'));
    expect(mappedIPv4(ip6('::ffff:255.255.255.255'))).toBe(0xffffffff);
    expect(mappedIPv4(ip6('::10.0.2.15'))).toBeNull();
    expect(mappedIPv4(ip6('fe80::ffff:a00:20f'))).toBeNull();
  });

  it('solicited-node multicast address and multicast MAC (as in the libslirp NDP capture)', () => {
    const sn = solicitedNodeMulticast(ip6('fec0::2'));
    expect(formatIPv6(sn)).toBe('ff02::1:ff00:2');
    expect(isSolicitedNodeMulticast(sn)).toBe(true);
    expect(isSolicitedNodeMulticast(ip6('ff02::1:fe00:2'))).toBe(false);
    expect(isSolicitedNodeMulticast(ip6('ff02::1'))).toBe(false);
    expect(formatIPv6(solicitedNodeMulticast(ip6('2001:db8::abcd:1234:5678')))).toBe('ff02::1:ff34:5678');
    expect(macString(multicastMac(sn))).toBe('33:33:ff:00:00:02');
    expect(macString(multicastMac(ALL_NODES))).toBe('33:33:00:00:00:01');
  });

  it('EUI-64 interface ids (RFC 4291 appendix A): the guest of the captures is fec0::5054:ff:fe12:3456', () => {
    expect(interfaceIdFromMac(GUEST_MAC)).toEqual(hex('5054 00ff fe12 3456'));
    expect(interfaceIdFromMac(hex('02 00 00 00 00 01'))).toEqual(hex('0000 00ff fe00 0001')); // U/L bit flipped back
    expect(formatIPv6(addressFromMac(ip6('fec0::'), GUEST_MAC))).toBe('fec0::5054:ff:fe12:3456');
    expect(formatIPv6(linkLocalFromMac(GUEST_MAC))).toBe('fe80::5054:ff:fe12:3456');
  });
});
