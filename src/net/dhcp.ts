/**
 * DHCPv4 server (RFC 2131, options RFC 2132, domain search RFC 3397).
 *
 * Theory of operation. One address to give: config.guestIp (the stack
 * serves one guest, like libslirp's first lease 10.0.2.15). The lease is
 * recorded per client hardware address but never refused to a new client:
 * a VM whose MAC changed must not wait out a day-long lease.
 *
 *  DISCOVER -> OFFER (yiaddr = guestIp)
 *  REQUEST  -> selecting (server id present): ours -> ACK; another server's
 *              -> silently ignored (RFC 2131 4.3.2: the client chose it);
 *              init-reboot/renew (requested-ip option or ciaddr): guestIp
 *              -> ACK, anything else -> NAK
 *  INFORM   -> ACK with configuration but no lease (no yiaddr, no 51/58/59)
 *  RELEASE  -> lease forgotten;  DECLINE -> counted and logged
 *
 * The lease remembers the client's MAC, expiry and the host name it sent
 * in option 12 (kept only as printable ASCII, at most 63 characters), for
 * the control endpoint's /leases.
 *
 * Replies come from gateway:67 to port 68 and are addressed per RFC 2131
 * 4.1: NAK broadcast; ciaddr set -> unicast to ciaddr; broadcast flag ->
 * 255.255.255.255 with the broadcast MAC; otherwise unicast to yiaddr at
 * chaddr. Options: message type, server id, lease/T1/T2 first, then the
 * options the client listed in 55 in its order, then the remaining defaults
 * (mask, router, DNS, hostname, domain name, MTU, broadcast, domain search);
 * a client identifier (61) is echoed (RFC 6842). Replies are at most the
 * client's maximum message size (57) or 576-byte IP packets.
 *
 * Relayed requests (giaddr set), BOOTP without a message type and replies
 * sent by the guest are dropped and counted.
 */
import type { IpMeta, StackInternals } from './context.js';
import type { UdpView } from './wire/udp.js';
import { sendUdpToGuest } from './udp-output.js';
import {
  BOOTREQUEST, DHCPACK, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPNAK, DHCPOFFER, DHCPRELEASE, DHCPREQUEST,
  DhcpWriter, OPT_BROADCAST, OPT_CLIENT_ID, OPT_DNS, OPT_DOMAIN_NAME, OPT_DOMAIN_SEARCH, OPT_HOSTNAME, OPT_INTERFACE_MTU,
  OPT_LEASE_TIME, OPT_MAX_MESSAGE_SIZE, OPT_MESSAGE, OPT_MESSAGE_TYPE, OPT_PARAMETER_LIST, OPT_REBINDING_TIME,
  OPT_RENEWAL_TIME, OPT_REQUESTED_IP, OPT_ROUTER, OPT_SERVER_ID, OPT_SUBNET_MASK, addressBytes, encodeDomainSearch,
  optionAddress, parseDhcp, u16Bytes, u32Bytes, type DhcpView,
} from './wire/dhcp.js';
import { BROADCAST_MAC, isMulticastMac, isZeroMac, macToString } from './wire/ethernet.js';
import { networkBroadcast } from './config.js';
import { ipv4ToString, prefixMask } from './ip-address.js';

const MESSAGE_NAMES: Record<number, string> = {
  1: 'discover', 2: 'offer', 3: 'request', 4: 'decline', 5: 'ack', 6: 'nak', 7: 'release', 8: 'inform',
};

/** Options offered by default, in this order after those the client asked for. */
const DEFAULT_ORDER = [OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_DOMAIN_NAME, OPT_INTERFACE_MTU, OPT_BROADCAST, OPT_DOMAIN_SEARCH];

export class DhcpServer {
  /** Current lease holder (MAC string) and expiry (clock ms). */
  lease: { mac: string; expires: number; hostname?: string } | null = null;

  constructor(private readonly s: StackInternals) {}

  input(_meta: IpMeta, udp: UdpView): void {
    const c = this.s.counters;
    const cfg = this.s.config;
    const msg = parseDhcp(udp.payload);
    if (typeof msg === 'string') return c.count(`dhcp.drop.${msg}`);
    if (msg.op !== BOOTREQUEST) return c.count('dhcp.drop.not_request');
    if (msg.giaddr !== 0) return c.count('dhcp.drop.relayed');
    if (isZeroMac(msg.chaddr) || isMulticastMac(msg.chaddr)) return c.count('dhcp.drop.bad_chaddr');
    const type = msg.messageType;
    const name = MESSAGE_NAMES[type];
    if (!name) return c.count(type === 0 ? 'dhcp.drop.bootp' : 'dhcp.drop.bad_type');
    c.count(`dhcp.rx.${name}`);
    const serverId = optionAddress(msg.options.get(OPT_SERVER_ID));
    const mac = macToString(msg.chaddr);
    switch (type) {
      case DHCPDISCOVER:
        this.s.learnGuestMac(msg.chaddr);
        return this.reply(msg, DHCPOFFER, cfg.guestIp);
      case DHCPREQUEST: {
        if (serverId !== null && serverId !== cfg.gateway) return c.count('dhcp.drop.other_server');
        const requested = optionAddress(msg.options.get(OPT_REQUESTED_IP)) ?? (msg.ciaddr !== 0 ? msg.ciaddr : null);
        if (requested === null) return c.count('dhcp.drop.no_requested_address');
        this.s.learnGuestMac(msg.chaddr);
        if (requested !== cfg.guestIp) {
          // One log line, ever: the MAC and the address are the guest's to vary (counted as dhcp.tx.nak).
          this.s.logOnce('dhcp-nak', `DHCP: NAK to ${mac} requesting ${ipv4ToString(requested)} (have ${ipv4ToString(cfg.guestIp)})`);
          return this.reply(msg, DHCPNAK, 0);
        }
        const hostname = clientHostname(msg.options.get(OPT_HOSTNAME));
        this.lease = { mac, expires: this.s.clock.now() + cfg.leaseSeconds * 1000, ...(hostname !== undefined ? { hostname } : {}) };
        return this.reply(msg, DHCPACK, cfg.guestIp);
      }
      case DHCPINFORM:
        return this.reply(msg, DHCPACK, 0, true);
      case DHCPRELEASE:
        if (this.lease?.mac === mac && (serverId === null || serverId === cfg.gateway)) this.lease = null;
        return;
      case DHCPDECLINE:
        this.s.logOnce('dhcp-decline', `DHCP: ${mac} declined ${ipv4ToString(cfg.guestIp)} (address in use on the guest side?)`);
        if (this.lease?.mac === mac) this.lease = null;
        return;
      default:
        return c.count('dhcp.drop.bad_type');
    }
  }

  private reply(req: DhcpView, type: number, yiaddr: number, inform = false): void {
    const s = this.s;
    const cfg = s.config;
    const maxSize = req.options.get(OPT_MAX_MESSAGE_SIZE);
    let maxLength = 576 - 28;
    if (maxSize && maxSize.length === 2) {
      const v = (maxSize[0]! << 8) | maxSize[1]!;
      if (v >= 576) maxLength = Math.min(v, s.mtu) - 28;
    }
    const w = new DhcpWriter(maxLength);
    const broadcastFlag = (req.flags & 0x8000) !== 0;
    w.header({
      xid: req.xid, flags: req.flags & 0x8000, ciaddr: inform || type === DHCPACK ? req.ciaddr : 0, yiaddr, siaddr: 0, giaddr: 0, chaddr: req.chaddr,
    });
    w.option(OPT_MESSAGE_TYPE, new Uint8Array([type]));
    w.option(OPT_SERVER_ID, addressBytes(cfg.gateway));
    const clientId = req.options.get(OPT_CLIENT_ID);
    if (type === DHCPNAK) {
      w.option(OPT_MESSAGE, new TextEncoder().encode('requested address not available'));
      if (clientId) w.option(OPT_CLIENT_ID, clientId);
    } else {
      if (!inform) {
        const lease = cfg.leaseSeconds;
        w.option(OPT_LEASE_TIME, u32Bytes(lease));
        w.option(OPT_RENEWAL_TIME, u32Bytes(Math.floor(lease / 2)));
        w.option(OPT_REBINDING_TIME, u32Bytes(Math.floor((lease * 7) / 8)));
      }
      if (clientId) w.option(OPT_CLIENT_ID, clientId);
      const values = this.optionValues();
      const done = new Set<number>();
      const requested = req.options.get(OPT_PARAMETER_LIST) ?? new Uint8Array(0);
      for (const code of [...requested, ...DEFAULT_ORDER]) {
        if (done.has(code)) continue;
        const v = values.get(code);
        if (!v) continue;
        done.add(code);
        if (!w.option(code, v)) s.counters.count('dhcp.option_skipped');
      }
    }
    const payload = w.finish();
    // RFC 2131 4.1 reply addressing.
    let dst: number;
    let dstMac: Uint8Array | undefined;
    if (type === DHCPNAK) {
      dst = 0xffffffff;
      dstMac = BROADCAST_MAC;
    } else if (req.ciaddr !== 0) {
      dst = req.ciaddr;
      dstMac = req.chaddr;
    } else if (broadcastFlag || yiaddr === 0) {
      dst = 0xffffffff;
      dstMac = BROADCAST_MAC;
    } else {
      dst = yiaddr;
      dstMac = req.chaddr;
    }
    if (sendUdpToGuest(s, cfg.gateway, 67, dst, 68, payload, Uint8Array.from(dstMac))) {
      s.counters.count(`dhcp.tx.${MESSAGE_NAMES[type]}`);
    } else s.counters.count('dhcp.drop.tx_failed');
  }

  private optionValues(): Map<number, Uint8Array> {
    const cfg = this.s.config;
    const v = new Map<number, Uint8Array>();
    v.set(OPT_SUBNET_MASK, addressBytes(prefixMask(cfg.prefixLength)));
    v.set(OPT_ROUTER, addressBytes(cfg.gateway));
    v.set(OPT_DNS, addressBytes(cfg.dns));
    if (cfg.hostname) v.set(OPT_HOSTNAME, new TextEncoder().encode(cfg.hostname));
    if (cfg.domainSearch.length > 0) {
      v.set(OPT_DOMAIN_NAME, new TextEncoder().encode(cfg.domainSearch[0]!));
      const search = encodeDomainSearch(cfg.domainSearch);
      if (search.length > 0 && search.length <= 255) v.set(OPT_DOMAIN_SEARCH, search);
    }
    v.set(OPT_INTERFACE_MTU, u16Bytes(this.s.mtu));
    v.set(OPT_BROADCAST, addressBytes(networkBroadcast(cfg)));
    return v;
  }
}

/** The client's host name (option 12) if it is 1..63 printable ASCII characters, else undefined. */
function clientHostname(bytes: Uint8Array | undefined): string | undefined {
  if (bytes === undefined || bytes.length === 0 || bytes.length > 63) return undefined;
  for (const b of bytes) if (b < 0x21 || b > 0x7e) return undefined;
  return String.fromCharCode(...bytes);
}
