/**
 * Guest helpers on top of qemu.ts: which image to boot, and the network
 * set-up steps the VM tests share.
 *
 * Image choice (defaultGuestImage):
 *   - VUN_GUEST_IMAGE=path: a real cirros (or similar) disk image, qcow2 or
 *     raw, booted by the BIOS with snapshot=on and logged into on the console
 *     (VUN_GUEST_LOGIN=user:password, default cirros:gocubsgo, then sudo -s);
 *   - VUN_GUEST_KERNEL + VUN_GUEST_INITRD: a kernel and initramfs (e.g.
 *     cirros' separate kernel/initramfs files); VUN_GUEST_LOGIN as above, or
 *     VUN_GUEST_LOGIN=none for an initramfs that prints GUEST-READY itself;
 *     with VUN_GUEST_IMAGE too, the disk is attached as well;
 *   - otherwise the guest built by scripts/build-guest.sh (once per process).
 * Foreign images lack our extra tools (iperf3, vun-echo): use hasCommand().
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Guest, GuestImage } from './qemu.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_GUEST_DIR = join(REPO_ROOT, '.cache', 'guest');

let built: Promise<GuestImage> | undefined;

/**
 * Runs scripts/build-guest.sh (once per process; the script itself skips work
 * when its outputs are current) and returns the built kernel and initramfs.
 */
export function ensureGuestBuilt(outDir = DEFAULT_GUEST_DIR): Promise<GuestImage> {
  if (outDir !== DEFAULT_GUEST_DIR) return build(outDir);
  built ??= build(outDir).catch((e: unknown) => {
    built = undefined;
    throw e;
  });
  return built;
}

function build(outDir: string): Promise<GuestImage> {
  const script = join(REPO_ROOT, 'scripts', 'build-guest.sh');
  return new Promise((resolvePromise, reject) => {
    execFile(
      'bash',
      [script, outDir],
      { maxBuffer: 64 * 1024 * 1024, timeout: 15 * 60_000 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`build-guest.sh failed: ${err.message}\n${stdout}\n${stderr}`));
          return;
        }
        const kernel = join(outDir, 'vmlinuz');
        const initrd = join(outDir, 'initramfs.cpio.gz');
        if (!existsSync(kernel) || !existsSync(initrd)) {
          reject(new Error(`build-guest.sh left no ${kernel} / ${initrd}\n${stderr}`));
          return;
        }
        resolvePromise({ kernel, initrd, name: 'vun-initramfs' });
      },
    );
  });
}

function loginFromEnv(foreign: boolean): GuestImage['login'] {
  const spec = process.env.VUN_GUEST_LOGIN;
  if (spec === 'none') return undefined;
  if (spec) {
    const i = spec.indexOf(':');
    if (i < 0) throw new Error('VUN_GUEST_LOGIN must be user:password or none');
    const user = spec.slice(0, i);
    return { user, password: spec.slice(i + 1), sudo: user !== 'root' };
  }
  return foreign ? { user: 'cirros', password: 'gocubsgo', sudo: true } : undefined;
}

/** The image bootGuest() uses when given none (see the file comment). */
export async function defaultGuestImage(): Promise<GuestImage> {
  const disk = process.env.VUN_GUEST_IMAGE;
  const kernel = process.env.VUN_GUEST_KERNEL;
  const initrd = process.env.VUN_GUEST_INITRD;
  if (kernel || initrd) {
    if (!kernel || !initrd) throw new Error('set both VUN_GUEST_KERNEL and VUN_GUEST_INITRD');
    const image: GuestImage = { kernel, initrd, name: 'env-kernel', append: '' };
    if (disk) image.disk = disk;
    const login = loginFromEnv(true);
    if (login) image.login = login;
    return image;
  }
  if (disk) {
    const image: GuestImage = { disk, name: 'env-disk' };
    const login = loginFromEnv(true);
    if (login) image.login = login;
    return image;
  }
  return ensureGuestBuilt();
}

/** True if `name` is a command in the guest. */
export async function hasCommand(guest: Guest, name: string): Promise<boolean> {
  const r = await guest.run(`command -v ${name} >/dev/null`);
  return r.exitCode === 0;
}

export interface StaticIpOptions {
  iface?: string;
  /** nameserver lines for /etc/resolv.conf */
  dns?: string[];
  /** Extra `ip route add` arguments, e.g. '10.1.0.0/16 via 10.0.2.1'. */
  routes?: string[];
}

/**
 * Gives `iface` (default eth0) a static address and default route:
 * setupStaticIp(guest, '10.0.2.15/24', '10.0.2.2').
 */
export async function setupStaticIp(
  guest: Guest,
  cidr = '10.0.2.15/24',
  gateway: string | undefined = '10.0.2.2',
  opts: StaticIpOptions = {},
): Promise<void> {
  const iface = opts.iface ?? 'eth0';
  const lines = [
    `ip link set ${iface} up`,
    `ip -4 addr flush dev ${iface}`,
    `ip addr add ${cidr} dev ${iface}`,
  ];
  if (gateway) lines.push(`ip route replace default via ${gateway} dev ${iface}`);
  for (const r of opts.routes ?? []) lines.push(`ip route add ${r}`);
  if (opts.dns) lines.push(`printf '${opts.dns.map((d) => `nameserver ${d}\\n`).join('')}' > /etc/resolv.conf`);
  await guest.runOk(lines.join(' && '));
}

export interface Lease {
  /** e.g. '10.0.2.15/24' */
  cidr: string;
  address: string;
  prefix: number;
  gateway: string | undefined;
  dns: string[];
  /** What udhcpc printed. */
  output: string;
}

export interface UdhcpcOptions {
  iface?: string;
  /** Discover packets to send (udhcpc -t), default 5. */
  tries?: number;
  /** Seconds between them (udhcpc -T), default 2. */
  pauseSec?: number;
  timeoutMs?: number;
}

/**
 * Runs udhcpc on `iface` until it gets a lease (or fails), using the guest's
 * default script, then reads back what was configured.
 */
export async function udhcpc(guest: Guest, opts: UdhcpcOptions = {}): Promise<Lease> {
  const iface = opts.iface ?? 'eth0';
  const tries = opts.tries ?? 5;
  const pause = opts.pauseSec ?? 2;
  const timeoutMs = opts.timeoutMs ?? (tries * pause + 30) * 1000;
  await guest.runOk(`ip link set ${iface} up`);
  const r = await guest.run(`udhcpc -i ${iface} -f -q -n -t ${tries} -T ${pause}`, { timeoutMs });
  if (r.exitCode !== 0) {
    throw new Error(guest.describe(`udhcpc on ${iface} failed (${r.exitCode}):\n${r.output}`, 1500));
  }
  const addr = await guest.runOk(`ip -4 -o addr show dev ${iface}`);
  const m = /inet (\d+\.\d+\.\d+\.\d+)\/(\d+)/.exec(addr);
  if (!m) throw new Error(`udhcpc: no IPv4 address on ${iface} after the lease:\n${addr}`);
  const route = await guest.runOk('ip -4 route show default');
  const gw = /default via (\d+\.\d+\.\d+\.\d+)/.exec(route);
  const resolv = await guest.runOk('cat /etc/resolv.conf');
  const dns = [...resolv.matchAll(/^nameserver\s+(\S+)/gm)].map((x) => x[1]!);
  return {
    cidr: `${m[1]}/${m[2]}`,
    address: m[1]!,
    prefix: Number(m[2]),
    gateway: gw?.[1],
    dns,
    output: r.output,
  };
}
