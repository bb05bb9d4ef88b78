/**
 * ARP packet view for Ethernet/IPv4 (RFC 826): 28 bytes, hardware type 1,
 * protocol type 0x0800, lengths 6 and 4. Anything else is not ours to answer
 * and is reported as a drop reason.
 */
import { readIPv4, writeIPv4 } from '../ip-address.js';

export const ARP_LENGTH = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export interface ArpView {
  op: number;
  /** Sender hardware address (view). */
  sha: Uint8Array;
  spa: number;
  tha: Uint8Array;
  tpa: number;
}

/** Checked parse of an ARP payload (trailing Ethernet padding allowed). */
export function parseArp(bytes: Uint8Array): ArpView | string {
  if (bytes.length < ARP_LENGTH) return 'truncated';
  const dv = new DataView(bytes.buffer, bytes.byteOffset, ARP_LENGTH);
  if (dv.getUint16(0, false) !== 1) return 'bad_hardware_type';
  if (dv.getUint16(2, false) !== 0x0800) return 'bad_protocol_type';
  if (bytes[4] !== 6 || bytes[5] !== 4) return 'bad_address_length';
  const op = dv.getUint16(6, false);
  if (op !== ARP_REQUEST && op !== ARP_REPLY) return 'bad_op';
  return { op, sha: bytes.subarray(8, 14), spa: readIPv4(bytes, 14), tha: bytes.subarray(18, 24), tpa: readIPv4(bytes, 24) };
}

/** Write a 28-byte ARP packet into `out`. */
export function writeArp(out: Uint8Array, op: number, sha: Uint8Array, spa: number, tha: Uint8Array, tpa: number): void {
  const dv = new DataView(out.buffer, out.byteOffset, ARP_LENGTH);
  dv.setUint16(0, 1, false);
  dv.setUint16(2, 0x0800, false);
  out[4] = 6;
  out[5] = 4;
  dv.setUint16(6, op, false);
  out.set(sha.subarray(0, 6), 8);
  writeIPv4(out, 14, spa);
  out.set(tha.subarray(0, 6), 18);
  writeIPv4(out, 24, tpa);
}
