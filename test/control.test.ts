/**
 * The control endpoint through its real Unix socket with real HTTP clients
 * (Node's http.request with socketPath, raw sockets for malformed and slow
 * clients, curl when installed), in front of the real backend with our own
 * frontend and a frame-level guest: every route and error status, bounds,
 * forwards added and removed at run time, counters agreeing across views,
 * and the `ctl` client and --pid-file against the backend as a process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import * as dgram from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NetDriver, VhostUserFrontend, startBackend, type Backend } from '../src/index.js';
import { FrameGuest, gatewayArpRequest, type GuestTcp } from './helpers/frame-guest.js';
import { REPO_ROOT, parseCounters, startBackendProcess } from './harness/backend.js';
import { freePortRange } from './helpers/loopback-peers.js';
import { metricName } from '../src/control/views.js';

const run = promisify(execFile);
const TIMEOUT_MS = 1500;
const MAX_CONNECTIONS = 4;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

function request(socketPath: string, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A raw connection: what it received and when it closed. */
function rawClient(path: string): { socket: net.Socket; received: () => string; closed: Promise<void> } {
  const socket = net.connect(path);
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (text += d));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  return { socket, received: () => text, closed };
}

/** A port free on 127.0.0.1 right now. */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function connectHost(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  });
}

let dir: string;
let backend: Backend;
let control: string;
let fe: VhostUserFrontend;
let guest: FrameGuest;
let startPort: number;
const infoLines: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vun-control-'));
  control = join(dir, 'control.sock');
  startPort = await freePort();
  backend = await startBackend({
    socket: join(dir, 'vm.sock'),
    control,
    controlLimits: { timeoutMs: TIMEOUT_MS, maxConnections: MAX_CONNECTIONS },
    forwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: startPort, guestPort: 7000 }],
    logger: { debug() {}, info: (m) => infoLines.push(m), warn() {}, error() {} },
  });
  fe = VhostUserFrontend.connect(join(dir, 'vm.sock'), { style: 'qemu' });
  await fe.connectAndStart();
  await fe.sync();
  const driver = new NetDriver(fe);
  driver.start();
  guest = new FrameGuest(driver);
  driver.send([gatewayArpRequest()]);
});

afterAll(async () => {
  fe?.close();
  await backend?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('control endpoint: routes and errors', () => {
  it('logs a summary at start and the offloads the frontend negotiated', () => {
    expect(infoLines).toContainEqual(expect.stringMatching(
      new RegExp(`^started: vhost-user listen .*vm\\.sock; guest 10\\.0\\.2\\.15/24 gateway 10\\.0\\.2\\.2 dns 10\\.0\\.2\\.3; forwards tcp:127\\.0\\.0\\.1:${startPort}:7000; control .*control\\.sock$`),
    ));
    expect(infoLines).toContainEqual(expect.stringMatching(/^virtio-net: frontend negotiated offloads (\w+ )*mrg_rxbuf$/));
  });

  it('is a 0600 socket serving every route', async () => {
    expect(statSync(control).mode & 0o777).toBe(0o600);
    const forwards = await request(control, 'GET', '/forwards');
    expect(forwards.status).toBe(200);
    expect(forwards.headers.connection).toBe('close');
    expect(forwards.json).toEqual([expect.objectContaining({ id: '1', spec: `tcp:127.0.0.1:${startPort}:7000`, origin: 'start' })]);
    const stats = await request(control, 'GET', '/stats');
    expect(stats.status).toBe(200);
    expect(stats.json['control.requests']).toBeGreaterThanOrEqual(1);
    const metrics = await request(control, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(metrics.text).toContain('# TYPE vhost_user_net_control_requests_total counter\n');
    const leases = await request(control, 'GET', '/leases');
    expect(leases.status).toBe(200);
    // The guest's MAC was learned from its ARP request.
    expect(leases.json.guest).toEqual({ ipv4: '10.0.2.15', mac: '52:54:00:12:34:56' });
    const flows = await request(control, 'GET', '/flows');
    expect(flows.status).toBe(200);
    expect(Array.isArray(flows.json)).toBe(true);
  });

  it('answers every error as JSON with its status', async () => {
    const cases: [string, string, string | undefined, number, RegExp][] = [
      ['GET', '/nothing', undefined, 404, /no route/],
      ['DELETE', '/forwards/99', undefined, 404, /no forward 99/],
      ['PUT', '/stats', undefined, 405, /PUT not allowed/],
      ['POST', '/forwards', '{not json', 400, /not JSON/],
      ['POST', '/forwards', '{"other":1}', 400, /body must be/],
      ['POST', '/forwards', '{"spec":"tcp:99999:80"}', 400, /out of range/],
      ['POST', '/forwards', '{"spec":"sctp:80:80"}', 400, /must start with tcp: or udp:/],
      ['POST', '/forwards', `{"spec":"tcp:${startPort}:80"}`, 409, /overlaps tcp:127\.0\.0\.1:\d+:7000 .*: forward 1$/],
      ['POST', '/forwards', `{"spec":"tcp:0.0.0.0:${startPort - 1}-${startPort}:80-81"}`, 409, /overlaps/],
      ['POST', '/forwards', '{"spec":"tcp:8000-8010:80-89"}', 400, /same length/],
    ];
    for (const [method, path, body, status, error] of cases) {
      const a = await request(control, method, path, body);
      expect([method, path, a.status]).toEqual([method, path, status]);
      expect(a.json.error).toMatch(error);
    }
    expect((await request(control, 'PUT', '/stats')).headers.allow).toBe('GET');
    // A port someone else holds.
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const busy = (other.address() as net.AddressInfo).port;
    const inUse = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `tcp:${busy}:80` }));
    other.close();
    expect(inUse.status).toBe(409);
    expect(inUse.json.error).toMatch(new RegExp(`port ${busy} in use`));
    // Too large: a declared body and a chunked one.
    const big = JSON.stringify({ spec: 'x'.repeat(20_000) });
    const declared = await request(control, 'POST', '/forwards', big, { 'Content-Length': String(big.length) });
    expect([declared.status, declared.json.error]).toEqual([413, 'body larger than 16384 bytes']);
    const chunked = await request(control, 'POST', '/forwards', big, { 'Transfer-Encoding': 'chunked' });
    expect(chunked.status).toBe(413);
    const stats = (await request(control, 'GET', '/stats')).json;
    expect(stats['control.error.413']).toBe(2);
  });

  it('answers garbage and oversized headers, then closes; the endpoint serves on', async () => {
    const garbage = rawClient(control);
    garbage.socket.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]));
    await garbage.closed;
    expect(garbage.received()).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*\{"error":"bad request/);
    const huge = rawClient(control);
    huge.socket.write(`GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    await huge.closed;
    expect(huge.received()).toMatch(/^HTTP\/1\.1 431 [\s\S]*headers too large/);
    expect((await request(control, 'GET', '/stats')).json['control.error.client']).toBeGreaterThanOrEqual(2);
  });

  it('times out a slow client and serves others meanwhile', async () => {
    const slow = rawClient(control);
    slow.socket.write('GET /stats HTTP/1.1\r\nHost: x\r\n'); // and never the end of the headers
    const meanwhile = await request(control, 'GET', '/forwards');
    expect(meanwhile.status).toBe(200);
    await slow.closed; // the server closes it
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*\{"error":"request too slow"\}/);
  });

  it(`holds at most ${MAX_CONNECTIONS} connections at once`, async () => {
    const clients = Array.from({ length: MAX_CONNECTIONS + 2 }, () => rawClient(control));
    await Promise.all(clients.map((c) => new Promise<void>((r) => c.socket.once('connect', () => r()))));
    let closedCount = 0;
    const closedOnes = new Set<number>();
    clients.forEach((c, i) => void c.closed.then(() => { closedCount++; closedOnes.add(i); }));
    // The two beyond the bound are closed at once, long before the others' timeout.
    await new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (closedCount >= 2) {
          clearInterval(check);
          resolve();
        }
      }, 5);
    });
    expect(closedCount).toBe(2);
    for (const i of closedOnes) expect(clients[i]!.received()).toBe('');
    for (const c of clients) c.socket.destroy();
    await Promise.all(clients.map((c) => c.closed));
    expect((await request(control, 'GET', '/stats')).status).toBe(200);
  });
});

describe('control endpoint: forwards at run time', () => {
  it('a forward added reaches the guest; removed, the port refuses and the connection goes on', async () => {
    const port = await freePort();
    const accepted: GuestTcp[] = [];
    guest.listenTcp(8000, (c) => accepted.push(c));
    const added = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `tcp:${port}:8000` }));
    expect(added.status).toBe(201);
    expect(added.json).toEqual(expect.objectContaining({ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: port, guestPort: 8000, origin: 'control' }));
    const client = await connectHost(port);
    await new Promise<void>((r) => { const t = setInterval(() => { if (accepted.length === 1) { clearInterval(t); r(); } }, 5); });
    const conn = accepted[0]!;
    await conn.established();
    client.write('hello guest');
    await conn.until(() => conn.receivedBytes === 11);
    const flows = (await request(control, 'GET', '/flows')).json as any[];
    const flow = flows.find((f) => f.protocol === 'tcp' && f.guest.port === 8000);
    expect(flow).toEqual(expect.objectContaining({
      state: 'established', guest: { address: '10.0.2.15', port: 8000 }, remote: expect.objectContaining({ address: '10.0.2.2' }),
      host: { address: '127.0.0.1', port: client.localPort, localPort: port }, bytesToGuest: 11,
    }));
    expect(flow.ageSeconds).toBeGreaterThanOrEqual(0);

    const removed = await request(control, 'DELETE', `/forwards/${added.json.id}`);
    expect(removed.status).toBe(200);
    await expect(connectHost(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    // The connection accepted before goes on both ways.
    const echoed = readBytes(client, 5);
    conn.write(Buffer.from('still'));
    expect((await echoed).toString()).toBe('still');
    client.write('!');
    await conn.until(() => conn.receivedBytes === 12);
    expect((await request(control, 'GET', '/forwards')).json.map((f: any) => f.id)).not.toContain(added.json.id);
    conn.reset();
    client.destroy();
  });

  it('?close=1 also ends the forward\'s connections', async () => {
    const port = await freePort();
    const accepted: GuestTcp[] = [];
    guest.listenTcp(8001, (c) => accepted.push(c));
    const added = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `tcp:${port}:8001` }));
    const client = await connectHost(port);
    const clientClosed = new Promise<void>((r) => client.on('close', () => r()));
    client.on('error', () => {});
    await new Promise<void>((r) => { const t = setInterval(() => { if (accepted.length === 1) { clearInterval(t); r(); } }, 5); });
    await accepted[0]!.established();
    const removed = await request(control, 'DELETE', `/forwards/${added.json.id}?close=1`);
    expect(removed.status).toBe(200);
    await clientClosed;
    await accepted[0]!.until(() => accepted[0]!.state === 'reset');
    expect(accepted[0]!.state).toBe('reset');
    await expect(connectHost(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('a range is one forward: each host port reaches its guest port, one DELETE closes them all; overlaps and the port reserve are refused 409', async () => {
    const first = await freePortRange(3, '127.0.0.1');
    const acceptedOn = new Map<number, GuestTcp>();
    for (const p of [8100, 8101, 8102]) guest.listenTcp(p, (c) => acceptedOn.set(p, c));
    const spec = `tcp:${first}-${first + 2}:8100-8102`;
    const added = await request(control, 'POST', '/forwards', JSON.stringify({ spec }));
    expect([added.status, added.json]).toEqual([201, expect.objectContaining({ hostPort: first, guestPort: 8100, count: 3, spec: `tcp:127.0.0.1:${first}-${first + 2}:8100-8102` })]);
    for (let i = 0; i < 3; i++) {
      const client = await connectHost(first + i);
      await new Promise<void>((r) => { const t = setInterval(() => { if (acceptedOn.has(8100 + i)) { clearInterval(t); r(); } }, 5); });
      const conn = acceptedOn.get(8100 + i)!;
      await conn.established();
      client.write('x');
      await conn.until(() => conn.receivedBytes === 1);
      conn.reset();
      client.destroy();
    }
    const listed = (await request(control, 'GET', '/forwards')).json as any[];
    expect(listed.filter((f) => f.id === added.json.id)).toHaveLength(1);
    // Overlaps on any port of the range, from the same or a wildcard address, are refused; another protocol is not an overlap.
    const overlap = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `tcp:0.0.0.0:${first + 2}-${first + 3}:1-2` }));
    expect([overlap.status, overlap.json.error]).toEqual([409, `tcp:0.0.0.0:${first + 2}-${first + 3}:1-2 overlaps tcp:127.0.0.1:${first}-${first + 2}:8100-8102 (tcp host ports on the same or a wildcard address): forward ${added.json.id}`]);
    const udp = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `udp:${first}-${first + 2}:8100-8102` }));
    expect(udp.status).toBe(201);
    // The run-time reserve counts ports: 16 in all, 6 taken by the two ranges.
    const tooMany = await request(control, 'POST', '/forwards', JSON.stringify({ spec: 'tcp:40000-40010:1-11' }));
    expect([tooMany.status, tooMany.json.error]).toEqual([409, expect.stringMatching(/11 port\(s\) asked, 10 of the 16 .* are free/)]);
    expect((await request(control, 'DELETE', `/forwards/${udp.json.id}`)).status).toBe(200);
    const removed = await request(control, 'DELETE', `/forwards/${added.json.id}`);
    expect([removed.status, removed.json.count]).toEqual([200, 3]);
    for (let i = 0; i < 3; i++) await expect(connectHost(first + i)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('binds a range whole or not at all: one port held elsewhere refuses it (409) and leaves none of its ports bound', async () => {
    const first = await freePortRange(3, '127.0.0.1');
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(first + 1, '127.0.0.1', r));
    const refused = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `tcp:${first}-${first + 2}:8100-8102` }));
    holder.close();
    expect([refused.status, refused.json.error]).toEqual([409, `tcp:127.0.0.1:${first}-${first + 2}:8100-8102: port ${first + 1} in use`]);
    await expect(connectHost(first)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    // Nothing is held: the same range binds now.
    const added = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `tcp:${first}-${first + 2}:8100-8102` }));
    expect(added.status).toBe(201);
    expect((await request(control, 'DELETE', `/forwards/${added.json.id}`)).status).toBe(200);
  });

  it('counters mean the same in the text, JSON and Prometheus views after known traffic', async () => {
    const port = await freePort();
    const got: string[] = [];
    guest.bindUdp(5353, (payload) => got.push(Buffer.from(payload).toString()));
    const added = await request(control, 'POST', '/forwards', JSON.stringify({ spec: `udp:${port}:5353` }));
    expect(added.status).toBe(201);
    const before = (await request(control, 'GET', '/stats')).json['udp.inbound.rx'] ?? 0;
    const sender = dgram.createSocket('udp4');
    for (let i = 0; i < 5; i++) sender.send(`datagram ${i}`, port, '127.0.0.1');
    await new Promise<void>((r) => { const t = setInterval(() => { if (got.length === 5) { clearInterval(t); r(); } }, 5); });
    sender.close();
    const json = (await request(control, 'GET', '/stats')).json as Record<string, number>;
    const text = parseCounters(backend.formatCounters());
    const prometheus = new Map<string, number>();
    for (const line of (await request(control, 'GET', '/metrics')).text.split('\n')) {
      const m = /^(vhost_user_net_\w+) (-?\d+)$/.exec(line);
      if (m) prometheus.set(m[1]!, Number(m[2]));
    }
    expect(json['udp.inbound.rx']! - before).toBe(5);
    expect(json['udp.inbound.active']).toBe(1);
    expect(prometheus.get('vhost_user_net_udp_inbound_active')).toBe(1); // a gauge: no _total
    // Every counter the same in all three views (the text view leaves zeros out; requests move on between reads).
    for (const [name, value] of Object.entries(json)) {
      if (name.startsWith('control.')) continue;
      expect([name, prometheus.get(metricName(name))]).toEqual([name, value]);
      if (value !== 0) expect([name, text[name]]).toEqual([name, value]);
    }
    for (const name of Object.keys(text)) expect(json).toHaveProperty([name]);
    // Removing a UDP forward ends its associations.
    await request(control, 'DELETE', `/forwards/${added.json.id}`);
    expect((await request(control, 'GET', '/stats')).json['udp.inbound.active']).toBe(0);
  });
});

describe('forwards at start', () => {
  it('refuses overlapping forwards before binding anything, and a range that cannot bind whole leaves nothing bound', async () => {
    const first = await freePortRange(3, '127.0.0.1');
    const quiet = { debug() {}, info() {}, warn() {}, error() {} };
    await expect(startBackend({
      socket: join(dir, 'start-a.sock'),
      forwards: [
        { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: first, guestPort: 80, count: 2 },
        { protocol: 'tcp', hostAddress: '::', hostPort: first + 1, guestPort: 22 },
      ],
      logger: quiet,
    })).rejects.toThrow(`forward: tcp:[::]:${first + 1}:22 overlaps tcp:127.0.0.1:${first}-${first + 1}:80-81`);
    await expect(connectHost(first)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(first + 2, '127.0.0.1', r));
    await expect(startBackend({
      socket: join(dir, 'start-b.sock'),
      forwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: first, guestPort: 80, count: 3 }],
      logger: quiet,
    })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    holder.close();
    await expect(connectHost(first)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await expect(connectHost(first + 1)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});

describe('ctl and --pid-file against the backend process', () => {
  it('lists, adds and removes forwards and reads stats, flows, leases and metrics', async () => {
    const socket = join(dir, 'proc.sock');
    const ctlPath = join(dir, 'proc-control.sock');
    const pidPath = join(dir, 'backend.pid');
    const port = await freePort();
    const proc = await startBackendProcess({ socket, args: ['--control', ctlPath, '--pid-file', pidPath, '--forward', `tcp:${port}:22`] });
    try {
      await proc.waitForLog(/info: started: vhost-user listen .*; forwards tcp:127\.0\.0\.1:\d+:22; control /);
      expect(proc.log()).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info: /m);
      await new Promise<void>((r) => { const t = setInterval(() => { if (existsSync(pidPath)) { clearInterval(t); r(); } }, 10); });
      expect(readFileSync(pidPath, 'utf8')).toBe(`${proc.pid}\n`);
      const ctl = (...args: string[]) => run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts'), 'ctl', '--control', ctlPath, ...args], { cwd: REPO_ROOT });
      const list = await ctl('forwards');
      expect(list.stdout).toMatch(new RegExp(`^ID +FORWARD +ORIGIN +ADDED\\n1 +tcp:127\\.0\\.0\\.1:${port}:22 +start `));
      const added = await ctl('add', `udp:${port}:53`);
      expect(added.stdout).toBe(`added forward 2: udp:127.0.0.1:${port}:53\n`);
      const json = JSON.parse((await ctl('--json', 'forwards')).stdout);
      expect(json.map((f: any) => f.spec)).toEqual([`tcp:127.0.0.1:${port}:22`, `udp:127.0.0.1:${port}:53`]);
      expect((await ctl('remove', '2', '--close')).stdout).toBe(`removed forward 2: udp:127.0.0.1:${port}:53\n`);
      await expect(ctl('remove', '2')).rejects.toMatchObject({ code: 1, stderr: 'vhost-user-net ctl: no forward 2\n' });
      await expect(ctl('frobnicate')).rejects.toMatchObject({ code: 2 });
      expect((await ctl('stats')).stdout).toMatch(/^control\.requests +\d+$/m);
      expect((await ctl('flows')).stdout).toMatch(/^PROTO +STATE +GUEST/);
      expect((await ctl('leases')).stdout).toMatch(/^guest address 10\.0\.2\.15, MAC \(not seen yet\)\nno DHCP lease\n$/);
      expect((await ctl('metrics')).stdout).toContain('# TYPE vhost_user_net_control_requests_total counter');
      const curl = await run('curl', ['-s', '--unix-socket', ctlPath, 'http://localhost/stats']).catch(() => null);
      if (curl) expect(JSON.parse(curl.stdout)['control.requests']).toBeGreaterThan(0);
    } finally {
      await proc.stop();
    }
    expect(existsSync(pidPath)).toBe(false);
    expect(existsSync(ctlPath)).toBe(false);
  });
});

