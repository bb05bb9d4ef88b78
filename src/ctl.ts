/**
 * `vhost-user-net ctl`: a thin client of a running backend's control
 * endpoint (src/control/server.ts). One HTTP request per command over the
 * Unix socket; the answer printed as a table (or as the JSON itself with
 * --json). Exit status 0 on success, 1 when the backend refused (its
 * `error` printed) or could not be reached, 2 for a usage error.
 */
import * as http from 'node:http';
import { parseArgs } from 'node:util';

export const CTL_USAGE = `Usage: vhost-user-net ctl --control PATH [--json] COMMAND

Commands:
  forwards               list the forwards
  add SPEC               forward more (tcp:[HOSTADDR:]HOSTPORTS:GUESTPORTS, udp:...; PORTS N or N-M)
  remove ID [--close]    stop forward ID, a range as a whole (--close also ends its connections)
  stats                  every counter
  flows                  the live flows
  leases                 what DHCP gave the guest
  metrics                the counters in Prometheus text format
`;

export interface ControlResponse {
  status: number;
  body: string;
}

/** One request to the control endpoint at `socketPath`. */
export function controlRequest(socketPath: string, method: string, path: string, body?: unknown): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

type Row = Record<string, unknown>;

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

const endpoint = (side: { address: string; port: number }): string =>
  side.address === '' ? '-' : `${side.address.includes(':') ? `[${side.address}]` : side.address}:${side.port}`;

/** The readable form of a command's answer. */
export function formatAnswer(command: string, data: unknown): string {
  switch (command) {
    case 'forwards':
      return table(['ID', 'FORWARD', 'ORIGIN', 'ADDED'], (data as Row[]).map((f) => [String(f.id), String(f.spec), String(f.origin), String(f.added)]));
    case 'add':
      return `added forward ${(data as Row).id}: ${(data as Row).spec}`;
    case 'remove':
      return `removed forward ${(data as Row).id}: ${(data as Row).spec}`;
    case 'stats': {
      const entries = Object.entries(data as Record<string, number>);
      const width = Math.max(0, ...entries.map(([k]) => k.length));
      return entries.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
    }
    case 'flows':
      return table(
        ['PROTO', 'STATE', 'GUEST', 'REMOTE', 'HOST', 'FROM-GUEST', 'TO-GUEST', 'AGE'],
        (data as Row[]).map((f) => {
          const host = f.host as { address: string; port: number; localPort: number };
          return [
            String(f.kind), String(f.state), endpoint(f.guest as never), endpoint(f.remote as never),
            host.address === '' ? `local :${host.localPort}` : endpoint(host), String(f.bytesFromGuest), String(f.bytesToGuest), `${f.ageSeconds}s`,
          ];
        }),
      );
    case 'leases': {
      const l = data as { dhcp: Row | null; guest: Row };
      const lines = [`guest address ${l.guest.ipv4}, MAC ${l.guest.mac ?? '(not seen yet)'}`];
      lines.push(l.dhcp ? `DHCP lease ${l.dhcp.address} to ${l.dhcp.mac}${l.dhcp.hostname ? ` (${l.dhcp.hostname})` : ''}, expires ${l.dhcp.expires}` : 'no DHCP lease');
      return lines.join('\n');
    }
    default:
      return String(data);
  }
}

/** Run `ctl` with its arguments; resolves the exit status. */
export async function ctlMain(argv: string[]): Promise<number> {
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        control: { type: 'string' },
        json: { type: 'boolean', default: false },
        close: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    process.stderr.write(`vhost-user-net ctl: ${(err as Error).message}\n\n${CTL_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(CTL_USAGE);
    return 0;
  }
  const [command, arg, ...extra] = positionals;
  const requests: Record<string, () => [string, string, unknown?]> = {
    forwards: () => ['GET', '/forwards'],
    add: () => ['POST', '/forwards', { spec: arg }],
    remove: () => ['DELETE', `/forwards/${encodeURIComponent(arg ?? '')}${values.close ? '?close=1' : ''}`],
    stats: () => ['GET', '/stats'],
    flows: () => ['GET', '/flows'],
    leases: () => ['GET', '/leases'],
    metrics: () => ['GET', '/metrics'],
  };
  const needsArg = command === 'add' || command === 'remove';
  const usage = values.control === undefined ? 'missing --control PATH'
    : command === undefined || !(command in requests) ? `unknown command ${command ?? '(none)'}`
    : needsArg !== (arg !== undefined) || extra.length > 0 ? `wrong arguments for ${command}`
    : undefined;
  if (usage !== undefined) {
    process.stderr.write(`vhost-user-net ctl: ${usage}\n\n${CTL_USAGE}`);
    return 2;
  }
  const [method, path, body] = requests[command!]!();
  let res: ControlResponse;
  try {
    res = await controlRequest(values.control!, method, path, body);
  } catch (err) {
    process.stderr.write(`vhost-user-net ctl: cannot reach ${values.control}: ${(err as Error).message}\n`);
    return 1;
  }
  if (command === 'metrics' && res.status === 200) {
    process.stdout.write(res.body);
    return 0;
  }
  let data: unknown;
  try {
    data = JSON.parse(res.body);
  } catch {
    process.stderr.write(`vhost-user-net ctl: status ${res.status}, not JSON: ${res.body.slice(0, 200)}\n`);
    return 1;
  }
  if (res.status >= 400) {
    process.stderr.write(`vhost-user-net ctl: ${(data as { error?: string }).error ?? `status ${res.status}`}\n`);
    return 1;
  }
  process.stdout.write(values.json ? `${JSON.stringify(data, null, 2)}\n` : `${formatAnswer(command!, data)}\n`);
  return 0;
}
