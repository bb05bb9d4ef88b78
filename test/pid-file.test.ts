import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PidFile } from '../src/pid-file.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'vun-pid-'));
  dirs.push(d);
  return d;
};

describe('PidFile', () => {
  it('writes the pid and removes the file at exit while it is ours', () => {
    const path = join(tempDir(), 'vun.pid');
    const pid = PidFile.write(path);
    expect(readFileSync(path, 'utf8')).toBe(`${process.pid}\n`);
    expect(pid.remove()).toBe(true);
    expect(existsSync(path)).toBe(false);
  });

  it('leaves alone a file another process has taken over, and replaces a stale one at start', () => {
    const path = join(tempDir(), 'vun.pid');
    writeFileSync(path, '999999\n');
    const ours = PidFile.write(path, 4242);
    expect(readFileSync(path, 'utf8')).toBe('4242\n');
    writeFileSync(path, '4343\n'); // a second backend started with the same path
    expect(ours.remove()).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe('4343\n');
  });
});
