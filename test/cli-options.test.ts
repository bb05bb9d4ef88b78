import { describe, expect, it } from 'vitest';
import { CliError, parseCliOptions, parseMac } from '../src/cli-options.js';

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
