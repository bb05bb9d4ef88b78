/**
 * Replays what the coverage-guided fuzzer (npm run fuzz, test/fuzz/) keeps:
 * every input in test/fuzz/regressions/<target>/ (an input that once broke
 * an invariant or threw, committed with its fix) and every seed of every
 * target (our own frames and, when ../shared is beside the clone, the
 * libslirp captures). Each must pass the target's invariants on the code as
 * it is, uninstrumented.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, expect } from 'vitest';
import { TARGETS } from './fuzz/targets/index.js';

const regressions = fileURLToPath(new URL('./fuzz/regressions', import.meta.url));

describe('fuzz regressions', () => {
  it('every folder names a fuzz target', () => {
    const folders = readdirSync(regressions, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    const unknown = folders.filter((f) => !TARGETS.some((t) => t.name === f));
    expect(unknown).toEqual([]);
  });
  for (const entry of TARGETS) {
    const dir = path.join(regressions, entry.name);
    const files = existsSync(dir) ? readdirSync(dir).sort() : [];
    for (const file of files) {
      it(`${entry.name}: ${file} passes`, async () => {
        const target = await entry.load();
        try {
          await target.run(new Uint8Array(readFileSync(path.join(dir, file))));
        } finally {
          target.close?.();
        }
      });
    }
  }
});

describe('fuzz seeds', () => {
  for (const entry of TARGETS) {
    it(`${entry.name}: every seed passes`, async () => {
      const target = await entry.load();
      const seeds = target.seeds();
      expect(seeds.length).toBeGreaterThan(0);
      for (const [i, seed] of seeds.entries()) {
        try {
          await target.run(seed.subarray(0, target.maxLength));
        } catch (err) {
          throw new Error(`seed ${i} (${Buffer.from(seed).toString('hex').slice(0, 80)}...): ${(err as Error).message}`);
        }
      }
      target.close?.();
    });
  }
});
