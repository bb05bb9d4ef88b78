/**
 * The host's resolvers, from /etc/resolv.conf (resolv.conf(5)): `nameserver`
 * lines (IPv4 or IPv6, loopback ones included — the forwarder runs on the
 * host, so 127.0.0.53 of systemd-resolved works) and `search`/`domain`
 * lines. Malformed lines are skipped.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export interface ResolvConf {
  nameservers: string[];
  search: string[];
}

export function parseResolvConf(text: string): ResolvConf {
  const nameservers: string[] = [];
  let search: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (!line) continue;
    const [key, ...args] = line.split(/\s+/);
    if (key === 'nameserver' && args[0]) {
      const addr = args[0].replace(/%.*$/, '');
      if (isIP(addr) && !nameservers.includes(addr)) nameservers.push(addr);
    } else if (key === 'search') search = args.filter((d) => /^[A-Za-z0-9_.-]+$/.test(d)).map((d) => d.replace(/\.$/, ''));
    else if (key === 'domain' && args[0] && /^[A-Za-z0-9_.-]+$/.test(args[0])) search = [args[0].replace(/\.$/, '')];
  }
  return { nameservers, search };
}

/** Resolvers as DNS upstreams (port 53); an unreadable file yields none. */
export function hostDnsUpstreams(path = '/etc/resolv.conf'): { address: string; port: number }[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return parseResolvConf(text).nameservers.map((address) => ({ address, port: 53 }));
}

/** Parse `--dns-upstream ADDR[:PORT]` / `[V6]:PORT`; throws when malformed. */
export function parseDnsUpstream(text: string): { address: string; port: number } {
  let address = text;
  let port = 53;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (v6) {
    address = v6[1]!;
    if (v6[2]) port = Number(v6[2]);
  } else if (text.split(':').length === 2) {
    const [a, p] = text.split(':');
    address = a!;
    port = Number(p);
  }
  if (!isIP(address)) throw new Error(`dns upstream: bad address "${text}"`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`dns upstream: bad port in "${text}"`);
  return { address, port };
}
