/**
 * Bounded fragment reassembly for both families (RFC 791 section 3.2,
 * RFC 8200 section 4.5, RFC 815 style hole check).
 *
 * Theory of operation: the family's layer (ipv4-fragments.ts for IPv4,
 * ipv6.ts for IPv6) hands each fragment over as a `FragmentPiece`: the
 * datagram's key (IPv4: src, dst, protocol, id; IPv6: src, dst, id), offset,
 * more-fragments flag, data, and — from the first fragment only — the
 * header the whole packet will carry (IPv4: its header with options; IPv6:
 * the unfragmentable part with the Next Header that named the fragment
 * header already set to the fragmentable part's protocol) and the quote an
 * ICMP time exceeded carries. A `ReassemblyFamily` says how big a whole
 * packet may be and fixes up its header (lengths, flags, checksum).
 * Fragments are grouped by key.
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

/** One fragment as the family's layer hands it over (views are copied here as needed). */
export interface FragmentPiece {
  key: string;
  /** Byte offset of `data` in the fragmentable part. */
  offset: number;
  more: boolean;
  data: Uint8Array;
  /** The first fragment's header for the whole packet; null for the others. */
  header: Uint8Array | null;
  /** The first fragment's quote for ICMP time exceeded; null for the others. */
  quote: Uint8Array | null;
}

/** Why a fragment (or its whole datagram) was dropped. */
export type FragmentDropReason = 'bad_length' | 'too_big' | 'mem_limit' | 'inconsistent' | 'overlap' | 'too_many' | 'timeout' | 'evicted';

/** The reassembler's counter names, spelled out per family ('ipv4.frag.rx', …) so no name is built per packet. */
export interface FragmentCounterNames {
  rx: string;
  duplicate: string;
  reassembled: string;
  drop: Readonly<Record<FragmentDropReason, string>>;
}

/** What differs between the families. */
export interface ReassemblyFamily {
  readonly counterNames: FragmentCounterNames;
  /** May `headerLength` + `total` bytes of payload be one packet of the family? */
  fits(headerLength: number, total: number): boolean;
  /** Fix up the header of the whole packet `out` (its first `headerLength` bytes are the first fragment's header). */
  finish(out: Uint8Array, headerLength: number): void;
}

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

export class FragmentReassembler {
  private readonly datagrams = new Map<string, Datagram>();
  private bytes = 0;
  readonly limits: ReassemblyLimits;
  private readonly names: FragmentCounterNames;

  constructor(private readonly counters: Counters, private readonly family: ReassemblyFamily, limits: Partial<ReassemblyLimits> = {}) {
    this.limits = { ...DEFAULT_REASSEMBLY_LIMITS, ...limits };
    this.names = family.counterNames;
  }

  get pending(): number {
    return this.datagrams.size;
  }

  get bufferedBytes(): number {
    return this.bytes;
  }

  /** Take one fragment; returns the reassembled packet (a new buffer) when complete, else null. */
  input(piece: FragmentPiece, now: number): Uint8Array | null {
    const c = this.counters;
    const names = this.names;
    c.count(names.rx);
    const len = piece.data.length;
    const offset = piece.offset;
    const more = piece.more;
    if (more && (len === 0 || len % 8 !== 0)) return this.drop('bad_length');
    if (!this.family.fits(piece.header?.length ?? 0, offset + len)) return this.drop('too_big');
    const key = piece.key;
    let d = this.datagrams.get(key);
    if (!d) {
      if (this.datagrams.size >= this.limits.maxDatagrams) {
        const oldest = this.datagrams.keys().next().value as string;
        this.discard(oldest);
        c.count(names.drop.evicted);
      }
      d = { fragments: [], total: -1, bytes: 0, header: null, quote: null, deadline: now + this.limits.timeoutMs };
      this.datagrams.set(key, d);
    }
    if (this.bytes + len > this.limits.maxBytes) return this.drop('mem_limit');
    const end = offset + len;
    if (!more) {
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
      c.count(names.duplicate);
      return null;
    }
    if ((prev && prev.offset + prev.data.length > offset) || (next && next.offset < end)) return this.dropDatagram(key, 'overlap');
    if (d.fragments.length >= this.limits.maxFragments) return this.dropDatagram(key, 'too_many');
    d.fragments.splice(i, 0, { offset, data: piece.data.slice() });
    d.bytes += len;
    this.bytes += len;
    if (offset === 0 && piece.header !== null) {
      d.header = piece.header.slice();
      d.quote = piece.quote?.slice() ?? null;
    }
    // The first fragment's header (options, extension headers) plus the whole payload must fit one packet.
    if (d.header !== null && d.total >= 0 && !this.family.fits(d.header.length, d.total)) return this.dropDatagram(key, 'too_big');
    if (d.total < 0 || d.header === null || d.bytes !== d.total) return null;
    // bytes === total with no overlaps and all fragments inside [0,total): no holes.
    const hl = d.header.length;
    const out = new Uint8Array(hl + d.total);
    out.set(d.header, 0);
    for (const f of d.fragments) out.set(f.data, hl + f.offset);
    this.family.finish(out, hl);
    this.datagrams.delete(key);
    this.bytes -= d.bytes;
    c.count(names.reassembled);
    return out;
  }

  /** Drop datagrams past their deadline; returns the quotes of those whose first fragment had arrived. */
  expire(now: number): Uint8Array[] {
    const quotes: Uint8Array[] = [];
    for (const [key, d] of this.datagrams) {
      if (d.deadline > now) continue;
      if (d.quote) quotes.push(d.quote);
      this.discard(key);
      this.counters.count(this.names.drop.timeout);
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

  private drop(reason: FragmentDropReason): null {
    this.counters.count(this.names.drop[reason]);
    return null;
  }

  private dropDatagram(key: string, reason: FragmentDropReason): null {
    this.discard(key);
    return this.drop(reason);
  }
}
