/**
 * How QEMU seals the guest RAM it shares (hardening item 8): the seals of
 * the memfd behind `-object memory-backend-memfd` (read through
 * /proc/PID/fd: the seals belong to the file, not to the descriptor), by
 * default and with seal=off, against our own frontend's memfd, which
 * claims to seal like QEMU. No guest is booted (`-machine none -S`): the
 * memory backend is created at start-up.
 */
import { closeSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { native, Seal } from '../../src/native/index.js';
import { QEMU_MEMFD_SEALS, VhostUserFrontend } from '../../src/frontend/frontend.js';
import { VhostUserServer } from '../../src/vhost-user/server.js';
import { RecordingDevice } from '../../src/frontend/fake-device.js';
import { killAllAfterAll, killProcess, spawnTracked } from '../harness/processes.js';
import { socketScratch } from '../helpers/vhost-user.js';
import { waitForValue } from '../helpers/wait.js';

killAllAfterAll(afterAll);
const { cleanups, socketPath } = socketScratch('vun-qseal-');

/** The seals of the memory-backend-memfd of a QEMU started with `objectOptions`. */
async function qemuMemfdSeals(objectOptions: string): Promise<number> {
  const bin = process.env.VUN_QEMU ?? 'qemu-system-x86_64';
  const qemu = spawnTracked(bin, ['-machine', 'none', '-S', '-display', 'none', '-monitor', 'none', '-serial', 'none',
    '-object', `memory-backend-memfd,id=mem,size=16M,share=on${objectOptions}`], { name: 'qemu-seals', stdio: 'ignore' });
  try {
    const path = await waitForValue(() => {
      for (const fd of readdirSync(`/proc/${qemu.pid}/fd`)) {
        const link = `/proc/${qemu.pid}/fd/${fd}`;
        try {
          if (readlinkSync(link).startsWith('/memfd:memory-backend-memfd')) return link;
        } catch {
          /* closed meanwhile */
        }
      }
      return undefined;
    }, 20_000);
    const fd = openSync(path, 'r');
    try {
      return native.fdSeals(fd);
    } finally {
      closeSync(fd);
    }
  } finally {
    await killProcess(qemu, 'SIGKILL');
  }
}

/** The seals of our frontend's memfd with `sealMemory`. */
function frontendSeals(sealMemory?: boolean): number {
  const server = new VhostUserServer({ mode: 'listen', path: socketPath(), device: new RecordingDevice() }).start();
  cleanups.push(() => server.close());
  const fe = VhostUserFrontend.connect(server.path, sealMemory === undefined ? {} : { sealMemory });
  cleanups.push(() => fe.close().then(() => undefined));
  return native.fdSeals(fe.memoryFd);
}

describe("QEMU's memory-backend-memfd seals, and ours", () => {
  it('seals GROW|SHRINK|SEAL by default, as our frontend does', async () => {
    const seals = await qemuMemfdSeals('');
    expect(seals).toBe(Seal.GROW | Seal.SHRINK | Seal.SEAL);
    expect(QEMU_MEMFD_SEALS).toBe(seals);
    expect(frontendSeals()).toBe(seals);
  });

  it('with seal=off leaves it shrinkable (only F_SEAL_SEAL), as our frontend with sealMemory: false', async () => {
    const seals = await qemuMemfdSeals(',seal=off');
    expect(seals).toBe(Seal.SEAL);
    expect(frontendSeals(false)).toBe(seals);
  });
});
