/**
 * The README's integration recipes, taken from the README itself (the
 * fenced blocks under "### libvirt" and "### systemd"), so what users copy
 * is what is checked:
 *  - the libvirt domain XML: its vhost-user NIC and memfd shared memory
 *    elements, and `virt-xml-validate` against libvirt's own schema
 *    (libvirt-clients and libxml2-utils, installed by scripts/setup-host.sh;
 *    skipped with the reason when absent);
 *  - the systemd unit: `systemd-analyze verify` on an instance of it with
 *    ExecStart pointing at a real executable (a wrapper that runs this
 *    checkout's CLI), and its command line run for real (paths moved to a
 *    temporary directory): the socket, control endpoint and pid file appear.
 * Each tool is also shown a broken variant, so a pass means it checked.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, startBackendProcess } from './harness/backend.js';
import { controlRequest } from '../src/ctl.js';

const README = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');

/** The first fenced block of `language` after the heading `heading`. */
function recipe(heading: string, language: string): string {
  const start = README.indexOf(`\n${heading}\n`);
  expect(start, heading).toBeGreaterThan(0);
  const m = new RegExp('```' + language + '\\n([\\s\\S]*?)```').exec(README.slice(start));
  expect(m, `${heading}: a ${language} block`).not.toBeNull();
  return m![1]!;
}

const missing = (command: string): boolean => spawnSync('sh', ['-c', `command -v ${command}`]).status !== 0;

/** Runs a command; resolves with its exit status and everything it printed. */
function run(command: string, args: string[]): Promise<{ status: number; output: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vun-recipes-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('libvirt recipe', () => {
  const xml = recipe('### libvirt', 'xml');

  it('names a vhost-user NIC on a Unix socket and memfd shared memory', () => {
    expect(xml).toMatch(/<memoryBacking>\s*<source type='memfd'\/>\s*<access mode='shared'\/>\s*<\/memoryBacking>/);
    expect(xml).toMatch(/<interface type='vhostuser'>[\s\S]*<source type='unix' path='\/run\/vhost-user-net\/vm1\.sock' mode='client'\/>[\s\S]*<model type='virtio'\/>[\s\S]*<\/interface>/);
    // The socket path is the one the systemd recipe serves for instance vm1.
    expect(recipe('### systemd', 'ini')).toContain('--socket /run/vhost-user-net/%i.sock');
  });

  const noValidator = missing('virt-xml-validate') ? 'virt-xml-validate' : missing('xmllint') ? 'xmllint' : undefined;
  it.skipIf(noValidator !== undefined)(`is a valid domain for libvirt's schema (virt-xml-validate)${noValidator ? `: no ${noValidator}` : ''}`, async () => {
    const file = join(dir, 'domain.xml');
    writeFileSync(file, xml);
    const good = await run('virt-xml-validate', [file, 'domain']);
    expect(good).toEqual({ status: 0, output: expect.stringContaining('validates') });
    // The same with a source the schema does not know: refused.
    writeFileSync(file, xml.replace("<source type='memfd'/>", "<source type='tmpfs'/>"));
    expect((await run('virt-xml-validate', [file, 'domain'])).status).not.toBe(0);
  });
});

describe('systemd recipe', () => {
  const unit = recipe('### systemd', 'ini');
  const INSTALLED = '/usr/local/bin/vhost-user-net';

  it('runs the command the README names with these options', () => {
    expect(unit).toMatch(new RegExp(`^ExecStart=${INSTALLED} `, 'm'));
  });

  it.skipIf(missing('systemd-analyze'))('passes systemd-analyze verify with ExecStart on a real executable', async () => {
    // A real executable at ExecStart: this checkout's CLI.
    const wrapper = join(dir, 'vhost-user-net');
    writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} --import tsx ${join(REPO_ROOT, 'src', 'cli.ts')} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const file = join(dir, 'vhost-user-net@vm1.service');
    writeFileSync(file, unit.replace(INSTALLED, wrapper));
    expect(await run('systemd-analyze', ['verify', file])).toEqual({ status: 0, output: '' });
    // Broken variants are reported: a missing executable fails, an unknown setting value is warned about.
    const missingExe = join(dir, 'missing@vm1.service');
    writeFileSync(missingExe, unit.replace(INSTALLED, join(dir, 'nothing-here')));
    const refused = await run('systemd-analyze', ['verify', missingExe]);
    expect([refused.status === 0, refused.output]).toEqual([false, expect.stringContaining('is not executable')]);
    const badType = join(dir, 'badtype@vm1.service');
    writeFileSync(badType, unit.replace('Type=simple', 'Type=bogus'));
    expect((await run('systemd-analyze', ['verify', badType])).output).toMatch(/Failed to parse service type/);
  });

  it('its command line serves: socket, control endpoint and pid file where it says (moved to a temporary directory)', async () => {
    const line = /^ExecStart=(.*)$/m.exec(unit)![1]!;
    const args = line.split(/\s+/).slice(1).map((a) => a.replace('/run/vhost-user-net/', `${dir}/`).replace('%i', 'vm1'));
    const socketAt = args.indexOf('--socket');
    const [socket] = args.splice(socketAt, 2).slice(1);
    const backend = await startBackendProcess({ socket: socket!, args });
    try {
      expect(existsSync(join(dir, 'vm1.sock'))).toBe(true);
      await backend.waitForLog(/started: vhost-user listen/);
      const forwards = await controlRequest(join(dir, 'vm1.control'), 'GET', '/forwards');
      expect([forwards.status, JSON.parse(forwards.body)]).toEqual([200, []]);
      // The pid file is written once the backend serves.
      for (let i = 0; i < 100 && !existsSync(join(dir, 'vm1.pid')); i++) await new Promise((r) => setTimeout(r, 20));
      expect(readFileSync(join(dir, 'vm1.pid'), 'utf8').trim()).toBe(String(backend.pid));
    } finally {
      await backend.stop();
    }
    expect(existsSync(join(dir, 'vm1.pid'))).toBe(false);
  });
});
