/**
 * passt, the peer the benchmarks measure against.
 *
 * Which passt. Debian 12's package is from 2023 and has no vhost-user mode,
 * so the peer is upstream passt built from the tarball in `shared/peers/`
 * beside the clone (`../shared/peers/build-passt.sh OUTDIR`, see its
 * README; `VUN_PEERS_DIR` names another directory), built once into
 * .cache/peers and run as a vhost-user backend (`--vhost-user`), attached
 * exactly as ours is. Where the tarball is missing, `findPasst` says so and
 * the caller falls back (the guest bench to Debian's passt over a stream
 * socket, the DPDK bench to no passt column). Nothing of passt is kept in
 * this repository: it is built from the peers directory each time the cache
 * is empty.
 *
 * Running it. passt drops to `nobody` when started as root, before it binds
 * its socket: the socket lives in a fresh sticky world-writable directory
 * directly under the temp dir (nobody can reach it). `-f` keeps it in the
 * foreground, so the tracked process is passt itself and its CPU is
 * /proc/PID/stat; `-q` quiets it. Addresses as for the guest of every
 * backend: 10.0.2.15/24, gateway 10.0.2.2 mapped to the host's loopback;
 * `-m 1500` for the Ethernet-sized comparison (its default is 65520). IPv4
 * only (`-4`) unless `ipv6` is asked for (peer build only): then also the
 * IPv6 addressing ours and libslirp give, prefix fec0::/64 in its router
 * advertisements (`-a` with the guest's SLAAC address, which the prefix is
 * taken from) and the gateway fec0::2 mapped to the host's ::1 (`-g`,
 * a second `--map-host-loopback`). passt enables IPv6 only where the host
 * has an IPv6 route; where it has none the guest gets no address.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { killProcess, spawnTracked, type TrackedProcess } from '../test/harness/processes.js';
import { REPO_ROOT, makeTempDir, processCpuSeconds, removeTempDir, waitForPath } from './common.js';

export interface PasstBinary {
  /** The passt executable. */
  path: string;
  /** Built from the peers tarball (vhost-user capable) or Debian's package. */
  kind: 'peer' | 'debian';
  /** For the report: which passt this is. */
  describe: string;
}

/** The peers directory: $VUN_PEERS_DIR, else shared/peers beside the clone. */
export function peersDir(): string {
  return process.env.VUN_PEERS_DIR ?? resolve(REPO_ROOT, '..', 'shared', 'peers');
}

let found: PasstBinary | string | undefined;

/**
 * passt built from the peers directory (once; later calls reuse it), or a
 * message saying why not: no build script there, or the build failed.
 */
export function findPasst(): PasstBinary | string {
  if (found !== undefined) return found;
  const dir = peersDir();
  const script = join(dir, 'build-passt.sh');
  if (!existsSync(script)) {
    found = `no passt peer: ${script} is missing (set VUN_PEERS_DIR to the directory holding build-passt.sh and the passt tarball)`;
    return found;
  }
  const out = join(REPO_ROOT, '.cache', 'peers');
  try {
    if (!existsSync(join(out, 'passt'))) process.stderr.write(`bench: building passt from ${dir} (about 20 s)...\n`);
    const path = execFileSync('bash', [script, out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 }).trim().split('\n').pop()!;
    found = { path, kind: 'peer', describe: `passt upstream 2026-03-04, built from ${dir}, --vhost-user` };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    found = `no passt peer: ${script} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-5).join(' | ')}`;
  }
  return found;
}

/** Debian's passt (socket mode only), the fallback. */
export const DEBIAN_PASST: PasstBinary = { path: 'passt', kind: 'debian', describe: "Debian's passt package, stream socket (no vhost-user)" };

export interface PasstOptions {
  /** Run as a vhost-user backend (`--vhost-user`); else the stream-socket mode QEMU's `-netdev stream` attaches to. */
  vhostUser: boolean;
  /** IPv6 too, with the guest addressing of ours and libslirp (fec0::/64, gateway fec0::2 = the host's ::1); peer build only. */
  ipv6?: boolean;
  /** Forward host UDP ports to the guest: `-u 127.0.0.1/HOSTPORT:GUESTPORT`. */
  udpForwards?: { hostPort: number; guestPort: number }[];
}

export interface PasstProcess {
  proc: TrackedProcess;
  /** The Unix socket to attach to. */
  socket: string;
  /** User+system CPU seconds of passt so far (null once it is gone). */
  cpu(): number | null;
  /** What it wrote to stderr (for failure messages). */
  stderr(): string;
  close(): Promise<void>;
}

/** The MAC passt uses for itself (its default; `-M` would change it). */
export const PASST_MAC = '9a:55:9a:55:9a:55';

/** The guest's SLAAC address in fec0::/64 (EUI-64 of the harness's MAC 52:54:00:12:34:56), given to passt as the guest's. */
export const GUEST_SLAAC6 = 'fec0::5054:ff:fe12:3456';

/** Starts passt and resolves once its socket exists. */
export async function startPasst(binary: PasstBinary, options: PasstOptions): Promise<PasstProcess> {
  if (options.vhostUser && binary.kind !== 'peer') throw new Error(`${binary.describe} has no --vhost-user mode`);
  if (options.ipv6 && binary.kind !== 'peer') throw new Error(`${binary.describe} is run IPv4-only here`);
  const dir = makeTempDir('vun-bench-passt-sock-');
  chmodSync(dir, 0o1777);
  const socket = join(dir, 'passt.sock');
  const args = [
    ...(options.vhostUser ? ['--vhost-user'] : []),
    '-f', '-q', ...(options.ipv6 ? [] : ['-4']), '-s', socket,
    '-a', '10.0.2.15', '-n', '24', '-g', '10.0.2.2',
    ...(binary.kind === 'peer' ? ['--map-host-loopback', '10.0.2.2', '-m', '1500'] : []),
    ...(options.ipv6 ? ['-a', GUEST_SLAAC6, '-g', 'fec0::2', '--map-host-loopback', 'fec0::2'] : []),
    ...(options.udpForwards ?? []).flatMap((f) => ['-u', `127.0.0.1/${f.hostPort}:${f.guestPort}`]),
  ];
  let err = '';
  const proc = spawnTracked(binary.path, args, { name: 'passt', stdio: ['ignore', 'ignore', 'pipe'] });
  proc.child.stderr!.setEncoding('utf8');
  proc.child.stderr!.on('data', (d: string) => {
    // Debian's passt complains about syslog on every line when there is none;
    // the peer build says once that it has no AVX2 variant beside it.
    for (const line of d.split('\n')) {
      if (line && !line.startsWith('Failed to send') && !line.startsWith("Can't run AVX2") && err.length < 16384) err += line + '\n';
    }
  });
  try {
    await waitForPath(socket, 10_000, proc, () => err.trim());
  } catch (e) {
    await killProcess(proc, 'SIGKILL');
    removeTempDir(dir);
    throw e;
  }
  return {
    proc,
    socket,
    cpu: () => processCpuSeconds(proc.pid),
    stderr: () => err,
    close: async () => {
      await killProcess(proc, 'SIGTERM', 2000);
      removeTempDir(dir);
    },
  };
}
