// Where the fuzzer keeps inputs (crashes, hangs, corpus entries): one file
// per distinct input, named `<prefix>-<first 16 hex digits of its SHA-1>`, so
// the same input is written once. Plain JavaScript: the watchdog thread
// (watchdog.mjs) runs without the TypeScript loader.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export function inputName(prefix, data) {
  return `${prefix}-${createHash('sha1').update(data).digest('hex').slice(0, 16)}`;
}

export function saveInput(dir, prefix, data) {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, inputName(prefix, data));
  if (!existsSync(file)) writeFileSync(file, data);
  return file;
}
