/**
 * Guest-level benchmark: the same guest (scripts/build-guest.sh's kernel and
 * busybox initramfs, plus bench/tools/tcprr) booted once per network
 * backend under the same QEMU (TCG, 1 vCPU), measured the same way:
 *
 *   - ours:  -netdev vhost-user to our backend (src/cli.ts as a child process)
 *   - slirp: QEMU's own -netdev user (libslirp, in QEMU's main loop)
 *   - passt: -netdev vhost-user to passt --vhost-user, upstream passt built
 *     from ../shared/peers (bench/passt.ts), attached exactly as ours (memfd
 *     shared memory, vectors=0); where that tarball is missing, Debian's
 *     2023 passt over -netdev stream instead, said on stderr and in the report
 *
 * Measures, each with its own time bound and its own failure (a failed
 * measure is reported in its cell and the run goes on):
 *   - TCP throughput guest -> host and host -> guest, per address family
 *     (`families`, default both): iperf3 in the guest against an iperf3
 *     server on the host's loopback (-R for the second). IPv4: the server on
 *     127.0.0.1, reached from the guest at the gateway address 10.0.2.2,
 *     which all three map to the host's loopback (passt: `-g 10.0.2.2` plus
 *     `--map-host-loopback`). IPv6: a second server on ::1, reached at
 *     fec0::2, which ours and libslirp map to ::1 (passt, peer build: the
 *     same, bench/passt.ts, started with IPv6 only when it is measured);
 *     the guest's address is its SLAAC one in fec0::/64, waited for
 *     (slaac(): address formed, duplicate address detection done, default
 *     route learned) before anything is measured.
 *     A backend that cannot do IPv6 here (Debian's passt, run with -4) shows
 *     "n/a" in the IPv6 rows. Figure: the receiver's Mbit/s.
 *   - TCP and UDP request/response latency: tcprr (1-byte round trips; TCP
 *     with TCP_NODELAY, UDP with `--udp`: one datagram each way, a lost one
 *     fails the sample) from the guest to a tcprr echo server of the same
 *     protocol on the host's 127.0.0.1, both on one port number (IPv4 only,
 *     whatever `families` says).
 *   - CPU per gigabit: CPU seconds of the network backend during the iperf3
 *     run (deltas of /proc utime+stime around it) divided by gigabits moved
 *     (Mbit/s x seconds). The backend is our child process, passt's process,
 *     or, for slirp, QEMU's main-loop thread (tid == pid; not the "CPU 0/TCG"
 *     vCPU thread): that is where libslirp runs. QEMU's main-thread CPU is
 *     reported for all three as well, since with slirp and passt it also
 *     holds virtio-net's queue processing and, for passt, the stream socket.
 *
 * Same conditions: the guest gets the same static address (10.0.2.15/24,
 * gateway 10.0.2.2), the same SLAAC address (fec0::5054:ff:fe12:3456/64)
 * and keeps MTU 1500 with every backend (passt would
 * offer 65520 by DHCP; not used, so the comparison is per 1500-byte frame).
 * Under TCG the guest's vCPU (one host thread) limits throughput, so absolute figures are
 * low; the ratios and the CPU per gigabit are what compare backends.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bootGuest, type Guest, type GuestImage, type NicOptions } from '../test/harness/qemu.js';
import { ensureGuestBuilt, setupStaticIp, slaac } from '../test/harness/guest.js';
import { killProcess, spawnTracked, type TrackedProcess } from '../test/harness/processes.js';
import { freePorts, type LoopbackHost } from '../test/helpers/loopback-peers.js';
import { BENCH_CACHE, REPO_ROOT, fmt, makeTempDir, removeTempDir, processCpuSeconds, startBackendChild, table, threadCpuSeconds, threads, withTimeout } from './common.js';
import { DEBIAN_PASST, findPasst, startPasst, type PasstBinary } from './passt.js';

export type BackendName = 'ours' | 'slirp' | 'passt';

/** An address family of the iperf3 measures. */
export type Family = 4 | 6;

/** Per family: where the host's iperf3 server listens and the address the guest reaches it at. */
const FAMILY_PATH: Record<Family, { hostLoopback: LoopbackHost; gateway: string }> = {
  4: { hostLoopback: '127.0.0.1', gateway: '10.0.2.2' },
  6: { hostLoopback: '::1', gateway: 'fec0::2' },
};

export type ThroughputKey = 'guestToHost' | 'hostToGuest' | 'guestToHost6' | 'hostToGuest6';

/** The iperf3 measures: direction (reverse = host -> guest, iperf3 -R) and family; keys name them in results and errors. */
const THROUGHPUT_MEASURES: ReadonlyArray<{ key: ThroughputKey; family: Family; reverse: boolean; label: string; abbrev: string }> = [
  { key: 'guestToHost', family: 4, reverse: false, label: 'guest->host', abbrev: 'g->h' },
  { key: 'hostToGuest', family: 4, reverse: true, label: 'host->guest', abbrev: 'h->g' },
  { key: 'guestToHost6', family: 6, reverse: false, label: 'guest->host', abbrev: 'g->h' },
  { key: 'hostToGuest6', family: 6, reverse: true, label: 'host->guest', abbrev: 'h->g' },
];

export interface GuestOptions {
  /** iperf3 seconds per direction and sample (default 3). */
  iperfSeconds?: number;
  /** tcprr round trips per sample, TCP and UDP alike (default 2000, bounded to 5 s). */
  rrCount?: number;
  /** Samples of each measure per boot, interleaved; the table shows medians (default 3). */
  repeats?: number;
  backends?: BackendName[];
  /** Address families of the iperf3 measures (default both). */
  families?: Family[];
}

/** One iperf3 run. */
export interface ThroughputSample {
  mbps: number;
  seconds: number;
  /** CPU seconds during the run: the network backend, QEMU's main thread. */
  backendCpuSeconds: number;
  qemuMainCpuSeconds: number;
  /** CPU seconds of QEMU's vCPU thread(s) ("CPU n/TCG") and the wall time of the run. */
  vcpuCpuSeconds: number;
  wallSeconds: number;
}

export interface ThroughputResult {
  /** Median over the samples. */
  mbps: number;
  /** CPU seconds summed over the samples divided by the gigabits they moved. */
  backendCpuPerGbit: number;
  qemuMainCpuPerGbit: number;
  /** vCPU thread CPU / wall time over the samples: near 100 means the guest itself is the bottleneck. */
  vcpuBusyPercent: number;
  samples: ThroughputSample[];
}

export interface LatencySample {
  n: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
}

/** Medians over the samples. */
export interface LatencyResult extends LatencySample {
  samples: LatencySample[];
}

/** The iperf3 results by measure key: IPv4 guestToHost/hostToGuest, IPv6 guestToHost6/hostToGuest6. */
export interface BackendResult extends Record<ThroughputKey, ThroughputResult | null> {
  backend: BackendName;
  bootMs: number | null;
  /** The guest's IPv6 address from SLAAC (when IPv6 was measured) and how long it took to appear after the IPv4 set-up. */
  slaac?: { cidr: string; ms: number };
  /** Why this backend has no IPv6 here (its IPv6 rows show "n/a"). */
  ipv6Unavailable?: string;
  /** TCP and UDP request/response (tcprr, tcprr --udp). */
  latency: LatencyResult | null;
  udpLatency: LatencyResult | null;
  /** Why a measure (or the whole backend) failed: measure name -> message (the last failure). */
  errors: Record<string, string>;
}

export interface GuestReport {
  iperfSeconds: number;
  repeats: number;
  families: Family[];
  /** Which passt was measured (when it was). */
  passt?: string;
  results: BackendResult[];
}

/** Per-backend budget, whatever happens: boot and both latencies, plus this much per family's two iperf3 measures (IPv4 only: 115 s). */
const BASE_BUDGET_MS = 75_000;
const FAMILY_BUDGET_MS = 40_000;

/** Compiles tcprr (static, so the same file runs in the guest) and appends it to the guest's initramfs. */
export async function benchImage(): Promise<{ image: GuestImage; tcprr: string }> {
  const base = await ensureGuestBuilt();
  mkdirSync(BENCH_CACHE, { recursive: true });
  const stage = join(BENCH_CACHE, 'extra-root');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(join(stage, 'usr', 'bin'), { recursive: true });
  const tcprr = join(stage, 'usr', 'bin', 'tcprr');
  execFileSync('gcc', ['-static', '-O2', '-s', '-Wall', '-o', tcprr, join(REPO_ROOT, 'bench', 'tools', 'tcprr.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
  // A second gzip'd newc archive: Linux unpacks concatenated initramfs archives in order.
  const extra = execFileSync('sh', ['-c', 'echo usr/bin/tcprr | cpio -o -H newc -R 0:0 --quiet | gzip -n -6'], { cwd: stage, maxBuffer: 64 << 20 });
  const initrd = join(BENCH_CACHE, 'initramfs-bench.cpio.gz');
  writeFileSync(initrd, Buffer.concat([readFileSync(base.initrd!), extra]));
  return { image: { ...base, initrd, name: 'vun-initramfs+tcprr' }, tcprr };
}

interface NetBackend {
  nic: NicOptions;
  /** Why the guest gets no IPv6 from this backend here, if it does not. */
  ipv6Unavailable?: string;
  /** CPU seconds of the network backend (needs the QEMU pid for slirp). */
  cpu(qemuPid: number): number | null;
  close(): Promise<void>;
  describe(): string;
}

async function startNetBackend(name: BackendName, dir: string, families: Family[]): Promise<NetBackend> {
  switch (name) {
    case 'ours': {
      const socket = join(dir, 'ours.sock');
      const b = await startBackendChild(socket);
      return {
        nic: { kind: 'vhost-user', socket },
        cpu: () => processCpuSeconds(b.proc.pid),
        close: () => killProcess(b.proc, 'SIGTERM', 2000),
        describe: () => `backend stderr: ${b.stderr().trim().slice(-2000) || '(empty)'}`,
      };
    }
    case 'slirp':
      return {
        nic: { kind: 'slirp' },
        cpu: (qemuPid) => threadCpuSeconds(qemuPid, qemuPid),
        close: async () => undefined,
        describe: () => '',
      };
    case 'passt': {
      const binary = passtBinary();
      const peer = binary.kind === 'peer';
      // IPv6 only when measured, so an IPv4-only run compares the passt it always did.
      const p = await startPasst(binary, { vhostUser: peer, ipv6: peer && families.includes(6) });
      return {
        ...(peer ? {} : { ipv6Unavailable: `${binary.describe} is run IPv4-only (-4)` }),
        // The peer build is attached exactly as ours (vhost-user, memfd, vectors=0); Debian's only as a stream socket.
        nic: binary.kind === 'peer' ? { kind: 'vhost-user', socket: p.socket } : { kind: 'passt', socket: p.socket },
        cpu: () => p.cpu(),
        close: () => p.close(),
        describe: () => `passt stderr: ${p.stderr().trim().slice(-2000) || '(empty)'}`,
      };
    }
  }
}

/** The passt to compare with: the peer build (--vhost-user), else Debian's (socket mode), said once. */
function passtBinary(): PasstBinary {
  const peer = findPasst();
  if (typeof peer !== 'string') return peer;
  if (!fallbackTold) {
    fallbackTold = true;
    process.stderr.write(`bench: ${peer}; falling back to ${DEBIAN_PASST.describe}\n`);
  }
  return DEBIAN_PASST;
}
let fallbackTold = false;

const IPERF_RE = /([\d.]+)\s+Mbits\/sec[^\n]*receiver/;
const RR_RE = /(?:tcp|udp)rr n=(\d+) mean_us=([\d.]+) p50_us=([\d.]+) p99_us=([\d.]+)/;

async function iperf(guest: Guest, backend: NetBackend, gateway: string, port: number, seconds: number, reverse: boolean): Promise<ThroughputSample> {
  const cmd = `timeout ${seconds + 20} iperf3 -c ${gateway} -p ${port} -t ${seconds} -f m --connect-timeout 5000${reverse ? ' -R' : ''}`;
  const vcpus = threads(guest.pid).filter((t) => /^CPU \d+\/TCG$/.test(t.name));
  const vcpuCpu = (): number => vcpus.reduce((a, t) => a + (threadCpuSeconds(guest.pid, t.tid) ?? NaN), 0);
  const t0 = performance.now();
  const cpu0 = backend.cpu(guest.pid);
  const main0 = threadCpuSeconds(guest.pid, guest.pid);
  const vcpu0 = vcpuCpu();
  const r = await guest.run(cmd, { timeoutMs: (seconds + 30) * 1000 });
  const cpu1 = backend.cpu(guest.pid);
  const main1 = threadCpuSeconds(guest.pid, guest.pid);
  const vcpu1 = vcpuCpu();
  const t1 = performance.now();
  const m = IPERF_RE.exec(r.output);
  if (r.exitCode !== 0 || !m) throw new Error(`iperf3 exited ${r.exitCode}: ${r.output.trim().split('\n').slice(-4).join(' | ')}`);
  return {
    mbps: Number(m[1]),
    seconds,
    backendCpuSeconds: cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : NaN,
    qemuMainCpuSeconds: main0 !== null && main1 !== null ? main1 - main0 : NaN,
    vcpuCpuSeconds: vcpus.length > 0 ? vcpu1 - vcpu0 : NaN,
    wallSeconds: (t1 - t0) / 1000,
  };
}

/** The request/response measures: tcprr's protocol flag and the result field each fills. */
const RR_MEASURES: ReadonlyArray<{ key: 'latency' | 'udpLatency'; flag: string; label: string }> = [
  { key: 'latency', flag: '', label: 'TCP' },
  { key: 'udpLatency', flag: '--udp ', label: 'UDP' },
];

async function latency(guest: Guest, port: number, count: number, flag: string): Promise<LatencySample> {
  const r = await guest.run(`timeout 20 tcprr ${flag}client 10.0.2.2 ${port} ${count} 5`, { timeoutMs: 30_000 });
  const m = RR_RE.exec(r.output);
  if (r.exitCode !== 0 || !m) throw new Error(`tcprr ${flag}exited ${r.exitCode}: ${r.output.trim().split('\n').slice(-3).join(' | ')}`);
  return { n: Number(m[1]), meanUs: Number(m[2]), p50Us: Number(m[3]), p99Us: Number(m[4]) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function summarizeThroughput(samples: ThroughputSample[]): ThroughputResult | null {
  if (samples.length === 0) return null;
  const gigabits = samples.reduce((a, x) => a + (x.mbps * x.seconds) / 1000, 0);
  return {
    mbps: median(samples.map((x) => x.mbps)),
    backendCpuPerGbit: samples.reduce((a, x) => a + x.backendCpuSeconds, 0) / gigabits,
    qemuMainCpuPerGbit: samples.reduce((a, x) => a + x.qemuMainCpuSeconds, 0) / gigabits,
    vcpuBusyPercent: (samples.reduce((a, x) => a + x.vcpuCpuSeconds, 0) / samples.reduce((a, x) => a + x.wallSeconds, 0)) * 100,
    samples,
  };
}

function summarizeLatency(samples: LatencySample[]): LatencyResult | null {
  if (samples.length === 0) return null;
  return {
    n: samples.reduce((a, x) => a + x.n, 0),
    meanUs: median(samples.map((x) => x.meanUs)),
    p50Us: median(samples.map((x) => x.p50Us)),
    p99Us: median(samples.map((x) => x.p99Us)),
    samples,
  };
}

function short(err: unknown): string {
  const msg = (err as Error)?.message ?? String(err);
  // Harness errors carry the whole console tail; the first lines say what failed.
  return msg.split('\n--- console')[0]!.slice(0, 600);
}

interface HostPorts {
  /** The iperf3 server's port per measured family. */
  iperf: Partial<Record<Family, number>>;
  /** The tcprr echo servers' port, TCP and UDP alike (freePorts: free for both). */
  rr: number;
}

async function runOne(name: BackendName, image: GuestImage, ports: HostPorts, opts: Required<GuestOptions>): Promise<BackendResult> {
  const result: BackendResult = {
    backend: name, bootMs: null, guestToHost: null, hostToGuest: null, guestToHost6: null, hostToGuest6: null, latency: null, udpLatency: null, errors: {},
  };
  const dir = makeTempDir(`vun-bench-${name}-`);
  let backend: NetBackend | undefined;
  let guest: Guest | undefined;
  const budgetMs = BASE_BUDGET_MS + FAMILY_BUDGET_MS * opts.families.length;
  const deadline = Date.now() + budgetMs;
  const left = (): number => Math.max(1000, deadline - Date.now());
  try {
    backend = await startNetBackend(name, dir, opts.families);
    if (opts.families.includes(6) && backend.ipv6Unavailable !== undefined) result.ipv6Unavailable = backend.ipv6Unavailable;
    const families = opts.families.filter((f) => f === 4 || result.ipv6Unavailable === undefined);
    guest = await bootGuest({
      name: `bench-${name}`,
      nic: backend.nic,
      image,
      readyTimeoutMs: Math.min(120_000, left()),
      // Named threads: the vCPU is "CPU 0/TCG"; the main loop (slirp's home) stays tid == pid.
      extraArgs: ['-name', `bench-${name},debug-threads=on`],
    });
    result.bootMs = guest.bootMs;
    await withTimeout(setupStaticIp(guest, '10.0.2.15/24', '10.0.2.2'), 20_000, 'static address');
    if (families.includes(6)) {
      const t0 = Date.now();
      try {
        const autoconf = await withTimeout(slaac(guest, { timeoutMs: 30_000 }), Math.min(60_000, left()), 'SLAAC');
        result.slaac = { cidr: autoconf.cidr, ms: Date.now() - t0 };
      } catch (err) {
        // No address, no IPv6 measures; IPv4 goes on.
        result.errors.slaac = short(err);
        for (const m of THROUGHPUT_MEASURES) if (m.family === 6) result.errors[m.key] = 'not measured: the guest got no SLAAC address';
      }
    }
    const rr = new Map<(typeof RR_MEASURES)[number]['key'], LatencySample[]>();
    const samples = new Map<ThroughputKey, ThroughputSample[]>();
    const measures: Array<[string, () => Promise<void>]> = [];
    for (const m of RR_MEASURES) {
      const got: LatencySample[] = [];
      rr.set(m.key, got);
      measures.push([m.key, async () => void got.push(await latency(guest!, ports.rr, opts.rrCount, m.flag))]);
    }
    for (const m of THROUGHPUT_MEASURES.filter((x) => families.includes(x.family))) {
      const got: ThroughputSample[] = [];
      samples.set(m.key, got);
      const port = ports.iperf[m.family]!;
      measures.push([m.key, async () => void got.push(await iperf(guest!, backend!, FAMILY_PATH[m.family].gateway, port, opts.iperfSeconds, m.reverse))]);
    }
    // Interleaved rounds, so a burst of load from elsewhere on the host hits every measure alike.
    for (let round = 0; round < opts.repeats; round++) {
      for (const [what, fn] of measures) {
        // A measure that failed once is not retried: its failures tend to be timeouts.
        if (result.errors[what] !== undefined) continue;
        if (Date.now() >= deadline) {
          result.errors[what] = `skipped after round ${round}: ${name} used up its ${budgetMs / 1000} s budget`;
          continue;
        }
        try {
          await withTimeout(fn(), left(), what);
        } catch (err) {
          result.errors[what] = short(err);
        }
      }
    }
    for (const [key, got] of rr) result[key] = summarizeLatency(got);
    for (const [key, got] of samples) result[key] = summarizeThroughput(got);
  } catch (err) {
    const extra = backend?.describe();
    result.errors.setup = short(err) + (extra ? ` (${extra.slice(0, 600)})` : '');
  } finally {
    await guest?.close().catch(() => undefined);
    await backend?.close().catch(() => undefined);
    removeTempDir(dir);
  }
  return result;
}

/** Boots the guest once per backend and measures each; never throws for a backend's failure. */
export async function runGuestBench(options: GuestOptions = {}): Promise<GuestReport> {
  const opts: Required<GuestOptions> = {
    iperfSeconds: options.iperfSeconds ?? 3,
    rrCount: options.rrCount ?? 2000,
    repeats: options.repeats ?? 3,
    backends: options.backends ?? ['ours', 'slirp', 'passt'],
    families: options.families ?? [4, 6],
  };
  const { image, tcprr } = await benchImage();
  const ports: HostPorts = { iperf: {}, rr: (await freePorts(1, '127.0.0.1'))[0]! };
  // Host peers on loopback, shared by every backend's run: one iperf3 server per family.
  const iperfServers: TrackedProcess[] = [];
  for (const family of opts.families) {
    const host = FAMILY_PATH[family].hostLoopback;
    const port = (await freePorts(1, host))[0]!;
    ports.iperf[family] = port;
    iperfServers.push(spawnTracked('iperf3', ['-s', '-B', host, '-p', String(port)], { name: `iperf3-server-v${family}`, stdio: 'ignore' }));
  }
  const rrServers = RR_MEASURES.map((m) =>
    spawnTracked(tcprr, [...(m.flag ? [m.flag.trim()] : []), 'server', '127.0.0.1', String(ports.rr)], { name: `tcprr-server-${m.label}`, stdio: 'ignore' }),
  );
  try {
    await new Promise((r) => setTimeout(r, 300));
    const results: BackendResult[] = [];
    for (const b of opts.backends) {
      process.stderr.write(`bench: guest with ${b}...\n`);
      results.push(await runOne(b, image, ports, opts));
    }
    return {
      iperfSeconds: opts.iperfSeconds,
      repeats: opts.repeats,
      families: opts.families,
      ...(opts.backends.includes('passt') ? { passt: passtBinary().describe } : {}),
      results,
    };
  } finally {
    for (const server of iperfServers) await killProcess(server, 'SIGTERM', 1000);
    for (const server of rrServers) await killProcess(server, 'SIGKILL');
  }
}

type Better = 'higher' | 'lower';

export function formatGuestReport(r: GuestReport): string {
  const cols = r.results.map((x) => x.backend);
  const get = (b: BackendName): BackendResult => r.results.find((x) => x.backend === b)!;
  const families = r.families;
  const measures = THROUGHPUT_MEASURES.filter((m) => families.includes(m.family));
  type Row = { label: string; better: Better | null; digits: number; family?: Family; value: (x: BackendResult) => number | null | undefined };
  const perMeasure = (label: (m: (typeof measures)[number]) => string, better: Better | null, digits: number, value: (t: ThroughputResult) => number): Row[] =>
    measures.map((m) => ({ label: label(m), better, digits, family: m.family, value: (x) => (x[m.key] ? value(x[m.key]!) : null) }));
  const rowsSpec: Row[] = [
    ...perMeasure((m) => `TCP/IPv${m.family} ${m.label} Mbit/s`, 'higher', 0, (t) => t.mbps),
    ...RR_MEASURES.flatMap((m): Row[] => [
      { label: `${m.label} RR latency mean µs (IPv4)`, better: 'lower', digits: 0, value: (x) => x[m.key]?.meanUs },
      { label: `${m.label} RR latency p50 µs (IPv4)`, better: 'lower', digits: 0, value: (x) => x[m.key]?.p50Us },
      { label: `${m.label} RR latency p99 µs (IPv4)`, better: 'lower', digits: 0, value: (x) => x[m.key]?.p99Us },
    ]),
    ...perMeasure((m) => `backend CPU s/Gbit, IPv${m.family} ${m.label}`, 'lower', 2, (t) => t.backendCpuPerGbit),
    ...perMeasure((m) => `QEMU main thread CPU s/Gbit, v${m.family} ${m.abbrev}`, 'lower', 2, (t) => t.qemuMainCpuPerGbit),
    ...perMeasure((m) => `guest vCPU thread busy %, v${m.family} ${m.abbrev}`, null, 0, (t) => t.vcpuBusyPercent),
    { label: 'guest boot to shell s', better: 'lower', digits: 1, value: (x) => (x.bootMs === null ? null : x.bootMs / 1000) },
  ];
  /** A backend's IPv6 cells when it has no IPv6 here. */
  const notApplicable = (x: BackendResult, row: Row): boolean => row.family === 6 && x.ipv6Unavailable !== undefined;
  const ratioCols = (['slirp', 'passt'] as const).filter((b) => cols.includes('ours') && cols.includes(b));
  const header = ['', ...cols, ...ratioCols.map((b) => `ours/${b}`)];
  const rows = rowsSpec.map((row) => {
    const cells = cols.map((c) => (notApplicable(get(c), row) ? 'n/a' : fmt(row.value(get(c)), row.digits)));
    const ratios = ratioCols.map((b) => {
      if (row.better === null) return '';
      if (notApplicable(get('ours'), row) || notApplicable(get(b), row)) return 'n/a';
      const a = row.value(get('ours'));
      const d = row.value(get(b));
      return a != null && d != null && Number.isFinite(a) && Number.isFinite(d) && d !== 0 ? `${(a / d).toFixed(2)}x` : '-';
    });
    return [`${row.label} ${row.better === 'higher' ? '(↑ better)' : row.better === 'lower' ? '(↓ better)' : ''}`.trim(), ...cells, ...ratios];
  });
  const peers = [families.includes(4) ? '127.0.0.1 reached as 10.0.2.2' : '', families.includes(6) ? '::1 reached as fec0::2 (guest address by SLAAC)' : '']
    .filter(Boolean)
    .join(' and ');
  const title =
    `Guest level: the same guest under QEMU TCG (1 vCPU), MTU 1500, host peers on ${peers}; iperf3 ${r.iperfSeconds} s per direction;\n` +
    `medians of ${r.repeats} interleaved samples per boot; backend CPU: our process / slirp = QEMU's main-loop thread / passt's process, summed over the samples / gigabits moved;\n` +
    `vCPU busy near 100 % means the TCG guest, not the backend, limits throughput` +
    (r.passt ? `\npasst: ${r.passt}` : '');
  const unavailable = r.results.filter((x) => x.ipv6Unavailable !== undefined).map((x) => `  ${x.backend}: ${x.ipv6Unavailable}`);
  const failures = r.results.flatMap((x) => Object.entries(x.errors).map(([k, v]) => `  ${x.backend} ${k}: ${v}`));
  return (
    `${title}\n${table(header, rows)}` +
    (unavailable.length ? `\nn/a (no IPv6 on this backend here):\n${unavailable.join('\n')}` : '') +
    (failures.length ? `\nFailed measures:\n${failures.join('\n')}` : '')
  );
}
