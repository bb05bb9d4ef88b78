/**
 * Port forward specs: `tcp:[HOSTADDR:]HOSTPORT:GUESTPORT` and the same with
 * `udp:`. HOSTADDR defaults to 127.0.0.1: a forwarded
 * port is reachable from this host only unless an address is given (QEMU's
 * `hostfwd` binds every address by default; we prefer the safe default and
 * `tcp:0.0.0.0:HOSTPORT:GUESTPORT` restores QEMU's); an IPv6 HOSTADDR is written in
 * brackets (`tcp:[::1]:8080:80`). Traffic arriving on the host port is
 * delivered to the guest's address (config.guestIp) on GUESTPORT, or, for
 * an IPv6 peer while the guest has an IPv6 address, to that address over
 * IPv6 (src/net/udp.ts and src/net/tcp/index.ts decide per connection).
 */

export interface ForwardSpec {
  protocol: 'tcp' | 'udp';
  hostAddress: string;
  hostPort: number;
  guestPort: number;
}

function port(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new Error(`forward: bad ${what} "${text}"`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new Error(`forward: ${what} ${n} out of range 1..65535`);
  return n;
}

/** Parse one spec; throws an Error with a readable message when malformed. */
export function parseForwardSpec(text: string): ForwardSpec {
  const m = /^(tcp|udp):(.*)$/.exec(text.trim());
  if (!m) throw new Error(`forward: "${text}" must start with tcp: or udp:`);
  const protocol = m[1] as 'tcp' | 'udp';
  let rest = m[2]!;
  let hostAddress = '127.0.0.1';
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(.*)$/.exec(rest);
  if (v6) {
    hostAddress = v6[1]!;
    rest = v6[2]!;
  }
  const parts = rest.split(':');
  if (!v6 && parts.length === 3) {
    hostAddress = parts.shift()!;
    if (hostAddress === '') hostAddress = '127.0.0.1';
    else if (!/^(\d{1,3}\.){3}\d{1,3}$/.test(hostAddress) || hostAddress.split('.').some((o) => Number(o) > 255)) {
      throw new Error(`forward: bad host address "${hostAddress}"`);
    }
  }
  if (parts.length !== 2) throw new Error(`forward: "${text}" is not ${protocol}:[HOSTADDR:]HOSTPORT:GUESTPORT`);
  return { protocol, hostAddress, hostPort: port(parts[0]!, 'host port'), guestPort: port(parts[1]!, 'guest port') };
}
