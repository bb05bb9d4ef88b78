/**
 * The test guest and the QEMU harness, checked against QEMU's own user-mode
 * network (-netdev user, libslirp): the reference our backend is compared
 * with. If this file fails, the VM tests of the backend mean nothing.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootGuest, nicArgs, type Guest } from '../harness/qemu.js';
import { ensureGuestBuilt, hasCommand, setupStaticIp, udhcpc } from '../harness/guest.js';
import { killAll, killAllAfterAll, liveProcesses, pidAlive } from '../harness/processes.js';

killAllAfterAll(afterAll);

describe('test guest on QEMU -netdev user', () => {
  let guest: Guest;
  let server: Server;
  let port = 0;
  const token = randomBytes(8).toString('hex');
  const page = `hello from the host ${token}\n`;
  const requests: { url: string | undefined; remote: string | undefined }[] = [];

  beforeAll(async () => {
    await ensureGuestBuilt();
    server = createServer((req: IncomingMessage, res) => {
      requests.push({ url: req.url, remote: req.socket.remoteAddress });
      if (req.url === `/page-${token}`) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(page);
      } else {
        res.writeHead(404);
        res.end('not found\n');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    guest = await bootGuest({ name: 'boot-slirp', nic: { kind: 'slirp' }, qmp: true });
    console.log(`guest boot to ready: ${guest.bootMs} ms`);
  });

  afterAll(async () => {
    await guest?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('boots to a root shell and runs commands with exit codes', async () => {
    expect(guest.bootMs).toBeGreaterThan(0);
    expect(guest.log).toContain('GUEST-INFO kernel=');
    expect(guest.log).not.toContain('GUEST-MODULE-FAILED');
    expect(await guest.run('id -u')).toEqual({ output: '0\n', exitCode: 0 });
    expect(await guest.run('false')).toEqual({ output: '', exitCode: 1 });
    expect(await guest.run('exit_code() { return 42; }; exit_code')).toEqual({ output: '', exitCode: 42 });
    // Output without a trailing newline, stderr interleaved, several lines.
    expect((await guest.run('printf abc')).output).toBe('abc');
    expect((await guest.run('echo out; echo err >&2; echo done')).output).toBe('out\nerr\ndone\n');
    // A long command line and a multi-line command.
    const long = 'x'.repeat(3000);
    expect((await guest.run(`echo ${long} | wc -c`)).output.trim()).toBe('3001');
    expect((await guest.run('for i in 1 2 3; do\n  echo line$i\ndone')).output).toBe('line1\nline2\nline3\n');
    // A large output (~110 KB over the serial line) arrives whole.
    const big = await guest.run('seq 1 20000');
    expect(big.exitCode).toBe(0);
    const lines = big.output.trimEnd().split('\n');
    expect(lines.length).toBe(20000);
    expect(lines[19999]).toBe('20000');
    // Output that looks like a marker does not end the command early.
    expect((await guest.run("printf '\\n@@E%d:x\\n' 99999; echo tail")).output).toBe('\n@@E99999:x\ntail\n');
    // Each command runs in a subshell: exit ends only the command.
    expect(await guest.run('echo before; exit 7; echo after')).toEqual({ output: 'before\n', exitCode: 7 });
    expect(await guest.run('cd /tmp; export X=1')).toEqual({ output: '', exitCode: 0 });
    expect(await guest.run('pwd; echo "x=$X"')).toEqual({ output: '/\nx=\n', exitCode: 0 });
  });

  it('carries the tools later tests need', async () => {
    for (const tool of ['iperf3', 'vun-echo', 'ping', 'wget', 'nc', 'nslookup', 'httpd', 'md5sum', 'sha256sum', 'dd', 'ip', 'ifconfig', 'route', 'telnet', 'udhcpc']) {
      expect(await hasCommand(guest, tool), tool).toBe(true);
    }
    expect((await guest.run('iperf3 --version')).output).toMatch(/^iperf 3\./);
    expect((await guest.run('vun-echo')).exitCode).toBe(2);
    // The echo helper and iperf3 (with its copied shared libraries) work on the guest's loopback.
    await guest.runOk('vun-echo udp-server 7001 >/dev/null & vun-echo tcp-server 7002 >/dev/null & sleep 0.3');
    expect(await guest.run('vun-echo udp 127.0.0.1 7001 ping-udp')).toEqual({ output: 'ping-udp', exitCode: 0 });
    expect(await guest.run('vun-echo tcp ::1 7002 ping-tcp')).toEqual({ output: 'ping-tcp', exitCode: 0 });
    expect((await guest.run('vun-echo udp 127.0.0.1 7009 nobody 500')).exitCode).toBe(1);
    await guest.runOk('iperf3 -s -D -1 -p 5201');
    const iperf = await guest.run('sleep 0.3; iperf3 -c 127.0.0.1 -p 5201 -t 1 -J', { timeoutMs: 30_000 });
    expect(iperf.exitCode, iperf.output).toBe(0);
    expect(JSON.parse(iperf.output).end.sum_received.bytes).toBeGreaterThan(0);
    // virtio-net is bound: eth0 exists and is a virtio device.
    expect((await guest.run('readlink /sys/class/net/eth0/device/driver')).output).toMatch(/virtio_net/);
  });

  it('gets 10.0.2.15 from the slirp DHCP server', async () => {
    const lease = await udhcpc(guest);
    expect(lease.cidr).toBe('10.0.2.15/24');
    expect(lease.gateway).toBe('10.0.2.2');
    expect(lease.dns).toEqual(['10.0.2.3']);
    expect(lease.output).toContain('lease of 10.0.2.15 obtained');
  });

  it('pings the gateway', async () => {
    const r = await guest.run('ping -c 3 -W 5 10.0.2.2');
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toMatch(/3 packets transmitted, 3 packets received/);
  });

  it('fetches a page from a host HTTP server on 127.0.0.1 through 10.0.2.2', async () => {
    const r = await guest.run(`wget -q -O - http://10.0.2.2:${port}/page-${token}`);
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toBe(page);
    expect(requests.some((q) => q.url === `/page-${token}` && q.remote === '127.0.0.1')).toBe(true);
    // A 404 is reported as a failure by busybox wget.
    const missing = await guest.run(`wget -q -O - http://10.0.2.2:${port}/missing`);
    expect(missing.exitCode).not.toBe(0);
  });

  it('interrupts a command that outlives its timeout and keeps the shell usable', async () => {
    await expect(guest.run('sleep 60', { timeoutMs: 1500 })).rejects.toThrow(/timeout after 1500 ms/);
    expect(await guest.run('echo still-here')).toEqual({ output: 'still-here\n', exitCode: 0 });
    await expect(guest.run('if then fi')).rejects.toThrow(/syntax error/);
    expect(await guest.run('echo after-syntax-error')).toEqual({ output: 'after-syntax-error\n', exitCode: 0 });
  });

  it('drives QEMU over QMP: status and link down/up seen by the guest', async () => {
    expect(await guest.qmp('query-status')).toMatchObject({ status: 'running' });
    await guest.runOk('ip link set eth0 up');
    await guest.qmp('set_link', { name: 'n0', up: false });
    await guest.runOk('for i in $(seq 50); do [ "$(cat /sys/class/net/eth0/carrier)" = 0 ] && exit 0; sleep 0.1; done; exit 1');
    await guest.qmp('set_link', { name: 'n0', up: true });
    await guest.runOk('for i in $(seq 50); do [ "$(cat /sys/class/net/eth0/carrier)" = 1 ] && exit 0; sleep 0.1; done; exit 1');
    await expect(guest.qmp('no-such-command')).rejects.toThrow(/qmp:/);
  });

  it('reboots (guest reset, virtio reset) and configures a static address', async () => {
    const before = guest.log.match(/GUEST-READY\n/g)?.length ?? 0;
    const ms = await guest.reboot();
    console.log(`guest reboot to ready: ${ms} ms`);
    expect(guest.log.match(/GUEST-READY\n/g)?.length).toBe(before + 1);
    // Fresh boot: no address yet, then a static one works through slirp.
    expect((await guest.run('ip -4 -o addr show dev eth0')).output).toBe('');
    await setupStaticIp(guest, '10.0.2.15/24', '10.0.2.2');
    const r = await guest.run('ping -c 1 -W 5 10.0.2.2');
    expect(r.exitCode, r.output).toBe(0);
    const w = await guest.run(`wget -q -O - http://10.0.2.2:${port}/page-${token}`);
    expect(w.output).toBe(page);
  });

  it('leaves no QEMU behind after close()', async () => {
    const pid = guest.pid;
    expect(pidAlive(pid)).toBe(true);
    await guest.close();
    expect(guest.running).toBe(false);
    expect(pidAlive(pid)).toBe(false);
    expect(liveProcesses().filter((p) => p.pid === pid)).toEqual([]);
  });

  it('killAll() kills a guest that was never closed', async () => {
    const g = await bootGuest({ name: 'boot-orphan', waitReady: false });
    expect(pidAlive(g.pid)).toBe(true);
    expect(liveProcesses().map((p) => p.pid)).toContain(g.pid);
    await killAll();
    expect(pidAlive(g.pid)).toBe(false);
    expect(g.running).toBe(false);
    expect(liveProcesses()).toEqual([]);
    await g.close();
  });
});

describe('foreign images', () => {
  it('logs in on a cirros-style console prompt (the VUN_GUEST_IMAGE path)', async () => {
    const built = await ensureGuestBuilt();
    const g = await bootGuest({
      name: 'fake-cirros',
      readyTimeoutMs: 60_000,
      image: {
        ...built,
        // scripts/guest/init imitates cirros' console login when given vun.login=.
        append: 'quiet vun.login=cirros:gocubsgo',
        login: { user: 'cirros', password: 'gocubsgo', sudo: false },
      },
    });
    try {
      expect(g.log).toMatch(/vun-guest login: /);
      expect(g.log).toContain('GUEST-READY\n');
      expect(await g.run('echo $((6 * 7))')).toEqual({ output: '42\n', exitCode: 0 });
      expect((await g.run('cat /missing')).exitCode).toBe(1);
    } finally {
      await g.close();
    }
  });
});

describe('vhost-user NIC wiring (no backend yet: a bare listener)', () => {
  it('QEMU waits for the backend socket, then opens the session with GET_FEATURES', async () => {
    expect(nicArgs({ kind: 'vhost-user', socket: '/x.sock' }, 0)).toEqual([
      '-chardev', 'socket,id=c0,path=/x.sock,reconnect=1',
      '-netdev', 'vhost-user,id=n0,chardev=c0',
      '-device', 'virtio-net-pci,netdev=n0,vectors=0,romfile=,mac=52:54:00:12:34:56',
    ]);
    const dir = await mkdtemp(join(tmpdir(), 'vun-vu-'));
    const socket = join(dir, 'vu.sock');
    const g = await bootGuest({ name: 'vu-wiring', nic: { kind: 'vhost-user', socket }, waitReady: false });
    try {
      // Nothing listens yet: with reconnect=1 QEMU keeps trying instead of exiting.
      await new Promise((r) => setTimeout(r, 1500));
      expect(g.running, g.stderr).toBe(true);
      const first = await new Promise<Buffer>((resolve) => {
        const srv = createNetServer((conn) => {
          conn.once('data', (d: Buffer) => {
            resolve(d);
            conn.destroy();
            srv.close();
          });
        });
        srv.listen(socket);
      });
      // vhost-user header: request u32, flags u32 (version 1), size u32; all little-endian.
      expect(first.length).toBeGreaterThanOrEqual(12);
      const dv = new DataView(first.buffer, first.byteOffset, first.byteLength);
      expect(dv.getUint32(0, true)).toBe(1); // VHOST_USER_GET_FEATURES
      expect(dv.getUint32(4, true) & 0x3).toBe(1);
      expect(dv.getUint32(8, true)).toBe(0);
    } finally {
      await g.close();
      await rm(dir, { recursive: true, force: true });
    }
    expect(g.running).toBe(false);
  });
});
