/**
 * Virtio constants: feature bits (virtio 1.2 §6 reserved bits, §5.1.3
 * virtio-net), split-ring flag values (§2.7) and the virtio-net header
 * constants (§5.1.6), plus `vringNeedEvent`, the EVENT_IDX comparison both
 * sides of a split ring use.
 *
 * Loading this module fails on a big-endian host (see the split ring section).
 *
 * Feature bits are `bigint` masks (`1n << BigInt(bit)`) because the feature
 * word is 64 bits wide; the `*_BIT` numbers are the bit positions.
 */

const bit = (n: number): bigint => 1n << BigInt(n);

// ---- virtio-net device feature bit positions (§5.1.3) ---------------------
export const VIRTIO_NET_F_CSUM_BIT = 0;
export const VIRTIO_NET_F_GUEST_CSUM_BIT = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS_BIT = 2;
export const VIRTIO_NET_F_MTU_BIT = 3;
export const VIRTIO_NET_F_MAC_BIT = 5;
export const VIRTIO_NET_F_GUEST_TSO4_BIT = 7;
export const VIRTIO_NET_F_GUEST_TSO6_BIT = 8;
export const VIRTIO_NET_F_GUEST_ECN_BIT = 9;
export const VIRTIO_NET_F_GUEST_UFO_BIT = 10;
export const VIRTIO_NET_F_HOST_TSO4_BIT = 11;
export const VIRTIO_NET_F_HOST_TSO6_BIT = 12;
export const VIRTIO_NET_F_HOST_ECN_BIT = 13;
export const VIRTIO_NET_F_HOST_UFO_BIT = 14;
export const VIRTIO_NET_F_MRG_RXBUF_BIT = 15;
export const VIRTIO_NET_F_STATUS_BIT = 16;
export const VIRTIO_NET_F_CTRL_VQ_BIT = 17;
export const VIRTIO_NET_F_CTRL_RX_BIT = 18;
export const VIRTIO_NET_F_CTRL_VLAN_BIT = 19;
export const VIRTIO_NET_F_GUEST_ANNOUNCE_BIT = 21;
export const VIRTIO_NET_F_MQ_BIT = 22;
export const VIRTIO_NET_F_CTRL_MAC_ADDR_BIT = 23;

export const VIRTIO_NET_F_CSUM = bit(VIRTIO_NET_F_CSUM_BIT);
export const VIRTIO_NET_F_GUEST_CSUM = bit(VIRTIO_NET_F_GUEST_CSUM_BIT);
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = bit(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS_BIT);
export const VIRTIO_NET_F_MTU = bit(VIRTIO_NET_F_MTU_BIT);
export const VIRTIO_NET_F_MAC = bit(VIRTIO_NET_F_MAC_BIT);
export const VIRTIO_NET_F_GUEST_TSO4 = bit(VIRTIO_NET_F_GUEST_TSO4_BIT);
export const VIRTIO_NET_F_GUEST_TSO6 = bit(VIRTIO_NET_F_GUEST_TSO6_BIT);
export const VIRTIO_NET_F_GUEST_ECN = bit(VIRTIO_NET_F_GUEST_ECN_BIT);
export const VIRTIO_NET_F_GUEST_UFO = bit(VIRTIO_NET_F_GUEST_UFO_BIT);
export const VIRTIO_NET_F_HOST_TSO4 = bit(VIRTIO_NET_F_HOST_TSO4_BIT);
export const VIRTIO_NET_F_HOST_TSO6 = bit(VIRTIO_NET_F_HOST_TSO6_BIT);
export const VIRTIO_NET_F_HOST_ECN = bit(VIRTIO_NET_F_HOST_ECN_BIT);
export const VIRTIO_NET_F_HOST_UFO = bit(VIRTIO_NET_F_HOST_UFO_BIT);
export const VIRTIO_NET_F_MRG_RXBUF = bit(VIRTIO_NET_F_MRG_RXBUF_BIT);
export const VIRTIO_NET_F_STATUS = bit(VIRTIO_NET_F_STATUS_BIT);
export const VIRTIO_NET_F_CTRL_VQ = bit(VIRTIO_NET_F_CTRL_VQ_BIT);
export const VIRTIO_NET_F_CTRL_RX = bit(VIRTIO_NET_F_CTRL_RX_BIT);
export const VIRTIO_NET_F_CTRL_VLAN = bit(VIRTIO_NET_F_CTRL_VLAN_BIT);
export const VIRTIO_NET_F_GUEST_ANNOUNCE = bit(VIRTIO_NET_F_GUEST_ANNOUNCE_BIT);
export const VIRTIO_NET_F_MQ = bit(VIRTIO_NET_F_MQ_BIT);
export const VIRTIO_NET_F_CTRL_MAC_ADDR = bit(VIRTIO_NET_F_CTRL_MAC_ADDR_BIT);

// ---- device-independent feature bits (§6) ---------------------------------
export const VIRTIO_F_NOTIFY_ON_EMPTY_BIT = 24;
export const VIRTIO_F_ANY_LAYOUT_BIT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC_BIT = 28;
export const VIRTIO_RING_F_EVENT_IDX_BIT = 29;
export const VIRTIO_F_VERSION_1_BIT = 32;
export const VIRTIO_F_ACCESS_PLATFORM_BIT = 33;
export const VIRTIO_F_RING_PACKED_BIT = 34;
export const VIRTIO_F_IN_ORDER_BIT = 35;

export const VIRTIO_F_NOTIFY_ON_EMPTY = bit(VIRTIO_F_NOTIFY_ON_EMPTY_BIT);
export const VIRTIO_F_ANY_LAYOUT = bit(VIRTIO_F_ANY_LAYOUT_BIT);
export const VIRTIO_RING_F_INDIRECT_DESC = bit(VIRTIO_RING_F_INDIRECT_DESC_BIT);
export const VIRTIO_RING_F_EVENT_IDX = bit(VIRTIO_RING_F_EVENT_IDX_BIT);
export const VIRTIO_F_VERSION_1 = bit(VIRTIO_F_VERSION_1_BIT);
export const VIRTIO_F_ACCESS_PLATFORM = bit(VIRTIO_F_ACCESS_PLATFORM_BIT);
export const VIRTIO_F_RING_PACKED = bit(VIRTIO_F_RING_PACKED_BIT);
export const VIRTIO_F_IN_ORDER = bit(VIRTIO_F_IN_ORDER_BIT);

/** Whether `features` has every bit of `mask`. */
export function hasFeature(features: bigint, mask: bigint): boolean {
  return (features & mask) === mask;
}

// ---- split ring format (§2.7) ---------------------------------------------
/** Descriptor flags. */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** avail.flags: the driver does not want used-buffer notifications (without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device does not want available-buffer notifications (without EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Bytes per descriptor, per used element, per avail entry. */
export const VIRTQ_DESC_SIZE = 16;
export const VIRTQ_USED_ELEM_SIZE = 8;
export const VIRTQ_AVAIL_ELEM_SIZE = 2;
/** Largest split queue size (a power of two). */
export const VIRTQ_MAX_SIZE = 32768;

// Both sides of a split ring (split-queue.ts, driver-queue.ts) access the
// 16-bit index fields with Atomics on a native-endian Uint16Array, which is
// right only where native order is virtio's little-endian: refuse to load
// anywhere else (both import this module, so this runs before either).
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('virtio rings need a little-endian host');
}

/** Bytes of the available ring for `size` entries: flags, idx, ring, used_event. */
export function availRingBytes(size: number): number {
  return 6 + 2 * size;
}
/** Bytes of the used ring for `size` entries: flags, idx, ring, avail_event. */
export function usedRingBytes(size: number): number {
  return 6 + 8 * size;
}

/**
 * The EVENT_IDX test (virtio 1.2 §2.7.10 helper, Linux vring_need_event):
 * true when the index moved from `oldIdx` to `newIdx` passed `eventIdx`, i.e.
 * the other side asked to be notified when entry `eventIdx` was written. All
 * arithmetic modulo 2^16.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

// ---- virtio-net header and config (§5.1.4, §5.1.6) ------------------------
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** config.status bits. */
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;
