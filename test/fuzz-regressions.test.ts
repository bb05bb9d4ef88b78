/**
 * Replays what the coverage-guided fuzzer (npm run fuzz, test/fuzz/) keeps:
 * every input in test/fuzz/regressions/<target>/ (an input that once broke
 * an invariant or threw, committed with its fix) and every seed of every
 * target (our own frames and, when ../shared is beside the clone, the
 * libslirp captures). Each must pass the target's invariants on the code as
 * it is, uninstrumented. An input that once hung a target (`timeout-*`) is
 * replayed in a child process with a time limit, so a hang fails the test
 * instead of stalling the run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, expect } from 'vitest';
import { TARGETS } from './fuzz/targets/index.js';

const regressions = fileURLToPath(new URL('./fuzz/regressions', import.meta.url));
const root = fileURLToPath(new URL('..', import.meta.url));
const REPLAY_LIMIT_MS = 20_000;

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
        if (file.startsWith('timeout-')) {
          const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/engine/replay.ts', entry.name, path.join(dir, file)], {
            cwd: root, timeout: REPLAY_LIMIT_MS, encoding: 'utf8',
          });
          expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
          return;
        }
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
