/**
 * Neighbor Discovery messages (RFC 4861): Router Solicitation and
 * Advertisement, Neighbor Solicitation and Advertisement, with the options
 * a user-mode router needs (link-layer addresses, prefix information, MTU,
 * RDNSS and DNSSL from RFC 8106, the nonce of RFC 7527).
 *
 * Theory of operation. NDP messages are ICMPv6 messages (icmpv6.ts has
 * checked length and checksum); `parseNdp` takes the ICMPv6 view and the
 * packet's addresses and applies the validity checks of RFC 4861 that do
 * not need the IP layer (§6.1.1, §6.1.2, §7.1.1, §7.1.2): code 0, the fixed
 * part present, every option's length nonzero and inside the message, the
 * target not multicast, an unspecified source only without a source
 * link-layer address option (and, for an NS, only towards a
 * solicited-node address), a Router Advertisement only from a link-local
 * source, the Solicited flag clear in an NA to a multicast address. The
 * hop limit must be 255 (the packet cannot have come through a router):
 * the caller has the IP header and calls `ndpHopLimitValid`.
 *
 * Options: a link-layer address option must be Ethernet's (length 1, six
 * bytes) or the message is dropped, since it would teach a neighbor cache
 * a wrong address; a malformed prefix, MTU, RDNSS or DNSSL option is
 * ignored (RFC 8106 §5.3.1 says so for RDNSS/DNSSL; the others change no
 * state of ours), unknown options are skipped (RFC 4861 §4.6). At most
 * MAX_NDP_OPTIONS options are walked. The parsed options have the same
 * shape as the builders' input, so what is built parses back equal.
 *
 * Builders return whole ICMPv6 messages with their checksum. Options are
 * written in a fixed order: source and target link-layer address, MTU,
 * prefixes, RDNSS, DNSSL, nonce; RDNSS and DNSSL with empty lists, and
 * any option longer than its one-byte length field can say (255 units of 8
 * bytes), are left out.
 */
import { ICMPV6_HEADER_LENGTH, ICMPV6_NEIGHBOR_ADVERTISEMENT, ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_ROUTER_ADVERTISEMENT,
  ICMPV6_ROUTER_SOLICITATION, buildIcmpv6, type Icmpv6View } from './icmpv6.js';
import { encodeDomainList, parseDomainList } from './domain-list.js';
import {
  IPV6_ADDRESS_LENGTH, copyIPv6, isLinkLocalIPv6, isMulticastIPv6, isSolicitedNodeMulticast, isUnspecifiedIPv6, type IPv6Address,
} from '../ipv6-address.js';

export const NDP_OPTION_SOURCE_LINK_LAYER = 1;
export const NDP_OPTION_TARGET_LINK_LAYER = 2;
export const NDP_OPTION_PREFIX_INFORMATION = 3;
export const NDP_OPTION_REDIRECTED_HEADER = 4;
export const NDP_OPTION_MTU = 5;
export const NDP_OPTION_NONCE = 14;
export const NDP_OPTION_RDNSS = 25;
export const NDP_OPTION_DNSSL = 31;

/** Hop limit of every NDP message sent and required of every one received (RFC 4861 §6.1, §7.1). */
export const NDP_HOP_LIMIT = 255;
export const MAX_NDP_OPTIONS = 64;
/** An option's length field counts 8-byte units in one byte. */
export const MAX_OPTION_UNITS = 255;
/** A lifetime of all ones means forever (RFC 4861 §4.6.2, RFC 8106 §5.1). */
export const INFINITE_LIFETIME = 0xffffffff;

export interface PrefixInformation {
  prefixLength: number;
  /** L flag: the prefix is on-link. */
  onLink: boolean;
  /** A flag: usable for stateless address autoconfiguration. */
  autonomous: boolean;
  /** Seconds. */
  validLifetime: number;
  preferredLifetime: number;
  prefix: IPv6Address;
}

export interface NdpOptions {
  /** Six bytes each (Ethernet). */
  sourceLinkLayer?: Uint8Array;
  targetLinkLayer?: Uint8Array;
  mtu?: number;
  prefixes?: PrefixInformation[];
  rdnss?: { lifetime: number; servers: IPv6Address[] }[];
  dnssl?: { lifetime: number; domains: string[] }[];
  /** RFC 7527 nonce (DAD loopback detection), 6 bytes or more. */
  nonce?: Uint8Array;
}

export interface RouterSolicitation {
  type: typeof ICMPV6_ROUTER_SOLICITATION;
  options: NdpOptions;
}

export interface RouterAdvertisementFields {
  curHopLimit: number;
  /** M flag: addresses from DHCPv6. */
  managed: boolean;
  /** O flag: other configuration from DHCPv6. */
  other: boolean;
  /** Seconds; 0: not a default router. */
  routerLifetime: number;
  /** Milliseconds; 0: unspecified. */
  reachableTime: number;
  retransTimer: number;
  options: NdpOptions;
}

export interface RouterAdvertisement extends RouterAdvertisementFields {
  type: typeof ICMPV6_ROUTER_ADVERTISEMENT;
}

export interface NeighborSolicitation {
  type: typeof ICMPV6_NEIGHBOR_SOLICITATION;
  target: IPv6Address;
  options: NdpOptions;
}

export interface NeighborAdvertisementFields {
  /** R flag: the sender is a router. */
  router: boolean;
  /** S flag: in answer to a solicitation. */
  solicited: boolean;
  /** O flag: override a cached link-layer address. */
  override: boolean;
  target: IPv6Address;
  options: NdpOptions;
}

export interface NeighborAdvertisement extends NeighborAdvertisementFields {
  type: typeof ICMPV6_NEIGHBOR_ADVERTISEMENT;
}

export type NdpMessage = RouterSolicitation | RouterAdvertisement | NeighborSolicitation | NeighborAdvertisement;

/** The IP-layer check the caller makes: NDP messages must arrive with hop limit 255. */
export function ndpHopLimitValid(hopLimit: number): boolean {
  return hopLimit === NDP_HOP_LIMIT;
}

function u32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getUint32(offset, false);
}

/** Walk the options at message[offset..]: the options, or a drop reason. */
function parseOptions(message: Uint8Array, offset: number): NdpOptions | string {
  const options: NdpOptions = {};
  let count = 0;
  for (let i = offset; i < message.length; ) {
    if (i + 2 > message.length) return 'truncated_option';
    const type = message[i]!;
    const length = message[i + 1]! * 8;
    if (length === 0) return 'zero_length_option';
    if (i + length > message.length) return 'truncated_option';
    if (++count > MAX_NDP_OPTIONS) return 'too_many_options';
    const value = message.subarray(i, i + length);
    switch (type) {
      case NDP_OPTION_SOURCE_LINK_LAYER:
      case NDP_OPTION_TARGET_LINK_LAYER: {
        if (length !== 8) return 'bad_link_layer_option';
        if (type === NDP_OPTION_SOURCE_LINK_LAYER) options.sourceLinkLayer = value.subarray(2, 8);
        else options.targetLinkLayer = value.subarray(2, 8);
        break;
      }
      case NDP_OPTION_PREFIX_INFORMATION: {
        if (length !== 32 || value[2]! > 128) break;
        (options.prefixes ??= []).push({
          prefixLength: value[2]!,
          onLink: (value[3]! & 0x80) !== 0,
          autonomous: (value[3]! & 0x40) !== 0,
          validLifetime: u32(value, 4),
          preferredLifetime: u32(value, 8),
          prefix: value.subarray(16, 32),
        });
        break;
      }
      case NDP_OPTION_MTU:
        if (length === 8) options.mtu = u32(value, 4);
        break;
      case NDP_OPTION_RDNSS: {
        if (length < 24 || (length / 8) % 2 !== 1) break;
        const servers: IPv6Address[] = [];
        for (let a = 8; a < length; a += IPV6_ADDRESS_LENGTH) servers.push(value.subarray(a, a + IPV6_ADDRESS_LENGTH));
        (options.rdnss ??= []).push({ lifetime: u32(value, 4), servers });
        break;
      }
      case NDP_OPTION_DNSSL: {
        if (length < 16) break;
        const domains = parseDomainList(value.subarray(8), true);
        if (typeof domains === 'string' || domains.length === 0) break;
        (options.dnssl ??= []).push({ lifetime: u32(value, 4), domains });
        break;
      }
      case NDP_OPTION_NONCE:
        options.nonce = value.subarray(2);
        break;
      default:
        break;
    }
    i += length;
  }
  return options;
}

/**
 * An NDP message from its ICMPv6 view and the packet's addresses, checked
 * as the theory of operation says; 'not_ndp' for other ICMPv6 types
 * (Redirect included: a host here never acts on one).
 */
export function parseNdp(icmp: Icmpv6View, src: IPv6Address, dst: IPv6Address): NdpMessage | string {
  const m = icmp.message;
  if (icmp.type < ICMPV6_ROUTER_SOLICITATION || icmp.type > ICMPV6_NEIGHBOR_ADVERTISEMENT) return 'not_ndp';
  if (icmp.code !== 0) return 'bad_code';
  switch (icmp.type) {
    case ICMPV6_ROUTER_SOLICITATION: {
      const options = parseOptions(m, ICMPV6_HEADER_LENGTH);
      if (typeof options === 'string') return options;
      if (isUnspecifiedIPv6(src) && options.sourceLinkLayer) return 'unspecified_source_with_link_layer';
      return { type: ICMPV6_ROUTER_SOLICITATION, options };
    }
    case ICMPV6_ROUTER_ADVERTISEMENT: {
      if (m.length < 16) return 'truncated';
      if (!isLinkLocalIPv6(src)) return 'source_not_link_local';
      const options = parseOptions(m, 16);
      if (typeof options === 'string') return options;
      return {
        type: ICMPV6_ROUTER_ADVERTISEMENT,
        curHopLimit: m[4]!,
        managed: (m[5]! & 0x80) !== 0,
        other: (m[5]! & 0x40) !== 0,
        routerLifetime: (m[6]! << 8) | m[7]!,
        reachableTime: u32(m, 8),
        retransTimer: u32(m, 12),
        options,
      };
    }
    case ICMPV6_NEIGHBOR_SOLICITATION: {
      if (m.length < 24) return 'truncated';
      const target = m.subarray(8, 24);
      if (isMulticastIPv6(target)) return 'multicast_target';
      const options = parseOptions(m, 24);
      if (typeof options === 'string') return options;
      if (isUnspecifiedIPv6(src)) {
        if (!isSolicitedNodeMulticast(dst)) return 'unspecified_source_not_solicited_node';
        if (options.sourceLinkLayer) return 'unspecified_source_with_link_layer';
      }
      return { type: ICMPV6_NEIGHBOR_SOLICITATION, target, options };
    }
    default: {
      if (m.length < 24) return 'truncated';
      const target = m.subarray(8, 24);
      if (isMulticastIPv6(target)) return 'multicast_target';
      const solicited = (m[4]! & 0x40) !== 0;
      if (solicited && isMulticastIPv6(dst)) return 'solicited_to_multicast';
      const options = parseOptions(m, 24);
      if (typeof options === 'string') return options;
      return { type: ICMPV6_NEIGHBOR_ADVERTISEMENT, router: (m[4]! & 0x80) !== 0, solicited, override: (m[4]! & 0x20) !== 0, target, options };
    }
  }
}

/** The options in wire form (see the theory of operation for the order). */
export function encodeNdpOptions(options: NdpOptions): Uint8Array {
  const parts: Uint8Array[] = [];
  const option = (type: number, units: number): { bytes: Uint8Array; dv: DataView } => {
    const bytes = new Uint8Array(units * 8);
    bytes[0] = type;
    bytes[1] = units;
    parts.push(bytes);
    return { bytes, dv: new DataView(bytes.buffer) };
  };
  if (options.sourceLinkLayer) option(NDP_OPTION_SOURCE_LINK_LAYER, 1).bytes.set(options.sourceLinkLayer.subarray(0, 6), 2);
  if (options.targetLinkLayer) option(NDP_OPTION_TARGET_LINK_LAYER, 1).bytes.set(options.targetLinkLayer.subarray(0, 6), 2);
  if (options.mtu !== undefined) option(NDP_OPTION_MTU, 1).dv.setUint32(4, options.mtu >>> 0, false);
  for (const p of options.prefixes ?? []) {
    const { bytes, dv } = option(NDP_OPTION_PREFIX_INFORMATION, 4);
    bytes[2] = p.prefixLength;
    bytes[3] = (p.onLink ? 0x80 : 0) | (p.autonomous ? 0x40 : 0);
    dv.setUint32(4, p.validLifetime >>> 0, false);
    dv.setUint32(8, p.preferredLifetime >>> 0, false);
    bytes.set(p.prefix.subarray(0, IPV6_ADDRESS_LENGTH), 16);
  }
  for (const r of options.rdnss ?? []) {
    if (r.servers.length === 0 || 1 + 2 * r.servers.length > MAX_OPTION_UNITS) continue;
    const { bytes, dv } = option(NDP_OPTION_RDNSS, 1 + 2 * r.servers.length);
    dv.setUint32(4, r.lifetime >>> 0, false);
    r.servers.forEach((s, k) => bytes.set(s.subarray(0, IPV6_ADDRESS_LENGTH), 8 + k * IPV6_ADDRESS_LENGTH));
  }
  for (const d of options.dnssl ?? []) {
    const names = encodeDomainList(d.domains);
    if (names.length === 0 || 1 + Math.ceil(names.length / 8) > MAX_OPTION_UNITS) continue;
    const { bytes, dv } = option(NDP_OPTION_DNSSL, 1 + Math.ceil(names.length / 8));
    dv.setUint32(4, d.lifetime >>> 0, false);
    bytes.set(names, 8);
  }
  if (options.nonce && options.nonce.length + 2 <= MAX_OPTION_UNITS * 8) option(NDP_OPTION_NONCE, Math.ceil((options.nonce.length + 2) / 8)).bytes.set(options.nonce, 2);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function withOptions(fixed: Uint8Array, options: NdpOptions): Uint8Array {
  const encoded = encodeNdpOptions(options);
  const body = new Uint8Array(fixed.length + encoded.length);
  body.set(fixed);
  body.set(encoded, fixed.length);
  return body;
}

/** A Router Solicitation (ICMPv6 message with checksum). */
export function buildRouterSolicitation(options: NdpOptions, src: IPv6Address, dst: IPv6Address): Uint8Array {
  return buildIcmpv6(ICMPV6_ROUTER_SOLICITATION, 0, 0, encodeNdpOptions(options), src, dst);
}

/** A Router Advertisement (ICMPv6 message with checksum). */
export function buildRouterAdvertisement(ra: RouterAdvertisementFields, src: IPv6Address, dst: IPv6Address): Uint8Array {
  const fixed = new Uint8Array(8);
  const dv = new DataView(fixed.buffer);
  dv.setUint32(0, ra.reachableTime >>> 0, false);
  dv.setUint32(4, ra.retransTimer >>> 0, false);
  const parameter = ((ra.curHopLimit & 0xff) << 24) | (ra.managed ? 0x800000 : 0) | (ra.other ? 0x400000 : 0) | (ra.routerLifetime & 0xffff);
  return buildIcmpv6(ICMPV6_ROUTER_ADVERTISEMENT, 0, parameter >>> 0, withOptions(fixed, ra.options), src, dst);
}

/** A Neighbor Solicitation for `target` (ICMPv6 message with checksum). */
export function buildNeighborSolicitation(target: IPv6Address, options: NdpOptions, src: IPv6Address, dst: IPv6Address): Uint8Array {
  return buildIcmpv6(ICMPV6_NEIGHBOR_SOLICITATION, 0, 0, withOptions(copyIPv6(target), options), src, dst);
}

/** A Neighbor Advertisement (ICMPv6 message with checksum). */
export function buildNeighborAdvertisement(na: NeighborAdvertisementFields, src: IPv6Address, dst: IPv6Address): Uint8Array {
  const flags = (na.router ? 0x80000000 : 0) | (na.solicited ? 0x40000000 : 0) | (na.override ? 0x20000000 : 0);
  return buildIcmpv6(ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, flags >>> 0, withOptions(copyIPv6(na.target), na.options), src, dst);
}
