/**
 * IPv6 address helpers (RFC 4291) over the IPv6 form of InAny
 * (src/net/inany.ts): 16-byte Uint8Arrays, network byte order.
 *
 * Theory of operation. The representation is InAny's, the wire form itself:
 * a Uint8Array of exactly 16 bytes (its text forms, parseIPv6 and
 * formatIPv6, live in inany.ts and are re-exported here). An address read from a packet is a
 * `subarray` view of the packet (no copy; the view object is the only
 * allocation), one kept beyond the packet's life (a table entry, a config
 * field) is an owned copy (`copyIPv6`). Writing an address into a packet
 * is one `set`. Comparison is a 16-step byte loop, prefix matching walks
 * whole bytes then one masked byte. Four u32 words were considered (passt
 * and gVisor use 16 bytes, smoltcp a [u8; 16] too): in JavaScript they
 * would need an object or array per address anyway, and every use would
 * convert back to bytes for the wire. Where a string key is needed (a Map
 * of a few entries, a log line) `formatIPv6` gives the RFC 5952 text.
 *
 * Text forms: `parseIPv6` takes RFC 4291 §2.2 text (hex groups, one `::`,
 * an embedded dotted quad in the last 32 bits, without leading zeros as
 * inet_pton wants) and refuses zone ids and everything else with null;
 * `formatIPv6` writes RFC 5952 canonical text (lowercase, no leading
 * zeros, the longest run of two or more zero groups as `::`, the first of
 * equal runs, and IPv4-mapped addresses as `::ffff:a.b.c.d`, §5).
 *
 * The constants exported here (ALL_NODES ...) are shared Uint8Arrays:
 * never write into them.
 *
 * Nothing here throws on guest-controlled input; functions taking an
 * address expect 16 bytes (wire views guarantee that).
 */

/** An IPv6 address: the IPv6 form of InAny (src/net/inany.ts), exactly 16 bytes, network byte order (a view or an owned copy). */
export type IPv6Address = Uint8Array;

// The representation, its text forms and the IPv4-mapped test live with InAny; re-exported for the IPv6 modules.
import { IPV6_ADDRESS_LENGTH, inanyEqual, ipv6FromGroups, isIPv4Mapped } from './inany.js';

export { IPV6_ADDRESS_LENGTH, formatIPv6, isIPv4Mapped, parseIPv6 } from './inany.js';

/** A fresh owned copy of the 16 bytes at `bytes[offset..]`. */
export function copyIPv6(bytes: Uint8Array, offset = 0): IPv6Address {
  return bytes.slice(offset, offset + IPV6_ADDRESS_LENGTH);
}

/** A view (no copy) of the 16 bytes at `bytes[offset..]`. */
export function viewIPv6(bytes: Uint8Array, offset: number): IPv6Address {
  return bytes.subarray(offset, offset + IPV6_ADDRESS_LENGTH);
}

/** Write `address` into `bytes` at `offset`. */
export function writeIPv6(bytes: Uint8Array, offset: number, address: IPv6Address): void {
  bytes.set(address.subarray(0, IPV6_ADDRESS_LENGTH), offset);
}

/** The unspecified address `::`. */
export const IPV6_UNSPECIFIED: IPv6Address = new Uint8Array(16);
/** `::1`. */
export const IPV6_LOOPBACK: IPv6Address = ipv6FromGroups([0, 0, 0, 0, 0, 0, 0, 1]);
/** All-nodes link-local multicast `ff02::1`. */
export const ALL_NODES: IPv6Address = ipv6FromGroups([0xff02, 0, 0, 0, 0, 0, 0, 1]);
/** All-routers link-local multicast `ff02::2`. */
export const ALL_ROUTERS: IPv6Address = ipv6FromGroups([0xff02, 0, 0, 0, 0, 0, 0, 2]);
/** All_DHCP_Relay_Agents_and_Servers `ff02::1:2` (RFC 8415 §7.1). */
export const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: IPv6Address = ipv6FromGroups([0xff02, 0, 0, 0, 0, 0, 1, 2]);

/** Byte-for-byte equality of two addresses (InAny's equality, under the IPv6 modules' name). */
export const ipv6Equals: (a: IPv6Address, b: IPv6Address) => boolean = inanyEqual;

/** Numeric order (-1, 0, 1), for sorting and tie-breaking. */
export function compareIPv6(a: IPv6Address, b: IPv6Address): number {
  for (let i = 0; i < IPV6_ADDRESS_LENGTH; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** True when the first `prefixLength` bits (0..128) of `address` and `prefix` are equal. */
export function ipv6PrefixMatch(address: IPv6Address, prefix: IPv6Address, prefixLength: number): boolean {
  const whole = prefixLength >>> 3;
  for (let i = 0; i < whole; i++) if (address[i] !== prefix[i]) return false;
  const bits = prefixLength & 7;
  if (bits === 0) return true;
  const mask = (0xff00 >>> bits) & 0xff;
  return (address[whole]! & mask) === (prefix[whole]! & mask);
}

/** `prefix` with the bits after `prefixLength` cleared (a fresh copy). */
export function ipv6Network(prefix: IPv6Address, prefixLength: number): IPv6Address {
  const out = copyIPv6(prefix);
  for (let bit = prefixLength; bit < 128; bit++) out[bit >>> 3] &= ~(0x80 >>> (bit & 7));
  return out;
}

export function isUnspecifiedIPv6(address: IPv6Address): boolean {
  for (let i = 0; i < IPV6_ADDRESS_LENGTH; i++) if (address[i] !== 0) return false;
  return true;
}

export function isLoopbackIPv6(address: IPv6Address): boolean {
  for (let i = 0; i < 15; i++) if (address[i] !== 0) return false;
  return address[15] === 1;
}

/** ff00::/8 */
export function isMulticastIPv6(address: IPv6Address): boolean {
  return address[0] === 0xff;
}

/** The 4-bit scope of a multicast address (2 = link-local, 5 = site, 0xe = global). */
export function multicastScope(address: IPv6Address): number {
  return address[1]! & 0x0f;
}

/** fe80::/10 */
export function isLinkLocalIPv6(address: IPv6Address): boolean {
  return address[0] === 0xfe && (address[1]! & 0xc0) === 0x80;
}

/** The IPv4-mapped address ::ffff:a.b.c.d of an IPv4 address (a number, as everywhere in the stack). */
export function ipv4MappedAddress(ipv4: number): IPv6Address {
  const a = new Uint8Array(IPV6_ADDRESS_LENGTH);
  a[10] = 0xff;
  a[11] = 0xff;
  a[12] = ipv4 >>> 24;
  a[13] = (ipv4 >>> 16) & 0xff;
  a[14] = (ipv4 >>> 8) & 0xff;
  a[15] = ipv4 & 0xff;
  return a;
}

/** The IPv4 address inside an IPv4-mapped address, or null for any other address. */
export function mappedIPv4(address: IPv6Address): number | null {
  if (!isIPv4Mapped(address)) return null;
  return ((address[12]! << 24) | (address[13]! << 16) | (address[14]! << 8) | address[15]!) >>> 0;
}

/**
 * A unicast address a packet may come from or an error may be sent to:
 * not unspecified, not multicast, not loopback, not IPv4-mapped (which
 * never appears on the wire, RFC 4291 §2.5.5.2).
 */
export function isUnicastIPv6(address: IPv6Address): boolean {
  return !isMulticastIPv6(address) && !isUnspecifiedIPv6(address) && !isLoopbackIPv6(address) && !isIPv4Mapped(address);
}

/** The solicited-node multicast address ff02::1:ffXX:XXXX of `address` (RFC 4291 §2.7.1). */
export function solicitedNodeMulticast(address: IPv6Address): IPv6Address {
  const a = new Uint8Array(IPV6_ADDRESS_LENGTH);
  a[0] = 0xff;
  a[1] = 0x02;
  a[11] = 0x01;
  a[12] = 0xff;
  a[13] = address[13]!;
  a[14] = address[14]!;
  a[15] = address[15]!;
  return a;
}

/** True for any ff02::1:ff00:0/104 address. */
export function isSolicitedNodeMulticast(address: IPv6Address): boolean {
  if (address[0] !== 0xff || address[1] !== 0x02) return false;
  for (let i = 2; i < 11; i++) if (address[i] !== 0) return false;
  return address[11] === 0x01 && address[12] === 0xff;
}

/** The Ethernet multicast MAC 33:33:xx:xx:xx:xx of an IPv6 multicast address (RFC 2464 §7). */
export function multicastMac(address: IPv6Address): Uint8Array {
  return Uint8Array.of(0x33, 0x33, address[12]!, address[13]!, address[14]!, address[15]!);
}

/** The modified EUI-64 interface identifier of a 48-bit MAC (RFC 4291 §2.5.1 and appendix A): 8 bytes. */
export function interfaceIdFromMac(mac: Uint8Array): Uint8Array {
  return Uint8Array.of(mac[0]! ^ 0x02, mac[1]!, mac[2]!, 0xff, 0xfe, mac[3]!, mac[4]!, mac[5]!);
}

/** The first 64 bits of `prefix` followed by the EUI-64 interface id of `mac` (SLAAC, RFC 4862 §5.5.3). */
export function addressFromMac(prefix: IPv6Address, mac: Uint8Array): IPv6Address {
  const a = new Uint8Array(IPV6_ADDRESS_LENGTH);
  a.set(prefix.subarray(0, 8), 0);
  a.set(interfaceIdFromMac(mac), 8);
  return a;
}

/** The link-local address fe80::<EUI-64 of mac>. */
export function linkLocalFromMac(mac: Uint8Array): IPv6Address {
  const a = addressFromMac(IPV6_UNSPECIFIED, mac);
  a[0] = 0xfe;
  a[1] = 0x80;
  return a;
}
