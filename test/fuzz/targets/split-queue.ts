/**
 * Fuzz target: the device side of a split virtqueue (src/virtio/split-queue.ts)
 * over a driver-side ring in an ArrayBuffer. The harness and the model are
 * the seeded fuzz test's (helpers/split-queue-model.ts); here every random
 * choice — ring size and placement, descriptors, indirect tables, avail
 * indices, pops, used entries, notification toggles, unpops — is read from
 * the input, two bytes a choice, so coverage feedback steers the ring's
 * contents. The run ends when the input does (at most 400 operations).
 */
import { FuzzInput, type FuzzTarget } from '../engine/input.js';
import { exerciseSplitQueue } from '../../helpers/split-queue-model.js';
import { mulberry32 } from '../../helpers/prng.js';

/** Two bytes per choice: the first 2 * n choices of a PRNG, as an input. */
function seedInput(seed: number, choices: number): Uint8Array {
  const r = mulberry32(seed);
  const out = new Uint8Array(2 * choices);
  for (let i = 0; i < choices; i++) {
    const v = Math.floor(r() * 65536);
    out[2 * i] = v >>> 8;
    out[2 * i + 1] = v & 0xff;
  }
  return out;
}

export const target: FuzzTarget = {
  name: 'split-queue',
  maxLength: 8192,
  // Streams of choices from the seeded test's PRNG.
  seeds: () => [1, 2, 3, 4, 5, 6, 7, 8].map((s) => seedInput(s, 2048)),
  run(data) {
    const input = new FuzzInput(data);
    exerciseSplitQueue(() => input.fraction(), 400, () => input.remaining > 0);
  },
};
