/**
 * Packet-rate benchmark with DPDK's testpmd as the frontend: the device's
 * frame rate and the backend's CPU per frame with no guest in the way, ours
 * and passt --vhost-user side by side.
 *
 * Theory of operation. testpmd's virtio-user driver (test/harness/testpmd.ts,
 * `--no-huge`, one forwarding lcore polling the rings) attaches to each
 * backend in turn, as the guest would, and is the packet source or sink:
 *
 *   - guest -> host: testpmd in txonly mode fills the transmit ring as fast as
 *     the backend empties it with UDP frames of 64 or 1500 bytes (Ethernet
 *     header included) from 10.0.2.15 to 10.0.2.2:SINK, addressed to the
 *     backend's gateway MAC; both backends map 10.0.2.2 to the host's
 *     loopback, where `udpblast sink` (bench/tools/udpblast.c, recvmmsg)
 *     counts the datagrams. Frames/s: frames the backend took off the ring
 *     (testpmd's TX-packets, which only counts frames the ring accepted);
 *     "delivered": datagrams at the sink.
 *   - host -> guest: `udpblast send` (sendmmsg, as fast as the kernel takes
 *     them, or paced at `offeredRate`) sends datagrams sized to make 64- or 1500-byte frames to a UDP
 *     port the backend forwards to the guest (ours `--forward udp:P:5000`,
 *     passt `-u 127.0.0.1/P:5000`); testpmd in rxonly counts what arrives
 *     (RX-packets). The backend learned the guest's MAC from the frames
 *     before. What the backend's socket cannot hold is dropped by the kernel:
 *     the rate is what the backend moved, the offered rate is shown beside it.
 *
 * Each measure: warm-up (WARMUP_MS), then deltas over `seconds` of testpmd's
 * port counters, the sink's count and the backend's CPU (utime+stime from
 * /proc/PID/stat: the whole process, all threads), so CPU per million frames
 * is backend CPU seconds / frames moved x 10^6. One testpmd per backend
 * serves all four measures; a failed measure is reported in its cell and the
 * run goes on.
 *
 * Same conditions: same testpmd, ring size 256, MTU 1500 (passt `-m 1500`),
 * the same sink and sender. On a 2-core host testpmd's polling lcore takes
 * one core; the backend, the sink or sender and the kernel share the other:
 * read the ratios. The passt column is the peer build (bench/passt.ts); when
 * it is missing the table has ours only and says why. Skipped with a message
 * where dpdk-testpmd is not installed.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { killProcess, spawnTracked, type TrackedProcess } from '../test/harness/processes.js';
import { startTestpmd, testpmdUnavailable, type PortStats, type Testpmd } from '../test/harness/testpmd.js';
import { BENCH_CACHE, REPO_ROOT, fmt, makeTempDir, processCpuSeconds, removeTempDir, sleep, startBackendChild, table, withTimeout } from './common.js';
import { PASST_MAC, findPasst, startPasst, type PasstBinary } from './passt.js';

export type DpdkBackendName = 'ours' | 'passt';
export type Direction = 'guestToHost' | 'hostToGuest';

export interface DpdkOptions {
  /** Measured seconds per direction and frame size (default 3). */
  seconds?: number;
  /** Ethernet frame sizes, header included, no FCS (default 64 and 1500). */
  sizes?: number[];
  backends?: DpdkBackendName[];
  /** Host -> guest: datagrams per second the sender offers (default 0: as fast as it can). */
  offeredRate?: number;
}

export interface RateResult {
  direction: Direction;
  frameBytes: number;
  /** The measured interval. */
  seconds: number;
  /** Frames the backend moved per second: taken off the tx ring (g->h) or put on the rx ring (h->g). */
  fps: number;
  /** g->h: datagrams per second at the sink. */
  deliveredFps?: number;
  /** h->g: datagrams per second the sender handed the kernel. */
  offeredFps?: number;
  backendCpuPercent: number;
  /** Backend CPU seconds per million frames moved. */
  cpuSecondsPerMillion: number;
}

export interface DpdkBackendResult {
  backend: DpdkBackendName;
  results: RateResult[];
  /** Failed measures (or 'setup'): message. */
  errors: Record<string, string>;
}

export interface DpdkReport {
  /** Why the section did not run (no testpmd). */
  skipped?: string;
  seconds: number;
  /** Host -> guest sender's pace, datagrams/s (0: as fast as it can). */
  offeredRate: number;
  /** Which passt was measured, or why there is no passt column. */
  passt?: string;
  results: DpdkBackendResult[];
}

const GUEST_MAC = '52:54:00:12:34:56';
const OUR_GATEWAY_MAC = '52:55:0a:00:02:02';
const GUEST_UDP_PORT = 5000;
const WARMUP_MS = 1000;
/** Ethernet + IPv4 + UDP headers: a frame of N bytes carries N - 42 bytes of UDP payload. */
const HEADERS = 14 + 20 + 8;

/** Compiles bench/tools/udpblast.c into the bench cache. */
function buildUdpblast(): string {
  const dir = join(BENCH_CACHE, 'tools');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, 'udpblast');
  execFileSync('gcc', ['-O2', '-Wall', '-o', out, join(REPO_ROOT, 'bench', 'tools', 'udpblast.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
  return out;
}

/** A free UDP port on 127.0.0.1 (bound, then closed). */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(r));
  return port;
}

const SINK_RE = /udpblast sink datagrams=(\d+) bytes=(\d+)/g;

/** `udpblast sink` on 127.0.0.1:port; count() asks it (SIGUSR1) for its total. */
async function startSink(tool: string, port: number): Promise<{ proc: TrackedProcess; count(): Promise<number> }> {
  const proc = spawnTracked(tool, ['sink', '127.0.0.1', String(port)], { name: 'udpblast-sink', stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.child.stdout!.setEncoding('utf8');
  proc.child.stdout!.on('data', (d: string) => (out += d));
  proc.child.stderr!.setEncoding('utf8');
  proc.child.stderr!.on('data', (d: string) => (out += d));
  const end = Date.now() + 5000;
  while (!out.includes('udpblast sink ready')) {
    if (Date.now() > end || proc.child.exitCode !== null) throw new Error(`udpblast sink did not start: ${out.trim()}`);
    await sleep(10);
  }
  return {
    proc,
    async count() {
      const reports = out.match(SINK_RE)?.length ?? 0;
      proc.child.kill('SIGUSR1');
      const until = Date.now() + 2000;
      for (;;) {
        const all = [...out.matchAll(SINK_RE)];
        if (all.length > reports) return Number(all[all.length - 1]![1]);
        if (Date.now() > until) throw new Error(`udpblast sink did not report: ${out.slice(-500)}`);
        await sleep(2);
      }
    },
  };
}

interface DpdkBackend {
  socket: string;
  /** The MAC the backend answers for the gateway: testpmd's frames go to it. */
  gatewayMac: string;
  cpu(): number | null;
  close(): Promise<void>;
  describe(): string;
}

async function startDpdkBackend(name: DpdkBackendName, dir: string, forwardPort: number, passt: PasstBinary | undefined): Promise<DpdkBackend> {
  if (name === 'ours') {
    const socket = join(dir, 'ours.sock');
    const b = await startBackendChild(socket, ['--forward', `udp:${forwardPort}:${GUEST_UDP_PORT}`]);
    return {
      socket,
      gatewayMac: OUR_GATEWAY_MAC,
      cpu: () => processCpuSeconds(b.proc.pid),
      close: () => killProcess(b.proc, 'SIGTERM', 2000),
      describe: () => `backend stderr: ${b.stderr().trim().slice(-1500) || '(empty)'}`,
    };
  }
  if (!passt) throw new Error('no passt peer');
  const p = await startPasst(passt, { vhostUser: true, udpForwards: [{ hostPort: forwardPort, guestPort: GUEST_UDP_PORT }] });
  return {
    socket: p.socket,
    gatewayMac: PASST_MAC,
    cpu: () => p.cpu(),
    close: () => p.close(),
    describe: () => `passt stderr: ${p.stderr().trim().slice(-1500) || '(empty)'}`,
  };
}

interface Sample {
  t: number;
  stats: PortStats;
  cpu: number;
  sink: number;
}

async function sample(testpmd: Testpmd, backend: DpdkBackend, sinkCount: () => Promise<number>): Promise<Sample> {
  const t = performance.now();
  const cpu = backend.cpu();
  const stats = await testpmd.portStats();
  const sink = await sinkCount();
  if (cpu === null) throw new Error(`the backend is gone; ${backend.describe()}`);
  return { t, stats, cpu, sink };
}

function rate(direction: Direction, frameBytes: number, a: Sample, b: Sample): RateResult {
  const seconds = (b.t - a.t) / 1000;
  const frames = direction === 'guestToHost' ? b.stats.txPackets - a.stats.txPackets : b.stats.rxPackets - a.stats.rxPackets;
  if (frames <= 0) throw new Error('no frames moved');
  const cpu = b.cpu - a.cpu;
  return {
    direction,
    frameBytes,
    seconds,
    fps: frames / seconds,
    ...(direction === 'guestToHost' ? { deliveredFps: (b.sink - a.sink) / seconds } : {}),
    backendCpuPercent: (cpu / seconds) * 100,
    cpuSecondsPerMillion: (cpu / frames) * 1e6,
  };
}

async function guestToHost(testpmd: Testpmd, backend: DpdkBackend, sinkCount: () => Promise<number>, frameBytes: number, seconds: number): Promise<RateResult> {
  await testpmd.command('set fwd txonly');
  await testpmd.command(`set txpkts ${frameBytes}`);
  await testpmd.command('start');
  try {
    await sleep(WARMUP_MS);
    const a = await sample(testpmd, backend, sinkCount);
    await sleep(seconds * 1000);
    const b = await sample(testpmd, backend, sinkCount);
    return rate('guestToHost', frameBytes, a, b);
  } finally {
    await testpmd.command('stop');
  }
}

const SEND_RE = /udpblast send datagrams=(\d+) errors=(\d+)/;

async function hostToGuest(
  tool: string,
  testpmd: Testpmd,
  backend: DpdkBackend,
  sinkCount: () => Promise<number>,
  forwardPort: number,
  frameBytes: number,
  seconds: number,
  offeredRate: number,
): Promise<RateResult> {
  await testpmd.command('set fwd rxonly');
  await testpmd.command('start');
  const runFor = Math.ceil(WARMUP_MS / 1000 + seconds + 2);
  const started = performance.now();
  const sender = spawnTracked(tool, ['send', '127.0.0.1', String(forwardPort), String(frameBytes - HEADERS), String(runFor), String(offeredRate)], { name: 'udpblast-send', stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  sender.child.stdout!.setEncoding('utf8');
  sender.child.stdout!.on('data', (d: string) => (out += d));
  sender.child.stderr!.setEncoding('utf8');
  sender.child.stderr!.on('data', (d: string) => (out += d));
  try {
    await sleep(WARMUP_MS);
    const a = await sample(testpmd, backend, sinkCount);
    await sleep(seconds * 1000);
    const b = await sample(testpmd, backend, sinkCount);
    // SIGTERM ends the sender at once; it prints what it sent.
    await killProcess(sender, 'SIGTERM', 2000);
    const m = SEND_RE.exec(out);
    if (!m) throw new Error(`udpblast send: ${out.trim() || 'no report'}`);
    const offered = Number(m[1]) / ((performance.now() - started) / 1000);
    return { ...rate('hostToGuest', frameBytes, a, b), offeredFps: offered };
  } finally {
    await killProcess(sender, 'SIGKILL');
    await testpmd.command('stop');
  }
}

function short(err: unknown): string {
  return ((err as Error)?.message ?? String(err)).slice(0, 600);
}

async function runBackend(
  name: DpdkBackendName,
  tool: string,
  sink: { count(): Promise<number> },
  ports: { sink: number; forward: number },
  passt: PasstBinary | undefined,
  opts: Required<DpdkOptions>,
): Promise<DpdkBackendResult> {
  const result: DpdkBackendResult = { backend: name, results: [], errors: {} };
  const dir = makeTempDir(`vun-bench-dpdk-${name}-`);
  let backend: DpdkBackend | undefined;
  let testpmd: Testpmd | undefined;
  try {
    backend = await startDpdkBackend(name, dir, ports.forward, passt);
    testpmd = await startTestpmd({
      socket: backend.socket,
      mac: GUEST_MAC,
      txIp: { src: '10.0.2.15', dst: '10.0.2.2' },
      txUdp: { src: 40000, dst: ports.sink },
      ethPeer: backend.gatewayMac,
    });
    const budget = (opts.seconds + 30) * 1000;
    for (const size of opts.sizes) {
      try {
        result.results.push(await withTimeout(guestToHost(testpmd, backend, sink.count, size, opts.seconds), budget, `guest->host ${size} B`));
      } catch (err) {
        result.errors[`guest->host ${size} B`] = short(err);
      }
    }
    for (const size of opts.sizes) {
      try {
        result.results.push(await withTimeout(hostToGuest(tool, testpmd, backend, sink.count, ports.forward, size, opts.seconds, opts.offeredRate), budget, `host->guest ${size} B`));
      } catch (err) {
        result.errors[`host->guest ${size} B`] = short(err);
      }
    }
  } catch (err) {
    result.errors.setup = short(err) + (backend ? ` (${backend.describe().slice(0, 600)})` : '');
  } finally {
    if (testpmd) await testpmd.quit().catch(() => undefined);
    await backend?.close().catch(() => undefined);
    removeTempDir(dir);
  }
  return result;
}

/** testpmd against each backend in turn; never throws for one backend's failure. */
export async function runDpdkBench(options: DpdkOptions = {}): Promise<DpdkReport> {
  const opts: Required<DpdkOptions> = {
    seconds: options.seconds ?? 3,
    sizes: options.sizes ?? [64, 1500],
    backends: options.backends ?? ['ours', 'passt'],
    offeredRate: options.offeredRate ?? 0,
  };
  const report: DpdkReport = { seconds: opts.seconds, offeredRate: opts.offeredRate, results: [] };
  const missing = testpmdUnavailable();
  if (missing !== undefined) {
    report.skipped = missing;
    return report;
  }
  let passt: PasstBinary | undefined;
  if (opts.backends.includes('passt')) {
    const found = findPasst();
    if (typeof found === 'string') {
      report.passt = `${found}; no passt column (Debian's passt has no vhost-user mode)`;
      process.stderr.write(`bench: ${report.passt}\n`);
      opts.backends = opts.backends.filter((b) => b !== 'passt');
    } else {
      passt = found;
      report.passt = found.describe;
    }
  }
  const tool = buildUdpblast();
  const ports = { sink: await freeUdpPort(), forward: await freeUdpPort() };
  const sink = await startSink(tool, ports.sink);
  try {
    for (const b of opts.backends) {
      process.stderr.write(`bench: testpmd against ${b}...\n`);
      report.results.push(await runBackend(b, tool, sink, ports, passt, opts));
    }
  } finally {
    await killProcess(sink.proc, 'SIGTERM', 1000);
  }
  return report;
}

export function formatDpdkReport(r: DpdkReport): string {
  if (r.skipped) return `DPDK packet rate: skipped: ${r.skipped}`;
  const cols = r.results.map((x) => x.backend);
  const sizes = [...new Set(r.results.flatMap((x) => x.results.map((y) => y.frameBytes)))].sort((a, b) => a - b);
  const get = (b: DpdkBackendName, d: Direction, size: number): RateResult | undefined =>
    r.results.find((x) => x.backend === b)?.results.find((y) => y.direction === d && y.frameBytes === size);
  const withRatio = cols.includes('ours') && cols.includes('passt');
  const rows: string[][] = [];
  const dirs: Array<[Direction, string]> = [
    ['guestToHost', 'g->h'],
    ['hostToGuest', 'h->g'],
  ];
  for (const [d, label] of dirs) {
    for (const size of sizes) {
      const spec: Array<[string, boolean | null, (x: RateResult) => number | undefined, number]> = [
        [`${label} ${size} B frames/s (↑)`, true, (x) => x.fps, 0],
        d === 'guestToHost' ? [`${label} ${size} B delivered to sink/s`, null, (x) => x.deliveredFps, 0] : [`${label} ${size} B offered by sender/s`, null, (x) => x.offeredFps, 0],
        [`${label} ${size} B backend CPU %`, null, (x) => x.backendCpuPercent, 0],
        [`${label} ${size} B backend CPU s/Mframe (↓)`, false, (x) => x.cpuSecondsPerMillion, 2],
      ];
      for (const [name, higherBetter, f, digits] of spec) {
        const cells = cols.map((c) => {
          const x = get(c, d, size);
          return fmt(x ? f(x) : null, digits);
        });
        let ratio: string[] = [];
        if (withRatio) {
          const a = get('ours', d, size);
          const b = get('passt', d, size);
          const va = a ? f(a) : undefined;
          const vb = b ? f(b) : undefined;
          ratio = [higherBetter !== null && va !== undefined && vb !== undefined && Number.isFinite(va) && Number.isFinite(vb) && vb !== 0 ? `${(va / vb).toFixed(2)}x` : ''];
        }
        rows.push([name, ...cells, ...ratio]);
      }
    }
  }
  const title =
    `DPDK packet rate: dpdk-testpmd (virtio-user, --no-huge, no VM) as the guest, UDP frames (Ethernet header included), ${r.seconds} s per measure;\n` +
    `g->h: txonly into a sink on 127.0.0.1 via 10.0.2.2, frames/s = frames taken off the ring; h->g: a sender ` +
    `(${r.offeredRate > 0 ? `paced at ${r.offeredRate.toLocaleString('en-US')}/s` : 'as fast as it can'}) into a forwarded UDP port, frames/s = frames testpmd received;\n` +
    `backend CPU = utime+stime of its process; testpmd polls one core` +
    (r.passt ? `\npasst: ${r.passt}` : '');
  if (r.results.length === 0) return `${title}\n(no backend measured)`;
  const failures = r.results.flatMap((x) => Object.entries(x.errors).map(([k, v]) => `  ${x.backend} ${k}: ${v}`));
  return `${title}\n${table(['', ...cols, ...(withRatio ? ['ours/passt'] : [])], rows)}${failures.length ? `\nFailed measures:\n${failures.join('\n')}` : ''}`;
}
