/**
 * The stack's Neighbor Discovery (RFC 4861) as decision functions: the
 * router and neighbor the guest sees on its link, with no I/O.
 *
 * Theory of operation, in the manner of arp.ts for IPv4. The stack owns
 * three addresses on the link — the router's link-local address, the
 * gateway and the DNS address in the prefix (ipv6-link.ts) — all at the
 * gateway MAC. `ndpInput` takes an NDP message that parseNdp accepted (and
 * whose hop limit the caller checked with ndpHopLimitValid) and returns
 * the reply to send or a reason string for a counter:
 *
 *  NS for one of our addresses, to its solicited-node address or to it
 *     -> NA (Router, Solicited, Override; target link-layer = gateway MAC)
 *        from the target to the asker, at its source link-layer option or
 *        else its Ethernet source;
 *  NS from :: (duplicate address detection, RFC 4862 §5.4) for an address
 *     of the guest's -> no answer, the target is recorded as the guest's;
 *     for one of ours -> NA to all-nodes, Solicited clear (RFC 4861
 *     §7.2.4), so the guest sees the conflict, as arp.ts answers probes;
 *  NS for any other address -> ignored (the stack is not a proxy);
 *  RS -> RA (ra below) to its source, or to all-nodes when it is ::
 *        (the caller keeps multicast RAs MIN_DELAY_BETWEEN_RAS_MS apart);
 *  NA from the guest -> its target and link-layer address learned;
 *  RA from the guest -> ignored (one router on this link: us).
 *
 * An RA carries: current hop limit 64, M = DHCPv6 assigns addresses, O =
 * DHCPv6 has other configuration (always), the router lifetime, the source
 * link-layer address, the MTU, the prefix (on-link, autonomous per
 * config), RDNSS with the DNS address and DNSSL with the search domains.
 * `routerAdvertisement` builds the periodic one (to all-nodes) and
 * `unsolicitedAdvertisementDelayMs` spaces them (RFC 4861 §6.2.4: the
 * first three at most 16 s apart, then uniformly in [Max/3, Max]).
 *
 * The guest's addresses (GuestIPv6Addresses) are learned from its NS
 * (source and source link-layer option), DAD probes, RS, NA and, through
 * `learn`, from the source of any packet the IP layer accepts. Only
 * addresses the guest may own are recorded: unicast, link-local or inside
 * the prefix, none of ours. The table holds MAX_GUEST_ADDRESSES entries;
 * a new one displaces the one seen least recently, so a guest cycling
 * through addresses (privacy extensions, or a hostile one) costs a bounded
 * table, never a growing one.
 */
import {
  ICMPV6_NEIGHBOR_ADVERTISEMENT, ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_ROUTER_ADVERTISEMENT, ICMPV6_ROUTER_SOLICITATION,
} from './wire/icmpv6.js';
import {
  NDP_HOP_LIMIT, buildNeighborAdvertisement, buildRouterAdvertisement, type NdpMessage, type NeighborSolicitation, type RouterSolicitation,
} from './wire/ndp.js';
import { NEXT_HEADER_ICMPV6 } from './wire/ipv6.js';
import { isMulticastMac } from './wire/ethernet.js';
import { inIpv6Prefix, type Ipv6LinkConfig, type Ipv6LinkReply } from './ipv6-link.js';
import {
  ALL_NODES, copyIPv6, ipv6Equals, isLinkLocalIPv6, isUnicastIPv6, isUnspecifiedIPv6, multicastMac, solicitedNodeMulticast, type IPv6Address,
} from './ipv6-address.js';

export const MAX_GUEST_ADDRESSES = 16;
/** RFC 4861 §10: multicast RAs at least this far apart. */
export const MIN_DELAY_BETWEEN_RAS_MS = 3000;
export const MAX_INITIAL_RTR_ADVERTISEMENTS = 3;
export const MAX_INITIAL_RTR_ADVERT_INTERVAL_MS = 16_000;
/** Current hop limit advertised (RFC 4861 AdvCurHopLimit; libslirp's too). */
export const ADVERTISED_HOP_LIMIT = 64;

/** How an address came to be known as the guest's. */
export type LearnedFrom = 'dad' | 'ns' | 'rs' | 'na' | 'source';

export interface GuestAddressEntry {
  address: IPv6Address;
  /** The MAC it was last seen at. */
  mac: Uint8Array;
  /** How it was first learned. */
  learnedFrom: LearnedFrom;
  firstSeen: number;
  lastSeen: number;
}

/** The guest's IPv6 addresses with the MAC each was seen at (bounded; least recently seen displaced). */
export class GuestIPv6Addresses {
  private readonly entries: GuestAddressEntry[] = [];

  constructor(private readonly cfg: Ipv6LinkConfig, readonly capacity = MAX_GUEST_ADDRESSES) {}

  /** May the guest own `address`? Unicast, link-local or in the prefix, not one of the stack's. */
  eligible(address: IPv6Address): boolean {
    return isUnicastIPv6(address) && (isLinkLocalIPv6(address) || inIpv6Prefix(this.cfg, address)) && !isStackAddress(this.cfg, address);
  }

  /** Record (or refresh) `address` at `mac`; false when it is not one the guest may own. No allocation for a known address. */
  learn(address: IPv6Address, mac: Uint8Array, learnedFrom: LearnedFrom, now: number): boolean {
    if (!this.eligible(address) || isMulticastMac(mac)) return false;
    const known = this.lookup(address);
    if (known) {
      known.lastSeen = now;
      for (let i = 0; i < 6; i++) known.mac[i] = mac[i]!;
      return true;
    }
    if (this.entries.length >= this.capacity) {
      let oldest = 0;
      for (let i = 1; i < this.entries.length; i++) if (this.entries[i]!.lastSeen < this.entries[oldest]!.lastSeen) oldest = i;
      this.entries.splice(oldest, 1);
    }
    this.entries.push({ address: copyIPv6(address), mac: mac.slice(0, 6), learnedFrom, firstSeen: now, lastSeen: now });
    return true;
  }

  lookup(address: IPv6Address): GuestAddressEntry | undefined {
    for (const e of this.entries) if (ipv6Equals(e.address, address)) return e;
    return undefined;
  }

  forget(address: IPv6Address): void {
    const i = this.entries.findIndex((e) => ipv6Equals(e.address, address));
    if (i >= 0) this.entries.splice(i, 1);
  }

  get size(): number {
    return this.entries.length;
  }

  all(): readonly GuestAddressEntry[] {
    return this.entries;
  }
}

/** One of the addresses the stack answers for on the link. */
export function isStackAddress(cfg: Ipv6LinkConfig, a: IPv6Address): boolean {
  return ipv6Equals(a, cfg.gateway) || ipv6Equals(a, cfg.gatewayLinkLocal) || ipv6Equals(a, cfg.dns);
}

/** The packet's IPv6 source and destination and its Ethernet source. */
export interface NdpPacketInfo {
  src: IPv6Address;
  dst: IPv6Address;
  ethSrc: Uint8Array;
}

function icmpReply(cfg: Ipv6LinkConfig, dstMac: Uint8Array, src: IPv6Address, dst: IPv6Address, message: Uint8Array): Ipv6LinkReply {
  return { srcMac: cfg.gatewayMac, dstMac, src, dst, hopLimit: NDP_HOP_LIMIT, nextHeader: NEXT_HEADER_ICMPV6, payload: message };
}

/** Answer a Neighbor Solicitation (see the theory of operation); learns into `guest`. */
export function answerNeighborSolicitation(
  cfg: Ipv6LinkConfig, ns: NeighborSolicitation, pkt: NdpPacketInfo, guest: GuestIPv6Addresses, now: number,
): Ipv6LinkReply | string {
  const dad = isUnspecifiedIPv6(pkt.src);
  const ours = isStackAddress(cfg, ns.target);
  if (!dad) {
    if (!guest.eligible(pkt.src)) return ours ? 'ns_bad_source' : 'ns_not_ours';
    guest.learn(pkt.src, ns.options.sourceLinkLayer ?? pkt.ethSrc, 'ns', now);
  }
  if (!ours) {
    if (dad) return guest.learn(ns.target, pkt.ethSrc, 'dad', now) ? 'dad_probe' : 'dad_probe_not_guest_address';
    return 'ns_not_ours';
  }
  if (!ipv6Equals(pkt.dst, ns.target) && !ipv6Equals(pkt.dst, solicitedNodeMulticast(ns.target))) return 'ns_wrong_destination';
  const dst = dad ? ALL_NODES : pkt.src;
  const dstMac = dad ? multicastMac(ALL_NODES) : (ns.options.sourceLinkLayer ?? pkt.ethSrc);
  const message = buildNeighborAdvertisement(
    { router: true, solicited: !dad, override: true, target: ns.target, options: { targetLinkLayer: cfg.gatewayMac } }, ns.target, dst,
  );
  return icmpReply(cfg, dstMac, ns.target, dst, message);
}

/** The Router Advertisement the stack sends, to `dst` at `dstMac` (all-nodes by default). */
export function routerAdvertisement(cfg: Ipv6LinkConfig, dst: IPv6Address = ALL_NODES, dstMac: Uint8Array = multicastMac(ALL_NODES)): Ipv6LinkReply {
  const message = buildRouterAdvertisement({
    curHopLimit: ADVERTISED_HOP_LIMIT,
    managed: cfg.dhcpv6Addresses,
    other: true,
    routerLifetime: cfg.routerLifetime,
    reachableTime: 0,
    retransTimer: 0,
    options: {
      sourceLinkLayer: cfg.gatewayMac,
      mtu: cfg.mtu,
      prefixes: [{
        prefixLength: cfg.prefixLength, onLink: true, autonomous: cfg.slaac,
        validLifetime: cfg.validLifetime, preferredLifetime: cfg.preferredLifetime, prefix: cfg.prefix,
      }],
      rdnss: [{ lifetime: cfg.dnsLifetime, servers: [cfg.dns] }],
      dnssl: [{ lifetime: cfg.dnsLifetime, domains: cfg.searchDomains }],
    },
  }, cfg.gatewayLinkLocal, dst);
  return icmpReply(cfg, dstMac, cfg.gatewayLinkLocal, dst, message);
}

/** Answer a Router Solicitation: an RA to its source, or to all-nodes when the source is ::. */
export function answerRouterSolicitation(
  cfg: Ipv6LinkConfig, rs: RouterSolicitation, pkt: NdpPacketInfo, guest: GuestIPv6Addresses, now: number,
): Ipv6LinkReply | string {
  if (isUnspecifiedIPv6(pkt.src)) return routerAdvertisement(cfg);
  if (!guest.eligible(pkt.src)) return 'rs_bad_source';
  const mac = rs.options.sourceLinkLayer ?? pkt.ethSrc;
  guest.learn(pkt.src, mac, 'rs', now);
  return routerAdvertisement(cfg, pkt.src, mac);
}

/** Any NDP message from the guest: the reply, or why there is none. */
export function ndpInput(cfg: Ipv6LinkConfig, msg: NdpMessage, pkt: NdpPacketInfo, guest: GuestIPv6Addresses, now: number): Ipv6LinkReply | string {
  switch (msg.type) {
    case ICMPV6_NEIGHBOR_SOLICITATION:
      return answerNeighborSolicitation(cfg, msg, pkt, guest, now);
    case ICMPV6_ROUTER_SOLICITATION:
      return answerRouterSolicitation(cfg, msg, pkt, guest, now);
    case ICMPV6_NEIGHBOR_ADVERTISEMENT:
      if (isStackAddress(cfg, msg.target)) return 'na_address_conflict';
      return guest.learn(msg.target, msg.options.targetLinkLayer ?? pkt.ethSrc, 'na', now) ? 'na_learned' : 'na_not_guest_address';
    case ICMPV6_ROUTER_ADVERTISEMENT:
      return 'ra_from_guest';
  }
}

/**
 * Delay before the next unsolicited RA, ms, after `sent` of them
 * (RFC 4861 §6.2.4): uniformly in [MaxRtrAdvInterval/3, MaxRtrAdvInterval],
 * at most MAX_INITIAL_RTR_ADVERT_INTERVAL_MS for the first few. `random`
 * is in [0, 1) (injected so tests are deterministic).
 */
export function unsolicitedAdvertisementDelayMs(cfg: Ipv6LinkConfig, sent: number, random: number): number {
  const max = cfg.maxRtrAdvIntervalMs;
  const min = max / 3;
  const delay = min + random * (max - min);
  return sent < MAX_INITIAL_RTR_ADVERTISEMENTS ? Math.min(delay, MAX_INITIAL_RTR_ADVERT_INTERVAL_MS) : delay;
}
