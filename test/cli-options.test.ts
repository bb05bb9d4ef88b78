import { describe, expect, it } from 'vitest';
import { CliError, forwardsFromCli, parseCliOptions, parseMac, stackConfigFromCli } from '../src/cli-options.js';
import { resolveStackConfig } from '../src/net/config.js';
import { type InAny, inanyToString } from '../src/net/inany.js';

describe('command-line options', () => {
  it('listens with --socket and keeps slirp defaults', () => {
    const o = parseCliOptions(['--socket', '/tmp/vm1.sock']);
    expect(o.socket).toBe('/tmp/vm1.sock');
    expect(o.connect).toBeUndefined();
    expect(o.mapGateway).toBe(true);
    expect(o.restrict).toBe(false);
    expect(o.forwards).toEqual([]);
    expect(o.oneOff).toBe(false);
    expect(o.requireSealedMemory).toBe(false);
    expect(o.handshakeTimeout).toBeUndefined();
  });

  it('takes repeatable forwards, upstreams and domains', () => {
    const o = parseCliOptions([
      '--connect', '/run/ch.sock', '--forward', 'tcp:2222:22', '--forward', 'udp:0.0.0.0:5353:53',
      '--dns-upstream', '127.0.0.1:5300', '--domain', 'example.test', '--no-map-gw', '--restrict',
      '--mtu', '9000', '--stats-interval', '5', '--one-off', '--require-sealed-memory',
      '--mtu', '9000', '--stats-interval', '5', '--one-off', '--handshake-timeout', '0',
    ]);
    expect(o.connect).toBe('/run/ch.sock');
    expect(o.forwards).toEqual(['tcp:2222:22', 'udp:0.0.0.0:5353:53']);
    expect(o.dnsUpstreams).toEqual(['127.0.0.1:5300']);
    expect(o.domainSearch).toEqual(['example.test']);
    expect(o.mapGateway).toBe(false);
    expect(o.restrict).toBe(true);
    expect(o.mtu).toBe(9000);
    expect(o.statsInterval).toBe(5);
    expect(o.oneOff).toBe(true);
    expect(o.requireSealedMemory).toBe(true);
    expect(o.handshakeTimeout).toBe(0);
  });

  it.each([
    [[], /exactly one of/],
    [['--socket', 'a', '--connect', 'b'], /exactly one of/],
    [['--socket', 'a', '--mtu', '100'], /between 576/],
    [['--socket', 'a', '--mtu', 'big'], /not a number/],
    [['--socket', 'a', '--handshake-timeout', '3601'], /between 0 and 3600/],
    [['--socket', 'a', '--mac', '52:54:00'], /not a MAC/],
    [['--socket', 'a', '--bogus'], /Unknown option/],
  ])('refuses %j', (argv, message) => {
    expect(() => parseCliOptions(argv as string[])).toThrow(CliError);
    expect(() => parseCliOptions(argv as string[])).toThrow(message as RegExp);
  });

  it('parses MAC addresses', () => {
    expect(Array.from(parseMac('52:54:00:12:34:56')!)).toEqual([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    expect(parseMac('52-54-00-12-34-5g')).toBeNull();
  });
  it('takes the control endpoint and the pid file', () => {
    const o = parseCliOptions(['--socket', '/tmp/s', '--control', '/run/vun.ctl', '--pid-file', '/run/vun.pid']);
    expect([o.control, o.pidFile]).toEqual(['/run/vun.ctl', '/run/vun.pid']);
  });
});

describe('IPv6 options', () => {
  const resolvers = () => [{ address: '127.0.0.53', port: 53 }];
  const text = (a: InAny | undefined) => (a === undefined ? undefined : inanyToString(a));

  it('keeps IPv6 on by default with slirp addresses, and turns it off with --no-ipv6', () => {
    const o = parseCliOptions(['--socket', 's']);
    expect(o.ipv6).toBe(true);
    const c = resolveStackConfig(stackConfigFromCli(o, resolvers));
    expect(c.ipv6).toBe(true);
    expect([c.network6, c.gateway6, c.dns6, c.gatewayLinkLocal6, c.guestIp6].map(text)).toEqual(['fec0::', 'fec0::2', 'fec0::3', 'fe80::2', 'fec0::15']);
    expect(stackConfigFromCli(parseCliOptions(['--socket', 's', '--no-ipv6']), resolvers).ipv6).toBe(false);
  });

  it('puts gateway, DNS and the DHCPv6 address in a --net6 prefix; --gateway6/--dns6 override', () => {
    const c = resolveStackConfig(stackConfigFromCli(parseCliOptions(['--socket', 's', '--net6', 'fd00:1::/64', '--dns6', 'fd00:1::53']), resolvers));
    expect([c.network6, c.gateway6, c.dns6, c.guestIp6].map(text)).toEqual(['fd00:1::', 'fd00:1::2', 'fd00:1::53', 'fd00:1::15']);
  });

  it.each([
    [['--net6', 'fd00::/48'], /must be 64/],
    [['--net6', '10.0.0.0/64'], /IPv6 PREFIX/],
    [['--gateway6', '10.0.2.2'], /not an IPv6 address/],
    [['--no-ipv6', '--dns6', 'fec0::3'], /--no-ipv6 with/],
  ])('refuses %j', (argv, message) => {
    expect(() => stackConfigFromCli(parseCliOptions(['--socket', 's', ...argv]), resolvers)).toThrow(message);
  });

  it('refuses an IPv6 gateway outside the prefix and an MTU below 1280 with IPv6 on', () => {
    expect(() => resolveStackConfig(stackConfigFromCli(parseCliOptions(['--socket', 's', '--gateway6', 'fd00::2']), resolvers))).toThrow(/outside the prefix/);
    expect(() => resolveStackConfig(stackConfigFromCli(parseCliOptions(['--socket', 's', '--mtu', '1000']), resolvers))).toThrow(/1280/);
    expect(resolveStackConfig(stackConfigFromCli(parseCliOptions(['--socket', 's', '--mtu', '1000', '--no-ipv6']), resolvers)).mtu).toBe(1000);
  });

  it('parses an IPv6 forward host address in brackets', () => {
    expect(forwardsFromCli(parseCliOptions(['--socket', 's', '--forward', 'tcp:[::1]:8080:80']))).toEqual([
      { protocol: 'tcp', hostAddress: '::1', hostPort: 8080, guestPort: 80, count: 1 },
    ]);
  });

  it('takes repeated --forward flags with ranges and refuses overlapping ones', () => {
    const args = (...f: string[]): string[] => ['--socket', 's', ...f.flatMap((x) => ['--forward', x])];
    expect(forwardsFromCli(parseCliOptions(args('tcp:8000-8010:8000-8010', 'tcp:9000-9010:80-90', 'udp:8000-8010:8000-8010')))).toEqual([
      { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8000, guestPort: 8000, count: 11 },
      { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 9000, guestPort: 80, count: 11 },
      { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 8000, guestPort: 8000, count: 11 },
    ]);
    expect(() => forwardsFromCli(parseCliOptions(args('tcp:8000-8010:80-90', 'tcp:8010:22')))).toThrow(
      new CliError('--forward: forward: tcp:127.0.0.1:8010:22 overlaps tcp:127.0.0.1:8000-8010:80-90 (tcp host ports on the same or a wildcard address)'),
    );
    expect(() => forwardsFromCli(parseCliOptions(args('tcp:127.0.0.1:8080:80', 'tcp:0.0.0.0:8080:81')))).toThrow(/overlaps/);
    expect(() => forwardsFromCli(parseCliOptions(args('tcp:8000-8010:80-89')))).toThrow(/same length/);
  });
});
