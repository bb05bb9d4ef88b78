/**
 * The client's real address on forwarded ports, at the frame level: the
 * backend runs as a process inside a network namespace of the test's own
 * (a dummy interface with 192.0.2.1/24, TEST-NET-1, exists only there);
 * our frontend and a frame-level guest talk to it over its Unix socket
 * (a filesystem path, reachable from outside the namespace). Clients run
 * inside the namespace too (`ip netns exec ... node`): one from 192.0.2.1,
 * one from 127.0.0.1, to forwards bound on 0.0.0.0 and added through the
 * control endpoint. The guest must see the first from 192.0.2.1 (and its
 * port) and the second from the gateway, and its replies to 192.0.2.1 —
 * sent through the gateway's MAC as a default route would — must reach
 * the client through the forward's connection.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetDriver, VhostUserFrontend } from '../src/index.js';
import { controlRequest } from '../src/ctl.js';
import { FrameGuest, gatewayArpRequest, type GuestTcp } from './helpers/frame-guest.js';
import { GATEWAY_IP } from './helpers/packets.js';
import { startBackendProcess, type BackendProcess } from './harness/backend.js';
import { createNetns, exchangeInNetns, netnsUnavailable, type Netns } from './harness/netns.js';

const unavailable = netnsUnavailable();
const CLIENT_ADDRESS = '192.0.2.1';
const TCP_PORT = 7100;
const UDP_PORT = 7101;

const ipv4 = (text: string): number => text.split('.').reduce((n, o) => n * 256 + Number(o), 0) >>> 0;

/** One exchange from inside the namespace (exchangeInNetns), which must succeed. */
async function clientInNetns(ns: Netns, kind: 'tcp' | 'udp', from: string, to: string, port: number): Promise<{ port: number; answer: string }> {
  const r = await exchangeInNetns(ns, { kind, from, to, port });
  expect(r.error).toBeUndefined();
  return r;
}

describe.skipIf(unavailable !== undefined)(`forwarded ports show the client's own address (${unavailable ?? 'netns'})`, () => {
  let ns: Netns;
  let dir: string;
  let backend: BackendProcess;
  let fe: VhostUserFrontend;
  let guest: FrameGuest;
  let control: string;

  beforeAll(async () => {
    ns = createNetns({ dummies: [{ name: 'd0', cidr: `${CLIENT_ADDRESS}/24` }] });
    dir = mkdtempSync(join(tmpdir(), 'vun-fwd-addr-'));
    control = join(dir, 'control.sock');
    const socket = join(dir, 'vm.sock');
    backend = await startBackendProcess({ socket, netns: ns.name, args: ['--control', control] });
    fe = VhostUserFrontend.connect(socket, { style: 'qemu' });
    await fe.connectAndStart();
    await fe.sync();
    const driver = new NetDriver(fe);
    driver.start();
    guest = new FrameGuest(driver);
    driver.send([gatewayArpRequest()]);
  }, 60_000);

  afterAll(async () => {
    fe?.close();
    await backend?.stop();
    ns?.delete();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('TCP: a non-loopback client reaches the guest from its address and port and gets the guest\'s reply; a loopback one appears as the gateway', async () => {
    const accepted: GuestTcp[] = [];
    guest.listenTcp(TCP_PORT, (c) => {
      accepted.push(c);
      void c.established().then(() => c.until(() => c.receivedBytes === 4)).then(() => c.write(Buffer.from(c.dst === GATEWAY_IP ? 'gway' : 'pong')));
    });
    const added = await controlRequest(control, 'POST', '/forwards', { spec: `tcp:0.0.0.0:${TCP_PORT}:${TCP_PORT}` });
    expect(added.status).toBe(201);

    const remote = await clientInNetns(ns, 'tcp', CLIENT_ADDRESS, CLIENT_ADDRESS, TCP_PORT);
    expect(remote.answer).toBe('pong');
    expect([accepted[0]!.dst, accepted[0]!.dstPort]).toEqual([ipv4(CLIENT_ADDRESS), remote.port]);
    await backend.waitForLog(new RegExp(`TCP forward 0\\.0\\.0\\.0:${TCP_PORT} -> guest ${TCP_PORT}: clients reach the guest from their own address \\(${CLIENT_ADDRESS.replace(/\./g, '\\.')}\\)`));

    const local = await clientInNetns(ns, 'tcp', '127.0.0.1', '127.0.0.1', TCP_PORT);
    expect(local.answer).toBe('gway');
    expect(accepted[1]!.dst).toBe(GATEWAY_IP);
    await backend.waitForLog(new RegExp(`TCP forward 0\\.0\\.0\\.0:${TCP_PORT} -> guest ${TCP_PORT}: clients such as 127\\.0\\.0\\.1 reach the guest from the gateway 10\\.0\\.2\\.2`));

    // A second client from the same address: logged once per forward and behaviour.
    expect((await clientInNetns(ns, 'tcp', CLIENT_ADDRESS, CLIENT_ADDRESS, TCP_PORT)).answer).toBe('pong');
    expect(backend.log().match(/clients reach the guest from their own address/g)).toHaveLength(1);
    const counters = await backend.counters();
    expect([counters['tcp.forward.from_client'], counters['tcp.forward.from_gateway']]).toEqual([2, 1]);
  });

  it('UDP: a non-loopback sender reaches the guest from its address and the guest\'s reply to that address goes back to it', async () => {
    const seen: [number, number][] = [];
    guest.bindUdp(UDP_PORT, (payload, src, sport) => {
      seen.push([src, sport]);
      guest.sendUdp(UDP_PORT, sport, Buffer.from(src === GATEWAY_IP ? 'gway' : 'pong'), src);
    });
    expect((await controlRequest(control, 'POST', '/forwards', { spec: `udp:0.0.0.0:${UDP_PORT}:${UDP_PORT}` })).status).toBe(201);
    const remote = await clientInNetns(ns, 'udp', CLIENT_ADDRESS, CLIENT_ADDRESS, UDP_PORT);
    expect(remote.answer).toBe('pong');
    expect(seen[0]).toEqual([ipv4(CLIENT_ADDRESS), remote.port]);
    const local = await clientInNetns(ns, 'udp', '127.0.0.1', '127.0.0.1', UDP_PORT);
    expect(local.answer).toBe('gway');
    expect(seen[1]).toEqual([GATEWAY_IP, local.port]);
    // Both answers arrived, so both replies left through the forward's socket.
    const counters = await backend.counters();
    expect([counters['udp.inbound.tx'], counters['udp.inbound.from_client'], counters['udp.inbound.from_gateway']]).toEqual([2, 1, 1]);
    expect(backend.log()).toMatch(new RegExp(`UDP forward 0\\.0\\.0\\.0:${UDP_PORT}: senders reach the guest from their own address \\(${CLIENT_ADDRESS.replace(/\./g, '\\.')}\\)`));
  });
});
