/**
 * The guest's IPv6 frames of the libslirp captures (../shared/corpora/
 * libslirp: IN_icmp6, IN_ndp, IN_tcp6, IN_udp6) fed to the whole stack,
 * with the answers checked: the NS gets an NA, the echo to the gateway a
 * reply, the echo to the world goes out through an ICMPv6 ping socket, the
 * SYN becomes a host connect to the captured address and a SYN-ACK, the DNS
 * query goes out on a udp6 flow and its answer comes back.
 *
 * The captures were taken before the guest's checksum offload was
 * completed: TCP and UDP segments are fed with NEEDS_CSUM as the device
 * would hand them over (`replay`).
 *
 * No traffic leaves loopback: the ping socket and the UDP flow socket are
 * fakes that record what the stack asked of them, and the TCP connect is
 * redirected to a listener on ::1 (the address asked for is recorded).
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { fakeLinkStack } from './helpers/stack-rig.js';
import { CORPUS_SKIP_NOTE, ipv6CorpusFrames, type CorpusIpv6Frame } from './helpers/corpus6.js';
import { GUEST_IP6, parseFrame6, ip6 } from './helpers/packets6.js';
import { GUEST_MAC } from './helpers/packets.js';
import { hostPeer, waitFor } from './helpers/tcp-context.js';
import type { PingIO } from '../src/net/icmp.js';
import type { UdpHostSocket } from '../src/net/udp.js';
import { inanyToString } from '../src/net/inany.js';
import { l4ChecksumIPv6 } from '../src/net/wire/checksum-ipv6.js';
import type { FrameOffload } from '../src/net/link.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const corpus = ipv6CorpusFrames();

/** The guest-sent frames of a capture file, by any of its names (identical files in two folders are read once; the guest's MAC is 52:54:00:12:34:56). */
function guestFrames(...files: string[]): CorpusIpv6Frame[] {
  const frames = (corpus ?? []).filter((f) => files.some((file) => f.name.startsWith(`${file}#`)) && f.eth.src.every((b, i) => b === GUEST_MAC[i]));
  expect(frames.length).toBeGreaterThan(0);
  return frames;
}

/**
 * Feed a captured guest frame as the device would: QEMU captured the guest's
 * transmit before checksum offload was completed, so a TCP or UDP segment
 * whose checksum does not verify came with NEEDS_CSUM at its checksum field.
 */
function replay(stack: { receive(frame: Uint8Array, offload: FrameOffload | null): void }, f: CorpusIpv6Frame): void {
  const u = f.upper!;
  const field = u.protocol === 6 ? 16 : u.protocol === 17 ? 6 : -1;
  const verifies = field < 0 || l4ChecksumIPv6(f.ip!.src, f.ip!.dst, u.protocol, u.payload) === 0;
  if (verifies) return stack.receive(f.frame, null);
  stack.receive(f.frame, { needsCsum: true, dataValid: false, csumStart: 14 + u.offset, csumOffset: field, gsoType: 0, gsoSize: 0, hdrLen: 0 });
}

describe.skipIf(corpus === null)(`corpus replay through the stack (${CORPUS_SKIP_NOTE})`, () => {
  it('IN_ndp: the neighbour solicitation for the gateway gets a neighbour advertisement', () => {
    const { link, stack } = fakeLinkStack(cleanups);
    const [ns] = guestFrames('IN_ndp/ndp.pcap', 'IN_icmp6/ndp.pcap');
    stack.receive(ns!.frame, null);
    expect(link.sent).toHaveLength(1);
    const na = parseFrame6(link.sent[0]!);
    expect(na.checksumOk).toBe(true);
    expect(na.icmp?.type).toBe(136);
    expect(inanyToString(na.src)).toBe('fec0::2');
    expect(na.dst).toEqual(GUEST_IP6);
    expect(inanyToString(na.icmp!.body.subarray(0, 16))).toBe('fec0::2');
  });

  it('IN_icmp6: the echo request to the gateway gets its echo reply', () => {
    const { link, stack } = fakeLinkStack(cleanups);
    const [echo] = guestFrames('IN_icmp6/ping_10-0-2-2.pcap');
    stack.receive(echo!.frame, null);
    const reply = parseFrame6(link.sent.pop()!);
    expect(reply.checksumOk).toBe(true);
    expect(reply.icmp?.type).toBe(129);
    const request = echo!.upper!.payload;
    expect(reply.icmp!.parameter).toBe(new DataView(request.buffer, request.byteOffset + 4, 4).getUint32(0, false));
    expect(reply.icmp!.body).toEqual(request.subarray(8));
  });

  it('IN_icmp6: the echo request to the world goes out on an ICMPv6 ping socket and the reply comes back', () => {
    const sent: { family: number | undefined; address: string; message: Uint8Array }[] = [];
    let deliver: ((m: Uint8Array, a: string) => void) | null = null;
    const ping: PingIO = {
      open(onMessage, family) {
        deliver = onMessage;
        return { send: (message, address) => (sent.push({ family, address, message: message.slice() }), true), close() {} };
      },
    };
    const { link, stack } = fakeLinkStack(cleanups, { ping });
    const [echo] = guestFrames('IN_icmp6/icmp_capture.pcap');
    stack.receive(echo!.frame, null);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.family).toBe(6);
    expect(sent[0]!.address).toBe('2606:4700:4700::1111');
    // The kernel's reply carries its own identifier; the stack puts the guest's back.
    const reply = sent[0]!.message.slice();
    reply[0] = 129;
    reply[4] = 0xbe;
    reply[5] = 0xef;
    deliver!(reply, '2606:4700:4700::1111');
    const f = parseFrame6(link.sent.pop()!);
    expect(f.checksumOk).toBe(true);
    expect(f.icmp?.type).toBe(129);
    expect(inanyToString(f.src)).toBe('2606:4700:4700::1111');
    expect(f.icmp!.parameter >>> 16).toBe((echo!.upper!.payload[4]! << 8) | echo!.upper!.payload[5]!);
  });

  it('IN_tcp6: the SYN becomes a host connect to the captured address and a SYN-ACK to the guest', async () => {
    const peer = await hostPeer(cleanups, '::1');
    const asked: net.TcpNetConnectOpts[] = [];
    const { link, stack } = fakeLinkStack(cleanups, {
      tcp: undefined,
      host: { connectTcp: (o) => (asked.push(o), net.connect({ ...o, host: '::1', port: peer.port })) },
    });
    const frames = guestFrames('IN_tcp6/tcp_qemucapt.pcap');
    replay(stack, frames[0]!);
    const syn = frames[0]!.upper!.payload;
    const seq = new DataView(syn.buffer, syn.byteOffset + 4, 4).getUint32(0, false);
    let synAck: ReturnType<typeof parseFrame6> | undefined;
    await waitFor(() => (synAck = link.sent.map(parseFrame6).find((f) => f.tcp?.flags === 0x12)) !== undefined, 3000, 'SYN-ACK');
    expect(asked[0]).toMatchObject({ host: '2a0c:e300::113', port: 7 });
    expect(synAck!.checksumOk).toBe(true);
    expect(synAck!.tcp!.ack).toBe((seq + 1) >>> 0);
    expect(inanyToString(synAck!.src)).toBe('2a0c:e300::113');
  });

  it('IN_udp6: the DNS query goes out on a udp6 flow to the captured resolver and its answer comes back', async () => {
    const sends: { address: string; port: number; data: Buffer }[] = [];
    const families: (number | undefined)[] = [];
    let socket: dgram.Socket | null = null;
    const udpSocket = (family?: 4 | 6): UdpHostSocket => {
      families.push(family);
      const s = dgram.createSocket({ type: 'udp6', ipv6Only: true });
      s.bind(0, '::1');
      // Record instead of sending anywhere: the capture's resolver is not ours to reach.
      const record = (data: Uint8Array, port: number, address: string, cb?: (e: Error | null) => void): void => {
        sends.push({ address, port, data: Buffer.from(data) });
        cb?.(null);
      };
      Object.assign(s, { send: record });
      socket = s;
      cleanups.push(() => s.close());
      return { socket: s, readErrors: null };
    };
    const { link, stack } = fakeLinkStack(cleanups, { udpSocket });
    const [query] = guestFrames('IN_udp6/DNS_freedesktop_1-1-1-1.pcap');
    replay(stack, query!);
    expect(families).toEqual([6]);
    expect(sends).toHaveLength(1);
    expect(sends[0]).toMatchObject({ address: '2606:4700:4700::1111', port: 53 });
    const answer = (corpus ?? []).find((f) => f.name === 'IN_udp6/DNS_freedesktop_1-1-1-1.pcap#1')!;
    socket!.emit('message', Buffer.from(answer.upper!.payload.subarray(8)), { address: '2606:4700:4700::1111', port: 53, family: 'IPv6', size: 0 });
    const f = link.sent.map(parseFrame6).find((p) => p.udp !== undefined)!;
    expect(f.checksumOk).toBe(true);
    expect(inanyToString(f.src)).toBe('2606:4700:4700::1111');
    expect(f.udp!.sport).toBe(53);
    expect(f.udp!.dport).toBe((query!.upper!.payload[0]! << 8) | query!.upper!.payload[1]!);
    expect(f.dst).toEqual(ip6('fec0::5054:ff:fe12:3456'));
  });
});
