/**
 * One fuzz target in its own process (started by test/fuzz/run.ts with the
 * instrumentation hooks loaded): loads the target, starts the watchdog,
 * fuzzes, and prints one line `FUZZ-RESULT <json>` for the runner. Exit code
 * 1 when the target failed on an input.
 */
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import path from 'node:path';
import { CurrentInput, fuzz } from './fuzzer.js';
import { findTarget } from '../targets/index.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    runs: { type: 'string' },
    'time-ms': { type: 'string' },
    seed: { type: 'string' },
    'crash-dir': { type: 'string' },
    'corpus-dir': { type: 'string' },
    'timeout-ms': { type: 'string', default: '10000' },
    'progress-ms': { type: 'string', default: '0' },
  },
});
const entry = findTarget(values.target ?? '');
if (entry === undefined) throw new Error(`unknown fuzz target ${values.target}`);
const target = await entry.load();
const crashDir = values['crash-dir']!;
const current = CurrentInput.create(target.maxLength);
const watchdog = new Worker(new URL('./watchdog.mjs', import.meta.url), {
  execArgv: [],
  workerData: { shared: current.shared, timeoutMs: Number(values['timeout-ms']), dir: path.join(crashDir, target.name), target: target.name },
});
watchdog.on('error', (err) => {
  process.stderr.write(`fuzz ${target.name}: the watchdog failed: ${err.stack ?? err.message}\n`);
  process.exit(2);
});
watchdog.unref();
// Loaded before the first input (a target may count open fds).
await once(watchdog, 'message');
const result = await fuzz(target, {
  runs: values.runs === undefined ? Infinity : Number(values.runs),
  timeMs: Number(values['time-ms']),
  seed: Number(values.seed),
  crashDir,
  ...(values['corpus-dir'] !== undefined ? { corpusDir: values['corpus-dir'] } : {}),
  current,
  progressMs: Number(values['progress-ms']),
  progress: (r) => process.stderr.write(`fuzz ${r.target}: ${r.runs} runs, ${Math.round(r.runs / (r.ms / 1000))}/s, corpus ${r.corpus}, coverage ${r.coverage}\n`),
});
process.stdout.write(`FUZZ-RESULT ${JSON.stringify(result)}\n`, () => process.exit(result.crash === null ? 0 : 1));
