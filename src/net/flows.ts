/**
 * The one flow table: every TCP connection, UDP flow, UDP inbound-forward
 * association and ping flow of the stack, in one table with one key
 * format, one hash and one lifecycle (after passt's flow.c/flow.h).
 *
 * Theory of operation.
 *
 * An entry has two sides. The guest side is what the guest's packets carry:
 * the guest's endpoint (`guestAddr`, `guestPort`) and the address and port
 * it talks to (`remoteAddr`, `remotePort`; the gateway and a port we chose
 * for a forwarded TCP connection). The host side is the host socket's:
 * the peer (`hostAddr` as the socket API spells it, `hostPort`) and our
 * local port once known. Addresses are InAny (src/net/inany.ts), so an
 * IPv6 flow is the same entry. UDP and ICMP flows are endpoint-independent
 * (one host socket per guest endpoint, whatever it talks to): their guest
 * side's remote is "any" (address 0, port 0) and ICMP's guest port is the
 * echo identifier. UDP inbound-forward associations are keyed by the guest
 * port and the guest-side remote only: their guest address is "any" (0),
 * so the guest's answer matches from whichever of its addresses it comes.
 *
 * Key and hash. The key is (protocol, guest side); `lookup` hashes it with
 * a HalfSipHash-1-3-style keyed mix (32-bit words, 64-bit secret drawn at
 * random per table, i.e. per stack) over ten 32-bit words: protocol, both
 * ports, both addresses in their 16-byte form. The guest picks every word
 * but not the secret, so it cannot choose keys that collide; entries are
 * kept in a Map from the 30-bit hash (a small integer, never boxed) to
 * the entry or a short chain of entries whose full keys are compared.
 *
 * Lifecycle (the same for every protocol):
 *   new FlowEntry (not in the table, counted nowhere)
 *     -> insert: in the table, counted against its class; a class with
 *        LRU eviction first evicts its least recently used entry when full
 *     -> touch (traffic either way): lastUsed = now, moved to the fresh end
 *        of its class's list
 *     -> remove(reason): out of the table, uncounted, then the class's
 *        onRemove(entry, reason) runs exactly once, and the protocol closes
 *        its socket. Reasons: 'closed' (the protocol ended it, or the
 *        stack closed), 'evicted' (LRU, class full), 'expired' (idle past
 *        the class's timeout, from `expire(now)`).
 * A class (`FlowClass`) holds one kind of flow's limits: its capacity, LRU
 * eviction or not, idle timeout (0: none; TCP runs its own timers in
 * tcp/flow.ts and shares its capacity out in tcp/flow-shares.ts), and its
 * onRemove. Its entries form an intrusive doubly linked list in
 * least-recently-used order (no allocation on touch), so eviction takes
 * the oldest and expiry walks from the oldest end and stops at the first
 * fresh entry: O(expired + 1).
 *
 * Per-flow counters, kept in the entry for listing: bytes and frames from
 * the guest and to the guest, the creation time and the last use.
 */
import { type InAny, inanyEqual, inanyWord } from './inany.js';

export type RemoveReason = 'closed' | 'evicted' | 'expired';

/** One flow: two sides, counters, and the protocol's own state in `value`. */
export class FlowEntry<T = unknown> {
  /** Host side: the peer as the socket API names it ('' while unknown or for an endpoint-independent flow). */
  hostAddr = '';
  hostPort = 0;
  /** Our host socket's local port (0 while unknown). */
  localPort = 0;
  lastUsed: number;
  readonly created: number;
  bytesFromGuest = 0;
  framesFromGuest = 0;
  bytesToGuest = 0;
  framesToGuest = 0;
  /** Set by the owner once its state exists (the entry is made first, so that callbacks can name it). */
  value!: T;

  /** @internal table and class bookkeeping. */
  hash = 0;
  klass: FlowClass<T> | null = null;
  older: FlowEntry<T> | null = null;
  newer: FlowEntry<T> | null = null;

  constructor(
    readonly protocol: number,
    readonly guestAddr: InAny,
    readonly guestPort: number,
    readonly remoteAddr: InAny,
    readonly remotePort: number,
    now: number,
  ) {
    this.created = now;
    this.lastUsed = now;
  }

  /** Whether the entry is in the table. */
  get live(): boolean {
    return this.klass !== null;
  }

  countFromGuest(bytes: number): void {
    this.framesFromGuest++;
    this.bytesFromGuest += bytes;
  }

  countToGuest(bytes: number): void {
    this.framesToGuest++;
    this.bytesToGuest += bytes;
  }
}

export interface FlowClassOptions<T> {
  /** Counter-name-like label ('tcp', 'udp', 'udp_inbound', 'ping'). */
  name: string;
  capacity: number;
  /** Evict the least recently used entry to make room (else `insert` refuses when full). */
  lru: boolean;
  /** Idle timeout for `expire`, ms; 0 for none. */
  idleTimeoutMs: number;
  onRemove(entry: FlowEntry<T>, reason: RemoveReason): void;
}

/** One kind of flow's limits and its entries in LRU order. */
export class FlowClass<T> {
  size = 0;
  /** Least recently used end, and most recently used end. */
  oldest: FlowEntry<T> | null = null;
  newest: FlowEntry<T> | null = null;

  constructor(readonly table: FlowTable, readonly options: FlowClassOptions<T>) {}

  get capacity(): number {
    return this.options.capacity;
  }

  /** Entries, least recently used first (safe against removal of the current one). */
  *entries(): IterableIterator<FlowEntry<T>> {
    for (let e = this.oldest; e !== null;) {
      const next: FlowEntry<T> | null = e.newer;
      yield e;
      e = next;
    }
  }

  link(e: FlowEntry<T>): void {
    e.older = this.newest;
    e.newer = null;
    if (this.newest) this.newest.newer = e;
    else this.oldest = e;
    this.newest = e;
    this.size++;
  }

  unlink(e: FlowEntry<T>): void {
    if (e.older) e.older.newer = e.newer;
    else this.oldest = e.newer;
    if (e.newer) e.newer.older = e.older;
    else this.newest = e.older;
    e.older = null;
    e.newer = null;
    this.size--;
  }

  /** Remove entries idle for at least the class's timeout; returns how many. */
  expire(now: number): number {
    const timeout = this.options.idleTimeoutMs;
    if (timeout <= 0) return 0;
    let n = 0;
    while (this.oldest !== null && now - this.oldest.lastUsed >= timeout) {
      this.table.remove(this.oldest, 'expired');
      n++;
    }
    return n;
  }

  /** Remove every entry of this class ('closed'). */
  clear(): void {
    while (this.oldest !== null) this.table.remove(this.oldest, 'closed');
  }
}

const MASK_30 = 0x3fffffff;

function rotl(x: number, b: number): number {
  return ((x << b) | (x >>> (32 - b))) >>> 0;
}

export class FlowTable {
  private readonly buckets = new Map<number, FlowEntry<any> | FlowEntry<any>[]>();
  private count = 0;
  private readonly k0: number;
  private readonly k1: number;
  // HalfSipHash state, reused (no allocation per lookup).
  private v0 = 0;
  private v1 = 0;
  private v2 = 0;
  private v3 = 0;

  /** `secret`: two random 32-bit words; default from crypto.getRandomValues. */
  constructor(secret?: [number, number]) {
    const s = secret ?? Array.from(crypto.getRandomValues(new Uint32Array(2))) as [number, number];
    this.k0 = s[0] >>> 0;
    this.k1 = s[1] >>> 0;
  }

  private readonly classes: FlowClass<any>[] = [];

  /** A class of flows in this table. */
  addClass<T>(options: FlowClassOptions<T>): FlowClass<T> {
    const klass = new FlowClass<T>(this, options);
    this.classes.push(klass);
    return klass;
  }

  /** Every entry, class by class (least recently used first in each): what a flow listing shows. */
  *entries(): IterableIterator<FlowEntry<unknown>> {
    for (const klass of this.classes) yield* klass.entries();
  }

  /** Entries in the whole table. */
  get size(): number {
    return this.count;
  }

  /** The keyed hash of a flow key, 30 bits. */
  hash(protocol: number, guestAddr: InAny, guestPort: number, remoteAddr: InAny, remotePort: number): number {
    this.v0 = this.k0;
    this.v1 = this.k1;
    this.v2 = (0x6c796765 ^ this.k0) >>> 0;
    this.v3 = (0x74656462 ^ this.k1) >>> 0;
    this.absorb(protocol);
    this.absorb(((guestPort << 16) | (remotePort & 0xffff)) >>> 0);
    for (let i = 0; i < 4; i++) this.absorb(inanyWord(guestAddr, i));
    for (let i = 0; i < 4; i++) this.absorb(inanyWord(remoteAddr, i));
    this.absorb((10 * 4) << 24);
    this.v2 = (this.v2 ^ 0xff) >>> 0;
    this.round();
    this.round();
    this.round();
    return (this.v1 ^ this.v3) & MASK_30;
  }

  private absorb(m: number): void {
    this.v3 = (this.v3 ^ m) >>> 0;
    this.round();
    this.v0 = (this.v0 ^ m) >>> 0;
  }

  private round(): void {
    let { v0, v1, v2, v3 } = this;
    v0 = (v0 + v1) >>> 0; v1 = rotl(v1, 5); v1 = (v1 ^ v0) >>> 0; v0 = rotl(v0, 16);
    v2 = (v2 + v3) >>> 0; v3 = rotl(v3, 8); v3 = (v3 ^ v2) >>> 0;
    v0 = (v0 + v3) >>> 0; v3 = rotl(v3, 7); v3 = (v3 ^ v0) >>> 0;
    v2 = (v2 + v1) >>> 0; v1 = rotl(v1, 13); v1 = (v1 ^ v2) >>> 0; v2 = rotl(v2, 16);
    this.v0 = v0; this.v1 = v1; this.v2 = v2; this.v3 = v3;
  }

  /** The entry with this key, if any. */
  lookup<T>(protocol: number, guestAddr: InAny, guestPort: number, remoteAddr: InAny, remotePort: number): FlowEntry<T> | undefined {
    const b = this.buckets.get(this.hash(protocol, guestAddr, guestPort, remoteAddr, remotePort));
    if (b === undefined) return undefined;
    if (!Array.isArray(b)) return matches(b, protocol, guestAddr, guestPort, remoteAddr, remotePort) ? b as FlowEntry<T> : undefined;
    for (const e of b) if (matches(e, protocol, guestAddr, guestPort, remoteAddr, remotePort)) return e as FlowEntry<T>;
    return undefined;
  }

  /** Look up and mark used at `now`. */
  touch<T>(protocol: number, guestAddr: InAny, guestPort: number, remoteAddr: InAny, remotePort: number, now: number): FlowEntry<T> | undefined {
    const e = this.lookup<T>(protocol, guestAddr, guestPort, remoteAddr, remotePort);
    if (e !== undefined) this.used(e, now);
    return e;
  }

  /** Mark an entry used at `now` (fresh end of its class's list). */
  used<T>(e: FlowEntry<T>, now: number): void {
    e.lastUsed = now;
    const k = e.klass;
    if (k === null || k.newest === e) return;
    k.unlink(e);
    k.link(e);
  }

  /**
   * Insert into `klass`: an entry with the same key is removed first
   * ('closed'); a full LRU class evicts its oldest entry. Returns false
   * (nothing inserted) when a class without LRU is full.
   */
  insert<T>(klass: FlowClass<T>, e: FlowEntry<T>): boolean {
    const same = this.lookup<unknown>(e.protocol, e.guestAddr, e.guestPort, e.remoteAddr, e.remotePort);
    if (same !== undefined) this.remove(same, 'closed');
    while (klass.size >= klass.capacity) {
      if (!klass.options.lru || klass.oldest === null) return false;
      this.remove(klass.oldest, 'evicted');
    }
    e.hash = this.hash(e.protocol, e.guestAddr, e.guestPort, e.remoteAddr, e.remotePort);
    const b = this.buckets.get(e.hash);
    if (b === undefined) this.buckets.set(e.hash, e);
    else if (Array.isArray(b)) b.push(e);
    else this.buckets.set(e.hash, [b, e]);
    e.klass = klass;
    klass.link(e);
    this.count++;
    return true;
  }

  /** Take an entry out (no-op if it is not in); its class's onRemove runs once. Returns whether it was in. */
  remove<T>(e: FlowEntry<T>, reason: RemoveReason = 'closed'): boolean {
    const klass = e.klass;
    if (klass === null) return false;
    const b = this.buckets.get(e.hash);
    if (b === e) this.buckets.delete(e.hash);
    else if (Array.isArray(b)) {
      const i = b.indexOf(e);
      if (i >= 0) b.splice(i, 1);
      if (b.length === 1) this.buckets.set(e.hash, b[0]!);
    }
    klass.unlink(e);
    e.klass = null;
    this.count--;
    klass.options.onRemove(e, reason);
    return true;
  }
}

function matches(e: FlowEntry<any>, protocol: number, guestAddr: InAny, guestPort: number, remoteAddr: InAny, remotePort: number): boolean {
  return e.protocol === protocol && e.guestPort === guestPort && e.remotePort === remotePort &&
    inanyEqual(e.guestAddr, guestAddr) && inanyEqual(e.remoteAddr, remoteAddr);
}
