#!/usr/bin/env node
/**
 * `vhost-user-net`: run the backend for one VM; `vhost-user-net ctl ...`:
 * talk to a running one's control endpoint (src/ctl.ts).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { CliError, USAGE, forwardsFromCli, parseCliOptions, parseMac, stackConfigFromCli } from './cli-options.js';
import { hostDnsUpstreams } from './net/resolv-conf.js';
import { formatForwardSpec } from './net/forward.js';
import { consoleLogger, startBackend } from './runtime.js';
import { PidFile } from './pid-file.js';

function version(): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  return (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  let options;
  let config;
  let forwards;
  try {
    options = parseCliOptions(argv);
    if (options.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (options.version) {
      process.stdout.write(`${version()}\n`);
      return 0;
    }
    config = stackConfigFromCli(options, () => hostDnsUpstreams());
    forwards = forwardsFromCli(options);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`vhost-user-net: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  const logger = consoleLogger(options.quiet ? 'quiet' : options.verbose ? 'verbose' : 'normal');
  if (config.dnsUpstreams?.length === 0) logger.warn('no DNS upstream (none in /etc/resolv.conf, no --dns-upstream): DNS queries will fail');

  let backend;
  try {
    backend = await startBackend({
      socket: (options.socket ?? options.connect)!,
      mode: options.socket !== undefined ? 'listen' : 'connect',
      oneOff: options.oneOff,
      requireSealedMemory: options.requireSealedMemory,
      ...(options.handshakeTimeout !== undefined ? { handshakeTimeoutMs: options.handshakeTimeout * 1000 } : {}),
      ...(options.mac !== undefined ? { mac: parseMac(options.mac)! } : {}),
      config,
      forwards,
      ...(options.pcap !== undefined ? { pcapPath: options.pcap } : {}),
      ...(options.control !== undefined ? { control: options.control } : {}),
      logger,
    });
  } catch (err) {
    logger.error((err as Error).message);
    return 1;
  }
  for (const f of forwards) logger.info(`forwarding ${formatForwardSpec(f)} (host ports : guest ports)`);
  let pidFile: PidFile | undefined;
  if (options.pidFile !== undefined) {
    try {
      pidFile = PidFile.write(options.pidFile);
    } catch (err) {
      logger.error(`--pid-file: ${(err as Error).message}`);
      await backend.close();
      return 1;
    }
  }

  const printCounters = (): void => {
    process.stderr.write(`--- counters ---\n${backend.formatCounters()}\n--- end of counters ---\n`);
  };
  process.on('SIGUSR1', printCounters);
  let statsTimer: NodeJS.Timeout | undefined;
  if (options.statsInterval > 0) {
    statsTimer = setInterval(printCounters, options.statsInterval * 1000);
    statsTimer.unref();
  }
  const stop = (signal: string): void => {
    logger.info(`${signal}: shutting down`);
    void backend.close();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));

  await backend.closed;
  await backend.control?.close();
  pidFile?.remove();
  if (statsTimer) clearInterval(statsTimer);
  if (options.stats) printCounters();
  return 0;
}

const argv = process.argv.slice(2);
const run = argv[0] === 'ctl' ? import('./ctl.js').then((ctl) => ctl.ctlMain(argv.slice(1))) : main(argv);
run.then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vhost-user-net: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
