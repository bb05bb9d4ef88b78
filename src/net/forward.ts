/**
 * Port forward specs: `tcp:[HOSTADDR:]HOSTPORTS:GUESTPORTS` and the same with
 * `udp:`, where PORTS is one port (`8080`) or an inclusive range
 * (`8000-8010`). A range maps one to one: `tcp:9000-9010:80-90` forwards
 * host port 9000 to guest port 80, 9001 to 81 and so on, so both ranges
 * must hold as many ports (passt's `-t 9000-9010:80-90`; passt writes the
 * address as `ADDR/PORTS`, we keep QEMU's `hostfwd` colons). HOSTADDR
 * defaults to 127.0.0.1: a forwarded port is reachable from this host only
 * unless an address is given (QEMU's `hostfwd` binds every address by
 * default; we prefer the safe default and `tcp:0.0.0.0:HOSTPORT:GUESTPORT`
 * restores QEMU's); any address of the host may be named, an IPv6 one in
 * brackets (`tcp:[::1]:8080:80`, `tcp:[::]:8080:80`). Traffic arriving on a
 * host port is delivered to the guest's address (config.guestIp) on the
 * matching guest port, or, for an IPv6 peer while the guest has an IPv6
 * address, to that address over IPv6 (src/net/udp.ts and
 * src/net/tcp/index.ts decide per connection).
 *
 * A spec is one forward however many ports it spans (one id in the control
 * endpoint, one flow share for TCP; one fd per port). Two forwards overlap
 * when they have the same protocol, their host port ranges intersect and
 * their host addresses are the same or either is a wildcard (0.0.0.0 or
 * ::, which bind every address): `checkForwards` refuses that at start and
 * src/control/forwards.ts at run time, before anything is bound.
 */
import { parseInAny } from './inany.js';

export interface ForwardSpec {
  protocol: 'tcp' | 'udp';
  hostAddress: string;
  /** The first host port. */
  hostPort: number;
  /** The first guest port (host port hostPort + i goes to guest port guestPort + i). */
  guestPort: number;
  /** Ports in the range, host and guest alike; 1 when absent. */
  count?: number;
}

/** How many ports a forward spans. */
export function forwardPortCount(f: ForwardSpec): number {
  return f.count ?? 1;
}

const MAX_PORT = 65535;

function port(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new Error(`forward: bad ${what} "${text}"`);
  const n = Number(text);
  if (n < 1 || n > MAX_PORT) throw new Error(`forward: ${what} ${n} out of range 1..${MAX_PORT}`);
  return n;
}

/** `N` or `N-M` (N <= M) -> [first, count]. */
function portRange(text: string, what: string): [number, number] {
  const dash = text.indexOf('-');
  if (dash < 0) return [port(text, what), 1];
  const first = port(text.slice(0, dash), what);
  const last = port(text.slice(dash + 1), what);
  if (last < first) throw new Error(`forward: ${what} range ${text} runs backwards`);
  return [first, last - first + 1];
}

function isIPv4Text(text: string): boolean {
  return /^(\d{1,3}\.){3}\d{1,3}$/.test(text) && text.split('.').every((o) => Number(o) <= 255);
}

/** Parse one spec; throws an Error with a readable message when malformed. */
export function parseForwardSpec(text: string): ForwardSpec {
  const m = /^(tcp|udp):(.*)$/.exec(text.trim());
  if (!m) throw new Error(`forward: "${text}" must start with tcp: or udp:`);
  const protocol = m[1] as 'tcp' | 'udp';
  let rest = m[2]!;
  let hostAddress = '127.0.0.1';
  const v6 = /^\[([^\]]*)\]:(.*)$/.exec(rest);
  if (!v6 && rest.startsWith('[')) throw new Error(`forward: bad host address in "${text}" (an IPv6 one is written [ADDR]:)`);
  if (v6) {
    hostAddress = v6[1]!;
    const parsed = parseInAny(hostAddress);
    if (parsed === null || typeof parsed === 'number') throw new Error(`forward: bad IPv6 host address "[${hostAddress}]"`);
    rest = v6[2]!;
  }
  const parts = rest.split(':');
  if (!v6 && parts.length === 3) {
    hostAddress = parts.shift()!;
    if (hostAddress === '') hostAddress = '127.0.0.1';
    else if (!isIPv4Text(hostAddress)) throw new Error(`forward: bad host address "${hostAddress}"`);
  }
  if (parts.length !== 2) throw new Error(`forward: "${text}" is not ${protocol}:[HOSTADDR:]HOSTPORTS:GUESTPORTS`);
  const [hostPort, hostCount] = portRange(parts[0]!, 'host port');
  const [guestPort, guestCount] = portRange(parts[1]!, 'guest port');
  if (hostCount !== guestCount) {
    throw new Error(`forward: "${text}": host ports ${parts[0]} (${hostCount}) and guest ports ${parts[1]} (${guestCount}) must be ranges of the same length`);
  }
  return { protocol, hostAddress, hostPort, guestPort, count: hostCount };
}

function ports(first: number, count: number): string {
  return count === 1 ? String(first) : `${first}-${first + count - 1}`;
}

/** The command-line form of a spec (address always written, ranges as N-M). */
export function formatForwardSpec(f: ForwardSpec): string {
  const host = f.hostAddress.includes(':') ? `[${f.hostAddress}]` : f.hostAddress;
  const n = forwardPortCount(f);
  return `${f.protocol}:${host}:${ports(f.hostPort, n)}:${ports(f.guestPort, n)}`;
}

/** Throws a readable Error for a spec no parse could give (a library caller's object): bad protocol, address, ports or count. */
export function checkForwardSpec(f: ForwardSpec): void {
  const what = `forward ${f.protocol}:${f.hostAddress}:${f.hostPort}:${f.guestPort}`;
  if (f.protocol !== 'tcp' && f.protocol !== 'udp') throw new Error(`${what}: protocol must be tcp or udp`);
  if (parseInAny(f.hostAddress) === null) throw new Error(`${what}: bad host address "${f.hostAddress}"`);
  const n = forwardPortCount(f);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what}: count must be a positive integer`);
  for (const [first, name] of [[f.hostPort, 'host'], [f.guestPort, 'guest']] as const) {
    if (!Number.isInteger(first) || first < 1 || first + n - 1 > MAX_PORT) throw new Error(`${what}: ${name} ports must lie in 1..${MAX_PORT}`);
  }
}

function isWildcard(address: string): boolean {
  const a = parseInAny(address);
  return a === 0 || (a instanceof Uint8Array && a.every((b) => b === 0));
}

function sameAddress(a: string, b: string): boolean {
  const x = parseInAny(a);
  const y = parseInAny(b);
  if (x === null || y === null) return a === b;
  if (typeof x === 'number' || typeof y === 'number') return x === y;
  return x.every((byte, i) => byte === y[i]);
}

/** True when both would claim one host socket (see the theory of operation). */
export function forwardsOverlap(a: ForwardSpec, b: ForwardSpec): boolean {
  if (a.protocol !== b.protocol) return false;
  if (a.hostPort + forwardPortCount(a) <= b.hostPort || b.hostPort + forwardPortCount(b) <= a.hostPort) return false;
  return isWildcard(a.hostAddress) || isWildcard(b.hostAddress) || sameAddress(a.hostAddress, b.hostAddress);
}

/** The message for `spec` overlapping `other`. */
export function overlapMessage(spec: ForwardSpec, other: ForwardSpec): string {
  return `${formatForwardSpec(spec)} overlaps ${formatForwardSpec(other)} (${spec.protocol} host ports on the same or a wildcard address)`;
}

/** Check each spec and that no two overlap; throws a readable Error for the first problem. */
export function checkForwards(specs: readonly ForwardSpec[]): void {
  for (const [i, spec] of specs.entries()) {
    checkForwardSpec(spec);
    for (const other of specs.slice(0, i)) if (forwardsOverlap(spec, other)) throw new Error(`forward: ${overlapMessage(spec, other)}`);
  }
}
