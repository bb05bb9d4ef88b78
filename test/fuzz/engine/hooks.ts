/**
 * Module loader hooks (node:module `register`) that instrument the project's
 * own sources for coverage as the fuzzer loads them: every `src/**\/*.ts`
 * module goes through `instrument` (test code, helpers and node_modules do
 * not). Ids run on across modules in load order, which is the same in every
 * run of a target, so a counter means the same branch from run to run.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { LoadHook } from 'node:module';
import { instrument } from './instrument.js';

let srcPrefix = '';
let nextId = 0;

/** `data.src`: the file URL of the directory whose .ts modules are instrumented. */
export function initialize(data: { src: string }): void {
  srcPrefix = data.src.endsWith('/') ? data.src : `${data.src}/`;
}

export const load: LoadHook = async (url, context, nextLoad) => {
  if (srcPrefix === '' || !url.startsWith(srcPrefix) || !url.endsWith('.ts')) return nextLoad(url, context);
  const file = fileURLToPath(url);
  const { code, counters } = instrument(await readFile(file, 'utf8'), file, nextId);
  nextId += counters;
  return { format: 'module', source: code, shortCircuit: true };
};
