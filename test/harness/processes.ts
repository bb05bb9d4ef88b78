/**
 * Registry of the child processes the test harness starts (QEMU, backends,
 * host peers such as iperf3).
 *
 * Theory of operation: every child is spawned through spawnTracked(), which
 * (a) runs it under `setpriv --pdeathsig KILL` when setpriv exists, so the
 * kernel kills it if the test worker dies without running any hook, and
 * (b) records it here until it exits. killAll() kills whatever is still
 * alive and waits for it; it runs from an afterAll hook (killAllAfterAll())
 * and, synchronously with SIGKILL, on process 'exit'. No test may leave a
 * QEMU behind.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface TrackedProcess {
  readonly pid: number;
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
}

const live = new Map<number, TrackedProcess>();

let setprivChecked = false;
let setprivPath: string | undefined;

/** The setpriv binary when it supports --pdeathsig (util-linux >= 2.33). */
function setpriv(): string | undefined {
  if (!setprivChecked) {
    setprivChecked = true;
    const r = spawnSync('setpriv', ['--help'], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.includes('--pdeathsig')) setprivPath = 'setpriv';
  }
  return setprivPath;
}

function exitPromise(child: ChildProcess): Promise<number | string> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    if (child.signalCode !== null) return resolve(child.signalCode);
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    child.once('error', () => resolve('spawn-error'));
  });
}

/** Registers an already spawned child so killAll() covers it. */
export function track(child: ChildProcess, name: string): TrackedProcess {
  const pid = child.pid;
  const exited = exitPromise(child);
  if (pid === undefined) {
    // Spawn failed ('error' is emitted); nothing to kill.
    return { pid: -1, name, child, exited };
  }
  const entry: TrackedProcess = { pid, name, child, exited };
  live.set(pid, entry);
  void exited.then(() => {
    if (live.get(pid) === entry) live.delete(pid);
  });
  return entry;
}

/**
 * Spawns `command args` as a tracked child that the kernel kills when this
 * process (the thread that spawned it) dies.
 */
export function spawnTracked(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { name?: string } = {},
): TrackedProcess {
  const { name = command, ...spawnOptions } = options;
  const sp = setpriv();
  const child = sp
    ? spawn(sp, ['--pdeathsig', 'KILL', '--', command, ...args], spawnOptions)
    : spawn(command, args, spawnOptions);
  return track(child, name);
}

/** RLIMIT_NOFILE of a process. */
export interface FdLimits {
  soft: number;
  hard: number;
}

/** A process's RLIMIT_NOFILE, from /proc/PID/limits ('unlimited' is Infinity). */
export function processFdLimit(pid: number): FdLimits {
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) throw new Error(`no open-files limit for ${pid}`);
  const value = (t: string): number => (t === 'unlimited' ? Infinity : Number(t));
  return { soft: value(m[1]!), hard: value(m[2]!) };
}

/** Set a process's RLIMIT_NOFILE with `prlimit --pid` (this process's too); throws if prlimit fails. */
export function setProcessFdLimit(pid: number, limits: FdLimits): void {
  const text = (n: number): string => (n === Infinity ? 'unlimited' : String(n));
  const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${text(limits.soft)}:${text(limits.hard)}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`prlimit --pid ${pid} failed: ${r.stderr || r.error?.message}`);
}

/** The processes still alive. */
export function liveProcesses(): { pid: number; name: string }[] {
  return [...live.values()].map(({ pid, name }) => ({ pid, name }));
}

/** True if a process with this pid exists (and is not a zombie of ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // A zombie still answers kill(0); read its state.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Kills one tracked process: `signal` first, SIGKILL after graceMs, and waits
 * for it to exit.
 */
export async function killProcess(
  p: TrackedProcess,
  signal: NodeJS.Signals = 'SIGKILL',
  graceMs = 3000,
): Promise<void> {
  if (p.pid < 0) return;
  if (p.child.exitCode === null && p.child.signalCode === null) {
    p.child.kill(signal);
    if (signal !== 'SIGKILL') {
      const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
      await p.exited;
      clearTimeout(timer);
    }
  }
  await p.exited;
  live.delete(p.pid);
}

/** Kills every tracked process and waits until all have exited. */
export async function killAll(): Promise<void> {
  await Promise.all([...live.values()].map((p) => killProcess(p, 'SIGKILL')));
}

/**
 * Registers killAll() with the caller's afterAll: `killAllAfterAll(afterAll)`
 * in a test file. (This module does not import vitest, so bench scripts can
 * use the harness too.)
 */
export function killAllAfterAll(afterAll: (fn: () => Promise<void>) => void): void {
  afterAll(async () => {
    await killAll();
  });
}

process.once('exit', () => {
  for (const p of live.values()) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});
