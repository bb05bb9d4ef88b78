/**
 * What a fuzz target is, and a reader that turns the fuzzer's bytes into the
 * choices a harness makes (libFuzzer's FuzzedDataProvider idea): fields are
 * taken from the front, and an exhausted input reads as zeros, so every byte
 * string is a valid input and a mutation changes one choice at a time.
 */

export interface FuzzTarget {
  readonly name: string;
  /** The largest input the mutator makes for this target. */
  readonly maxLength: number;
  /** Starting inputs (real captures and inputs we built); may be empty. */
  seeds(): Uint8Array[];
  /**
   * Run one input. Throws (an Error naming the broken invariant) on a
   * finding; may return a promise for targets that need the event loop.
   */
  run(data: Uint8Array): void | Promise<void>;
  /** Release what the target holds (fds, sockets) at the end of a run. */
  close?(): void;
}

/** Fail a fuzz invariant: throws an Error with `what` (fuzz targets run outside vitest). */
export function check(cond: boolean, what: string | (() => string)): asserts cond {
  if (!cond) throw new Error(typeof what === 'string' ? what : what());
}

export class FuzzInput {
  private pos = 0;
  constructor(readonly bytes: Uint8Array) {}

  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  u8(): number {
    return this.pos < this.bytes.length ? this.bytes[this.pos++]! : 0;
  }

  /** Big-endian. */
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  /** Big-endian. */
  u32(): number {
    return ((this.u16() << 16) | this.u16()) >>> 0;
  }

  bool(): boolean {
    return (this.u8() & 1) === 1;
  }

  /** A number in [0, 1) from two bytes: for harnesses written against a `rand()` source. */
  fraction(): number {
    return this.u16() / 65536;
  }

  /** Up to `n` bytes (fewer at the end of the input), as a view. */
  take(n: number): Uint8Array {
    const out = this.bytes.subarray(this.pos, this.pos + Math.max(0, n));
    this.pos += out.length;
    return out;
  }

  /** Everything not read yet, as a view. */
  rest(): Uint8Array {
    return this.take(this.remaining);
  }
}

/** Writes inputs in the layout FuzzInput reads (for building seeds). */
export class FuzzInputWriter {
  private readonly parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v >>> 8).u8(v);
  }
  u32(v: number): this {
    return this.u16(v >>> 16).u16(v);
  }
  bytes(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}
