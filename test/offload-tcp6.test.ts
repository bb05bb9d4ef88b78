/**
 * virtio-net TCP offloads for IPv6, as offload-tcp.test.ts does for IPv4: a
 * driver-side mock of both rings in front of the real VirtioNetDevice,
 * Stack and TcpTranslator, and a real host socket on ::1 behind them.
 *
 *  - guest -> host (CSUM + HOST_TSO6): a TSO frame of gso_type TCPV6 with a
 *    partial checksum reaches the host socket intact, trusted without a
 *    pass over the payload; without HOST_TSO6 acked it is dropped.
 *  - host -> guest (GUEST_CSUM + GUEST_TSO6): host bytes reach the guest as
 *    TCPV6 GSO frames of whole MSS (gso_size = MSS, hdr_len 74, NEEDS_CSUM
 *    at 54/16 with the IPv6 pseudo-header sum in the field); with
 *    GUEST_TSO4 alone an IPv6 flow gets MSS-sized frames.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6,
} from '../src/virtio/features.js';
import { FLAG, hostPeer, waitFor } from './helpers/tcp-context.js';
import { pattern } from './helpers/prng.js';
import { guestRig, type GuestRig } from './helpers/guest-rig.js';
import { GATEWAY_IP6, GUEST_IP6, NH_TCP, guestIpv6Frame, guestTcp6Frame, ipv6Packet, parseFrame6 } from './helpers/packets6.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const BASE = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4;
const MSS = 1500 - 40 - 20;

async function rig(features: bigint): Promise<GuestRig> {
  const r = await guestRig({ features, rxQueueSize: 256, txQueueSize: 256, rxBufSize: 1536, rxPosted: 128 });
  cleanups.push(r.close);
  return r;
}

/** Received frames with TCP over IPv6, with their virtio headers. */
function tcp6Frames(r: GuestRig) {
  r.collect();
  return r.received.splice(0).flatMap((x) => {
    if (x.frame[12] !== 0x86 || x.frame[13] !== 0xdd) return [];
    const p = parseFrame6(x.frame);
    return p.tcp ? [{ hdr: x.hdr, frame: x.frame, p, tcp: p.tcp }] : [];
  });
}

/** Connect from the guest to a listener on ::1 (as gateway6). */
async function connect(r: GuestRig, port: number, sport: number, window = 2048): Promise<{ seq: number; ack: number; mss: number }> {
  r.send(guestTcp6Frame({ dst: GATEWAY_IP6, sport, dport: port, seq: 1000, flags: FLAG.SYN, window: 65535, options: { mss: MSS, wscale: 7 } }));
  let synAck: ReturnType<typeof tcp6Frames>[number] | undefined;
  await waitFor(() => (synAck = tcp6Frames(r).find((f) => f.tcp.flags === (FLAG.SYN | FLAG.ACK))) !== undefined, 3000, 'SYN-ACK');
  const ack = (synAck!.tcp.seq + 1) >>> 0;
  r.send(guestTcp6Frame({ dst: GATEWAY_IP6, sport, dport: port, seq: 1001, ack, flags: FLAG.ACK, window }));
  return { seq: 1001, ack, mss: synAck!.tcp.mss! };
}

/** The IPv6 pseudo-header sum folded, not inverted (what Linux leaves in th->check with CHECKSUM_PARTIAL). */
function pseudoHeaderPartial6(src: Uint8Array, dst: Uint8Array, length: number): number {
  let s = NH_TCP + (length >>> 16) + (length & 0xffff);
  for (let i = 0; i < 16; i += 2) s += ((src[i]! << 8) | src[i + 1]!) + ((dst[i]! << 8) | dst[i + 1]!);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** A guest TSO6 frame: Ethernet + IPv6 (payload length of the whole) + TCP with a partial checksum. */
function tso6Frame(o: { sport: number; dport: number; seq: number; ack: number; payload: Uint8Array }): Uint8Array {
  const tcp = new Uint8Array(20 + o.payload.length);
  const dv = new DataView(tcp.buffer);
  dv.setUint16(0, o.sport, false);
  dv.setUint16(2, o.dport, false);
  dv.setUint32(4, o.seq, false);
  dv.setUint32(8, o.ack, false);
  tcp[12] = 5 << 4;
  tcp[13] = FLAG.ACK | FLAG.PSH;
  dv.setUint16(14, 2048, false);
  tcp.set(o.payload, 20);
  dv.setUint16(16, pseudoHeaderPartial6(GUEST_IP6, GATEWAY_IP6, tcp.length), false);
  return guestIpv6Frame(ipv6Packet({ dst: GATEWAY_IP6, nextHeader: NH_TCP, payload: tcp }));
}

const TSO6_HDR = { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: VIRTIO_NET_HDR_GSO_TCPV6, hdrLen: 74, gsoSize: MSS, csumStart: 54, csumOffset: 16 };

describe('guest -> host offloads over IPv6 (CSUM, HOST_TSO6)', () => {
  it('a 60 KB TSO6 frame with a partial checksum, scattered over descriptors, reaches the host socket on ::1 intact', async () => {
    const peer = await hostPeer(cleanups, '::1');
    const r = await rig(BASE | VIRTIO_NET_F_HOST_TSO6);
    const c = await connect(r, peer.port, 43001);
    const payload = pattern(60_000, 11);
    r.send(tso6Frame({ sport: 43001, dport: peer.port, seq: c.seq, ack: c.ack, payload }), TSO6_HDR, [74 + 200, 74 + 4096 + 200, 74 + 40000]);
    await waitFor(() => peer.received().length >= payload.length, 3000, 'host bytes');
    expect(Buffer.compare(peer.received(), Buffer.from(payload))).toBe(0);
    expect(r.counters.get('tcp.drop.bad_checksum')).toBe(0);
    expect(r.counters.get('eth.rx.csum_completed')).toBe(0);
    expect(r.counters.get('tcp.rx.bytes')).toBe(60_000);
  });

  it('is dropped and counted when HOST_TSO6 was not acked', async () => {
    const peer = await hostPeer(cleanups, '::1');
    const r = await rig(BASE);
    const c = await connect(r, peer.port, 43002);
    r.send(tso6Frame({ sport: 43002, dport: peer.port, seq: c.seq, ack: c.ack, payload: pattern(5000, 2) }), TSO6_HDR);
    expect(r.counters.get('virtio_net.tx.drop.gso_not_negotiated')).toBe(1);
    expect(r.counters.get('tcp.rx.bytes')).toBe(0);
  });
});

describe('host -> guest offloads over IPv6 (GUEST_CSUM, GUEST_TSO6)', () => {
  it('host bytes arrive as TCPV6 GSO frames of whole MSS with the IPv6 pseudo-header sum in the field', async () => {
    const peer = await hostPeer(cleanups, '::1');
    const r = await rig(BASE | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6);
    expect(r.dev.rxOffloads).toEqual({ csum: true, tso4: true, tso6: true });
    const c = await connect(r, peer.port, 43003);
    expect(c.mss).toBe(MSS);
    await waitFor(() => peer.accepted.length === 1, 3000, 'accept');
    const data = pattern(200_000, 12);
    peer.accepted[0]!.write(data);
    const frames: ReturnType<typeof tcp6Frames> = [];
    await waitFor(() => {
      frames.push(...tcp6Frames(r).filter((f) => f.tcp.payload.length > 0));
      return frames.reduce((a, f) => a + f.tcp.payload.length, 0) >= data.length;
    }, 5000, 'all host bytes');
    expect(Buffer.compare(Buffer.concat(frames.map((f) => f.tcp.payload)), Buffer.from(data))).toBe(0);
    expect(Math.max(...frames.map((f) => f.tcp.payload.length))).toBe(Math.floor((65535 - 40) / MSS) * MSS);
    for (const f of frames) {
      expect(f.hdr.flags).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM);
      expect(f.hdr.csumStart).toBe(54);
      expect(f.hdr.csumOffset).toBe(16);
      expect(f.hdr.hdrLen).toBe(74);
      const l4Length = f.frame.length - 54;
      expect(new DataView(f.frame.buffer, f.frame.byteOffset + 54 + 16, 2).getUint16(0, false)).toBe(pseudoHeaderPartial6(GATEWAY_IP6, GUEST_IP6, l4Length));
      if (f.tcp.payload.length > MSS) {
        expect(f.hdr.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV6);
        expect(f.hdr.gsoSize).toBe(MSS);
      } else {
        expect(f.hdr.gsoType).toBe(0);
      }
    }
    expect(frames.some((f) => f.hdr.gsoType === VIRTIO_NET_HDR_GSO_TCPV6)).toBe(true);
  });

  it('with GUEST_TSO4 but not GUEST_TSO6 an IPv6 flow gets MSS-sized frames', async () => {
    const peer = await hostPeer(cleanups, '::1');
    const r = await rig(BASE | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4);
    expect(r.dev.rxOffloads).toEqual({ csum: true, tso4: true, tso6: false });
    await connect(r, peer.port, 43004);
    await waitFor(() => peer.accepted.length === 1, 3000, 'accept');
    const data = pattern(30_000, 13);
    peer.accepted[0]!.write(data);
    const frames: ReturnType<typeof tcp6Frames> = [];
    await waitFor(() => {
      frames.push(...tcp6Frames(r).filter((f) => f.tcp.payload.length > 0));
      return frames.reduce((a, f) => a + f.tcp.payload.length, 0) >= data.length;
    }, 5000, 'all host bytes');
    expect(Buffer.compare(Buffer.concat(frames.map((f) => f.tcp.payload)), Buffer.from(data))).toBe(0);
    expect(frames.every((f) => f.tcp.payload.length <= MSS && f.hdr.gsoType === 0)).toBe(true);
  });
});
