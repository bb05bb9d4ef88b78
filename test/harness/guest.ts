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
 *
 * Network set-up: setupStaticIp and udhcpc for IPv4; slaac() waits for the
 * kernel's own stateless autoconfiguration (the guest's kernel accepts RAs
 * by default), and routerSolicit()/dhcpv6() show what the router and the
 * DHCPv6 server said, through vun-echo's `ra` and `dhcp6` (busybox has no
 * tool for either).
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

export interface SlaacResult {
  /** e.g. 'fec0::5054:ff:fe12:3456/64' */
  cidr: string;
  address: string;
  prefix: number;
  /** The default route's next hop (the router's link-local address), if any. */
  router: string | undefined;
  /** `ip -6 -o addr show dev IFACE` and `ip -6 route` as the guest printed them. */
  addresses: string;
  routes: string;
}

/**
 * Brings `iface` up and waits until the kernel has formed an address from a
 * router advertisement (an address marked dynamic, duplicate address
 * detection done) and learned a default route on it; returns both.
 */
export async function slaac(guest: Guest, opts: { iface?: string; timeoutMs?: number } = {}): Promise<SlaacResult> {
  const iface = opts.iface ?? 'eth0';
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const polls = Math.ceil(timeoutMs / 500);
  const r = await guest.run(
    `ip link set ${iface} up; i=0; while [ $i -lt ${polls} ]; do ` +
      `a=$(ip -6 -o addr show dev ${iface} | grep ' dynamic' | grep -v -e tentative -e dadfailed); ` +
      `d=$(ip -6 route | grep "^default .*dev ${iface} "); [ -n "$a" ] && [ -n "$d" ] && exit 0; ` +
      'sleep 0.5; i=$((i + 1)); done; exit 1',
    { timeoutMs: timeoutMs + 30_000 },
  );
  const addresses = await guest.runOk(`ip -6 -o addr show dev ${iface}`);
  const routes = await guest.runOk('ip -6 route');
  if (r.exitCode !== 0) {
    throw new Error(guest.describe(`slaac: no autoconfigured address and default route on ${iface}:\n${addresses}\n${routes}`, 1500));
  }
  const m = /inet6 ([0-9a-f:]+)\/(\d+) scope \w+ dynamic/.exec(addresses)!;
  const gw = new RegExp(`^default via (\\S+) dev ${iface} `, 'm').exec(routes);
  return { cidr: `${m[1]}/${m[2]}`, address: m[1]!, prefix: Number(m[2]), router: gw?.[1], addresses, routes };
}

export interface RouterAdvert {
  /** The advertisement's source address. */
  from: string;
  /** Cur Hop Limit field. */
  hopLimit: number;
  /** Set flags among M and O. */
  flags: string[];
  routerLifetime: number;
  /** Source link-layer address option. */
  slla: string | undefined;
  prefixes: { prefix: string; length: number; flags: string[]; valid: number; preferred: number }[];
  mtu: number | undefined;
  rdnss: { address: string; lifetime: number }[];
  dnssl: { domains: string[]; lifetime: number }[];
  /** Lines for other options, as vun-echo printed them. */
  other: string[];
}

const flagList = (text: string): string[] => (text === '-' ? [] : text.split(','));

/** Sends a router solicitation on `iface` and returns the first advertisement that arrives. */
export async function routerSolicit(guest: Guest, iface = 'eth0', timeoutMs = 5000): Promise<RouterAdvert> {
  const r = await guest.run(`vun-echo ra ${iface} ${timeoutMs}`, { timeoutMs: timeoutMs + 30_000 });
  if (r.exitCode !== 0) throw new Error(guest.describe(`no router advertisement on ${iface} (${r.exitCode}):\n${r.output}`, 1500));
  const ra: RouterAdvert = {
    from: '', hopLimit: -1, flags: [], routerLifetime: -1, slla: undefined, prefixes: [], mtu: undefined, rdnss: [], dnssl: [], other: [],
  };
  for (const line of r.output.trim().split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^ra from (\S+) hoplimit=(\d+) flags=(\S+) router_lifetime=(\d+) /.exec(line))) {
      Object.assign(ra, { from: m[1]!, hopLimit: Number(m[2]), flags: flagList(m[3]!), routerLifetime: Number(m[4]) });
    } else if ((m = /^slla (\S+)$/.exec(line))) {
      ra.slla = m[1]!;
    } else if ((m = /^prefix (\S+)\/(\d+) flags=(\S+) valid=(\d+) preferred=(\d+)$/.exec(line))) {
      ra.prefixes.push({ prefix: m[1]!, length: Number(m[2]), flags: flagList(m[3]!), valid: Number(m[4]), preferred: Number(m[5]) });
    } else if ((m = /^mtu (\d+)$/.exec(line))) {
      ra.mtu = Number(m[1]);
    } else if ((m = /^rdnss (\S+) lifetime=(\d+)$/.exec(line))) {
      ra.rdnss.push({ address: m[1]!, lifetime: Number(m[2]) });
    } else if ((m = /^dnssl (.*) lifetime=(\d+)$/.exec(line))) {
      ra.dnssl.push({ domains: m[1]!.split(' ').filter(Boolean), lifetime: Number(m[2]) });
    } else {
      ra.other.push(line);
    }
  }
  if (!ra.from) throw new Error(`routerSolicit: no "ra from" line in:\n${r.output}`);
  return ra;
}

export interface Dhcpv6Answer {
  type: 'reply' | 'advertise';
  /** The answer's source address. */
  from: string;
  /** Whether the answer echoed the client identifier sent ('ours'). */
  clientId: 'ours' | 'other' | undefined;
  serverId: string | undefined;
  rapidCommit: boolean;
  dns: string[];
  domains: string[];
  iaNa: { iaid: number; t1: number; t2: number } | undefined;
  addresses: { address: string; preferred: number; valid: number }[];
  status: { code: number; message: string }[];
  /** Lines for other options, as vun-echo printed them. */
  other: string[];
}

/**
 * One DHCPv6 exchange on `iface`: an Information-request ('info': stateless
 * configuration) or a Solicit with Rapid Commit asking for one address
 * ('solicit'). Returns the server's answer; nothing is configured.
 */
export async function dhcpv6(guest: Guest, iface: string, mode: 'info' | 'solicit', timeoutMs = 5000): Promise<Dhcpv6Answer> {
  const r = await guest.run(`vun-echo dhcp6 ${iface} ${mode} ${timeoutMs}`, { timeoutMs: timeoutMs + 30_000 });
  if (r.exitCode !== 0) throw new Error(guest.describe(`no DHCPv6 answer on ${iface} (${r.exitCode}):\n${r.output}`, 1500));
  const a: Dhcpv6Answer = {
    type: 'reply', from: '', clientId: undefined, serverId: undefined, rapidCommit: false,
    dns: [], domains: [], iaNa: undefined, addresses: [], status: [], other: [],
  };
  for (const line of r.output.trim().split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^dhcp6 (reply|advertise) from (\S+)$/.exec(line))) {
      a.type = m[1] as Dhcpv6Answer['type'];
      a.from = m[2]!;
    } else if ((m = /^client-id (ours|other)$/.exec(line))) {
      a.clientId = m[1] as 'ours' | 'other';
    } else if ((m = /^server-id ([0-9a-f]*)$/.exec(line))) {
      a.serverId = m[1]!;
    } else if (line === 'rapid-commit') {
      a.rapidCommit = true;
    } else if ((m = /^dns (\S+)$/.exec(line))) {
      a.dns.push(m[1]!);
    } else if ((m = /^domain (.*)$/.exec(line))) {
      a.domains.push(...m[1]!.split(' ').filter(Boolean));
    } else if ((m = /^ia_na iaid=(\d+) t1=(\d+) t2=(\d+)$/.exec(line))) {
      a.iaNa = { iaid: Number(m[1]), t1: Number(m[2]), t2: Number(m[3]) };
    } else if ((m = /^address (\S+) preferred=(\d+) valid=(\d+)$/.exec(line))) {
      a.addresses.push({ address: m[1]!, preferred: Number(m[2]), valid: Number(m[3]) });
    } else if ((m = /^status (\d+) ?(.*)$/.exec(line))) {
      a.status.push({ code: Number(m[1]), message: m[2]! });
    } else {
      a.other.push(line);
    }
  }
  if (!a.from) throw new Error(`dhcpv6: no "dhcp6 ... from" line in:\n${r.output}`);
  return a;
}
