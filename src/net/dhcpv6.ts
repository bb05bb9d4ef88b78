/**
 * The stack's DHCPv6 server (RFC 8415) as a decision function: a parsed
 * client message in, the reply (or why there is none) out, no I/O.
 *
 * Theory of operation. Like the DHCPv4 server (dhcp.ts) there is one
 * address to give, config.guestAddress, and it is given to whoever asks:
 * a VM whose DUID changed must not wait out a lease. No binding is kept,
 * so nothing here grows with what the guest sends. The server's DUID is
 * the DUID-LL of the gateway MAC. Replies go from the router's link-local
 * address, port 547, to the client's source address, port 546, at its
 * Ethernet source.
 *
 * Accepted only from a link-local or in-prefix unicast source with a
 * unicast MAC, to All_DHCP_Relay_Agents_and_Servers or one of our
 * addresses. Per message (RFC 8415 §16 validation, §18.3 server
 * behaviour):
 *
 *  SOLICIT (client id, no server id) -> ADVERTISE with an IA_NA holding
 *      guestAddress for the first IA_NA, NoAddrsAvail in any further
 *      IA_NA and in IA_TA/IA_PD (declined), top-level NoAddrsAvail when
 *      there was no IA_NA; with Rapid Commit (and config.rapidCommit) a
 *      REPLY carrying Rapid Commit instead.
 *  REQUEST, RENEW (client id, our server id) and REBIND (client id, no
 *      server id) -> REPLY with the same IAs; an address the client holds
 *      that is not guestAddress comes back with lifetimes 0 (§18.3.4).
 *  CONFIRM (client id, no server id) -> REPLY Success when every address
 *      in its IAs is inside the prefix, NotOnLink otherwise, no reply when
 *      it names no address (§18.3.3).
 *  RELEASE, DECLINE (client id, our server id) -> REPLY Success.
 *  INFORMATION-REQUEST (no IA; a server id only if it is ours) -> REPLY
 *      with configuration only.
 * Every REPLY/ADVERTISE carries the server id, the client id (when the
 * client sent one), the DNS address (23) and the search domains (24) if
 * any. Solicit, Confirm, Rebind and Information-request sent to a unicast
 * address are dropped, Request, Renew, Release and Decline answered with
 * UseMulticast (§16, §18.4): this server never offers unicast. When
 * config.dhcpv6Addresses is false the server is stateless: messages about
 * addresses are ignored, Information-request is answered.
 *
 * T1 and T2 are half and four fifths of the preferred lifetime (§21.4).
 */
import {
  DHCPV6_ADVERTISE, DHCPV6_CLIENT_PORT, DHCPV6_CONFIRM, DHCPV6_DECLINE, DHCPV6_INFORMATION_REQUEST, DHCPV6_REBIND, DHCPV6_RELEASE,
  DHCPV6_RENEW, DHCPV6_REPLY, DHCPV6_REQUEST, DHCPV6_SERVER_PORT, DHCPV6_SOLICIT, OPTION_IA_TA, STATUS_NO_ADDRS_AVAIL,
  STATUS_NO_PREFIX_AVAIL, STATUS_NOT_ON_LINK, STATUS_SUCCESS, STATUS_USE_MULTICAST, buildDhcpv6, duidLinkLayer,
  type Dhcpv6IaAddress, type Dhcpv6IaNa, type Dhcpv6Message,
} from './wire/dhcpv6.js';
import { buildUdpIPv6 } from './wire/udp-ipv6.js';
import { NEXT_HEADER_UDP } from './wire/ipv6.js';
import { isMulticastMac } from './wire/ethernet.js';
import { inIpv6Prefix, type Ipv6LinkConfig, type Ipv6LinkReply } from './ipv6-link.js';
import { isStackAddress } from './ndp.js';
import { ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ipv6Equals, isLinkLocalIPv6, isMulticastIPv6, isUnicastIPv6, type IPv6Address } from './ipv6-address.js';

/** Hop limit of replies (RFC 8415 sets none; the stack's default). */
export const DHCPV6_REPLY_HOP_LIMIT = 64;

export interface Dhcpv6PacketInfo {
  src: IPv6Address;
  dst: IPv6Address;
  ethSrc: Uint8Array;
}

const STATUS_TEXT: Record<number, string> = {
  [STATUS_SUCCESS]: 'success',
  [STATUS_NO_ADDRS_AVAIL]: 'one address per client',
  [STATUS_NOT_ON_LINK]: 'not on link',
  [STATUS_USE_MULTICAST]: 'use multicast',
  [STATUS_NO_PREFIX_AVAIL]: 'no prefix delegation',
};

function status(code: number): { code: number; message: string } {
  return { code, message: STATUS_TEXT[code] ?? '' };
}

/** The server's DUID (DUID-LL of the gateway MAC). */
export function serverDuid(cfg: Ipv6LinkConfig): Uint8Array {
  return duidLinkLayer(cfg.gatewayMac);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The IA_NA options of a reply: our address in the first, NoAddrsAvail in the rest; foreign addresses with lifetimes 0. */
function answerIas(cfg: Ipv6LinkConfig, ias: Dhcpv6IaNa[]): Dhcpv6IaNa[] {
  const t1 = Math.floor(cfg.preferredLifetime / 2);
  const t2 = Math.floor((cfg.preferredLifetime * 4) / 5);
  return ias.map((ia, i) => {
    if (i > 0) return { iaid: ia.iaid, t1: 0, t2: 0, addresses: [], status: status(STATUS_NO_ADDRS_AVAIL) };
    const addresses: Dhcpv6IaAddress[] = [
      { address: cfg.guestAddress, preferredLifetime: cfg.preferredLifetime, validLifetime: cfg.validLifetime },
    ];
    for (const held of ia.addresses) {
      if (!ipv6Equals(held.address, cfg.guestAddress)) addresses.push({ address: held.address, preferredLifetime: 0, validLifetime: 0 });
    }
    return { iaid: ia.iaid, t1, t2, addresses };
  });
}

/** Answer one client message (see the theory of operation). */
export function answerDhcpv6(cfg: Ipv6LinkConfig, msg: Dhcpv6Message, pkt: Dhcpv6PacketInfo): Ipv6LinkReply | string {
  if (!isUnicastIPv6(pkt.src) || !(isLinkLocalIPv6(pkt.src) || inIpv6Prefix(cfg, pkt.src)) || isStackAddress(cfg, pkt.src)) return 'bad_source';
  if (isMulticastMac(pkt.ethSrc)) return 'bad_source_mac';
  const multicast = isMulticastIPv6(pkt.dst);
  if (multicast ? !ipv6Equals(pkt.dst, ALL_DHCP_RELAY_AGENTS_AND_SERVERS) : !isStackAddress(cfg, pkt.dst)) return 'not_for_us';
  const duid = serverDuid(cfg);
  const reply: Dhcpv6Message = { type: DHCPV6_REPLY, transactionId: msg.transactionId, serverId: duid };
  if (msg.clientId) reply.clientId = msg.clientId;
  const ourServerId = msg.serverId !== undefined && bytesEqual(msg.serverId, duid);
  const addConfiguration = (): void => {
    reply.dnsServers = [cfg.dns];
    if (cfg.searchDomains.length > 0) reply.domainList = cfg.searchDomains;
  };
  const send = (): Ipv6LinkReply => {
    const payload = buildUdpIPv6(cfg.gatewayLinkLocal, pkt.src, DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT, buildDhcpv6(reply));
    return {
      srcMac: cfg.gatewayMac, dstMac: pkt.ethSrc, src: cfg.gatewayLinkLocal, dst: pkt.src,
      hopLimit: DHCPV6_REPLY_HOP_LIMIT, nextHeader: NEXT_HEADER_UDP, payload,
    };
  };
  const declineOtherIas = (): void => {
    if (msg.otherIas) {
      reply.otherIas = msg.otherIas.map((ia) => ({
        code: ia.code, iaid: ia.iaid, status: status(ia.code === OPTION_IA_TA ? STATUS_NO_ADDRS_AVAIL : STATUS_NO_PREFIX_AVAIL),
      }));
    }
  };

  switch (msg.type) {
    case DHCPV6_INFORMATION_REQUEST:
      if (!multicast) return 'unicast_to_multicast_only';
      if (msg.iaNa || msg.otherIas) return 'information_request_with_ia';
      if (msg.serverId && !ourServerId) return 'other_server';
      addConfiguration();
      return send();
    case DHCPV6_SOLICIT:
    case DHCPV6_REBIND:
    case DHCPV6_CONFIRM:
      if (!msg.clientId) return 'missing_client_id';
      if (msg.serverId) return 'unexpected_server_id';
      if (!multicast) return 'unicast_to_multicast_only';
      if (!cfg.dhcpv6Addresses) return 'stateless';
      if (msg.type === DHCPV6_CONFIRM) {
        const held = (msg.iaNa ?? []).flatMap((ia) => ia.addresses);
        if (held.length === 0) return 'confirm_without_addresses';
        reply.status = status(held.every((a) => inIpv6Prefix(cfg, a.address)) ? STATUS_SUCCESS : STATUS_NOT_ON_LINK);
        return send();
      }
      if (msg.type === DHCPV6_SOLICIT) {
        if (msg.rapidCommit && cfg.rapidCommit) reply.rapidCommit = true;
        else reply.type = DHCPV6_ADVERTISE;
      }
      if (msg.iaNa) reply.iaNa = answerIas(cfg, msg.iaNa);
      else reply.status = status(STATUS_NO_ADDRS_AVAIL);
      declineOtherIas();
      addConfiguration();
      return send();
    case DHCPV6_REQUEST:
    case DHCPV6_RENEW:
    case DHCPV6_RELEASE:
    case DHCPV6_DECLINE:
      if (!msg.clientId) return 'missing_client_id';
      if (!msg.serverId) return 'missing_server_id';
      if (!ourServerId) return 'other_server';
      if (!multicast) {
        reply.status = status(STATUS_USE_MULTICAST);
        return send();
      }
      if (!cfg.dhcpv6Addresses) return 'stateless';
      if (msg.type === DHCPV6_RELEASE || msg.type === DHCPV6_DECLINE) {
        reply.status = status(STATUS_SUCCESS);
        return send();
      }
      if (msg.iaNa) reply.iaNa = answerIas(cfg, msg.iaNa);
      else reply.status = status(STATUS_NO_ADDRS_AVAIL);
      declineOtherIas();
      addConfiguration();
      return send();
    default:
      return 'not_client_message';
  }
}
