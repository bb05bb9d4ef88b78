/**
 * The frame interface between the virtio-net device and the network stack.
 *
 * Theory of operation. Frames from the guest (its tx queue) reach the stack
 * through `FrameSink.receive` as views over guest memory: zero copies, valid
 * only for the duration of the call (the descriptor is returned to the guest
 * when the batch ends). A frame the device could not present as one
 * contiguous view (scattered over descriptors) is gathered into a bounce
 * buffer first. The virtio-net header's offload fields travel beside the
 * frame as `FrameOffload`, so checksum offload and TSO/GSO can be honoured
 * without re-parsing the header.
 *
 * Frames to the guest (its rx queue) are written by the stack straight into
 * the guest's receive buffers: `reserve(len)` returns a writable view of
 * exactly `len` bytes (guest memory itself when one receive buffer holds the
 * frame, otherwise a bounce buffer scattered over merged buffers at commit);
 * the stack writes headers and payload into it and calls `commit`. When the
 * guest has posted no receive buffers, `reserve` returns null: that is
 * back-pressure, and the stack waits for `onWritable`. Used entries are
 * published and the guest interrupted once per batch (`flush`), not per frame.
 *
 * Receive offloads. `rxOffloads` says what the guest negotiated. Without
 * them a frame is at most MTU + 14 + 4 bytes and `commit` carries no
 * offload (full checksums). With `rxOffloads.csum` a frame may be committed
 * with `needsCsum` (its L4 checksum field holding only the pseudo-header
 * sum; the guest treats it as locally generated, CHECKSUM_PARTIAL in Linux).
 * With `rxOffloads.tso4` (which implies csum) `reserve` takes frames up to a
 * 65535-byte IPv4 packet plus Ethernet and VLAN headers, committed as one GSO
 * frame (gso_type TCPV4, gso_size the segment size, hdr_len the header
 * bytes). A commit asking for an offload the guest did not negotiate is
 * dropped and counted by the device.
 *
 * `rxOffloads` is read per frame, never cached: the device withdraws
 * tso4/tso6 at run time when the guest's receive ring turns out unable to
 * hold a 64 KiB frame (then `reserve` returns null once and `onWritable`
 * follows at once, so a flow retries with MSS-sized frames). A frame the
 * guest's buffers can never hold (a full ring of buffers too small for it)
 * is accepted by `reserve` and dropped, counted, at `commit`: back-pressure
 * (null) always means "wait for onWritable", never "never".
 */

/** Offload metadata from/to the virtio-net header (virtio 1.2 §5.1.6). */
export interface FrameOffload {
  /** VIRTIO_NET_HDR_F_NEEDS_CSUM: the L4 checksum is partial and must be completed (from csumStart, stored at csumStart + csumOffset). */
  needsCsum: boolean;
  /** VIRTIO_NET_HDR_F_DATA_VALID: the checksum is known good (rx direction only). */
  dataValid: boolean;
  csumStart: number;
  csumOffset: number;
  /** VIRTIO_NET_HDR_GSO_NONE (0), TCPV4 (1), UDP (3), TCPV6 (4), UDP_L4 (5); ECN bit (0x80) kept. */
  gsoType: number;
  gsoSize: number;
  hdrLen: number;
}

/** Where the device delivers guest frames (the stack implements this). */
export interface FrameSink {
  /**
   * One frame from the guest, Ethernet header first. `frame` aliases guest
   * memory and is valid only during this call. `offload` is null when the
   * header asked for nothing (the common case). Must not throw.
   */
  receive(frame: Uint8Array, offload: FrameOffload | null): void;
  /** The end of one batch of received frames (one kick): flush output now. */
  batchEnd?(): void;
}

/** What the device offers the stack for sending frames to the guest. */
export interface NetLink {
  /** Maximum Ethernet payload the guest accepts (MTU). */
  readonly mtu: number;
  /** Offloads the guest accepts on receive (negotiated GUEST_CSUM / GUEST_TSO4 ...; tso4 and tso6 imply csum). May lose tso4/tso6 at run time: read it per frame. */
  readonly rxOffloads: { csum: boolean; tso4: boolean; tso6: boolean };
  /**
   * Reserve room for one frame of `length` bytes (Ethernet header onward):
   * at most MTU + 18, or 65535 + 18 when `rxOffloads.tso4` (a GSO frame).
   * Returns a writable view of exactly `length` bytes, or null when the guest
   * has no receive buffers (back-pressure; see onWritable) or the link is down
   * (its receive ring stopped or disabled: onWritable runs when it is back).
   * At most one reservation is open at a time.
   */
  reserve(length: number): Uint8Array | null;
  /** Publish the open reservation with its final length (<= reserved). */
  commit(length: number, offload?: FrameOffload): void;
  /** Drop the open reservation without sending. */
  abort(): void;
  /** Copy a finished frame to the guest (reserve + copy + commit). False on back-pressure. */
  send(frame: Uint8Array): boolean;
  /** Publish used entries and interrupt the guest once. Also happens by itself at the end of the current event-loop turn. */
  flush(): void;
  /** Register the callback run when receive buffers become available after back-pressure (one registration; replaces the previous). */
  onWritable(callback: () => void): void;
}
