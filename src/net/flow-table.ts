/**
 * A bounded flow table with LRU eviction and idle expiry.
 *
 * Theory of operation: flows are kept in a JS Map in least-recently-used
 * order (a touch deletes and re-inserts, so the first entry is always the
 * oldest). Inserting past `capacity` evicts the least recently used flow;
 * `expire(now)` walks from the oldest end and stops at the first flow still
 * fresh, so it costs O(expired + 1). Every eviction or expiry goes through
 * the `onRemove` callback so the owner closes the flow's sockets.
 *
 * Why a plain Map keyed by a string is not attackable: the guest picks the
 * key's contents (addresses, ports), so a table with a predictable hash
 * could be filled with colliding keys. V8 hashes strings with a per-isolate
 * random seed (hash_seed, randomised at start-up; Node rehashes its startup
 * snapshot), so the guest cannot predict bucket placement. Keys are built
 * as strings (never small integers, whose V8 hash is unseeded), and the
 * table is bounded by `capacity`, so even a degenerate bucket stays bounded.
 * One caveat, avoided: a string that reads as an array index ("1234") was
 * hashed by its numeric value with no seed before the March 2026 Node.js
 * releases (CVE-2026-21717; fixed in 20.20.2 / 22.22.2 / 24.14.1) — every
 * key here has a separator (':', '/', '|'), so none is an index on any
 * Node version, and the capacity bound keeps even a full collision chain
 * to O(capacity).
 */

export interface FlowEntry {
  /** Last activity (clock ms). */
  lastUsed: number;
}

export class FlowTable<V extends FlowEntry> {
  private readonly map = new Map<string, V>();

  constructor(
    readonly capacity: number,
    readonly idleTimeoutMs: number,
    private readonly onRemove: (key: string, flow: V, reason: 'evicted' | 'expired' | 'closed') => void,
  ) {}

  get size(): number {
    return this.map.size;
  }

  /** Look up without touching. */
  peek(key: string): V | undefined {
    return this.map.get(key);
  }

  /** Look up and mark used at `now`. */
  touch(key: string, now: number): V | undefined {
    const flow = this.map.get(key);
    if (!flow) return undefined;
    flow.lastUsed = now;
    this.map.delete(key);
    this.map.set(key, flow);
    return flow;
  }

  /** Insert a new flow, evicting the least recently used one if full. */
  insert(key: string, flow: V): void {
    const existing = this.map.get(key);
    if (existing) this.remove(key, 'closed');
    while (this.map.size >= this.capacity) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      this.remove(oldest.value, 'evicted');
    }
    this.map.set(key, flow);
  }

  remove(key: string, reason: 'evicted' | 'expired' | 'closed' = 'closed'): boolean {
    const flow = this.map.get(key);
    if (!flow) return false;
    this.map.delete(key);
    this.onRemove(key, flow, reason);
    return true;
  }

  /** Remove flows idle for at least idleTimeoutMs; returns how many. */
  expire(now: number): number {
    let n = 0;
    for (const [key, flow] of this.map) {
      if (now - flow.lastUsed < this.idleTimeoutMs) break;
      this.map.delete(key);
      this.onRemove(key, flow, 'expired');
      n++;
    }
    return n;
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }

  clear(): void {
    for (const key of [...this.map.keys()]) this.remove(key, 'closed');
  }
}
