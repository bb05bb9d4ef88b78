/**
 * Forwards driven through the control endpoint while a real guest serves
 * (QEMU under TCG, the busybox initramfs), and the client's real address.
 *
 * The backend runs inside a network namespace of the test's own, whose
 * dummy interface has 192.0.2.1/24 (TEST-NET-1, nowhere but there); its
 * vhost-user and control sockets are files, so QEMU and the test reach them
 * from outside. Clients run inside the namespace too (exchangeInNetns):
 * from its loopback, or from 192.0.2.1. The guest runs vun-echo's TCP and
 * UDP servers, which log every peer ("vun-echo: tcp from ADDR"); the guest's
 * default route is the gateway, i.e. the backend, so its replies to
 * 192.0.2.1 come back through us.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, type Guest } from '../harness/qemu.js';
import { ensureGuestBuilt, udhcpc } from '../harness/guest.js';
import { startBackendProcess, type BackendProcess } from '../harness/backend.js';
import { killAllAfterAll } from '../harness/processes.js';
import { createNetns, exchangeInNetns, netnsUnavailable, type Netns } from '../harness/netns.js';
import { controlRequest } from '../../src/ctl.js';

killAllAfterAll(afterAll);

const noNetns = netnsUnavailable();
const CLIENT = '192.0.2.1';
/** Host ports inside the namespace (its own port space: nothing else binds there). */
const BUSY_FWD = 8100;
const RUNTIME_FWD = 8200;
const UDP_FWD = 8300;
const CHURN_FWD = 8400;
const TRANSFER_BYTES = 16 * 1024 * 1024;

describe.skipIf(noNetns !== undefined)('forwards through the control endpoint in a guest, and the client\'s real address', () => {
  let dir: string;
  let ns: Netns;
  let backend: BackendProcess;
  let guest: Guest;
  let control: string;

  /** The peers the guest's vun-echo server of `proto` logged, in order. */
  const echoPeers = async (proto: 'tcp' | 'udp'): Promise<string[]> =>
    (await guest.runOk(`cat /tmp/echo-${proto}.log`)).split('\n').filter((l) => / from /.test(l));

  beforeAll(async () => {
    await ensureGuestBuilt();
    dir = await mkdtemp(join(tmpdir(), 'vun-ctl-fwd-'));
    ns = createNetns({ dummies: [{ name: 'd0', cidr: `${CLIENT}/24` }] });
    control = join(dir, 'control.sock');
    backend = await startBackendProcess({
      socket: join(dir, 'vm.sock'),
      netns: ns.name,
      args: ['--dns-upstream', '127.0.0.1:9', '--control', control, '--forward', `tcp:0.0.0.0:${BUSY_FWD}:7002`],
    });
    guest = await bootGuest({ name: 'control-forwards', nics: [{ kind: 'vhost-user', socket: join(dir, 'vm.sock') }] });
    console.log(`guest boot to ready: ${guest.bootMs} ms`);
    expect((await udhcpc(guest)).cidr).toBe('10.0.2.15/24');
    await guest.runOk('(vun-echo tcp-server 7002 >/tmp/echo-tcp.log &) && (vun-echo udp-server 7001 >/tmp/echo-udp.log &) && sleep 0.5');
  });

  afterAll(async () => {
    await guest?.close();
    await backend?.stop();
    ns?.delete();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a forward added at run time reaches the guest\'s server; removed, the host port refuses', async () => {
    const added = await controlRequest(control, 'POST', '/forwards', { spec: `tcp:127.0.0.1:${RUNTIME_FWD}:7002` });
    expect(added.status).toBe(201);
    const id = (JSON.parse(added.body) as { id: string }).id;
    const r = await exchangeInNetns(ns, { kind: 'tcp', to: '127.0.0.1', port: RUNTIME_FWD, message: 'hello-runtime' });
    expect([r.error, r.answer]).toEqual([undefined, 'hello-runtime']);
    // A loopback client appears as the gateway.
    expect((await echoPeers('tcp')).at(-1)).toBe('vun-echo: tcp from ::ffff:10.0.2.2');

    expect((await controlRequest(control, 'DELETE', `/forwards/${id}`)).status).toBe(200);
    const refused = await exchangeInNetns(ns, { kind: 'tcp', to: '127.0.0.1', port: RUNTIME_FWD });
    expect(refused.error).toBe('ECONNREFUSED');
  });

  it('a client from a non-loopback address of the namespace reaches the guest with that address (TCP and UDP) and gets its answer', async () => {
    const tcp = await exchangeInNetns(ns, { kind: 'tcp', from: CLIENT, to: CLIENT, port: BUSY_FWD, message: 'from-outside' });
    expect([tcp.error, tcp.answer]).toEqual([undefined, 'from-outside']);
    expect((await echoPeers('tcp')).at(-1)).toBe(`vun-echo: tcp from ::ffff:${CLIENT}`);

    expect((await controlRequest(control, 'POST', '/forwards', { spec: `udp:${CLIENT}:${UDP_FWD}:7001` })).status).toBe(201);
    const udp = await exchangeInNetns(ns, { kind: 'udp', from: CLIENT, to: CLIENT, port: UDP_FWD, message: 'udp-outside' });
    expect([udp.error, udp.answer]).toEqual([undefined, 'udp-outside']);
    expect((await echoPeers('udp')).at(-1)).toBe(`vun-echo: udp from ::ffff:${CLIENT}`);
    expect(backend.log()).toMatch(new RegExp(`TCP forward 0\\.0\\.0\\.0:${BUSY_FWD} -> guest 7002: clients reach the guest from their own address \\(${CLIENT.replace(/\./g, '\\.')}\\)`));
  });

  it('forwards added and removed while the guest serves traffic on another forward leave that traffic alone', async () => {
    const transfer = exchangeInNetns(ns, { kind: 'tcp', from: CLIENT, to: CLIENT, port: BUSY_FWD, bytes: TRANSFER_BYTES, timeoutMs: 120_000 });
    let rounds = 0;
    let settled = false;
    let roundsWhileTransferring = 0;
    void transfer.finally(() => {
      settled = true;
      roundsWhileTransferring = rounds;
    });
    // Churn until the transfer is over (at least 3 rounds): add a range and a UDP forward, use one port of the range, remove both.
    while (!settled || rounds < 3) {
      const range = await controlRequest(control, 'POST', '/forwards', { spec: `tcp:${CHURN_FWD}-${CHURN_FWD + 3}:7002-7005` });
      const udp = await controlRequest(control, 'POST', '/forwards', { spec: `udp:${CHURN_FWD}:7001` });
      expect([range.status, udp.status]).toEqual([201, 201]);
      const through = await exchangeInNetns(ns, { kind: 'tcp', to: '127.0.0.1', port: CHURN_FWD, message: `churn-${rounds}` });
      expect(through.answer).toBe(`churn-${rounds}`);
      for (const added of [range, udp]) {
        expect((await controlRequest(control, 'DELETE', `/forwards/${(JSON.parse(added.body) as { id: string }).id}`)).status).toBe(200);
      }
      rounds++;
    }
    const done = await transfer;
    expect(done.error).toBeUndefined();
    const [length, echoed, sent] = done.answer.split(' ');
    expect([Number(length), echoed]).toEqual([TRANSFER_BYTES, sent]);
    console.log(`${roundsWhileTransferring} add/remove rounds completed during a ${TRANSFER_BYTES}-byte echo through the other forward`);
    expect(roundsWhileTransferring).toBeGreaterThanOrEqual(1);
    const listed = JSON.parse((await controlRequest(control, 'GET', '/forwards')).body) as { spec: string }[];
    expect(listed.map((f) => f.spec)).toEqual([`tcp:0.0.0.0:${BUSY_FWD}:7002`, `udp:${CLIENT}:${UDP_FWD}:7001`]);
  });
});
