/**
 * `npm run bench`: device-level and guest-level benchmarks.
 *
 *   npm run bench                      all three (about 3 minutes on an idle 2-core host)
 *   npm run bench -- --device          device level only (our frontend, ~10 s)
 *   npm run bench -- --dpdk            packet rate with DPDK testpmd as the frontend (ours vs passt --vhost-user, ~45 s)
 *   npm run bench -- --guest           guest level only (ours vs slirp vs passt --vhost-user)
 *   npm run bench -- --guest --backends=ours,slirp
 *   npm run bench -- --guest --families=6
 *                                      guest iperf3 over IPv6 only (default 4,6: both, side by side)
 *   npm run bench -- --seconds=5       measured seconds per device run / DPDK measure / iperf3 direction
 *   npm run bench -- --dpdk --offered-rate=200000
 *                                      DPDK host->guest: datagrams/s the host sender offers (default: all it can)
 *
 * passt is built from ../shared/peers (bench/passt.ts; VUN_PEERS_DIR names
 * another directory). Prints the tables and writes everything measured to
 * .cache/bench/last.json. Every child (backend, QEMU, passt, testpmd,
 * iperf3) dies with this process.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { killAll } from '../test/harness/processes.js';
import { BENCH_CACHE, REPO_ROOT, installSignalCleanup } from './common.js';
import { formatDeviceReport, runDeviceBench, type DeviceReport } from './device.js';
import { formatDpdkReport, runDpdkBench, type DpdkBackendName, type DpdkReport } from './dpdk.js';
import { formatGuestReport, runGuestBench, type BackendName, type Family, type GuestReport } from './guest.js';

const USAGE = 'usage: npm run bench -- [--device] [--dpdk] [--guest] [--seconds=N] [--backends=ours,slirp,passt] [--families=4,6] [--offered-rate=N]\n';

function firstLine(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).split('\n')[0]!.trim();
  } catch {
    return null;
  }
}

async function main(argv: string[]): Promise<number> {
  let device = false;
  let dpdk = false;
  let guest = false;
  let seconds: number | undefined;
  let offeredRate: number | undefined;
  let backends: BackendName[] | undefined;
  let families: Family[] | undefined;
  for (const a of argv) {
    if (a === '--device') device = true;
    else if (a === '--dpdk') dpdk = true;
    else if (a === '--guest') guest = true;
    else if (a.startsWith('--seconds=')) {
      seconds = Number(a.slice('--seconds='.length));
      if (!Number.isInteger(seconds) || seconds < 1 || seconds > 60) {
        process.stderr.write(`--seconds must be 1..60\n${USAGE}`);
        return 2;
      }
    } else if (a.startsWith('--offered-rate=')) {
      offeredRate = Number(a.slice('--offered-rate='.length));
      if (!Number.isInteger(offeredRate) || offeredRate < 1 || offeredRate > 100_000_000) {
        process.stderr.write(`--offered-rate must be 1..100000000 datagrams/s\n${USAGE}`);
        return 2;
      }
    } else if (a.startsWith('--backends=')) {
      const list = a.slice('--backends='.length).split(',');
      if (list.some((b) => b !== 'ours' && b !== 'slirp' && b !== 'passt')) {
        process.stderr.write(`unknown backend in ${a}\n${USAGE}`);
        return 2;
      }
      backends = list as BackendName[];
    } else if (a.startsWith('--families=')) {
      const list = a.slice('--families='.length).split(',');
      if (list.some((f) => f !== '4' && f !== '6')) {
        process.stderr.write(`--families takes 4, 6 or 4,6\n${USAGE}`);
        return 2;
      }
      families = [...new Set(list.map(Number) as Family[])].sort((x, y) => x - y);
    } else if (a === '-h' || a === '--help') {
      process.stdout.write(USAGE);
      return 0;
    } else {
      process.stderr.write(`unknown argument ${a}\n${USAGE}`);
      return 2;
    }
  }
  if (!device && !dpdk && !guest) device = dpdk = guest = true;
  installSignalCleanup();

  const started = Date.now();
  const out: {
    date: string;
    host: Record<string, unknown>;
    device?: DeviceReport;
    dpdk?: DpdkReport;
    guest?: GuestReport;
    elapsedSeconds?: number;
  } = {
    date: new Date().toISOString(),
    host: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      loadavgAtStart: loadavg(),
      node: process.version,
      qemu: firstLine('qemu-system-x86_64', ['--version']),
      passtDebian: firstLine('dpkg-query', ['-W', '-f=${Version}', 'passt']),
      dpdk: firstLine('dpkg-query', ['-W', '-f=${Version}', 'dpdk-dev']),
      iperf3: firstLine('iperf3', ['--version']),
      commit: firstLine('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
    },
  };
  let failed = false;
  try {
    if (device) {
      process.stderr.write('bench: device level...\n');
      out.device = await runDeviceBench(seconds !== undefined ? { seconds } : {});
      process.stdout.write(`\n${formatDeviceReport(out.device)}\n`);
      if (!out.device.ok) failed = true;
    }
    if (dpdk) {
      process.stderr.write('bench: DPDK packet rate (testpmd as the frontend)...\n');
      const dpdkBackends = backends?.filter((b): b is DpdkBackendName => b === 'ours' || b === 'passt');
      out.dpdk = await runDpdkBench({
        ...(seconds !== undefined ? { seconds } : {}),
        ...(dpdkBackends ? { backends: dpdkBackends } : {}),
        ...(offeredRate !== undefined ? { offeredRate } : {}),
      });
      process.stdout.write(`\n${formatDpdkReport(out.dpdk)}\n`);
      if (out.dpdk.results.length > 0 && out.dpdk.results.every((r) => r.results.length === 0)) failed = true;
    }
    if (guest) {
      process.stderr.write('bench: guest level (one guest boot per backend, under TCG)...\n');
      out.guest = await runGuestBench({
        ...(seconds !== undefined ? { iperfSeconds: seconds } : {}),
        ...(backends ? { backends } : {}),
        ...(families ? { families } : {}),
      });
      process.stdout.write(`\n${formatGuestReport(out.guest)}\n`);
      if (out.guest.results.every((r) => Object.keys(r.errors).length > 0)) failed = true;
    }
  } finally {
    await killAll();
    out.elapsedSeconds = (Date.now() - started) / 1000;
    mkdirSync(BENCH_CACHE, { recursive: true });
    const file = join(BENCH_CACHE, 'last.json');
    writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
    process.stdout.write(`\n(${out.elapsedSeconds.toFixed(0)} s; load average at start ${out.host.loadavgAtStart && (out.host.loadavgAtStart as number[]).map((x) => x.toFixed(1)).join(' ')}; JSON in ${file})\n`);
  }
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  async (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error)?.stack ?? String(err)}\n`);
    await killAll();
    process.exit(1);
  },
);
