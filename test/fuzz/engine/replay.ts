/**
 * `node --import tsx test/fuzz/engine/replay.ts <target> <file>`: run one
 * input through one target, uninstrumented, in a process of its own — how
 * test/fuzz-regressions.test.ts replays an input that once hung a target,
 * so that a hang comes back as a failed test (killed on a timeout) rather
 * than a stuck test run. Exit code 0 when the target's invariants hold.
 */
import { readFileSync } from 'node:fs';
import { findTarget } from '../targets/index.js';

const [name, file] = process.argv.slice(2);
const entry = findTarget(name ?? '');
if (entry === undefined || file === undefined) throw new Error('usage: replay.ts <target> <input file>');
const target = await entry.load();
try {
  await target.run(new Uint8Array(readFileSync(file)));
} finally {
  target.close?.();
}
process.exit(0);
