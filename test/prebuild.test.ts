/**
 * `npm run prebuild` (prebuildify --napi) makes an N-API prebuild that
 * node-gyp-build loads in preference to a local build. Done in a copy of the
 * package so the working tree's build is left alone; compiles the addon once
 * (about half a minute).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'vun-prebuild-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('prebuilds', () => {
  it('npm run prebuild makes an N-API prebuild that node-gyp-build loads first', () => {
    for (const entry of ['package.json', 'binding.gyp', 'native']) cpSync(join(root, entry), join(work, entry), { recursive: true });
    symlinkSync(join(root, 'node_modules'), join(work, 'node_modules'));
    execFileSync('npm', ['run', 'prebuild', '--silent'], { cwd: work, stdio: 'pipe', timeout: 240_000 });

    const dir = join(work, 'prebuilds', `${process.platform}-${process.arch}`);
    const files = readdirSync(dir);
    expect(files.filter((f) => f.endsWith('.node'))).toHaveLength(1);
    // prebuildify leaves no build/Release addon behind, so a successful load
    // below can only have come from prebuilds/.
    expect(existsSync(join(work, 'build', 'Release', 'vhost_user_net.node'))).toBe(false);

    const require = createRequire(join(root, 'package.json'));
    const loadBinding = require('node-gyp-build') as (dir: string) => { openFdCount(): number };
    const path = (require('node-gyp-build') as { path(dir: string): string }).path(work);
    expect(path.startsWith(dir)).toBe(true);
    expect(loadBinding(work).openFdCount()).toBeGreaterThan(0);
  }, 300_000);
});
