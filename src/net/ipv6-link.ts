/**
 * What the stack's IPv6 link services (NDP router and neighbor, DHCPv6
 * server: ndp.ts, dhcpv6.ts) need to know, and the shape of what they
 * answer.
 *
 * Theory of operation. Those services are decision functions with no I/O:
 * they take a parsed message, the packet's addresses and this
 * configuration, and return an `Ipv6LinkReply` — Ethernet and IPv6
 * addresses, hop limit and the upper-layer bytes (an ICMPv6 message or a
 * UDP datagram, checksums included) — or a string naming why nothing is
 * sent, for a counter. Whoever wires them into the stack turns a reply
 * into a frame (`ipv6ReplyFrame`) and sends it.
 *
 * Defaults follow QEMU's user networking (libslirp): prefix fec0::/64,
 * gateway fec0::2, DNS fec0::3, the router's link-local address fe80::2.
 * (fec0::/10 is the deprecated site-local range, RFC 3879; it is what
 * QEMU guests expect, and a unique local fd00::/8 prefix can be
 * configured.) The address DHCPv6 assigns is prefix::15, after libslirp's
 * first DHCPv4 lease 10.0.2.15; SLAAC guests form their own from the
 * prefix. Lifetimes are those of libslirp's RAs (valid 86400 s, preferred
 * 14400 s) and RFC 8106's advice for RDNSS/DNSSL (at least three times the
 * longest interval between unsolicited RAs).
 *
 * `validateIpv6LinkConfig` checks a configuration once, at start: the
 * decision functions then trust it (a search list too long for one RA, a
 * gateway outside the prefix, SLAAC on a prefix that is not a /64 are
 * refused there, not discovered per packet).
 */
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV6, writeEthernetHeader } from './wire/ethernet.js';
import { IPV6_HEADER_LENGTH, IPV6_MIN_MTU, writeIPv6Header } from './wire/ipv6.js';
import { encodeDomainList, encodeDomainName } from './wire/domain-list.js';
import {
  formatIPv6, ipv6Equals, ipv6PrefixMatch, isLinkLocalIPv6, isUnicastIPv6, parseIPv6, type IPv6Address,
} from './ipv6-address.js';

export interface Ipv6LinkConfig {
  /** The MAC the gateway, DNS and router addresses answer with. */
  gatewayMac: Uint8Array;
  /** The router's link-local address: source of RAs and DHCPv6 replies (default fe80::2). */
  gatewayLinkLocal: IPv6Address;
  /** The gateway inside the prefix (default fec0::2). */
  gateway: IPv6Address;
  /** The DNS forwarder's address (default fec0::3), sent in RDNSS and DHCPv6 option 23. */
  dns: IPv6Address;
  /** The on-link prefix (its first prefixLength bits count) and its length, 64 for SLAAC. */
  prefix: IPv6Address;
  prefixLength: number;
  /** Link MTU advertised in RAs. */
  mtu: number;
  /** DNSSL and DHCPv6 domain list; empty: none sent. */
  searchDomains: string[];
  /** The one address DHCPv6 assigns (IA_NA). */
  guestAddress: IPv6Address;
  /** Prefix A flag: guests may form SLAAC addresses. */
  slaac: boolean;
  /** RA M flag and IA_NA service: DHCPv6 assigns `guestAddress`. When false DHCPv6 is stateless only (RA O flag). */
  dhcpv6Addresses: boolean;
  /** Answer a Solicit carrying Rapid Commit with a Reply at once (RFC 8415 §18.3.1). */
  rapidCommit: boolean;
  /** Seconds. */
  routerLifetime: number;
  validLifetime: number;
  preferredLifetime: number;
  /** RDNSS/DNSSL lifetime, seconds. */
  dnsLifetime: number;
  /** Longest interval between unsolicited RAs, ms (RFC 4861 MaxRtrAdvInterval). */
  maxRtrAdvIntervalMs: number;
}

function address(text: string): IPv6Address {
  const a = parseIPv6(text);
  if (a === null) throw new Error(`bad IPv6 literal ${text}`);
  return a;
}

/** QEMU user-networking-like defaults for a gateway MAC. */
export function defaultIpv6LinkConfig(gatewayMac: Uint8Array): Ipv6LinkConfig {
  return {
    gatewayMac,
    gatewayLinkLocal: address('fe80::2'),
    gateway: address('fec0::2'),
    dns: address('fec0::3'),
    prefix: address('fec0::'),
    prefixLength: 64,
    mtu: 1500,
    searchDomains: [],
    guestAddress: address('fec0::15'),
    slaac: true,
    dhcpv6Addresses: true,
    rapidCommit: true,
    routerLifetime: 1800,
    validLifetime: 86400,
    preferredLifetime: 14400,
    dnsLifetime: 1800,
    maxRtrAdvIntervalMs: 600_000,
  };
}

/** Size of the stack's RA (ICMPv6 message) for this configuration: fixed part, SLLA, MTU, prefix, RDNSS, DNSSL. */
function routerAdvertisementLength(cfg: Ipv6LinkConfig): number {
  const names = encodeDomainList(cfg.searchDomains).length;
  return 16 + 8 + 8 + 32 + 24 + (names === 0 ? 0 : 8 + Math.ceil(names / 8) * 8);
}

/**
 * Check a configuration before the stack uses it: throws an Error naming
 * the bad field (configuration time, never on the packet path), like
 * resolveStackConfig. The RA must fit in one packet of the link MTU, since
 * NDP messages are never fragmented in practice.
 */
export function validateIpv6LinkConfig(cfg: Ipv6LinkConfig): void {
  const fail = (message: string): never => {
    throw new Error(`IPv6 configuration: ${message}`);
  };
  const u32 = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
  if (cfg.gatewayMac.length !== 6 || (cfg.gatewayMac[0]! & 1) !== 0) fail('gatewayMac must be a unicast MAC');
  if (!Number.isInteger(cfg.prefixLength) || cfg.prefixLength < 1 || cfg.prefixLength > 128) fail('prefixLength must be 1..128');
  if (cfg.slaac && cfg.prefixLength !== 64) fail('SLAAC needs a /64 prefix (RFC 4862 §5.5.3, RFC 4291 §2.5.1)');
  if (!isLinkLocalIPv6(cfg.gatewayLinkLocal) || !isUnicastIPv6(cfg.gatewayLinkLocal)) fail('gatewayLinkLocal must be a unicast fe80::/10 address');
  for (const [name, a] of [['gateway', cfg.gateway], ['dns', cfg.dns], ['guestAddress', cfg.guestAddress]] as const) {
    if (!isUnicastIPv6(a) || isLinkLocalIPv6(a)) fail(`${name} must be a unicast address outside fe80::/10`);
    if (!inIpv6Prefix(cfg, a)) fail(`${name} ${formatIPv6(a)} is outside the prefix`);
  }
  if (ipv6Equals(cfg.guestAddress, cfg.gateway) || ipv6Equals(cfg.guestAddress, cfg.dns)) fail('guestAddress must differ from gateway and dns');
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < IPV6_MIN_MTU || cfg.mtu > 65535) fail(`mtu must be ${IPV6_MIN_MTU}..65535`);
  for (const d of cfg.searchDomains) {
    if (encodeDomainName(d) === null || !/^[\x21-\x7e]+$/.test(d)) fail(`search domain '${d}' cannot be encoded (ASCII labels of 1..63 bytes, 255 in all)`);
  }
  if (!Number.isInteger(cfg.routerLifetime) || cfg.routerLifetime < 0 || cfg.routerLifetime > 0xffff) fail('routerLifetime must be 0..65535 s');
  for (const [name, v] of [['validLifetime', cfg.validLifetime], ['preferredLifetime', cfg.preferredLifetime], ['dnsLifetime', cfg.dnsLifetime]] as const) {
    if (!u32(v)) fail(`${name} must be 0..2^32-1 s`);
  }
  if (cfg.preferredLifetime > cfg.validLifetime) fail('preferredLifetime must not exceed validLifetime');
  if (!Number.isInteger(cfg.maxRtrAdvIntervalMs) || cfg.maxRtrAdvIntervalMs < 4000 || cfg.maxRtrAdvIntervalMs > 1_800_000) {
    fail('maxRtrAdvIntervalMs must be 4000..1800000 (RFC 4861 §6.2.1)');
  }
  if (IPV6_HEADER_LENGTH + routerAdvertisementLength(cfg) > cfg.mtu) fail('the search domains make the Router Advertisement larger than the MTU');
}

/** True when `a` is inside the configured prefix. */
export function inIpv6Prefix(cfg: Ipv6LinkConfig, a: IPv6Address): boolean {
  return ipv6PrefixMatch(a, cfg.prefix, cfg.prefixLength);
}

/** A packet to send on the link, as the link services decide it. */
export interface Ipv6LinkReply {
  srcMac: Uint8Array;
  dstMac: Uint8Array;
  src: IPv6Address;
  dst: IPv6Address;
  hopLimit: number;
  /** NEXT_HEADER_ICMPV6 or NEXT_HEADER_UDP. */
  nextHeader: number;
  /** The ICMPv6 message or UDP datagram, checksum included. */
  payload: Uint8Array;
}

/** The Ethernet frame carrying `reply`. */
export function ipv6ReplyFrame(reply: Ipv6LinkReply): Uint8Array {
  const frame = new Uint8Array(ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH + reply.payload.length);
  writeEthernetHeader(frame, reply.dstMac, reply.srcMac, ETHERTYPE_IPV6);
  writeIPv6Header(frame.subarray(ETHERNET_HEADER_LENGTH), {
    src: reply.src, dst: reply.dst, nextHeader: reply.nextHeader, payloadLength: reply.payload.length, hopLimit: reply.hopLimit,
  });
  frame.set(reply.payload, ETHERNET_HEADER_LENGTH + IPV6_HEADER_LENGTH);
  return frame;
}
