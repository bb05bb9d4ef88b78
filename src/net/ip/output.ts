/**
 * IP output towards the guest, shared by both families: the one reservation
 * handle for zero-copy output, and the family-neutral `IpOutput` that hands
 * each call to the IP layer of its address family.
 *
 * Theory of operation. The link has room for one open frame at a time
 * (NetLink.reserve/commit/abort), so the stack has exactly one
 * `FrameReservation`, reused: an IP layer (ipv4.ts or ipv6.ts)
 * reserves the frame, writes the Ethernet and IP headers and arms
 * the handle with its family's `IpHeaderOps` (header length, how a shorter
 * commit rewrites the length field, the GSO type of its TCP); the transport
 * fills `payload` and ends it with commit, commitOffload or abort. Arming
 * the handle while it is open aborts the old frame first (counted
 * 'ip.tx.reservation_replaced': a transport that forgot to end one). Ending
 * a handle that is not open does nothing, so a late abort cannot hit a
 * frame reserved since.
 *
 * commitOffload publishes a partial checksum (and GSO metadata when the L4
 * payload is longer than one segment) when the guest negotiated them, and
 * otherwise completes the checksum in software, refusing (counted
 * `<family>.tx.too_big`) a frame beyond the MTU that could then only be sent
 * as GSO. Every frame passes the pcap writer (IpLayerHost.capture) as it is
 * published.
 *
 * `DualOutput` picks the family from the addresses: an IPv4 number goes to
 * the IPv4 layer, IPv6 bytes to the IPv6 layer (ipv6.ts; none when IPv6 is
 * off: counted 'ip.tx.no_ipv6'); mixed families are a bug, counted
 * 'ip.tx.family_mismatch'.
 */
import type { FrameOffload, NetLink } from '../link.js';
import type { IpOutput, OutputReservation, StackInternals, TransportHandler } from '../context.js';
import type { InAny } from '../inany.js';
import { ETHERNET_HEADER_LENGTH } from '../wire/ethernet.js';
import { fold, sum16 } from '../wire/checksum.js';
import { PROTO_TCP } from '../wire/ipv4.js';

/** The ECN bit of a virtio-net gso_type (virtio 1.2 §5.1.6); the rest is the type (TCPV4 1, TCPV6 4). */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** The IP header length of a packet to `address` without options: 20 for IPv4, 40 for IPv6. */
export function ipHeaderLength(address: InAny): number {
  return typeof address === 'number' ? 20 : 40;
}

/** The transport handlers an IP layer delivers to (the stack's modules). */
export interface Transports {
  readonly icmp: TransportHandler;
  readonly udp: TransportHandler;
  /** Null when TCP is disabled. */
  readonly tcp: TransportHandler | null;
}

/** What an IP layer needs of the stack below and above it. */
export interface IpLayerHost extends StackInternals {
  readonly link: NetLink;
  /** The guest's MAC, or null after asking for it for `dst` (rate-limited: ARP for IPv4, a Neighbor Solicitation for IPv6). */
  guestMacOrAsk(dst: InAny): Uint8Array | null;
  /** Hand a published frame to the pcap writer (if capturing). */
  capture(frame: Uint8Array): void;
  readonly transports: Transports;
  /** Flush the link and the capture file. */
  flush(): void;
}

/** One family's IP header facts the reservation needs. */
export interface IpHeaderOps {
  /** 'ipv4' or 'ipv6': the counter prefix. */
  readonly name: string;
  readonly headerLength: number;
  /** virtio-net gso_type of this family's TCP (TCPV4 1, TCPV6 4). */
  readonly gsoTcp: number;
  /** Rewrite the header at `header` for an L4 payload of `payloadLength` (a commit shorter than reserved). */
  setPayloadLength(header: Uint8Array, payloadLength: number): void;
}

/** The stack's one zero-copy output handle (see the header comment). */
export class FrameReservation implements OutputReservation {
  payload: Uint8Array = new Uint8Array(0);
  private frame: Uint8Array | null = null;
  private protocol = 0;
  private ops: IpHeaderOps | null = null;
  /** The offload record handed to link.commit (reused: the link reads it during the call). */
  private readonly rxOffload: FrameOffload = { needsCsum: false, dataValid: false, csumStart: 0, csumOffset: 0, gsoType: 0, gsoSize: 0, hdrLen: 0 };

  constructor(private readonly host: IpLayerHost) {}

  get open(): boolean {
    return this.frame !== null;
  }

  /** Abort an open reservation before the link is asked for another frame. */
  release(): void {
    if (this.frame === null) return;
    this.host.counters.count('ip.tx.reservation_replaced');
    this.abort();
  }

  /** Arm the handle over `frame` (Ethernet + IP headers written by the family's layer). */
  arm(frame: Uint8Array, ops: IpHeaderOps, protocol: number): OutputReservation {
    this.frame = frame;
    this.ops = ops;
    this.protocol = protocol;
    this.payload = frame.subarray(ETHERNET_HEADER_LENGTH + ops.headerLength);
    return this;
  }

  commit(payloadLength?: number): void {
    const frame = this.frame;
    const ops = this.ops;
    if (frame === null || ops === null) return;
    this.frame = null;
    const l4 = ETHERNET_HEADER_LENGTH + ops.headerLength;
    let len = frame.length;
    if (payloadLength !== undefined && payloadLength >= 0 && l4 + payloadLength < len) {
      len = l4 + payloadLength;
      ops.setPayloadLength(frame.subarray(ETHERNET_HEADER_LENGTH, l4), payloadLength);
    }
    this.host.capture(frame.subarray(0, len));
    this.host.link.commit(len);
    this.host.counters.count('eth.tx.frames');
  }

  commitOffload(checksumOffset: number, l4HeaderLength: number, gsoSize: number): void {
    const frame = this.frame;
    const ops = this.ops;
    if (frame === null || ops === null) return;
    const host = this.host;
    const l4 = ETHERNET_HEADER_LENGTH + ops.headerLength;
    const len = frame.length;
    const rx = host.guestOffloads;
    if (checksumOffset < 0 || l4HeaderLength < 0 || l4 + l4HeaderLength > len || l4 + checksumOffset + 2 > len) {
      host.counters.count(`${ops.name}.tx.bad_offload`);
      this.abort();
      return;
    }
    const gso = gsoSize > 0 && len - l4 - l4HeaderLength > gsoSize;
    const gsoTaken = ops.gsoTcp === 1 ? rx.tso4 : rx.tso6;
    if (!rx.csum || (gso && (!gsoTaken || this.protocol !== PROTO_TCP))) {
      if (len - ETHERNET_HEADER_LENGTH > host.mtu) {
        host.counters.count(`${ops.name}.tx.too_big`);
        this.abort();
        return;
      }
      // The guest takes no partial checksums: complete it here (the field holds the pseudo-header sum).
      const csum = fold(sum16(frame.subarray(l4)));
      frame[l4 + checksumOffset] = csum >>> 8;
      frame[l4 + checksumOffset + 1] = csum & 0xff;
      this.commit();
      return;
    }
    this.frame = null;
    const o = this.rxOffload;
    o.needsCsum = true;
    o.dataValid = false;
    o.csumStart = l4;
    o.csumOffset = checksumOffset;
    o.hdrLen = l4 + l4HeaderLength;
    o.gsoType = gso ? ops.gsoTcp : 0;
    o.gsoSize = gso ? gsoSize : 0;
    host.capture(frame);
    host.link.commit(len, o);
    host.counters.count('eth.tx.frames');
  }

  abort(): void {
    if (this.frame === null) return;
    this.frame = null;
    this.host.link.abort();
  }
}

/** One family's output (src/net/ip/ipv4.ts, src/net/ip/ipv6.ts). */
export interface FamilyOutput {
  reserve(src: InAny, dst: InAny, protocol: number, payloadLength: number, flags: number): OutputReservation | null;
  send(src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean;
  sendTo(dstMac: Uint8Array, src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean;
  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: InAny): void;
}

/** The family-neutral IpOutput: each call goes to the layer of its addresses' family. */
export class DualOutput implements IpOutput {
  private writableCallbacks: (() => void)[] = [];

  constructor(
    private readonly host: IpLayerHost,
    private readonly v4: FamilyOutput,
    private readonly v6: FamilyOutput | null,
  ) {}

  private family(src: InAny, dst: InAny): FamilyOutput | null {
    const v4 = typeof dst === 'number';
    if (v4 !== (typeof src === 'number')) {
      this.host.counters.count('ip.tx.family_mismatch');
      return null;
    }
    if (v4) return this.v4;
    if (this.v6 === null) this.host.counters.count('ip.tx.no_ipv6');
    return this.v6;
  }

  reserve(src: InAny, dst: InAny, protocol: number, payloadLength: number, flags = 0): OutputReservation | null {
    return this.family(src, dst)?.reserve(src, dst, protocol, payloadLength, flags) ?? null;
  }

  send(src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    return this.family(src, dst)?.send(src, dst, protocol, payload) ?? false;
  }

  sendTo(dstMac: Uint8Array, src: InAny, dst: InAny, protocol: number, payload: Uint8Array): boolean {
    return this.family(src, dst)?.sendTo(dstMac, src, dst, protocol, payload) ?? false;
  }

  sendIcmpError(type: number, code: number, offending: Uint8Array, from?: InAny): void {
    const version = offending.length > 0 ? offending[0]! >>> 4 : 0;
    if (version === 4) return this.v4.sendIcmpError(type, code, offending, from);
    if (version === 6 && this.v6 !== null) return this.v6.sendIcmpError(type, code, offending, from);
    this.host.counters.count('icmp.tx.error_suppressed');
  }

  whenWritable(callback: () => void): void {
    const host = this.host;
    this.writableCallbacks.push(callback);
    if (this.writableCallbacks.length === 1) {
      host.link.onWritable(() => {
        const callbacks = this.writableCallbacks;
        this.writableCallbacks = [];
        for (const cb of callbacks) {
          try {
            cb();
          } catch (err) {
            host.counters.count('stack.writable.exception');
            host.logOnce('writable-exception', `exception in writable callback: ${String(err)}`);
          }
        }
      });
    }
  }

  flush(): void {
    this.host.flush();
  }
}
