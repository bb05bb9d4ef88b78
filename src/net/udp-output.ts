/**
 * UDP output to the guest, used by the UDP module, the DHCP server and the
 * DNS forwarder (a module of its own so that none of them imports another).
 */
import type { StackInternals } from './context.js';
import type { InAny } from './inany.js';
import { ipHeaderLength } from './ip/output.js';
import { UDP_HEADER_LENGTH, writeUdp } from './wire/udp.js';
import { PROTO_UDP } from './wire/ipv4.js';

/**
 * Send a UDP datagram to the guest: reserve-and-fill when it fits the MTU,
 * otherwise one copy and the IP layer's fragmentation. Returns false on
 * back-pressure or when the guest's MAC is unknown.
 */
export function sendUdpToGuest(s: StackInternals, src: InAny, srcPort: number, dst: InAny, dstPort: number, data: Uint8Array, dstMac?: Uint8Array): boolean {
  const len = UDP_HEADER_LENGTH + data.length;
  const headerLength = ipHeaderLength(dst);
  if (headerLength + len > 65535) {
    s.counters.count('udp.tx.too_big');
    return false;
  }
  if (!dstMac && headerLength + len <= s.mtu) {
    const out = s.out.reserve(src, dst, PROTO_UDP, len);
    if (!out) return false;
    const view = out.payload;
    view.set(data, UDP_HEADER_LENGTH);
    writeUdp(view, src, dst, srcPort, dstPort);
    out.commit();
    return true;
  }
  const datagram = new Uint8Array(len);
  datagram.set(data, UDP_HEADER_LENGTH);
  writeUdp(datagram, src, dst, srcPort, dstPort);
  return dstMac ? s.sendTo(dstMac, src, dst, PROTO_UDP, datagram) : s.out.send(src, dst, PROTO_UDP, datagram);
}

