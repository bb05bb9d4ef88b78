/**
 * NAT mapping, pure (no I/O): where a guest-side destination goes on the
 * host, and how a host-side source address is shown to the guest.
 *
 * Rules for guest -> host (`fromGuest`), in order:
 *  - the DNS address: UDP port 53 is `local` (the stack's DNS forwarder);
 *    TCP port 53 goes to the first upstream resolver (the TCP translator
 *    connects there and relays only DNS queries: `dnsQueries`); ICMP echo
 *    is answered locally; anything else refused.
 *  - the gateway: ICMP echo and DHCP (UDP 67) are `local`; other traffic is
 *    refused under `restrict`, refused when `mapGatewayToLoopback` is off,
 *    and otherwise goes to 127.0.0.1 on the same port (the host itself).
 *  - broadcast, multicast, 0.0.0.0/8, 127.0.0.0/8, and every other address
 *    inside the guest network: refused (no host socket can stand for them).
 *  - under `restrict`: everything else refused (libslirp restrict=on: only
 *    the stack's own services and flows of forwarded ports, which are
 *    created from the host side and never consult this function).
 *  - otherwise: the same address and port, via the host's own routing.
 *
 * Host -> guest (`toGuestSource`): 127.0.0.1 appears as the gateway when the
 * gateway mapping is on; a routable IPv4 address outside the guest network
 * appears as itself; anything else (other loopback addresses, IPv6, an
 * address inside the guest network) cannot be shown and yields null.
 *
 * IPv6 (addresses are InAny, src/net/inany.ts), the same rules with the
 * IPv6 addresses: the DNS address (dns6) as the IPv4 one; the gateway
 * (gateway6 and the router's link-local address) maps to the host's ::1
 * (ICMPv6 echo and DHCPv6 local); multicast, ::, ::1, IPv4-mapped,
 * link-local and every other address of the guest's prefix refused; the
 * rest goes out through the host (unless `restrict`). Host -> guest: ::1
 * appears as gateway6 with the mapping on; a global IPv6 address outside
 * the prefix as itself; anything else yields null. With IPv6 off every
 * IPv6 destination is refused ('ipv6') and no IPv6 source is representable.
 */
import type { NatDecision, NatPolicy, StackConfig } from './context.js';
import { inSubnet, ipv4ToString } from './ip-address.js';
import { type InAny, inanyEqual, inanyToString, parseInAny } from './inany.js';
import { networkBroadcast } from './config.js';
import { ipv6PrefixMatch, isIPv4Mapped, isLinkLocalIPv6, isLoopbackIPv6, isMulticastIPv6, isUnspecifiedIPv6 } from './ipv6-address.js';

export type NatProtocol = 'tcp' | 'udp' | 'icmp';

export const LOOPBACK = 0x7f000001;

/** True for the addresses the stack itself answers for (gateway, DNS; for IPv6 also the router's link-local address). */
export function isLocalAddress(config: StackConfig, address: InAny): boolean {
  if (typeof address === 'number') return address === config.gateway || address === config.dns;
  return config.ipv6 && (inanyEqual(address, config.gateway6) || inanyEqual(address, config.dns6) || inanyEqual(address, config.gatewayLinkLocal6));
}

function refuse(reason: string): NatDecision {
  return { kind: 'refuse', reason };
}

export class Nat implements NatPolicy {
  constructor(readonly config: StackConfig) {}

  /** Decide what to do with guest traffic to (dst, dstPort). `dstPort` is the echo id for ICMP (unused). */
  fromGuest(protocol: NatProtocol, dst: InAny, dstPort: number): NatDecision {
    const c = this.config;
    if (typeof dst !== 'number') return this.fromGuest6(protocol, dst, dstPort);
    dst >>>= 0;
    if (dst === c.dns) {
      if (protocol === 'icmp') return { kind: 'local' };
      if (dstPort !== 53) return refuse('dns_port');
      if (protocol === 'udp') return { kind: 'local' };
      const up = c.dnsUpstreams[0];
      return up ? { kind: 'host', address: up.address, port: up.port, dnsQueries: true } : refuse('no_dns_upstream');
    }
    if (dst === c.gateway) {
      if (protocol === 'icmp') return { kind: 'local' };
      if (protocol === 'udp' && dstPort === 67) return { kind: 'local' };
      if (c.restrict) return refuse('restricted');
      if (!c.mapGatewayToLoopback) return refuse('gateway_unmapped');
      return { kind: 'host', address: '127.0.0.1', port: dstPort };
    }
    if (dst === 0xffffffff || dst === networkBroadcast(c)) {
      return protocol === 'udp' && dstPort === 67 ? { kind: 'local' } : refuse('broadcast');
    }
    const top = dst >>> 24;
    if (top >= 224) return refuse('multicast');
    if (top === 0) return refuse('this_network');
    if (top === 127) return refuse('loopback');
    if (inSubnet(dst, c.network, c.prefixLength)) return refuse('guest_network');
    if (c.restrict) return refuse('restricted');
    if (protocol !== 'icmp' && (dstPort < 1 || dstPort > 65535)) return refuse('bad_port');
    return { kind: 'host', address: ipv4ToString(dst), port: dstPort };
  }

  private fromGuest6(protocol: NatProtocol, dst: Uint8Array, dstPort: number): NatDecision {
    const c = this.config;
    if (!c.ipv6) return refuse('ipv6');
    if (inanyEqual(dst, c.dns6)) {
      if (protocol === 'icmp') return { kind: 'local' };
      if (dstPort !== 53) return refuse('dns_port');
      if (protocol === 'udp') return { kind: 'local' };
      const up = c.dnsUpstreams[0];
      return up ? { kind: 'host', address: up.address, port: up.port, dnsQueries: true } : refuse('no_dns_upstream');
    }
    if (inanyEqual(dst, c.gateway6) || inanyEqual(dst, c.gatewayLinkLocal6)) {
      if (protocol === 'icmp') return { kind: 'local' };
      if (protocol === 'udp' && dstPort === 547) return { kind: 'local' };
      if (c.restrict) return refuse('restricted');
      if (!c.mapGatewayToLoopback) return refuse('gateway_unmapped');
      return { kind: 'host', address: '::1', port: dstPort };
    }
    if (isMulticastIPv6(dst)) return refuse('multicast');
    if (isUnspecifiedIPv6(dst)) return refuse('this_network');
    if (isLoopbackIPv6(dst)) return refuse('loopback');
    if (isIPv4Mapped(dst)) return refuse('ipv4_mapped');
    if (isLinkLocalIPv6(dst)) return refuse('link_local');
    if (ipv6PrefixMatch(dst, c.network6, 64)) return refuse('guest_network');
    if (c.restrict) return refuse('restricted');
    if (protocol !== 'icmp' && (dstPort < 1 || dstPort > 65535)) return refuse('bad_port');
    return { kind: 'host', address: inanyToString(dst), port: dstPort };
  }

  /** Alias of fromGuest (the name the TCP translator uses). */
  outbound(protocol: NatProtocol, dst: InAny, dstPort: number): NatDecision {
    return this.fromGuest(protocol, dst, dstPort);
  }

  /** The guest-side address for a host-side source, or null if it cannot be represented. */
  toGuestSource(hostAddress: string): InAny | null {
    const a = parseInAny(hostAddress);
    if (a === null) return null;
    const c = this.config;
    if (typeof a !== 'number') {
      if (!c.ipv6) return null;
      if (isLoopbackIPv6(a)) return c.mapGatewayToLoopback ? c.gateway6 : null;
      if (isMulticastIPv6(a) || isUnspecifiedIPv6(a) || isLinkLocalIPv6(a) || ipv6PrefixMatch(a, c.network6, 64)) return null;
      return a;
    }
    if (a === LOOPBACK) return c.mapGatewayToLoopback ? c.gateway : null;
    if (a === 0 || a >>> 24 === 0 || a >>> 24 === 127 || a >>> 24 >= 224) return null;
    if (inSubnet(a, c.network, c.prefixLength)) return null;
    return a;
  }

  /**
   * Source address for traffic arriving on a forwarded host port: as
   * `toGuestSource`, except that anything unrepresentable (loopback with the
   * gateway mapping off, other loopback addresses, IPv6, an address inside
   * the guest network) appears as the gateway, as libslirp's hostfwd does.
   * `family` is the guest side's: 6 for a forward that reaches the guest
   * over IPv6 (the source is then an IPv6 address, gateway6 by default).
   */
  inboundSource(hostAddress: string, family: 4 | 6 = 4): InAny {
    const a = parseInAny(hostAddress);
    if (family === 6 && this.config.ipv6) {
      if (a === null || typeof a === 'number' || isLoopbackIPv6(a)) return this.config.gateway6;
      return this.toGuestSource(hostAddress) ?? this.config.gateway6;
    }
    if (a === LOOPBACK) return this.config.gateway;
    const v4 = this.toGuestSource(hostAddress);
    return typeof v4 === 'number' ? v4 : this.config.gateway;
  }
}
