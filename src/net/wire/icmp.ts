/**
 * ICMPv4 message view (RFC 792).
 *
 * Theory of operation: every ICMP message has type, code, checksum and four
 * "rest of header" bytes (identifier + sequence for echo). `parseIcmp`
 * checks the minimum length and the checksum over the whole message and
 * returns views; `isIcmpError` tells error messages (which must never be
 * answered with another error) from queries.
 */
import { checksum } from './checksum.js';

export const ICMP_HEADER_LENGTH = 8;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAMETER_PROBLEM = 12;

/** Destination unreachable codes. */
export const ICMP_UNREACH_NET = 0;
export const ICMP_UNREACH_HOST = 1;
export const ICMP_UNREACH_PROTOCOL = 2;
export const ICMP_UNREACH_PORT = 3;
export const ICMP_UNREACH_NEEDFRAG = 4;
export const ICMP_UNREACH_ADMIN = 13;

export interface IcmpView {
  type: number;
  code: number;
  /** Echo identifier/sequence (meaningful for echo request/reply). */
  id: number;
  seq: number;
  /** Bytes after the 8-byte header (echo data, or the quoted packet of an error). */
  body: Uint8Array;
  message: Uint8Array;
}

export function parseIcmp(message: Uint8Array): IcmpView | string {
  if (message.length < ICMP_HEADER_LENGTH) return 'truncated';
  if (checksum(message) !== 0) return 'bad_checksum';
  return {
    type: message[0]!,
    code: message[1]!,
    id: (message[4]! << 8) | message[5]!,
    seq: (message[6]! << 8) | message[7]!,
    body: message.subarray(ICMP_HEADER_LENGTH),
    message,
  };
}

export function isIcmpError(type: number): boolean {
  return type === ICMP_DEST_UNREACHABLE || type === ICMP_SOURCE_QUENCH || type === ICMP_REDIRECT ||
    type === ICMP_TIME_EXCEEDED || type === ICMP_PARAMETER_PROBLEM;
}

/** Fill the checksum field of a finished ICMP message in place (big-endian). */
export function finishIcmpChecksum(message: Uint8Array): void {
  message[2] = 0;
  message[3] = 0;
  const c = checksum(message);
  message[2] = c >>> 8;
  message[3] = c & 0xff;
}

/** Write an echo header (type, code 0, id, seq) at message[0..8) and compute the checksum over the whole message. */
export function writeEcho(message: Uint8Array, type: number, id: number, seq: number): void {
  message[0] = type;
  message[1] = 0;
  message[4] = (id >>> 8) & 0xff;
  message[5] = id & 0xff;
  message[6] = (seq >>> 8) & 0xff;
  message[7] = seq & 0xff;
  finishIcmpChecksum(message);
}
