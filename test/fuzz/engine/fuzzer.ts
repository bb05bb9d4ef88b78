/**
 * A small coverage-guided fuzzer (the libFuzzer/AFL loop, in-process, over
 * the counters that instrument.ts puts into src/).
 *
 * Theory of operation. The corpus starts as the target's seeds (those that
 * reach new coverage, and at least one). Each round picks a corpus entry
 * (newer entries more often), applies one to eight stacked mutations (bit
 * flips, random or "interesting" bytes and words, small additions, values
 * from the dictionary collected from the source's integer literals, erased,
 * inserted, duplicated or spliced-in ranges), and runs the target on the
 * result. An input whose counters, bucketed by hit count (1, 2, 3, 4-7,
 * 8-15, 16-31, 32-127, 128+), set a bit never seen before joins the corpus.
 * Counters are cleared as they are scanned, so each run sees only its own.
 *
 * A target that throws has found something: the input is written to
 * `<crashDir>/<target>/crash-<sha1>` (the name is a hash of the bytes, so the
 * same finding is written once) and the run stops. A hang is caught by a
 * watchdog thread (watchdog.mjs) that reads the current input from shared
 * memory and writes it as `timeout-<sha1>` before killing the process
 * (CurrentInput is that shared memory; watchdog.mjs reads the same layout).
 *
 * Runs are reproducible: mutations come from a seeded PRNG, and coverage of
 * a deterministic target is deterministic, so the same seed, runs and code
 * give the same inputs.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { mulberry32 } from '../../helpers/prng.js';
import { COVERAGE_MAP_SIZE } from './instrument.js';
import type { FuzzTarget } from './input.js';
import { saveInput } from './input-files.mjs';

declare global {
  var __fuzzCoverage: Uint8Array | undefined;
  var __fuzzCoverageUsed: number | undefined;
  var __fuzzDictionary: number[] | undefined;
}

export interface FuzzOptions {
  /** Stop after this many inputs (seeds included). */
  runs: number;
  /** Stop after this long, whatever `runs` says. */
  timeMs: number;
  /** Seed of the mutation PRNG. */
  seed: number;
  /** Crashing inputs go to <crashDir>/<target>/. */
  crashDir: string;
  /** Load inputs from, and save new corpus entries to, <corpusDir>/<target>/ (long runs). */
  corpusDir?: string;
  /** Mirror of the input being run, for the watchdog (see watchdog.mjs). */
  current?: CurrentInput;
  /** Called about every `progressMs` with the counts so far. */
  progress?: (r: FuzzResult) => void;
  progressMs?: number;
}

export interface FuzzResult {
  target: string;
  runs: number;
  ms: number;
  corpus: number;
  /** Counters ever hit. */
  coverage: number;
  /** Counters in the modules loaded (the most `coverage` could be). */
  counters: number;
  crash: { file: string; message: string } | null;
}

/** The input being run, for the watchdog: Int32 [runs, length], then the bytes (watchdog.mjs reads this layout). */
export class CurrentInput {
  readonly header: Int32Array;
  readonly bytes: Uint8Array;
  constructor(readonly shared: SharedArrayBuffer) {
    this.header = new Int32Array(shared, 0, 2);
    this.bytes = new Uint8Array(shared, 8);
  }
  static create(maxLength: number): CurrentInput {
    return new CurrentInput(new SharedArrayBuffer(8 + maxLength));
  }
  set(data: Uint8Array): void {
    this.bytes.set(data.subarray(0, this.bytes.length));
    Atomics.store(this.header, 1, data.length);
    Atomics.add(this.header, 0, 1);
  }
}

// Hit-count buckets (AFL's classes) as one bit each.
const BUCKET = new Uint8Array(256);
for (let c = 1; c < 256; c++) BUCKET[c] = c === 1 ? 1 : c === 2 ? 2 : c === 3 ? 4 : c < 8 ? 8 : c < 16 ? 16 : c < 32 ? 32 : c < 128 ? 64 : 128;

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 2, 4, 8, 16, 20, 32, 64, 100, 127];
const INTERESTING_16 = [0, 0xffff, 0x7fff, 0x8000, 0x100, 0xff, 256, 512, 1000, 1024, 1500, 4096, 0x7fff, 65535, 14, 20, 28, 40, 576];
const INTERESTING_32 = [0, 0xffffffff, 0x7fffffff, 0x80000000, 0x10000, 0xffff, 0x100000, 0x1fffff, 0x200000];

class Coverage {
  private readonly counters: Uint8Array;
  private readonly words: Uint32Array;
  private readonly seen = new Uint8Array(COVERAGE_MAP_SIZE);
  edges = 0;
  constructor() {
    this.counters = globalThis.__fuzzCoverage ??= new Uint8Array(COVERAGE_MAP_SIZE);
    this.words = new Uint32Array(this.counters.buffer, this.counters.byteOffset, COVERAGE_MAP_SIZE / 4);
  }
  /** Scan and clear the counters; true if this run set a bucket bit never seen. */
  collect(): boolean {
    const used = Math.min(COVERAGE_MAP_SIZE, globalThis.__fuzzCoverageUsed ?? 0);
    const words = this.words;
    const counters = this.counters;
    let fresh = false;
    for (let w = 0, end = (used + 3) >>> 2; w < end; w++) {
      if (words[w] === 0) continue;
      for (let i = w << 2, e = i + 4; i < e; i++) {
        const b = BUCKET[counters[i]!]!;
        const s = this.seen[i]!;
        if ((b & ~s) !== 0) {
          if (s === 0) this.edges++;
          this.seen[i] = s | b;
          fresh = true;
        }
      }
      words[w] = 0;
    }
    return fresh;
  }
  clear(): void {
    this.counters.fill(0);
  }
}

class Mutator {
  private readonly rand: () => number;
  private readonly dictionary: Uint8Array[];
  constructor(
    seed: number,
    private readonly maxLength: number,
  ) {
    this.rand = mulberry32(seed);
    const values = [...new Set(globalThis.__fuzzDictionary ?? [])].sort((a, b) => a - b);
    const entries: Uint8Array[] = [];
    for (const v of values) {
      if (v <= 0xff) entries.push(Uint8Array.of(v));
      else if (v <= 0xffff) entries.push(Uint8Array.of(v >>> 8, v & 0xff), Uint8Array.of(v & 0xff, v >>> 8));
      else {
        const be = Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
        entries.push(be, be.slice().reverse());
      }
    }
    this.dictionary = entries;
  }

  int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  /** Mutate `buf[0..len)` in place (buf has room for maxLength); returns the new length. */
  mutate(buf: Uint8Array, len: number, corpus: readonly Uint8Array[]): number {
    let n = len;
    let stack = 1;
    while (stack < 8 && this.rand() < 0.5) stack++;
    for (let k = 0; k < stack; k++) n = this.once(buf, n, corpus);
    return n;
  }

  private putWord(buf: Uint8Array, at: number, width: number, v: number, bigEndian: boolean): void {
    for (let i = 0; i < width && at + i < buf.length; i++) {
      const shift = bigEndian ? 8 * (width - 1 - i) : 8 * i;
      buf[at + i] = Math.floor(v / 2 ** shift) & 0xff;
    }
  }

  private once(buf: Uint8Array, len: number, corpus: readonly Uint8Array[]): number {
    const max = this.maxLength;
    const op = this.int(len === 0 ? 2 : 13);
    switch (op) {
      case 0: {
        // Insert random bytes (or a run of one byte).
        if (len >= max) return len;
        const n = Math.min(max - len, 1 + this.int(this.rand() < 0.8 ? 4 : 64));
        const at = this.int(len + 1);
        buf.copyWithin(at + n, at, len);
        const fill = this.int(256);
        const run = this.rand() < 0.5;
        for (let i = 0; i < n; i++) buf[at + i] = run ? fill : this.int(256);
        return len + n;
      }
      case 1: {
        // Insert a dictionary value.
        if (this.dictionary.length === 0 || len >= max) return len;
        const d = this.dictionary[this.int(this.dictionary.length)]!;
        const n = Math.min(d.length, max - len);
        const at = this.int(len + 1);
        buf.copyWithin(at + n, at, len);
        buf.set(d.subarray(0, n), at);
        return len + n;
      }
      case 2:
        buf[this.int(len)]! ^= 1 << this.int(8);
        return len;
      case 3:
        buf[this.int(len)] = this.int(256);
        return len;
      case 4: {
        // Overwrite with a dictionary value.
        if (this.dictionary.length === 0) return len;
        const d = this.dictionary[this.int(this.dictionary.length)]!;
        const at = this.int(len);
        buf.set(d.subarray(0, Math.min(d.length, len - at)), at);
        return len;
      }
      case 5: {
        // An interesting value, 1, 2 or 4 bytes, either byte order.
        const w = [1, 2, 4][this.int(3)]!;
        const table = w === 1 ? INTERESTING_8 : w === 2 ? INTERESTING_16 : INTERESTING_32;
        this.putWord(buf, this.int(len), w, table[this.int(table.length)]!, this.rand() < 0.5);
        return len;
      }
      case 6: {
        // Add or subtract a small number to a 1/2/4-byte word.
        const w = [1, 2, 4][this.int(3)]!;
        const at = this.int(len);
        if (at + w > len) return len;
        const be = this.rand() < 0.5;
        let v = 0;
        for (let i = 0; i < w; i++) v += buf[at + i]! * 2 ** (be ? 8 * (w - 1 - i) : 8 * i);
        const delta = (1 + this.int(35)) * (this.rand() < 0.5 ? -1 : 1);
        this.putWord(buf, at, w, (v + delta + 2 ** (8 * w)) % 2 ** (8 * w), be);
        return len;
      }
      case 7: {
        // Erase a range.
        const n = 1 + this.int(Math.min(len, this.rand() < 0.8 ? 4 : 128));
        const at = this.int(len - n + 1);
        buf.copyWithin(at, at + n, len);
        return len - n;
      }
      case 8: {
        // Copy a range over another place in the same input.
        const n = 1 + this.int(Math.min(len, 64));
        const from = this.int(len - n + 1);
        const to = this.int(len - n + 1);
        buf.copyWithin(to, from, from + n);
        return len;
      }
      case 9: {
        // Duplicate a range (insert a copy).
        const n = Math.min(max - len, 1 + this.int(Math.min(len, 64)));
        if (n <= 0) return len;
        const from = this.int(len - Math.min(n, len) + 1);
        const chunk = buf.slice(from, from + n);
        const at = this.int(len + 1);
        buf.copyWithin(at + chunk.length, at, len);
        buf.set(chunk, at);
        return len + chunk.length;
      }
      case 10: {
        // Splice: overwrite or insert a piece of another corpus entry.
        const other = corpus[this.int(corpus.length)]!;
        if (other.length === 0) return len;
        const n = 1 + this.int(Math.min(other.length, 256));
        const from = this.int(other.length - n + 1);
        const piece = other.subarray(from, from + n);
        if (this.rand() < 0.5) {
          const at = this.int(len);
          const k = Math.min(piece.length, len - at);
          buf.set(piece.subarray(0, k), at);
          return len;
        }
        const k = Math.min(piece.length, max - len);
        const at = this.int(len + 1);
        buf.copyWithin(at + k, at, len);
        buf.set(piece.subarray(0, k), at);
        return len + k;
      }
      case 11:
        // Truncate.
        return this.int(len);
      default: {
        // Cross-over: the head of this input, the tail of another.
        const other = corpus[this.int(corpus.length)]!;
        const cut = this.int(len + 1);
        const from = this.int(other.length + 1);
        const k = Math.min(other.length - from, max - cut);
        buf.set(other.subarray(from, from + k), cut);
        return cut + k;
      }
    }
  }
}

function loadDir(dir: string): Uint8Array[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .map((f) => new Uint8Array(readFileSync(path.join(dir, f))));
}

/** Fuzz `target` until `options.runs` inputs have run or `options.timeMs` has passed, or it throws. */
export async function fuzz(target: FuzzTarget, options: FuzzOptions): Promise<FuzzResult> {
  const started = Date.now();
  const coverage = new Coverage();
  coverage.clear(); // module initialisation counted nothing we want
  const corpus: Uint8Array[] = [];
  const corpusDir = options.corpusDir !== undefined ? path.join(options.corpusDir, target.name) : undefined;
  const crashDir = path.join(options.crashDir, target.name);
  const result: FuzzResult = { target: target.name, runs: 0, ms: 0, corpus: 0, coverage: 0, counters: 0, crash: null };
  const current = options.current;
  const progressMs = options.progressMs ?? 0;
  let nextProgress = started + progressMs;

  const runOne = async (data: Uint8Array): Promise<boolean | null> => {
    current?.set(data);
    result.runs++;
    try {
      const r = target.run(data);
      if (r !== undefined) await r;
    } catch (err) {
      const file = saveInput(crashDir, 'crash', data);
      const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
      result.crash = { file, message };
      return null;
    }
    return coverage.collect();
  };

  const initial = [...target.seeds(), ...(corpusDir !== undefined ? loadDir(corpusDir) : [])];
  for (const seed of initial.length > 0 ? initial : [new Uint8Array(0)]) {
    const data = seed.subarray(0, target.maxLength);
    const fresh = await runOne(data);
    if (fresh === null) break;
    if (fresh || corpus.length === 0) corpus.push(data.slice());
  }

  const mutator = new Mutator(options.seed, target.maxLength);
  const buf = new Uint8Array(target.maxLength);
  const deadline = started + options.timeMs;
  while (result.crash === null && result.runs < options.runs) {
    // Checking the clock costs; every 256 runs is often enough.
    if ((result.runs & 0xff) === 0) {
      const now = Date.now();
      if (now >= deadline) break;
      if (progressMs > 0 && now >= nextProgress) {
        nextProgress = now + progressMs;
        options.progress?.({ ...result, ms: now - started, corpus: corpus.length, coverage: coverage.edges });
      }
    }
    // Newer entries (found later, usually deeper) are picked more often.
    const pick = mutator.int(2) === 0 ? mutator.int(corpus.length) : corpus.length - 1 - mutator.int(Math.min(corpus.length, 64));
    const parent = corpus[pick]!;
    buf.set(parent);
    const len = mutator.mutate(buf, parent.length, corpus);
    const data = buf.subarray(0, len);
    const fresh = await runOne(data);
    if (fresh === true && corpus.length < 50_000) {
      const entry = data.slice();
      corpus.push(entry);
      if (corpusDir !== undefined) saveInput(corpusDir, 'input', entry);
    }
  }
  target.close?.();
  result.ms = Date.now() - started;
  result.corpus = corpus.length;
  result.coverage = coverage.edges;
  result.counters = globalThis.__fuzzCoverageUsed ?? 0;
  return result;
}
