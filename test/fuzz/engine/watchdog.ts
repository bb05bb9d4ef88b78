/**
 * The fuzzer's watchdog thread: JavaScript cannot interrupt a synchronous
 * loop from the same thread, so a target stuck on one input is noticed here.
 * It watches the run counter in the shared buffer the fuzzer updates before
 * every input (CurrentInput); when the counter has not moved for
 * `timeoutMs`, it writes the input being run as `timeout-<sha1>` beside the
 * crashes, says so on stderr and kills the process (the runner reports the
 * target as failed).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CurrentInput, saveInput } from './fuzzer.js';

const { shared, timeoutMs, dir, target } = workerData as { shared: SharedArrayBuffer; timeoutMs: number; dir: string; target: string };
const current = new CurrentInput(shared);
let lastRuns = -1;
let lastChange = Date.now();
const timer = setInterval(() => {
  const runs = Atomics.load(current.header, 0);
  const now = Date.now();
  if (runs !== lastRuns) {
    lastRuns = runs;
    lastChange = now;
    return;
  }
  if (now - lastChange < timeoutMs) return;
  const file = saveInput(dir, 'timeout', current.get());
  process.stderr.write(`fuzz ${target}: no progress for ${now - lastChange} ms on one input; saved ${file}\n`);
  process.kill(process.pid, 'SIGKILL');
}, Math.min(1000, timeoutMs / 4));
parentPort?.on('close', () => clearInterval(timer));
