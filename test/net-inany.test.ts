import { describe, expect, it } from 'vitest';
import { inanyEqual, inanyFamily, inanyOwned, inanySum16, inanyToString, inanyWord, parseInAny } from '../src/net/inany.js';
import { pseudoHeaderSum } from '../src/net/wire/checksum.js';

describe('InAny: one address type for both families', () => {
  it('IPv4 is the u32 number; IPv4-mapped IPv6 text becomes that number', () => {
    expect(parseInAny('10.0.2.15')).toBe(0x0a00020f);
    expect(parseInAny('::ffff:127.0.0.1')).toBe(0x7f000001);
    expect(parseInAny('::ffff:7f00:1')).toBe(0x7f000001);
    expect(inanyFamily(0x0a00020f)).toBe(4);
  });

  it('IPv6 text parses to 16 bytes and prints in RFC 5952 form', () => {
    const a = parseInAny('2001:DB8:0:0:1::1');
    expect(a).toBeInstanceOf(Uint8Array);
    expect(inanyFamily(a!)).toBe(6);
    expect(inanyToString(a!)).toBe('2001:db8::1:0:0:1');
    expect(inanyToString(parseInAny('::1')!)).toBe('::1');
    expect(inanyToString(parseInAny('fe80::')!)).toBe('fe80::');
    expect(inanyToString(parseInAny('1:2:3:4:5:6:7:8')!)).toBe('1:2:3:4:5:6:7:8');
    for (const bad of ['1::2::3', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', '12345::', '1.2.3', '::g']) expect(parseInAny(bad)).toBeNull();
  });

  it('equality, ownership and hash words', () => {
    const a = parseInAny('2001:db8::1') as Uint8Array;
    const owned = inanyOwned(a) as Uint8Array;
    expect(owned).not.toBe(a);
    expect(inanyEqual(a, owned)).toBe(true);
    owned[15] = 2;
    expect(inanyEqual(a, owned)).toBe(false);
    expect(inanyEqual(0x0a00020f, a)).toBe(false);
    expect([0, 1, 2, 3].map((i) => inanyWord(0x0a00020f, i))).toEqual([0, 0, 0xffff, 0x0a00020f]);
    expect(inanyWord(a, 0)).toBe(0x20010db8);
  });

  it('pseudo-header sums: IPv4 as before, IPv6 over the 16-byte addresses (RFC 8200 8.1)', () => {
    expect(pseudoHeaderSum(0x0a00020f, 0x0a000202, 6, 40)).toBe(0x0a00 + 0x020f + 0x0a00 + 0x0202 + 6 + 40);
    const src = parseInAny('2001:db8::1')!;
    const dst = parseInAny('2001:db8::2')!;
    expect(inanySum16(src)).toBe(0x2001 + 0x0db8 + 1);
    expect(pseudoHeaderSum(src, dst, 17, 0x12345)).toBe(inanySum16(src) + inanySum16(dst) + 17 + 1 + 0x2345);
  });
});
