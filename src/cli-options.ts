/**
 * Command-line options of `vhost-user-net`, parsed into a plain object.
 * Pure: no I/O, so every option and error can be tested as a table.
 */
import { parseArgs } from 'node:util';
import type { StackConfig } from './net/context.js';
import { checkForwards, parseForwardSpec, type ForwardSpec } from './net/forward.js';
import { parseIPv4, prefixMask } from './net/ip-address.js';
import { parseInAny } from './net/inany.js';
import { parseDnsUpstream } from './net/resolv-conf.js';

export interface CliOptions {
  /** Listen on this path for the frontend (QEMU's `-chardev socket,path=`). */
  socket?: string;
  /** Connect to a frontend listening here (QEMU `server=on`, cloud-hypervisor `vhost_mode=server`). */
  connect?: string;
  /** Serve one frontend, then exit. */
  oneOff: boolean;
  /** Refuse guest memory not sealed against shrinking (F_SEAL_SHRINK). */
  requireSealedMemory: boolean;
  /** Seconds a new connection has to send its first request (0: no limit; default: the server's). */
  handshakeTimeout?: number;
  mac?: string;
  mtu?: number;
  /** Guest network as CIDR, e.g. 10.0.2.0/24. */
  net?: string;
  gateway?: string;
  dns?: string;
  guestIp?: string;
  /** Guest IPv6 prefix, PREFIX/64. */
  net6?: string;
  gateway6?: string;
  dns6?: string;
  /** --no-ipv6: IPv4 only. */
  ipv6: boolean;
  mapGateway: boolean;
  restrict: boolean;
  dnsUpstreams: string[];
  forwards: string[];
  hostname?: string;
  domainSearch: string[];
  pcap?: string;
  /** Serve the control endpoint (HTTP/1.1 + JSON) on this Unix socket. */
  control?: string;
  /** Write our pid here once started (removed at exit if it is still ours). */
  pidFile?: string;
  /** Print counters every N seconds (0 = only on SIGUSR1 and at exit). */
  statsInterval: number;
  stats: boolean;
  verbose: boolean;
  quiet: boolean;
  help: boolean;
  version: boolean;
}

export const USAGE = `Usage: vhost-user-net (--socket PATH | --connect PATH) [options]

User-mode networking for a VM over vhost-user: a virtio-net backend with NAT
through this host's own sockets (no root, no tap device).

Connection:
  --socket PATH          listen on PATH; the VMM connects (QEMU -chardev socket,path=PATH;
                         cloud-hypervisor --net vhost_user=on,socket=PATH)
  --connect PATH         connect to a VMM listening on PATH (QEMU server=on,
                         cloud-hypervisor vhost_mode=server); retried until it appears
  --one-off              serve one VMM connection, then exit
  --require-sealed-memory
                         accept only guest memory in a memfd sealed against shrinking
                         (QEMU memory-backend-memfd's default); without it an unsealed
                         memfd is accepted with a warning
  --handshake-timeout SECS  close a connection that sends no request within SECS
                         seconds (default 10; 0: never)

Guest network (defaults as QEMU -netdev user):
  --net CIDR             guest network (default 10.0.2.0/24)
  --gateway ADDR         gateway, the host as seen by the guest (default 10.0.2.2)
  --dns ADDR             DNS forwarder address (default 10.0.2.3)
  --guest-ip ADDR        address leased by DHCP (default 10.0.2.15)
  --net6 PREFIX/64       guest IPv6 prefix, advertised for SLAAC (default fec0::/64); the
                         gateway, DNS and DHCPv6 addresses go to ::2, ::3 and ::15 of it
  --gateway6 ADDR        IPv6 gateway (default fec0::2; maps to the host's ::1)
  --dns6 ADDR            IPv6 DNS forwarder address (default fec0::3)
  --no-ipv6              IPv4 only: IPv6 frames are dropped (and counted)
  --mac MAC              MAC of the guest NIC in the device config (default 52:54:00:12:34:56)
  --mtu N                MTU (default 1500)
  --hostname NAME        hostname offered by DHCP
  --domain NAME          DNS search domain offered by DHCP (repeatable)
  --dns-upstream ADDR[:PORT]  upstream resolver (repeatable; default: /etc/resolv.conf)
  --no-map-gw            do not map the gateway addresses to the host's loopback
  --restrict             cut the guest off from everything but forwarded ports
  --forward tcp:[HOSTADDR:]HOSTPORTS:GUESTPORTS
  --forward udp:[HOSTADDR:]HOSTPORTS:GUESTPORTS
                         forward host ports into the guest (repeatable; PORTS is N or a range N-M,
                         mapped one to one: tcp:9000-9010:80-90; HOSTADDR defaults to 127.0.0.1,
                         0.0.0.0 binds every address; an IPv6 one in brackets, tcp:[::1]:8080:80,
                         reaches the guest over IPv6 once it has an IPv6 address; clients from
                         non-loopback addresses reach the guest from their own address)

Operation:
  --control PATH         serve the control endpoint on Unix socket PATH (mode 0600):
                         HTTP/1.1 + JSON, e.g. curl --unix-socket PATH http://x/stats;
                         routes /forwards /stats /flows /leases /metrics; see also
                         vhost-user-net ctl --help
  --pid-file PATH        write the pid to PATH once serving (removed at exit if still ours)

Observability:
  --pcap FILE            capture every frame at the device boundary (libpcap format)
  --stats                print counters at exit (SIGUSR1 prints them at any time)
  --stats-interval SECS  also print counters every SECS seconds
  -v, --verbose          log more
  -q, --quiet            log only errors
  -h, --help             this text
  --version              print the version
`;

export class CliError extends Error {}

function positiveInteger(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new CliError(`${name}: not a number: ${text}`);
  const value = Number(text);
  if (value < min || value > max) throw new CliError(`${name}: must be between ${min} and ${max}`);
  return value;
}

/** Parse argv (without node and script). Throws CliError with a message for the user. */
export function parseCliOptions(argv: string[]): CliOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        socket: { type: 'string' },
        connect: { type: 'string' },
        'one-off': { type: 'boolean', default: false },
        'require-sealed-memory': { type: 'boolean', default: false },
        'handshake-timeout': { type: 'string' },
        mac: { type: 'string' },
        mtu: { type: 'string' },
        net: { type: 'string' },
        gateway: { type: 'string' },
        dns: { type: 'string' },
        'guest-ip': { type: 'string' },
        net6: { type: 'string' },
        gateway6: { type: 'string' },
        dns6: { type: 'string' },
        'no-ipv6': { type: 'boolean', default: false },
        'no-map-gw': { type: 'boolean', default: false },
        restrict: { type: 'boolean', default: false },
        'dns-upstream': { type: 'string', multiple: true, default: [] },
        forward: { type: 'string', multiple: true, default: [] },
        hostname: { type: 'string' },
        domain: { type: 'string', multiple: true, default: [] },
        pcap: { type: 'string' },
        control: { type: 'string' },
        'pid-file': { type: 'string' },
        stats: { type: 'boolean', default: false },
        'stats-interval': { type: 'string' },
        verbose: { type: 'boolean', short: 'v', default: false },
        quiet: { type: 'boolean', short: 'q', default: false },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const v = parsed.values;
  const options: CliOptions = {
    socket: v.socket,
    connect: v.connect,
    oneOff: v['one-off'] ?? false,
    requireSealedMemory: v['require-sealed-memory'] ?? false,
    handshakeTimeout: positiveInteger('--handshake-timeout', v['handshake-timeout'], 0, 3600),
    mac: v.mac,
    mtu: positiveInteger('--mtu', v.mtu, 576, 65520),
    net: v.net,
    gateway: v.gateway,
    dns: v.dns,
    guestIp: v['guest-ip'],
    net6: v.net6,
    gateway6: v.gateway6,
    dns6: v.dns6,
    ipv6: !(v['no-ipv6'] ?? false),
    mapGateway: !(v['no-map-gw'] ?? false),
    restrict: v.restrict ?? false,
    dnsUpstreams: v['dns-upstream'] ?? [],
    forwards: v.forward ?? [],
    hostname: v.hostname,
    domainSearch: v.domain ?? [],
    pcap: v.pcap,
    control: v.control,
    pidFile: v['pid-file'],
    stats: v.stats ?? false,
    statsInterval: positiveInteger('--stats-interval', v['stats-interval'], 1, 86400) ?? 0,
    verbose: v.verbose ?? false,
    quiet: v.quiet ?? false,
    help: v.help ?? false,
    version: v.version ?? false,
  };
  if (options.help || options.version) return options;
  if ((options.socket === undefined) === (options.connect === undefined)) {
    throw new CliError('give exactly one of --socket PATH or --connect PATH');
  }
  if (options.mac !== undefined && parseMac(options.mac) === null) throw new CliError(`--mac: not a MAC address: ${options.mac}`);
  return options;
}

/** Parse aa:bb:cc:dd:ee:ff (or with '-'); null if malformed. */
export function parseMac(text: string): Uint8Array | null {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) return null;
  return Uint8Array.from(parts.map((p) => parseInt(p, 16)));
}

/**
 * The stack configuration the options describe. Like QEMU's `-netdev user,net=`,
 * a --net without --gateway/--dns/--guest-ip puts them at .2, .3 and .15 of the
 * network. `hostResolvers` supplies upstreams when none are given.
 */
export function stackConfigFromCli(
  o: CliOptions,
  hostResolvers: () => { address: string; port: number }[],
): Partial<StackConfig> {
  const config: Partial<StackConfig> = {};
  if (o.net !== undefined) {
    const m = /^([\d.]+)\/(\d{1,2})$/.exec(o.net);
    const network = m ? parseIPv4(m[1]!) : null;
    if (!m || network === null) throw new CliError(`--net: expected ADDR/PREFIX, got ${o.net}`);
    const prefixLength = Number(m[2]);
    if (prefixLength < 1 || prefixLength > 28) throw new CliError('--net: prefix length must be 1..28');
    const base = (network & prefixMask(prefixLength)) >>> 0;
    Object.assign(config, { network: base, prefixLength, gateway: base + 2, dns: base + 3, guestIp: base + 15 });
  }
  const address = (flag: string, text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    const value = parseIPv4(text);
    if (value === null) throw new CliError(`${flag}: not an IPv4 address: ${text}`);
    return value;
  };
  const gateway = address('--gateway', o.gateway);
  const dns = address('--dns', o.dns);
  const guestIp = address('--guest-ip', o.guestIp);
  if (gateway !== undefined) config.gateway = gateway;
  if (dns !== undefined) config.dns = dns;
  if (guestIp !== undefined) config.guestIp = guestIp;
  if (o.net6 !== undefined) {
    const m = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(o.net6);
    const prefix = m ? parseInAny(m[1]!) : null;
    if (!m || prefix === null || typeof prefix === 'number') throw new CliError(`--net6: expected an IPv6 PREFIX/64, got ${o.net6}`);
    if (m[2] !== '64') throw new CliError('--net6: the prefix length must be 64 (SLAAC)');
    config.network6 = prefix;
  }
  const address6 = (flag: string, text: string | undefined): Uint8Array | undefined => {
    if (text === undefined) return undefined;
    const value = parseInAny(text);
    if (value === null || typeof value === 'number') throw new CliError(`${flag}: not an IPv6 address: ${text}`);
    return value;
  };
  const gateway6 = address6('--gateway6', o.gateway6);
  const dns6 = address6('--dns6', o.dns6);
  if (gateway6 !== undefined) config.gateway6 = gateway6;
  if (dns6 !== undefined) config.dns6 = dns6;
  if (!o.ipv6) {
    if (o.net6 !== undefined || gateway6 !== undefined || dns6 !== undefined) throw new CliError('--no-ipv6 with --net6/--gateway6/--dns6');
    config.ipv6 = false;
  }
  if (o.mtu !== undefined) config.mtu = o.mtu;
  config.mapGatewayToLoopback = o.mapGateway;
  config.restrict = o.restrict;
  if (o.hostname !== undefined) config.hostname = o.hostname;
  config.domainSearch = o.domainSearch;
  try {
    config.dnsUpstreams = o.dnsUpstreams.length > 0 ? o.dnsUpstreams.map(parseDnsUpstream) : hostResolvers();
  } catch (err) {
    throw new CliError(`--dns-upstream: ${(err as Error).message}`);
  }
  return config;
}

/** The forwards the options describe. */
export function forwardsFromCli(o: CliOptions): ForwardSpec[] {
  const specs = o.forwards.map((text) => {
    try {
      return parseForwardSpec(text);
    } catch (err) {
      throw new CliError(`--forward: ${(err as Error).message}`);
    }
  });
  try {
    checkForwards(specs);
  } catch (err) {
    throw new CliError(`--forward: ${(err as Error).message}`);
  }
  return specs;
}
