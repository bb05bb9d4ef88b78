/**
 * The virtio-net header (virtio 1.2 §5.1.6) that precedes every frame on
 * both queues:
 *
 *   offset 0  u8   flags        NEEDS_CSUM 1, DATA_VALID 2, RSC_INFO 4
 *   offset 1  u8   gso_type     NONE 0, TCPV4 1, UDP 3, TCPV6 4, UDP_L4 5, | ECN 0x80
 *   offset 2  le16 hdr_len
 *   offset 4  le16 gso_size
 *   offset 6  le16 csum_start
 *   offset 8  le16 csum_offset
 *   offset 10 le16 num_buffers  (only with VIRTIO_F_VERSION_1 or MRG_RXBUF)
 *
 * The header is 12 bytes when VERSION_1 or MRG_RXBUF is negotiated, 10 bytes
 * otherwise (legacy without mergeable buffers). A header may be split over
 * descriptors, so the device copies it into this codec's 12-byte scratch
 * buffer (one DataView, allocated once) and decodes from there; on receive it
 * encodes into the scratch buffer and scatters it. No allocation per frame.
 */
import type { FrameOffload } from '../net/link.js';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
} from './features.js';

/** Header length without VERSION_1/MRG_RXBUF. */
export const VIRTIO_NET_HDR_LEN_LEGACY = 10;
/** Header length with VERSION_1 or MRG_RXBUF (num_buffers present). */
export const VIRTIO_NET_HDR_LEN = 12;

/** Header length for the negotiated features. */
export function netHeaderLength(features: bigint): number {
  return (features & (VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF)) !== 0n ? VIRTIO_NET_HDR_LEN : VIRTIO_NET_HDR_LEN_LEGACY;
}

/** A fresh offload record with nothing requested. */
export function emptyOffload(): FrameOffload {
  return { needsCsum: false, dataValid: false, csumStart: 0, csumOffset: 0, gsoType: VIRTIO_NET_HDR_GSO_NONE, gsoSize: 0, hdrLen: 0 };
}

export class NetHeaderCodec {
  /** Scratch bytes: the header being decoded or encoded. */
  readonly bytes = new Uint8Array(VIRTIO_NET_HDR_LEN);
  private readonly dv = new DataView(this.bytes.buffer);

  /**
   * Decode the header in `bytes` into `out`. Returns false (leaving `out`
   * untouched) when it asks for nothing: no flags and GSO_NONE, the common
   * case.
   */
  decode(out: FrameOffload): boolean {
    const flags = this.dv.getUint8(0);
    const gsoType = this.dv.getUint8(1);
    if (flags === 0 && gsoType === VIRTIO_NET_HDR_GSO_NONE) return false;
    out.needsCsum = (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
    out.dataValid = (flags & VIRTIO_NET_HDR_F_DATA_VALID) !== 0;
    out.gsoType = gsoType;
    out.hdrLen = this.dv.getUint16(2, true);
    out.gsoSize = this.dv.getUint16(4, true);
    out.csumStart = this.dv.getUint16(6, true);
    out.csumOffset = this.dv.getUint16(8, true);
    return true;
  }

  /** num_buffers of the header in `bytes` (12-byte headers only). */
  get numBuffers(): number {
    return this.dv.getUint16(10, true);
  }

  /** Encode a header into `bytes`: offload (or none) and num_buffers. */
  encode(offload: FrameOffload | null | undefined, numBuffers: number): void {
    const dv = this.dv;
    if (offload === null || offload === undefined) {
      dv.setUint32(0, 0, true);
      dv.setUint32(4, 0, true);
      dv.setUint16(8, 0, true);
    } else {
      dv.setUint8(0, (offload.needsCsum ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0) | (offload.dataValid ? VIRTIO_NET_HDR_F_DATA_VALID : 0));
      dv.setUint8(1, offload.gsoType & 0xff);
      dv.setUint16(2, offload.hdrLen & 0xffff, true);
      dv.setUint16(4, offload.gsoSize & 0xffff, true);
      dv.setUint16(6, offload.csumStart & 0xffff, true);
      dv.setUint16(8, offload.csumOffset & 0xffff, true);
    }
    dv.setUint16(10, numBuffers & 0xffff, true);
  }
}
