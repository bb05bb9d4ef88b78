// The fuzzer's watchdog thread. JavaScript cannot interrupt a synchronous
// loop from the same thread, so a target stuck on one input is noticed
// here. The fuzzer (fuzzer.ts, CurrentInput) keeps the input being run in a
// SharedArrayBuffer: Int32 [0] counts inputs, Int32 [1] is the length, the
// bytes follow from offset 8. When the count has not moved for `timeoutMs`,
// the input is written as `timeout-<sha1>` beside the crashes, stderr says
// so, and the process is killed (the runner reports the target as failed).
// Plain JavaScript: worker threads do not get the TypeScript loader.
import { writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { saveInput } from './input-files.mjs';

const { shared, timeoutMs, dir, target } = workerData;
const header = new Int32Array(shared, 0, 2);
const bytes = new Uint8Array(shared, 8);
let lastRuns = -1;
let lastChange = Date.now();
const timer = setInterval(() => {
  const runs = Atomics.load(header, 0);
  const now = Date.now();
  if (runs !== lastRuns) {
    lastRuns = runs;
    lastChange = now;
    return;
  }
  if (now - lastChange < timeoutMs) return;
  const input = bytes.slice(0, Atomics.load(header, 1));
  const file = saveInput(dir, 'timeout', input);
  // Straight to fd 2: a worker's process.stderr goes through the main thread, which is stuck.
  writeSync(2, `fuzz ${target}: no progress for ${now - lastChange} ms on one input; saved ${file}\ninput (base64): ${Buffer.from(input).toString('base64')}\n`);
  process.kill(process.pid, 'SIGKILL');
}, Math.min(1000, timeoutMs / 4));
parentPort.on('close', () => clearInterval(timer));
parentPort.postMessage('ready');
