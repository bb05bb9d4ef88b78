/**
 * Network namespaces for VM tests: a private network stack (its own
 * loopback, sysctls and addresses) that a test creates and always deletes.
 *
 * Theory of operation. `createNetns()` runs `ip netns add NAME` (needs
 * root), brings its loopback up, optionally opens ICMP ping sockets to every
 * group (`net.ipv4.ping_group_range` is per network namespace, so this never
 * touches the host's setting; it governs ICMPv6 ping sockets too) and adds
 * dummy interfaces with addresses of their own, IPv4 or IPv6 (the latter
 * with `nodad`, usable at once instead of tentative for a second): traffic
 * to those addresses stays inside the namespace, which is what the
 * workplace's traffic rules require. A process runs inside it
 * with `ip netns exec NAME ...` (startBackendProcess({ netns })). Unix
 * sockets live in the filesystem, not in a network namespace, so QEMU
 * outside still reaches a backend inside.
 *
 * Clean-up: `ns.delete()` (idempotent) from the test's afterAll; as a last
 * resort every namespace still alive is deleted synchronously on process
 * 'exit'. Names are `vun-test-PID-N`, so parallel workers never collide
 * and a leftover can be traced to its process.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface DummyInterface {
  /**
   * Interface name inside the namespace, e.g. 'd0'. A dummy interface, or,
   * where the kernel has no dummy driver, a veth pair (NAME and NAMEp) with
   * both ends inside the namespace.
   */
  name: string;
  /** Address with prefix, e.g. '192.0.2.1/24' or '2001:db8::1/64'. */
  cidr: string;
}

export interface NetnsOptions {
  /** Name prefix (default 'vun-test'); the pid and a counter are appended. */
  prefix?: string;
  /** Set net.ipv4.ping_group_range to "0 2147483647" inside (default false). */
  allowPingSockets?: boolean;
  /** Dummy interfaces to create, up, with these addresses. */
  dummies?: DummyInterface[];
}

export interface Netns {
  readonly name: string;
  /** Runs `command args` inside the namespace and returns its stdout (throws on failure). */
  exec(command: string, args: readonly string[]): string;
  /** Reads a sysctl inside the namespace, e.g. 'net.ipv4.ping_group_range'. */
  sysctl(key: string): string;
  /** Deletes the namespace (idempotent). */
  delete(): void;
}

const alive = new Set<string>();
let counter = 0;

function ip(args: readonly string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Why namespaces cannot be used here (not root, no `ip`, no permission), or
 * undefined when they can. Tries a throw-away namespace once.
 */
let availability: string | undefined | null = null;
export function netnsUnavailable(): string | undefined {
  if (availability !== null) return availability;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return (availability = 'not root');
  const probe = `vun-probe-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.error) return (availability = `ip: ${add.error.message}`);
  if (add.status !== 0) return (availability = `ip netns add: ${add.stderr.trim()}`);
  spawnSync('ip', ['netns', 'delete', probe]);
  return (availability = undefined);
}

/** Creates a namespace as `options` describe; on any failure it is deleted before the error is thrown. */
export function createNetns(options: NetnsOptions = {}): Netns {
  const name = `${options.prefix ?? 'vun-test'}-${process.pid}-${++counter}`;
  ip(['netns', 'add', name]);
  alive.add(name);
  const exec = (command: string, args: readonly string[]): string =>
    execFileSync('ip', ['netns', 'exec', name, command, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const ns: Netns = {
    name,
    exec,
    sysctl: (key) => exec('sysctl', ['-n', key]).trim(),
    delete() {
      if (!alive.has(name)) return;
      alive.delete(name);
      spawnSync('ip', ['netns', 'delete', name]);
    },
  };
  try {
    exec('ip', ['link', 'set', 'lo', 'up']);
    if (options.allowPingSockets) exec('sysctl', ['-q', '-w', 'net.ipv4.ping_group_range=0 2147483647']);
    for (const d of options.dummies ?? []) {
      try {
        exec('ip', ['link', 'add', d.name, 'type', 'dummy']);
      } catch {
        // No dummy driver (some container kernels): a veth pair with both ends inside serves the same.
        exec('ip', ['link', 'add', d.name, 'type', 'veth', 'peer', 'name', `${d.name}p`]);
        exec('ip', ['link', 'set', `${d.name}p`, 'up']);
      }
      // No duplicate address detection for IPv6: nothing else is on the link.
      exec('ip', ['addr', 'add', d.cidr, 'dev', d.name, ...(d.cidr.includes(':') ? ['nodad'] : [])]);
      exec('ip', ['link', 'set', d.name, 'up']);
    }
  } catch (err) {
    ns.delete();
    throw err;
  }
  return ns;
}

/** What a client inside a namespace saw (`exchangeInNetns`). */
export interface NetnsExchange {
  /** The client's own port. */
  port: number;
  /** The answer as text (`message`), or `LENGTH ECHOED-SHA256 SENT-SHA256` (`bytes`). */
  answer: string;
  /** The error code when it failed (e.g. ECONNREFUSED), else undefined. */
  error?: string;
}

export interface NetnsExchangeOptions {
  kind: 'tcp' | 'udp';
  /** The client's address (bound before connecting or sending); any when absent. */
  from?: string;
  to: string;
  port: number;
  /** Send this text and take the first answer (default "ping"). */
  message?: string;
  /** TCP: instead send this many pseudo-random bytes, half-close, and read the echo to its end. */
  bytes?: number;
  timeoutMs?: number;
}

/**
 * A client inside the namespace (`ip netns exec NAME node -e ...`): one TCP
 * exchange or UDP datagram from `from` to `to`:`port`. Never rejects for the
 * peer's failure: that comes back as `error`.
 */
export async function exchangeInNetns(ns: Netns, o: NetnsExchangeOptions): Promise<NetnsExchange> {
  const timeoutMs = o.timeoutMs ?? 20_000;
  const local = o.from === undefined ? '' : JSON.stringify(o.from);
  const message = JSON.stringify(o.message ?? 'ping');
  const done = 'const done = (port, answer) => { console.log(JSON.stringify({ port, answer })); process.exit(0); };' +
    "const fail = (err) => { console.log(JSON.stringify({ port: 0, answer: '', error: err.code || String(err) })); process.exit(0); };";
  const tcp = o.bytes !== undefined
    ? `const data = require('crypto').randomBytes(${o.bytes}); const h = require('crypto').createHash('sha256'); let n = 0;
       const s = require('net').connect({ host: ${JSON.stringify(o.to)}, port: ${o.port}${local ? `, localAddress: ${local}` : ''} }, () => s.end(data));
       s.on('error', fail); s.on('data', (d) => { n += d.length; h.update(d); });
       s.on('end', () => done(s.localPort, n + ' ' + h.digest('hex') + ' ' + require('crypto').createHash('sha256').update(data).digest('hex')));`
    : `const s = require('net').connect({ host: ${JSON.stringify(o.to)}, port: ${o.port}${local ? `, localAddress: ${local}` : ''} }, () => s.write(${message}));
       s.on('error', fail); s.once('data', (d) => { const p = s.localPort; s.destroy(); done(p, String(d)); });`;
  const udp = `const s = require('dgram').createSocket(${JSON.stringify((o.from ?? o.to).includes(':') ? 'udp6' : 'udp4')});
       s.on('error', fail); s.bind(0${local ? `, ${local}` : ''}, () => s.send(${message}, ${o.port}, ${JSON.stringify(o.to)}));
       s.once('message', (d) => done(s.address().port, String(d)));`;
  const script = `${done} ${o.kind === 'tcp' ? tcp : udp} setTimeout(() => fail(new Error('timeout')), ${timeoutMs}).unref();`;
  const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script], { timeout: timeoutMs + 10_000 }, (err, out) =>
      err ? reject(err) : resolve({ stdout: out }));
  });
  return JSON.parse(stdout.trim()) as NetnsExchange;
}

/** True if a namespace of this name exists (for tests of the clean-up). */
export function netnsExists(name: string): boolean {
  return ip(['netns', 'list']).split('\n').some((line) => line.split(' ')[0] === name);
}

/** The host's (this namespace's) ping_group_range as [low, high]. */
export function hostPingGroupRange(): [number, number] {
  const [low, high] = readFileSync('/proc/sys/net/ipv4/ping_group_range', 'utf8').trim().split(/\s+/).map(Number);
  return [low!, high!];
}

process.once('exit', () => {
  for (const name of alive) spawnSync('ip', ['netns', 'delete', name]);
  alive.clear();
});
