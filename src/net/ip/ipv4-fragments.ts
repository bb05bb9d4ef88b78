/**
 * IPv4 reassembly: the family-neutral reassembler (fragments.ts) with IPv4's
 * key (src, dst, protocol, id), its 65535-byte bound on header + payload,
 * and its header fix-up for the whole packet (total length, MF and offset
 * cleared, DF kept, header checksum).
 */
import type { Counters } from '../context.js';
import type { IPv4View } from '../wire/ipv4.js';
import { checksum } from '../wire/checksum.js';
import { FragmentReassembler, type FragmentPiece, type ReassemblyFamily, type ReassemblyLimits } from './fragments.js';

export { DEFAULT_REASSEMBLY_LIMITS, type ReassemblyLimits } from './fragments.js';

const MAX_IPV4 = 65535;

const IPV4_REASSEMBLY: ReassemblyFamily = {
  counterNames: {
    rx: 'ipv4.frag.rx',
    duplicate: 'ipv4.frag.duplicate',
    reassembled: 'ipv4.frag.reassembled',
    drop: {
      bad_length: 'ipv4.frag.drop.bad_length',
      too_big: 'ipv4.frag.drop.too_big',
      mem_limit: 'ipv4.frag.drop.mem_limit',
      inconsistent: 'ipv4.frag.drop.inconsistent',
      overlap: 'ipv4.frag.drop.overlap',
      too_many: 'ipv4.frag.drop.too_many',
      timeout: 'ipv4.frag.drop.timeout',
      evicted: 'ipv4.frag.drop.evicted',
    },
  },
  fits: (headerLength, total) => headerLength + total <= MAX_IPV4,
  finish(out, headerLength) {
    const dv = new DataView(out.buffer, out.byteOffset, out.length);
    dv.setUint16(2, out.length, false);
    dv.setUint16(6, dv.getUint16(6, false) & 0x4000, false); // keep DF, clear MF and offset
    dv.setUint16(10, 0, false);
    dv.setUint16(10, checksum(out.subarray(0, headerLength)), false);
  },
};

export class Reassembler {
  private readonly r: FragmentReassembler;
  private readonly piece: FragmentPiece = { key: '', offset: 0, more: false, data: new Uint8Array(0), header: null, quote: null };

  constructor(counters: Counters, limits: Partial<ReassemblyLimits> = {}) {
    this.r = new FragmentReassembler(counters, IPV4_REASSEMBLY, limits);
  }

  get limits(): ReassemblyLimits {
    return this.r.limits;
  }

  get pending(): number {
    return this.r.pending;
  }

  get bufferedBytes(): number {
    return this.r.bufferedBytes;
  }

  /** Take one fragment; returns the reassembled packet (a new buffer) when complete, else null. */
  input(ip: IPv4View, now: number): Uint8Array | null {
    const p = this.piece;
    p.key = `${ip.src}|${ip.dst}|${ip.protocol}|${ip.id}`;
    p.offset = ip.fragmentOffset;
    p.more = ip.moreFragments;
    p.data = ip.payload;
    const first = ip.fragmentOffset === 0;
    // Every fragment's header counts towards the 65535-byte bound (as before); only the first one's is kept.
    p.header = ip.packet.subarray(0, ip.headerLength);
    p.quote = first ? ip.packet.subarray(0, Math.min(ip.packet.length, ip.headerLength + 8)) : null;
    return this.r.input(p, now);
  }

  /** Drop datagrams past their deadline; returns the quotes of those whose first fragment had arrived. */
  expire(now: number): Uint8Array[] {
    return this.r.expire(now);
  }

  clear(): void {
    this.r.clear();
  }
}
