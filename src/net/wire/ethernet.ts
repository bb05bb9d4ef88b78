/**
 * Ethernet II frame view (IEEE 802.3 with an EtherType; no 802.1Q handling:
 * a VLAN-tagged frame shows EtherType 0x8100 and is dropped by the stack).
 *
 * Theory of operation: `parseEthernet` checks the one thing an Ethernet
 * header can get wrong here (fewer than 14 bytes) and returns views over the
 * caller's bytes (no copies); `writeEthernetHeader` fills the 14 bytes of an
 * outgoing frame. MACs are 6-byte Uint8Arrays.
 */

export const ETHERNET_HEADER_LENGTH = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;

export const BROADCAST_MAC: Uint8Array = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export interface EthernetView {
  /** Destination MAC (view). */
  dst: Uint8Array;
  /** Source MAC (view). */
  src: Uint8Array;
  etherType: number;
  /** Everything after the header (may include trailing padding). */
  payload: Uint8Array;
}

/** Checked parse: returns the view, or a drop reason. */
export function parseEthernet(frame: Uint8Array): EthernetView | string {
  if (frame.length < ETHERNET_HEADER_LENGTH) return 'truncated';
  return {
    dst: frame.subarray(0, 6),
    src: frame.subarray(6, 12),
    etherType: (frame[12]! << 8) | frame[13]!,
    payload: frame.subarray(ETHERNET_HEADER_LENGTH),
  };
}

/** Write dst, src and the EtherType (big-endian) at the start of `frame`. */
export function writeEthernetHeader(frame: Uint8Array, dst: Uint8Array, src: Uint8Array, etherType: number): void {
  frame.set(dst.subarray(0, 6), 0);
  frame.set(src.subarray(0, 6), 6);
  frame[12] = (etherType >>> 8) & 0xff;
  frame[13] = etherType & 0xff;
}

export function isMulticastMac(mac: Uint8Array): boolean {
  return (mac[0]! & 0x01) !== 0;
}

export function isZeroMac(mac: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (mac[i] !== 0) return false;
  return true;
}

export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function macToString(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Parse "52:55:0a:00:02:02" (or with '-'); null if malformed. */
export function parseMac(text: string): Uint8Array | null {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) return null;
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}
