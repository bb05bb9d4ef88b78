/**
 * What both benchmarks share: CPU accounting of other processes from /proc,
 * the backend as a child process, waiting for sockets, and table printing.
 *
 * CPU accounting. A process's user+system time is fields 14 and 15 of
 * /proc/PID/stat (after the parenthesised command name, which may itself
 * contain spaces and parentheses, hence the lastIndexOf(')')), in clock
 * ticks (`getconf CLK_TCK`, 100 on Linux/x86: 10 ms resolution, so each
 * measured run lasts seconds). One thread's time is the same pair in
 * /proc/PID/task/TID/stat.
 *
 * Every child goes through the harness's spawnTracked (killed with us, even
 * on SIGKILL of this process, through PR_SET_PDEATHSIG); `installSignalCleanup`
 * kills them all on SIGINT/SIGTERM before exiting.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll, type TrackedProcess } from '../test/harness/processes.js';
import { startBackendProcess } from '../test/harness/backend.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BENCH_CACHE = join(REPO_ROOT, '.cache', 'bench');

let clkTck: number | undefined;

/** Clock ticks per second for /proc times. */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

function statCpuSeconds(statPath: string): number | null {
  let text: string;
  try {
    text = readFileSync(statPath, 'utf8');
  } catch {
    return null;
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is the state (stat field 3): utime is field 14, stime 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return (utime + stime) / clockTicks();
}

/** User+system CPU seconds of a whole process (all threads), or null when it is gone. */
export function processCpuSeconds(pid: number): number | null {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/** CPU seconds of one thread of `pid`. */
export function threadCpuSeconds(pid: number, tid: number): number | null {
  return statCpuSeconds(`/proc/${pid}/task/${tid}/stat`);
}

/** The threads of `pid` with their names (comm). */
export function threads(pid: number): { tid: number; name: string }[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map((t) => ({
      tid: Number(t),
      name: readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim(),
    }));
  } catch {
    return [];
  }
}

/** CPU seconds of this process (the frontend side), from process.cpuUsage(). */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `path` exists (a socket being bound), failing after timeoutMs or when `proc` exits. */
export async function waitForPath(path: string, timeoutMs: number, proc?: TrackedProcess, describe?: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  let exited = false;
  void proc?.exited.then(() => (exited = true));
  while (!existsSync(path)) {
    if (exited) throw new Error(`${proc!.name} exited before creating ${path}${describe ? `: ${describe()}` : ''}`);
    if (Date.now() > end) throw new Error(`${path} did not appear within ${timeoutMs} ms${describe ? `: ${describe()}` : ''}`);
    await sleep(20);
  }
}

export interface BackendChild {
  proc: TrackedProcess;
  /** Everything the backend wrote to stderr. */
  stderr(): string;
}

/**
 * Starts our backend (src/cli.ts) as a child process listening on `socket`
 * (the test harness's startBackendProcess), resolving once it listens. The
 * child's CPU is its own: processCpuSeconds(child.proc.pid).
 */
export async function startBackendChild(socket: string, extraArgs: string[] = []): Promise<BackendChild> {
  const backend = await startBackendProcess({ socket, args: extraArgs });
  return { proc: backend.proc, stderr: backend.log };
}

const tempDirs = new Set<string>();

/** A fresh directory under the system temp dir, removed by removeTempDir or on SIGINT/SIGTERM. */
export function makeTempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

export function removeTempDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

let cleanupInstalled = false;

/** On SIGINT/SIGTERM: kill every child (QEMU, passt, backends, iperf3), then exit. */
export function installSignalCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping children\n`);
      void killAll().finally(() => {
        for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
    });
  }
}

/** Resolves with `p`, or rejects after `ms` with `what` in the message. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Formats a number for a table cell: '-' for null/NaN, else `digits` significant-ish decimals. */
export function fmt(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(digits);
}

/** A plain-text table: first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
