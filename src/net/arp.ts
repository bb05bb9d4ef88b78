/**
 * ARP responder (RFC 826) for the addresses the stack owns.
 *
 * Theory of operation, following libslirp's arp_input: a request whose
 * target is the gateway or the DNS address is answered with the gateway MAC
 * (libslirp also answers for guestfwd addresses, which this stack does not
 * have); requests for any other address — other hosts of the guest network,
 * the guest's own address (duplicate address detection probes) — are left
 * unanswered, so a guest probing for conflicts sees none. The sender of any
 * request or reply from inside the guest network teaches the stack the
 * guest's MAC; a gratuitous ARP (sender == target) does only that.
 * Malformed packets are dropped with a reason ('arp.drop.*').
 */
import type { StackInternals } from './context.js';
import { ARP_LENGTH, ARP_REPLY, ARP_REQUEST, parseArp, writeArp } from './wire/arp.js';
import { BROADCAST_MAC, ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, isMulticastMac, writeEthernetHeader } from './wire/ethernet.js';
import { inSubnet } from './ip-address.js';

/** Frames are padded to the Ethernet minimum (60 bytes without FCS), as a NIC would. */
const ARP_FRAME_LENGTH = 60;

export class ArpModule {
  constructor(private readonly s: StackInternals) {}

  /** One ARP payload from the guest; `srcMac` is the Ethernet source. */
  input(bytes: Uint8Array, srcMac: Uint8Array): void {
    const c = this.s.counters;
    const cfg = this.s.config;
    const arp = parseArp(bytes);
    if (typeof arp === 'string') return c.count(`arp.drop.${arp}`);
    if (isMulticastMac(arp.sha)) return c.count('arp.drop.bad_sender');
    c.count(arp.op === ARP_REQUEST ? 'arp.rx.request' : 'arp.rx.reply');
    const senderInNet = arp.spa !== 0 && inSubnet(arp.spa, cfg.network, cfg.prefixLength);
    if (senderInNet) {
      if (arp.spa === cfg.gateway || arp.spa === cfg.dns) return c.count('arp.drop.address_conflict');
      this.s.learnGuestMac(arp.sha);
    }
    if (arp.op !== ARP_REQUEST) return;
    if (arp.spa === arp.tpa) return c.count('arp.rx.gratuitous');
    if (arp.tpa !== cfg.gateway && arp.tpa !== cfg.dns) return c.count('arp.ignored');
    if (arp.spa === 0 && !senderInNet) {
      // RFC 5227 probe for our address: answer so the prober sees the conflict (to the broadcast address).
      c.count('arp.rx.probe');
    }
    const frame = new Uint8Array(ARP_FRAME_LENGTH);
    writeEthernetHeader(frame, arp.spa === 0 ? BROADCAST_MAC : srcMac, cfg.gatewayMac, ETHERTYPE_ARP);
    writeArp(frame.subarray(ETHERNET_HEADER_LENGTH, ETHERNET_HEADER_LENGTH + ARP_LENGTH), ARP_REPLY, cfg.gatewayMac, arp.tpa, arp.sha, arp.spa);
    if (this.s.sendFrame(frame)) c.count('arp.tx.reply');
  }

  /** Ask who has `address` (used when the guest's MAC is not known yet). */
  request(address: number): void {
    const cfg = this.s.config;
    const frame = new Uint8Array(ARP_FRAME_LENGTH);
    writeEthernetHeader(frame, BROADCAST_MAC, cfg.gatewayMac, ETHERTYPE_ARP);
    writeArp(frame.subarray(ETHERNET_HEADER_LENGTH, ETHERNET_HEADER_LENGTH + ARP_LENGTH), ARP_REQUEST, cfg.gatewayMac, cfg.gateway, new Uint8Array(6), address);
    if (this.s.sendFrame(frame)) this.s.counters.count('arp.tx.request');
  }
}
