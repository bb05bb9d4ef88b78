/**
 * DNS over TCP from the guest (RFC 1035 4.2.2, RFC 7766): what a guest sends
 * to TCP port 53 of the DNS address must be DNS queries, each behind its
 * two-byte big-endian length, before any of it reaches the upstream resolver.
 * That resolver is often one on the host's loopback (127.0.0.53, dnsmasq),
 * which the guest must reach with nothing else, under --restrict or not:
 * without this check the DNS address would be a byte pipe to it.
 *
 * Theory of operation. The TCP flow hands `DnsQueryStream.push` the guest's
 * bytes in order, as it accepts them, and writes to the host socket only
 * what push returns: whole messages, with their length prefixes, each of
 * which passed checkDnsQuery (the same check as a query over UDP). A message
 * still incomplete waits in one buffer of 2 + MAX_QUERY_LENGTH bytes; a
 * length above MAX_QUERY_LENGTH is refused as soon as its prefix is in. A
 * refusal is final: push returns the reason, then and on every later call,
 * and the flow resets the connection (counted 'dns.tcp.drop.<reason>');
 * nothing of that push (not even whole queries before the refused message
 * in it) reaches the host. Answers come back
 * unchanged: the upstream is the one we chose, and an answer on a TCP
 * connection cannot be forged off-path without its sequence numbers.
 */
import { MAX_QUERY_LENGTH, checkDnsQuery } from './wire/dns.js';

const LENGTH_PREFIX = 2;

export class DnsQueryStream {
  private readonly held = Buffer.alloc(LENGTH_PREFIX + MAX_QUERY_LENGTH);
  private heldLength = 0;
  private refused: string | null = null;

  /**
   * The guest's next bytes: the checked messages they complete (prefixes
   * included; possibly none) and how many there are, or the reason the
   * stream is refused.
   */
  push(data: Uint8Array): { bytes: Buffer; queries: number } | string {
    if (this.refused !== null) return this.refused;
    const whole: Buffer[] = [];
    let pos = 0;
    while (pos < data.length) {
      if (this.heldLength < LENGTH_PREFIX) {
        pos += this.hold(data, pos, LENGTH_PREFIX);
        if (this.heldLength < LENGTH_PREFIX) break;
        if (this.held.readUInt16BE(0) > MAX_QUERY_LENGTH) return this.refuse('too_big');
      }
      const total = LENGTH_PREFIX + this.held.readUInt16BE(0);
      pos += this.hold(data, pos, total);
      if (this.heldLength < total) break;
      const query = checkDnsQuery(this.held.subarray(LENGTH_PREFIX, total));
      if (typeof query === 'string') return this.refuse(query);
      whole.push(Buffer.from(this.held.subarray(0, total)));
      this.heldLength = 0;
    }
    return { bytes: whole.length === 1 ? whole[0]! : Buffer.concat(whole), queries: whole.length };
  }

  /** Copy bytes from data[pos..] until `upTo` bytes are held; the number copied. */
  private hold(data: Uint8Array, pos: number, upTo: number): number {
    const n = Math.min(upTo - this.heldLength, data.length - pos);
    this.held.set(data.subarray(pos, pos + n), this.heldLength);
    this.heldLength += n;
    return n;
  }

  private refuse(reason: string): string {
    this.refused = reason;
    this.heldLength = 0;
    return reason;
  }
}
