/**
 * Shared set-up for tests that run our frontend against the backend over a
 * real Unix socket: per-test clean-ups and socket paths in fresh temporary
 * directories (both released after each test), a logger that records, a sink
 * that keeps the frames the device delivers, and starting a frontend plus a
 * net driver on it.
 */
import { afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { VhostUserFrontend } from '../../src/frontend/frontend.js';
import { NetDriver } from '../../src/frontend/net-driver.js';
import type { FrameSink } from '../../src/net/link.js';
import type { Logger } from '../../src/vhost-user/session.js';

export type Cleanup = () => Promise<void> | void;

/**
 * Registers an afterEach (call at the top of a test file) that runs the
 * clean-ups last first, then removes the directories `socketPath` made.
 * `prefix` names the directories, `name` the socket in each.
 */
export function socketScratch(prefix: string, name = 'sock'): { cleanups: Cleanup[]; socketPath: () => string } {
  const dirs: string[] = [];
  const cleanups: Cleanup[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const socketPath = (): string => {
    const d = mkdtempSync(path.join(tmpdir(), prefix));
    dirs.push(d);
    return path.join(d, name);
  };
  return { cleanups, socketPath };
}

/** A session logger that appends "info|warn|error <message>" to `logs` (debug dropped). */
export function recordingLogger(logs: string[]): Logger {
  return {
    debug: () => {},
    info: (m) => logs.push(`info ${m}`),
    warn: (m) => logs.push(`warn ${m}`),
    error: (m) => logs.push(`error ${m}`),
  };
}

/** Keeps a copy of every frame the device delivers; counts batches. */
export class CollectSink implements FrameSink {
  readonly frames: Uint8Array[] = [];
  batches = 0;
  receive(frame: Uint8Array): void {
    this.frames.push(frame.slice());
  }
  batchEnd(): void {
    this.batches++;
  }
}

/**
 * Negotiates and starts `fe` fully, then starts a net driver on it (stopped
 * by a clean-up pushed on `cleanups`).
 */
export async function startNetDriver(fe: VhostUserFrontend, cleanups: Cleanup[], driverOptions: ConstructorParameters<typeof NetDriver>[1] = {}): Promise<NetDriver> {
  await fe.connectAndStart();
  // The last messages (SET_VRING_ENABLE) are not acked in QEMU style: make sure they were processed.
  await fe.sync();
  const driver = new NetDriver(fe, driverOptions);
  driver.start();
  cleanups.push(() => driver.stop());
  return driver;
}
