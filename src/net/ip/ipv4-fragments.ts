/**
 * Bounded IPv4 reassembly (RFC 791 section 3.2, RFC 815 style hole check).
 *
 * Theory of operation: fragments are grouped by (src, dst, protocol, id).
 * Each datagram keeps its fragments sorted by offset as copies (the frame
 * aliases guest memory only during receive). A datagram is complete when
 * the last fragment (MF clear) has fixed the total length, the first
 * (offset 0) has given the header, and the fragments cover [0, total) with
 * no gap. Defences: overlapping fragments drop the whole datagram (a
 * duplicate with the same offset and length is ignored), a non-final
 * fragment whose length is not a multiple of 8 is dropped, a datagram past
 * 65535 bytes or with more than `maxFragments` pieces is dropped, at most
 * `maxDatagrams` datagrams are in progress (the oldest is evicted) and at
 * most `maxBytes` are buffered in total (new fragments are refused beyond
 * it). A datagram not complete after `timeoutMs` is dropped by `expire`,
 * which hands back its first fragment, if any, so the stack can send ICMP
 * time exceeded (code 1, RFC 792).
 */
import type { Counters } from '../context.js';
import type { IPv4View } from '../wire/ipv4.js';
import { checksum } from '../wire/checksum.js';

export interface ReassemblyLimits {
  maxDatagrams: number;
  maxBytes: number;
  maxFragments: number;
  timeoutMs: number;
}

export const DEFAULT_REASSEMBLY_LIMITS: ReassemblyLimits = {
  maxDatagrams: 64,
  maxBytes: 2 * 1024 * 1024,
  maxFragments: 64,
  timeoutMs: 30_000,
};

interface Fragment {
  offset: number;
  data: Uint8Array;
}

interface Datagram {
  fragments: Fragment[];
  /** Payload length, known once the last fragment arrived (-1 before). */
  total: number;
  bytes: number;
  /** Header of the first fragment (with its options), null until it arrives. */
  header: Uint8Array | null;
  /** First fragment's packet (header + up to 8 bytes), for ICMP time exceeded. */
  quote: Uint8Array | null;
  deadline: number;
}

const MAX_IPV4 = 65535;

export class Reassembler {
  private readonly datagrams = new Map<string, Datagram>();
  private bytes = 0;
  readonly limits: ReassemblyLimits;

  constructor(private readonly counters: Counters, limits: Partial<ReassemblyLimits> = {}) {
    this.limits = { ...DEFAULT_REASSEMBLY_LIMITS, ...limits };
  }

  get pending(): number {
    return this.datagrams.size;
  }

  get bufferedBytes(): number {
    return this.bytes;
  }

  /** Take one fragment; returns the reassembled packet (a new buffer) when complete, else null. */
  input(ip: IPv4View, now: number): Uint8Array | null {
    const c = this.counters;
    c.count('ipv4.frag.rx');
    const len = ip.payload.length;
    const offset = ip.fragmentOffset;
    if (ip.moreFragments && (len === 0 || len % 8 !== 0)) return this.drop('bad_length');
    if (offset + len + ip.headerLength > MAX_IPV4) return this.drop('too_big');
    const key = `${ip.src}|${ip.dst}|${ip.protocol}|${ip.id}`;
    let d = this.datagrams.get(key);
    if (!d) {
      if (this.datagrams.size >= this.limits.maxDatagrams) {
        const oldest = this.datagrams.keys().next().value as string;
        this.discard(oldest);
        c.count('ipv4.frag.drop.evicted');
      }
      d = { fragments: [], total: -1, bytes: 0, header: null, quote: null, deadline: now + this.limits.timeoutMs };
      this.datagrams.set(key, d);
    }
    if (this.bytes + len > this.limits.maxBytes) return this.drop('mem_limit');
    const end = offset + len;
    if (!ip.moreFragments) {
      if (d.total >= 0 && d.total !== end) return this.dropDatagram(key, 'inconsistent');
      for (const f of d.fragments) if (f.offset + f.data.length > end) return this.dropDatagram(key, 'inconsistent');
      d.total = end;
    } else if (d.total >= 0 && end > d.total) return this.dropDatagram(key, 'inconsistent');
    // Find the insertion point; refuse overlaps.
    let i = 0;
    while (i < d.fragments.length && d.fragments[i]!.offset < offset) i++;
    const prev = d.fragments[i - 1];
    const next = d.fragments[i];
    if (next && next.offset === offset && next.data.length === len) {
      c.count('ipv4.frag.duplicate');
      return null;
    }
    if ((prev && prev.offset + prev.data.length > offset) || (next && next.offset < end)) return this.dropDatagram(key, 'overlap');
    if (d.fragments.length >= this.limits.maxFragments) return this.dropDatagram(key, 'too_many');
    d.fragments.splice(i, 0, { offset, data: ip.payload.slice() });
    d.bytes += len;
    this.bytes += len;
    if (offset === 0) {
      d.header = ip.packet.slice(0, ip.headerLength);
      d.quote = ip.packet.slice(0, Math.min(ip.packet.length, ip.headerLength + 8));
    }
    // The first fragment's header (options included) plus the whole payload must fit one IPv4 packet.
    if (d.header !== null && d.total >= 0 && d.header.length + d.total > MAX_IPV4) return this.dropDatagram(key, 'too_big');
    if (d.total < 0 || d.header === null || d.bytes !== d.total) return null;
    // bytes === total with no overlaps and all fragments inside [0,total): no holes.
    const hl = d.header.length;
    const out = new Uint8Array(hl + d.total);
    out.set(d.header, 0);
    for (const f of d.fragments) out.set(f.data, hl + f.offset);
    const dv = new DataView(out.buffer);
    dv.setUint16(2, out.length, false);
    dv.setUint16(6, dv.getUint16(6, false) & 0x4000, false); // keep DF, clear MF and offset
    dv.setUint16(10, 0, false);
    dv.setUint16(10, checksum(out.subarray(0, hl)), false);
    this.datagrams.delete(key);
    this.bytes -= d.bytes;
    c.count('ipv4.frag.reassembled');
    return out;
  }

  /** Drop datagrams past their deadline; returns the quotes of those whose first fragment had arrived. */
  expire(now: number): Uint8Array[] {
    const quotes: Uint8Array[] = [];
    for (const [key, d] of this.datagrams) {
      if (d.deadline > now) continue;
      if (d.quote) quotes.push(d.quote);
      this.discard(key);
      this.counters.count('ipv4.frag.drop.timeout');
    }
    return quotes;
  }

  clear(): void {
    this.datagrams.clear();
    this.bytes = 0;
  }

  private discard(key: string): void {
    const d = this.datagrams.get(key);
    if (!d) return;
    this.datagrams.delete(key);
    this.bytes -= d.bytes;
  }

  private drop(reason: string): null {
    this.counters.count(`ipv4.frag.drop.${reason}`);
    return null;
  }

  private dropDatagram(key: string, reason: string): null {
    this.discard(key);
    return this.drop(reason);
  }
}
