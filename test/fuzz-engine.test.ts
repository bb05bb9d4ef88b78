/**
 * The fuzzer itself (test/fuzz/engine/): instrumentation keeps a module's
 * behaviour and counts its branches, and the coverage-guided loop gets
 * through a chain of checks that blind random inputs would not (four bytes
 * that must each equal a computed value: 1 in 2^32 by chance), then saves
 * the input that threw under its content hash.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { instrument } from './fuzz/engine/instrument.js';
import { fuzz } from './fuzz/engine/fuzzer.js';
import { inputName } from './fuzz/engine/input-files.mjs';

const dir = mkdtempSync(path.join(tmpdir(), 'fuzz-engine-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SOURCE = `
/** Throws only for the bytes want(0..3); each byte passed is a new branch. */
const want = (i: number): number => (i * 37 + 11) & 0xff;
export function check(d: Uint8Array): number {
  if (d.length < 4) return 0;
  for (let i = 0; i < 4; i++) {
    if (d[i] !== want(i)) return i + 1;
  }
  throw new Error('all four bytes matched');
}
`;

async function load(): Promise<{ check: (d: Uint8Array) => number; counters: number }> {
  const { code, counters } = instrument(SOURCE, 'toy.ts', 0);
  const file = path.join(dir, 'toy.mjs');
  writeFileSync(file, code);
  return { ...((await import(pathToFileURL(file).href)) as { check: (d: Uint8Array) => number }), counters };
}

describe('fuzz engine', () => {
  it('instrumented code behaves the same and bumps its counters', async () => {
    const { check, counters } = await load();
    expect(counters).toBeGreaterThan(4);
    const cov = globalThis.__fuzzCoverage!;
    cov.fill(0);
    expect(check(Uint8Array.of(11, 0, 0, 0))).toBe(2);
    const hit = cov.subarray(0, counters).filter((c) => c > 0).length;
    expect(hit).toBeGreaterThan(2);
    expect(check(new Uint8Array(2))).toBe(0);
  });

  it('coverage feedback finds the four bytes and saves the input that threw', async () => {
    const { check } = await load();
    const result = await fuzz(
      { name: 'toy', maxLength: 16, seeds: () => [new Uint8Array(4)], run: (d) => void check(d) },
      { runs: 300_000, timeMs: 20_000, seed: 7, crashDir: dir },
    );
    expect(result.crash?.message).toContain('all four bytes matched');
    expect(result.corpus).toBeGreaterThanOrEqual(4); // one entry per byte matched
    const saved = readdirSync(path.join(dir, 'toy'));
    expect(saved).toHaveLength(1);
    const input = new Uint8Array(readFileSync(path.join(dir, 'toy', saved[0]!)));
    expect(Array.from(input.subarray(0, 4))).toEqual([11, 48, 85, 122]);
    expect(saved[0]).toBe(inputName('crash', input));
  });
});
