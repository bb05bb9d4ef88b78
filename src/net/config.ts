/**
 * Stack configuration: slirp-compatible defaults and validation.
 *
 * Defaults are those of QEMU's `-netdev user` (libslirp): network
 * 10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3, first DHCP address 10.0.2.15,
 * MTU 1500, gateway MAC 52:55:0a:00:02:02; for IPv6 (on by default) prefix
 * fec0::/64, gateway fec0::2, DNS fec0::3, router link-local fe80::2 and
 * the DHCPv6 address fec0::15. A `network6` given without `gateway6`,
 * `dns6` or `guestIp6` puts them at ::2, ::3 and ::15 of that prefix (as
 * --net does for IPv4). `resolveStackConfig` merges a partial config over
 * the defaults and throws (configuration time, never on the packet path)
 * when the result is inconsistent; the IPv6 side is checked by
 * ipv6-link.ts's `validateIpv6LinkConfig` on the link configuration
 * `ipv6LinkConfig` derives from it (what NDP and DHCPv6 answer with).
 */
import type { StackConfig } from './context.js';
import { inSubnet, ipv4ToString, prefixMask } from './ip-address.js';
import { defaultIpv6LinkConfig, validateIpv6LinkConfig, type Ipv6LinkConfig } from './ipv6-link.js';
import { IPV6_MIN_MTU } from './wire/ipv6.js';
import { ipv6Network } from './ipv6-address.js';

/** prefix::n (the last byte of a /64 prefix's interface id). */
function inPrefix(prefix: Uint8Array, n: number): Uint8Array {
  const a = ipv6Network(prefix, 64);
  a[15] = n;
  return a;
}

const FEC0 = Uint8Array.of(0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
const FE80_2 = Uint8Array.of(0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);

export const MIN_MTU = 576;
export const MAX_MTU = 65520;

export function defaultStackConfig(): StackConfig {
  return {
    network: 0x0a000200,
    prefixLength: 24,
    gateway: 0x0a000202,
    dns: 0x0a000203,
    guestIp: 0x0a00020f,
    mtu: 1500,
    gatewayMac: new Uint8Array([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]),
    mapGatewayToLoopback: true,
    restrict: false,
    dnsUpstreams: [],
    domainSearch: [],
    leaseSeconds: 86400,
    // Upper bounds: startBackend lowers them to what the fd limit leaves (src/fd-budget.ts).
    maxUdpFlows: 8192,
    maxTcpFlows: 16384,
    maxDnsQueries: 512,
    maxPingFlows: 256,
    tcpInboundShare: 0.25,
    udpIdleTimeoutMs: 180_000,
    ipv6: true,
    network6: FEC0.slice(),
    gateway6: inPrefix(FEC0, 2),
    dns6: inPrefix(FEC0, 3),
    gatewayLinkLocal6: FE80_2.slice(),
    guestIp6: inPrefix(FEC0, 0x15),
  };
}

/** The configuration of the IPv6 link services (NDP, DHCPv6) for a stack configuration and link MTU. */
export function ipv6LinkConfig(c: StackConfig, mtu: number = c.mtu): Ipv6LinkConfig {
  return {
    ...defaultIpv6LinkConfig(c.gatewayMac),
    gatewayLinkLocal: c.gatewayLinkLocal6,
    gateway: c.gateway6,
    dns: c.dns6,
    prefix: c.network6,
    prefixLength: 64,
    mtu,
    searchDomains: c.domainSearch,
    guestAddress: c.guestIp6,
  };
}

/** Merge `partial` over the defaults and validate; throws an Error naming the bad field. */
export function resolveStackConfig(partial: Partial<StackConfig> = {}): StackConfig {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) as Partial<StackConfig>;
  if (defined.network6 !== undefined) {
    defined.gateway6 ??= inPrefix(defined.network6, 2);
    defined.dns6 ??= inPrefix(defined.network6, 3);
    defined.guestIp6 ??= inPrefix(defined.network6, 0x15);
  }
  const c: StackConfig = { ...defaultStackConfig(), ...defined };
  const fail = (msg: string): never => {
    throw new Error(`invalid network config: ${msg}`);
  };
  if (!Number.isInteger(c.prefixLength) || c.prefixLength < 1 || c.prefixLength > 30) fail(`prefix length ${c.prefixLength} (1..30)`);
  const mask = prefixMask(c.prefixLength);
  c.network = (c.network & mask) >>> 0;
  const broadcast = (c.network | ~mask) >>> 0;
  for (const [name, addr] of [['gateway', c.gateway], ['dns', c.dns], ['guestIp', c.guestIp]] as const) {
    if (!Number.isInteger(addr) || addr < 0 || addr > 0xffffffff) fail(`${name} is not an IPv4 address`);
    if (!inSubnet(addr, c.network, c.prefixLength)) fail(`${name} ${ipv4ToString(addr)} outside ${ipv4ToString(c.network)}/${c.prefixLength}`);
    if (addr === c.network || addr === broadcast) fail(`${name} ${ipv4ToString(addr)} is the network or broadcast address`);
  }
  if (c.gateway === c.dns || c.gateway === c.guestIp || c.dns === c.guestIp) fail('gateway, dns and guestIp must be distinct');
  if (!Number.isInteger(c.mtu) || c.mtu < MIN_MTU || c.mtu > MAX_MTU) fail(`mtu ${c.mtu} (${MIN_MTU}..${MAX_MTU})`);
  if (!(c.gatewayMac instanceof Uint8Array) || c.gatewayMac.length !== 6) fail('gatewayMac must be 6 bytes');
  if ((c.gatewayMac[0]! & 1) !== 0) fail('gatewayMac must be unicast');
  if (!Number.isInteger(c.leaseSeconds) || c.leaseSeconds < 60 || c.leaseSeconds > 0x7fffffff) fail(`leaseSeconds ${c.leaseSeconds}`);
  for (const [name, v] of [['maxUdpFlows', c.maxUdpFlows], ['maxTcpFlows', c.maxTcpFlows], ['maxPingFlows', c.maxPingFlows], ['maxDnsQueries', c.maxDnsQueries]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 1_000_000) fail(`${name} ${v} (1..1000000)`);
  }
  if (!(c.tcpInboundShare > 0 && c.tcpInboundShare < 1)) fail(`tcpInboundShare ${c.tcpInboundShare} (between 0 and 1)`);
  if (c.tcpForwardShare !== undefined && !(c.tcpForwardShare > 0 && c.tcpForwardShare <= 1)) fail(`tcpForwardShare ${c.tcpForwardShare} (above 0, at most 1)`);
  if (!(c.udpIdleTimeoutMs > 0)) fail(`udpIdleTimeoutMs ${c.udpIdleTimeoutMs}`);
  for (const u of c.dnsUpstreams) {
    if (typeof u.address !== 'string' || u.address.length === 0) fail('dnsUpstreams address');
    if (!Number.isInteger(u.port) || u.port < 1 || u.port > 65535) fail(`dnsUpstreams port ${u.port}`);
  }
  if (c.hostname !== undefined && !/^[A-Za-z0-9.-]{1,255}$/.test(c.hostname)) fail(`hostname ${c.hostname}`);
  for (const d of c.domainSearch) if (!/^[A-Za-z0-9_.-]{1,253}$/.test(d)) fail(`domain ${d}`);
  for (const name of ['network6', 'gateway6', 'dns6', 'gatewayLinkLocal6', 'guestIp6'] as const) {
    if (!(c[name] instanceof Uint8Array) || c[name].length !== 16) fail(`${name} is not an IPv6 address`);
    c[name] = Uint8Array.from(c[name]);
  }
  c.network6 = ipv6Network(c.network6, 64);
  if (c.ipv6) {
    if (c.mtu < IPV6_MIN_MTU) fail(`mtu ${c.mtu}: IPv6 needs at least ${IPV6_MIN_MTU} (or turn IPv6 off)`);
    try {
      validateIpv6LinkConfig(ipv6LinkConfig(c));
    } catch (err) {
      fail((err as Error).message);
    }
  }
  c.gatewayMac = Uint8Array.from(c.gatewayMac);
  c.dnsUpstreams = c.dnsUpstreams.map((u) => ({ ...u }));
  c.domainSearch = [...c.domainSearch];
  return c;
}

/** The directed broadcast address of the guest network. */
export function networkBroadcast(c: StackConfig): number {
  return (c.network | ~prefixMask(c.prefixLength)) >>> 0;
}
