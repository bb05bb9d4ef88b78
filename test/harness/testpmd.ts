/**
 * DPDK's testpmd as a vhost-user frontend, for VM tests and the packet-rate
 * benchmark: a second frontend, written independently of QEMU, and a packet
 * generator that can keep a backend saturated.
 *
 * Theory of operation. `dpdk-testpmd` (Debian's dpdk-dev) runs DPDK's
 * virtio-user PMD on our socket (`--vdev net_virtio_user0,path=...`;
 * `server=1` makes testpmd listen and the backend connect). With `--no-huge`
 * DPDK's memory is one memfd ("nohuge") shared with the backend, and the
 * addresses it puts in descriptors and in the memory table's guest-physical
 * field are its own virtual addresses (IOVA as VA): the backend sees the
 * same protocol as from a VM, with a different address layout. It needs no
 * VM, no hugepages and no PCI device; one forwarding lcore polls its rings
 * at 100 % of a CPU while forwarding is started.
 *
 * testpmd runs interactively (`-i`): commands are written to its stdin one
 * line at a time, and `command()` returns what it printed up to its next
 * `testpmd> ` prompt. stdout is made unbuffered with `stdbuf -o0`, or the
 * output of a command would arrive long after its prompt. The forwarding
 * modes used: txonly (UDP frames from `--tx-ip`/`--tx-udp` to `--eth-peer`,
 * `set txpkts N` bytes long, as fast as the ring takes them) and rxonly
 * (count and free what arrives; `set verbose 1` prints each frame's
 * addresses and packet type). `portStats()` parses `show port stats 0`
 * (cumulative since the port started).
 *
 * EAL state: `--no-shconf` keeps DPDK's shared config out of the file
 * system, `--no-telemetry` opens no telemetry socket, and each instance has a
 * unique `--file-prefix`; the empty runtime directory DPDK still makes for it
 * (/var/run/dpdk/PREFIX as root, else $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk) is
 * removed once testpmd has exited. The process is tracked (processes.ts), so
 * it dies with the test.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { killProcess, spawnTracked, type TrackedProcess } from './processes.js';

export const TESTPMD = 'dpdk-testpmd';
const PROMPT = 'testpmd> ';

let unavailable: string | undefined | null = null;

/** Why testpmd cannot run here (a message for a skipped test), or undefined when it can. */
export function testpmdUnavailable(): string | undefined {
  if (unavailable === null) {
    const which = spawnSync('sh', ['-c', `command -v ${TESTPMD} && command -v stdbuf`], { encoding: 'utf8' });
    unavailable =
      which.status === 0
        ? undefined
        : `${TESTPMD} (Debian: apt-get install dpdk-dev librte-net-virtio23 librte-mempool-ring23; scripts/setup-host.sh installs it) or stdbuf is not installed`;
  }
  return unavailable;
}

export interface TestpmdOptions {
  /** The vhost-user socket. */
  socket: string;
  /** testpmd listens on `socket` (virtio-user `server=1`) and the backend connects. */
  server?: boolean;
  /** The port's MAC, the "guest's" (virtio-user `mac=`); DPDK picks a random one without it. */
  mac?: string;
  /** txonly frames: IPv4 source and destination, UDP ports, Ethernet destination. */
  txIp?: { src: string; dst: string };
  txUdp?: { src: number; dst: number };
  ethPeer?: string;
  /** txonly frame length in bytes, Ethernet header included (default 64). */
  txFrameBytes?: number;
  /** Ring size (default 256, QEMU's default). */
  queueSize?: number;
  /** DPDK memory in MiB (default 256): the memfd shared with the backend. */
  memoryMb?: number;
  /** More virtio-user devargs, e.g. 'packed_vq=1', 'mrg_rxbuf=0'. */
  vdevArgs?: string[];
  /** More testpmd application arguments (after `--`). */
  extraArgs?: string[];
}

/** `show port stats 0`, cumulative since the port started. */
export interface PortStats {
  rxPackets: number;
  rxBytes: number;
  rxMissed: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txBytes: number;
  txErrors: number;
}

export interface Testpmd {
  readonly proc: TrackedProcess;
  readonly pid: number;
  /** Everything testpmd printed (stdout and stderr, the last 1 MiB or so). */
  log(): string;
  /** Waits for the first prompt: the port is configured and started (in server mode: a backend has connected). */
  ready(timeoutMs?: number): Promise<void>;
  /** Writes one command line and returns what testpmd printed up to its next prompt. */
  command(line: string, timeoutMs?: number): Promise<string>;
  portStats(): Promise<PortStats>;
  /** `quit`, then waits for the exit (SIGKILL after `timeoutMs`); resolves with the exit code or signal. */
  quit(timeoutMs?: number): Promise<number | string>;
}

let instances = 0;

/** DPDK's runtime directory for a file prefix (eal_get_runtime_dir). */
function runtimeDir(prefix: string): string {
  const base = process.getuid?.() === 0 ? '/var/run' : (process.env.XDG_RUNTIME_DIR ?? '/tmp');
  return join(base, 'dpdk', prefix);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Starts testpmd on `options.socket` and returns at once (see `ready()`). */
export function launchTestpmd(options: TestpmdOptions): Testpmd {
  if (/[,\s]/.test(options.socket)) throw new Error(`socket path ${options.socket} would break DPDK's devargs (comma or space)`);
  const prefix = `vun-${process.pid}-${++instances}`;
  const vdev = [
    'net_virtio_user0',
    `path=${options.socket}`,
    ...(options.server ? ['server=1'] : []),
    'queues=1',
    `queue_size=${options.queueSize ?? 256}`,
    ...(options.mac ? [`mac=${options.mac}`] : []),
    ...(options.vdevArgs ?? []),
  ].join(',');
  // The main lcore reads commands; the forwarding lcore polls. With one CPU both share it.
  const lcores = cpus().length >= 2 ? ['-l', '0,1'] : ['--lcores', '(0,1)@0'];
  const eal = [...lcores, '--no-huge', '-m', String(options.memoryMb ?? 256), '--no-pci', '--no-shconf', '--no-telemetry', `--file-prefix=${prefix}`, `--vdev=${vdev}`];
  const app = [
    '-i',
    // The default pool (over 150,000 mbufs) would not fit in the memory above.
    '--total-num-mbufs=8192',
    ...(options.txIp ? [`--tx-ip=${options.txIp.src},${options.txIp.dst}`] : []),
    ...(options.txUdp ? [`--tx-udp=${options.txUdp.src},${options.txUdp.dst}`] : []),
    ...(options.ethPeer ? [`--eth-peer=0,${options.ethPeer}`] : []),
    `--txpkts=${options.txFrameBytes ?? 64}`,
    ...(options.extraArgs ?? []),
  ];
  const proc = spawnTracked('stdbuf', ['-o0', '-e0', TESTPMD, ...eal, '--', ...app], { name: 'dpdk-testpmd', stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  // Characters dropped from the front of `out`, so positions survive trimming.
  let dropped = 0;
  const append = (d: string): void => {
    out += d;
    if (out.length > 1 << 20) {
      const cut = out.length - (1 << 19);
      out = out.slice(cut);
      dropped += cut;
    }
  };
  proc.child.stdout!.setEncoding('utf8');
  proc.child.stderr!.setEncoding('utf8');
  proc.child.stdout!.on('data', append);
  proc.child.stderr!.on('data', append);
  // A write after the exit would raise EPIPE on stdin: nothing to do about it here.
  proc.child.stdin!.on('error', () => undefined);
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
    rmSync(runtimeDir(prefix), { recursive: true, force: true });
  });

  // Offset in the whole output (trimmed text included) just after the last
  // prompt consumed: a command's output runs from there to the next prompt.
  let cursor = -1;
  // Commands one at a time: each starts after the prompt that ended the previous one.
  let queue: Promise<unknown> = Promise.resolve();

  /** Waits for the next prompt after `from` and returns the offset just after it. */
  const nextPrompt = async (from: number, timeoutMs: number, what: string): Promise<number> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const at = out.indexOf(PROMPT, Math.max(0, from - dropped));
      if (at >= 0) return dropped + at + PROMPT.length;
      if (exited) throw new Error(`testpmd exited while waiting for ${what}: ${out.slice(-4000)}`);
      if (Date.now() > end) throw new Error(`testpmd: no prompt after ${what} within ${timeoutMs} ms: ${out.slice(-4000)}`);
      await sleep(10);
    }
  };

  const self: Testpmd = {
    proc,
    pid: proc.pid,
    log: () => out,
    async ready(timeoutMs = 30_000) {
      if (cursor < 0) cursor = await nextPrompt(0, timeoutMs, 'start-up');
    },
    command(line, timeoutMs = 15_000) {
      const run = async (): Promise<string> => {
        await self.ready(timeoutMs);
        const start = cursor;
        proc.child.stdin!.write(`${line}\n`);
        cursor = await nextPrompt(start, timeoutMs, `"${line}"`);
        return out.slice(Math.max(0, start - dropped), cursor - dropped - PROMPT.length);
      };
      const result = queue.then(run, run);
      queue = result.catch(() => undefined);
      return result;
    },
    async portStats() {
      const output = await self.command('show port stats 0');
      // From the table's own header on: the command's output may begin with frames printed in verbose mode.
      const at = output.indexOf('NIC statistics for port 0');
      if (at < 0) throw new Error(`no statistics for port 0 from testpmd: ${output.slice(-2000)}`);
      const text = output.slice(at);
      const field = (name: string): number => {
        const m = new RegExp(`${name}:\\s+(\\d+)`).exec(text);
        if (!m) throw new Error(`no ${name} in testpmd's port stats: ${text}`);
        return Number(m[1]);
      };
      return {
        rxPackets: field('RX-packets'),
        rxBytes: field('RX-bytes'),
        rxMissed: field('RX-missed'),
        rxErrors: field('RX-errors'),
        rxNombuf: field('RX-nombuf'),
        txPackets: field('TX-packets'),
        txBytes: field('TX-bytes'),
        txErrors: field('TX-errors'),
      };
    },
    async quit(timeoutMs = 15_000) {
      if (!exited) proc.child.stdin!.write('quit\n');
      const timer = setTimeout(() => proc.child.kill('SIGKILL'), timeoutMs);
      const code = await proc.exited;
      clearTimeout(timer);
      await killProcess(proc);
      return code;
    },
  };
  return self;
}

/** Starts testpmd and waits for its first prompt (client mode; in server mode the backend must connect first). */
export async function startTestpmd(options: TestpmdOptions, timeoutMs = 30_000): Promise<Testpmd> {
  const t = launchTestpmd(options);
  try {
    await t.ready(timeoutMs);
  } catch (err) {
    await killProcess(t.proc, 'SIGKILL');
    throw err;
  }
  return t;
}
