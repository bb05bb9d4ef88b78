/**
 * `npm run fuzz`: coverage-guided fuzzing of every parser, the stack, the
 * vhost-user message decoder and stream, and the split ring (the targets in
 * test/fuzz/targets/). Each target runs in its own process with src/
 * instrumented for coverage (engine/register.ts), two at a time.
 *
 *   npm run fuzz                     bounded run (part of `npm test`): each
 *                                    target gets its fixed number of inputs
 *                                    (8.3 million in all; at most 90 s per
 *                                    target on a slow machine), seed 1
 *   npm run fuzz -- --long           local run: every target for 10 minutes
 *                                    (--time S to change), a random seed, and
 *                                    a corpus kept in .cache/fuzz-corpus/
 *   --target a,b  --runs N  --time S  --seed N  --jobs N  --report FILE
 *
 * An input that makes a target throw (a broken invariant, an exception) or
 * hang is written to test/fuzz/regressions/<target>/ — commit it: the
 * vitest test test/fuzz-regressions.test.ts replays every file there on each
 * run. The table at the end gives inputs and inputs per second per target;
 * the exit code is 1 if any target failed. `--report` writes the outcome as
 * a vitest-style JSON report (one test per target) for scripts/test.sh.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { TARGETS, type TargetEntry } from './targets/index.js';
import type { FuzzResult } from './engine/fuzzer.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values } = parseArgs({
  options: {
    long: { type: 'boolean', default: false },
    target: { type: 'string' },
    runs: { type: 'string' },
    time: { type: 'string' },
    seed: { type: 'string' },
    jobs: { type: 'string' },
    report: { type: 'string' },
  },
});

const long = values.long ?? false;
const selected: TargetEntry[] =
  values.target === undefined
    ? [...TARGETS]
    : values.target.split(',').map((n) => {
        const t = TARGETS.find((x) => x.name === n);
        if (t === undefined) throw new Error(`unknown target ${n}; known: ${TARGETS.map((x) => x.name).join(', ')}`);
        return t;
      });
const seed = values.seed !== undefined ? Number(values.seed) : long ? Math.floor(Math.random() * 2 ** 31) : 1;
// Bounded: the fixed counts, with a time cap per target far above what they need so a slow machine still finishes.
const timeMs = values.time !== undefined ? Number(values.time) * 1000 : long ? 600_000 : 90_000;
const jobs = Math.max(1, values.jobs !== undefined ? Number(values.jobs) : Math.min(2, os.availableParallelism()));
const crashDir = path.join(root, 'test', 'fuzz', 'regressions');
const corpusDir = path.join(root, '.cache', 'fuzz-corpus');

interface Outcome {
  name: string;
  result: FuzzResult | null;
  failure: string | null;
}

/** The input as base64, so it can be recovered from a log (CI's clone is thrown away). */
function inputText(file: string): string {
  try {
    return `input (base64): ${readFileSync(file).toString('base64')}`;
  } catch {
    return '';
  }
}

function runTarget(t: TargetEntry): Promise<Outcome> {
  const runs = values.runs !== undefined ? values.runs : long ? undefined : String(t.ciRuns);
  const args = [
    '--enable-source-maps', '--import', 'tsx', '--import', path.join(root, 'test/fuzz/engine/register.ts'),
    path.join(root, 'test/fuzz/engine/child.ts'),
    '--target', t.name, '--time-ms', String(timeMs), '--seed', String(seed), '--crash-dir', crashDir,
    ...(runs !== undefined ? ['--runs', runs] : []),
    ...(long ? ['--corpus-dir', corpusDir, '--progress-ms', '30000'] : []),
  ];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (long) process.stderr.write(d);
    });
    // Backstop for a child that neither finishes nor is killed by its watchdog.
    const killer = setTimeout(() => child.kill('SIGKILL'), timeMs + 120_000);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      const line = out.split('\n').find((l) => l.startsWith('FUZZ-RESULT '));
      const result = line !== undefined ? (JSON.parse(line.slice('FUZZ-RESULT '.length)) as FuzzResult) : null;
      let failure: string | null = null;
      if (result?.crash) failure = `input ${path.relative(root, result.crash.file)} failed:\n${result.crash.message}\n${inputText(result.crash.file)}`;
      else if (result === null || code !== 0) failure = `process ended (code ${code}, signal ${signal}) without a result:\n${err.trim()}`;
      resolve({ name: t.name, result, failure });
    });
  });
}

const started = Date.now();
const queue = [...selected];
const outcomes: Outcome[] = [];
console.log(`fuzz: ${selected.length} targets, ${long ? 'long run' : 'bounded run'}, seed ${seed}, ${jobs} at a time`);
await Promise.all(
  Array.from({ length: jobs }, async () => {
    for (let t = queue.shift(); t !== undefined; t = queue.shift()) {
      const o = await runTarget(t);
      outcomes.push(o);
      const r = o.result;
      console.log(`fuzz ${o.name}: ${o.failure !== null ? 'FAILED' : 'ok'}${r ? `, ${r.runs} inputs in ${(r.ms / 1000).toFixed(1)} s` : ''}`);
      if (o.failure !== null) console.log(o.failure);
    }
  }),
);
const order = (o: Outcome): number => selected.findIndex((s) => s.name === o.name);
outcomes.sort((a, b) => order(a) - order(b));
const wall = (Date.now() - started) / 1000;
let total = 0;
console.log('\ntarget                  inputs   inputs/s  corpus  counters hit  result');
for (const o of outcomes) {
  const r = o.result;
  total += r?.runs ?? 0;
  const rate = r && r.ms > 0 ? Math.round(r.runs / (r.ms / 1000)) : 0;
  console.log(
    `${o.name.padEnd(20)}${String(r?.runs ?? 0).padStart(10)}${String(rate).padStart(11)}${String(r?.corpus ?? 0).padStart(8)}${`${r?.coverage ?? 0}/${r?.counters ?? 0}`.padStart(14)}  ${o.failure === null ? 'ok' : 'FAILED'}`,
  );
}
const failed = outcomes.filter((o) => o.failure !== null);
console.log(`fuzz: ${total} inputs in all, ${wall.toFixed(1)} s; ${failed.length} of ${outcomes.length} targets failed`);
if (values.report !== undefined) {
  mkdirSync(path.dirname(values.report), { recursive: true });
  writeFileSync(
    values.report,
    JSON.stringify({
      numPassedTests: outcomes.length - failed.length,
      numFailedTests: failed.length,
      numPendingTests: 0,
      numTodoTests: 0,
      testResults: [],
      fuzz: outcomes.map((o) => ({ target: o.name, runs: o.result?.runs ?? 0, ms: o.result?.ms ?? 0, failure: o.failure })),
    }),
  );
}
process.exit(failed.length > 0 ? 1 : 0);
