/**
 * Our backend (src/cli.ts) as a child process, for VM tests and benchmarks.
 *
 * The child runs from source through tsx, so tests need no build step. It
 * can run inside a network namespace (`netns`) — that is how the ping-socket
 * tests open net.ipv4.ping_group_range without touching the host's setting.
 * `counters()` asks the child for its counters with SIGUSR1 and parses the
 * table it prints to stderr. `nofile` starts it under another RLIMIT_NOFILE
 * (`prlimit`), and `setFdLimit` changes the running child's (`prlimit --pid`).
 * `startBackendProcess` waits until the backend serves; `launchBackendProcess` does not (for a backend expected to refuse
 * to start). `backendIpv6Missing` tells tests written ahead of the backend's
 * IPv6 side whether to run yet.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killProcess, processFdLimit, setProcessFdLimit, spawnTracked, type FdLimits, type TrackedProcess } from './processes.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface BackendProcessOptions {
  /** Listen on this path (default), or connect to it with `connect: true`. */
  socket: string;
  connect?: boolean;
  /** More CLI arguments, e.g. ['--forward', 'tcp:2222:22']. */
  args?: string[];
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** Milliseconds to wait for the start: the socket to appear (listen mode) or the first connect attempt. */
  startTimeoutMs?: number;
  /** Start under this RLIMIT_NOFILE (soft and hard), through `prlimit`. */
  nofile?: FdLimits;
}


export interface BackendProcess {
  readonly proc: TrackedProcess;
  readonly pid: number;
  /** What the backend wrote to stderr so far (the last 512 KiB to 1 MiB of it). */
  log(): string;
  /**
   * Waits until `re` has matched the stderr log `count` times (default 1)
   * and returns the last match; fails on timeout or when the backend exits.
   */
  waitForLog(re: RegExp, opts?: { count?: number; timeoutMs?: number }): Promise<RegExpMatchArray>;
  /** The counters, read through SIGUSR1. */
  counters(): Promise<Record<string, number>>;
  /** SIGTERM, then SIGKILL after a grace period; resolves when it has exited. */
  stop(): Promise<void>;
  /** Its RLIMIT_NOFILE, from /proc/PID/limits. */
  fdLimit(): FdLimits;
  /** Set its RLIMIT_NOFILE (`prlimit --pid`); throws if prlimit fails. */
  setFdLimit(limits: FdLimits): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The command line that runs the backend from source: node and its arguments before the backend's own. */
function cliCommand(): [string, string[]] {
  return [process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts')]];
}

let ipv6Probe: Promise<string | undefined> | undefined;

/**
 * Why the backend cannot serve an IPv6 guest yet, or undefined when it can.
 * It counts as able once its `--help` offers `--no-ipv6`, the switch that
 * comes with the family (issue 7): tests of the IPv6 side skip with this
 * reason until then, and run by themselves from that commit on. Asked once
 * per process; a backend whose `--help` fails is an error, not a skip.
 */
export function backendIpv6Missing(): Promise<string | undefined> {
  ipv6Probe ??= new Promise((resolve, reject) => {
    const [node, args] = cliCommand();
    execFile(node, [...args, '--help'], { cwd: REPO_ROOT, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`vhost-user-net --help failed: ${err.message}\n${stderr}`));
      resolve(/--no-ipv6\b/.test(stdout) ? undefined : 'the backend has no IPv6 yet (its --help offers no --no-ipv6)');
    });
  });
  return ipv6Probe;
}

/** Spawns the backend and returns at once, without waiting for it to start. */
export function launchBackendProcess(options: BackendProcessOptions): BackendProcess {
  const [nodePath, nodeArgs] = cliCommand();
  const cliArgs = [...nodeArgs, options.connect ? '--connect' : '--socket', options.socket, ...(options.args ?? [])];
  const node = options.nofile ? ['prlimit', `--nofile=${options.nofile.soft}:${options.nofile.hard}`, '--', nodePath] : [nodePath];
  const [command, args] = options.netns
    ? ['ip', ['netns', 'exec', options.netns, ...node, ...cliArgs]]
    : [node[0]!, [...node.slice(1), ...cliArgs]];
  const proc = spawnTracked(command, args as string[], { name: 'vhost-user-net', cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  // Characters dropped from the front of `stderr`: offsets into the whole
  // output are `dropped + index`, so a mark survives the trimming.
  let dropped = 0;
  proc.child.stderr!.setEncoding('utf8');
  proc.child.stderr!.on('data', (d: string) => {
    stderr += d;
    if (stderr.length > 1 << 20) {
      const cut = stderr.length - (1 << 19);
      stderr = stderr.slice(cut);
      dropped += cut;
    }
  });
  let exited = false;
  void proc.exited.then(() => (exited = true));
  return {
    proc,
    pid: proc.pid,
    log: () => stderr,
    async waitForLog(re, opts = {}) {
      const count = opts.count ?? 1;
      const end = Date.now() + (opts.timeoutMs ?? 10_000);
      const all = new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g');
      for (;;) {
        const matches = [...stderr.matchAll(all)];
        if (matches.length >= count) return matches[count - 1]!;
        if (exited) throw new Error(`backend exited while waiting for ${count} x ${re}: ${stderr.slice(-4000)}`);
        if (Date.now() > end) throw new Error(`timeout waiting for ${count} x ${re} in the backend log (${matches.length} so far): ${stderr.slice(-4000)}`);
        await sleep(25);
      }
    },
    async counters() {
      const mark = dropped + stderr.length;
      proc.child.kill('SIGUSR1');
      const end = Date.now() + 5000;
      for (;;) {
        const text = stderr.slice(Math.max(0, mark - dropped));
        const start = text.indexOf('--- counters ---\n');
        const stop = text.indexOf('--- end of counters ---', start);
        if (start >= 0 && stop > start) return parseCounters(text.slice(start, stop));
        if (Date.now() > end || exited) throw new Error(`no counters from backend: ${text}`);
        await sleep(25);
      }
    },
    async stop() {
      await killProcess(proc, 'SIGTERM', 3000);
    },
    fdLimit: () => processFdLimit(proc.pid),
    setFdLimit: (limits) => setProcessFdLimit(proc.pid, limits),
  };
}

export async function startBackendProcess(options: BackendProcessOptions): Promise<BackendProcess> {
  const backend = launchBackendProcess(options);
  let exited = false;
  void backend.proc.exited.then(() => (exited = true));
  // Wait until the backend has started (and so handles SIGUSR1: before
  // that, the signal would start Node's inspector instead of printing counters).
  // Listen mode: the socket exists. Connect mode: the first attempt is logged
  // ("connected to" or "cannot connect to ... retrying").
  const end = Date.now() + (options.startTimeoutMs ?? 20_000);
  const started = (): boolean =>
    options.connect
      ? /vhost-user: (?:connected to|cannot connect to) /.test(backend.log())
      : existsSync(options.socket) && backend.log().includes('listening');
  while (!started()) {
    if (exited) throw new Error(`backend exited before starting: ${backend.log()}`);
    if (Date.now() > end) throw new Error(`backend did not start on ${options.socket}: ${backend.log()}`);
    await sleep(25);
  }
  return backend;
}

/** Parse the `name  1,234` lines CounterSet.format() prints. */
export function parseCounters(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([\w.:-]+)\s+([\d,]+)$/.exec(line.trim());
    if (m) out[m[1]!] = Number(m[2]!.replace(/,/g, ''));
  }
  return out;
}

/** What a process holds: open descriptors and mappings of memfd files (guest RAM). */
export function processResources(pid: number): { fds: number; memfdMappings: number } {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
  const memfdMappings = maps.split('\n').filter((l) => l.includes('/memfd:')).length;
  return { fds, memfdMappings };
}

/** A process's resident memory in bytes (VmRSS). */
export function processRss(pid: number): number {
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!rss) throw new Error(`no VmRSS for process ${pid}`);
  return Number(rss[1]) * 1024;
}
