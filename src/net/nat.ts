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
 * Addresses are InAny (src/net/inany.ts). With no IPv6 on the guest side
 * yet, an IPv6 destination is refused ('ipv6') and an IPv6 host address
 * (other than IPv4-mapped) is unrepresentable: the IPv6 rules plug in here.
 */
import type { NatDecision, NatPolicy, StackConfig } from './context.js';
import { inSubnet, ipv4ToString } from './ip-address.js';
import { type InAny, parseInAny } from './inany.js';
import { networkBroadcast } from './config.js';

export type NatProtocol = 'tcp' | 'udp' | 'icmp';

export const LOOPBACK = 0x7f000001;

/** True for the addresses the stack itself answers for (gateway, DNS). */
export function isLocalAddress(config: StackConfig, address: InAny): boolean {
  return address === config.gateway || address === config.dns;
}

function refuse(reason: string): NatDecision {
  return { kind: 'refuse', reason };
}

export class Nat implements NatPolicy {
  constructor(readonly config: StackConfig) {}

  /** Decide what to do with guest traffic to (dst, dstPort). `dstPort` is the echo id for ICMP (unused). */
  fromGuest(protocol: NatProtocol, dst: InAny, dstPort: number): NatDecision {
    const c = this.config;
    if (typeof dst !== 'number') return refuse('ipv6');
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

  /** Alias of fromGuest (the name the TCP translator uses). */
  outbound(protocol: NatProtocol, dst: InAny, dstPort: number): NatDecision {
    return this.fromGuest(protocol, dst, dstPort);
  }

  /** The guest-side address for a host-side source, or null if it cannot be represented. */
  toGuestSource(hostAddress: string): InAny | null {
    const a = parseInAny(hostAddress);
    if (a === null || typeof a !== 'number') return null;
    const c = this.config;
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
   */
  inboundSource(hostAddress: string): InAny {
    if (parseInAny(hostAddress) === LOOPBACK) return this.config.gateway;
    return this.toGuestSource(hostAddress) ?? this.config.gateway;
  }
}
