// `vfio-user-server`: the device process's command line (bin/vfio-user-server.js imports this module, which runs
// at once). Backend-program conventions of the vfio-user spec: `--socket-path PATH` or `--fd N` (exclusive;
// systemd LISTEN_FDS too), no daemonizing, fds 0/1/2 keep their meaning (stdout only for --help and
// --print-capabilities, logs on stderr), SIGTERM/SIGINT shut down cleanly (the socket file is removed and the
// counters are logged). Option parsing lives in cli-options.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { encodeCapabilities, PROTOCOL_VERSION } from 'vfio-user-protocol';
import { type CliOptions, parseCli, UsageError, usage } from './cli-options.js';
import type { VfioUserDevice } from './device.js';
import { createDevice, deviceNames } from './devices/index.js';
import type { IommuBackend } from './iommu/backend.js';
import { createIommuBackend, resolveIommuChoice } from './iommu/select.js';
import { createLogger } from './log.js';
import { VfioUserServer } from './server.js';
import { offerCapabilities, type ServerOffer } from './session/negotiate.js';

/** The host IOMMU backend for --iommu (and the pre-opened host fds), opened; iommu/select.ts decides. */
async function createIommu(opts: CliOptions, log: Logger): Promise<IommuBackend> {
  return await createIommuBackend(opts.iommu, { hostFds: opts.hostFds, device: opts.device, log });
}

/** The device; a passthrough device takes its host device fd from the IOMMU backend. */
function makeDevice(opts: CliOptions, iommu: IommuBackend, log: Logger): VfioUserDevice {
  return createDevice(opts.device.name, {
    ...opts.device.params,
    iommu,
    log: log.child({ device: opts.device.name }),
  });
}

/** The VERSION capabilities object exactly as it goes on the wire (snake_case keys). */
function wireCapabilities(offer: Readonly<ServerOffer>): Record<string, unknown> {
  const bytes = encodeCapabilities(offerCapabilities(offer));
  const json = JSON.parse(new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(0)))) as {
    capabilities: Record<string, unknown>;
  };
  return json.capabilities;
}

/**
 * What the server advertises: it is started on a private temporary socket (so the IOMMU backend's facts shape
 * pgsizes and max_dma_maps exactly as they would for a client) and closed again.
 */
async function printCapabilities(
  opts: CliOptions,
  device: VfioUserDevice,
  iommu: IommuBackend,
  log: Logger,
): Promise<void> {
  const quiet = log.child({}, { level: 'warn' });
  const dir = mkdtempSync(join(tmpdir(), 'vfio-user-caps-'));
  const server = new VfioUserServer({ socketPath: join(dir, 'probe.sock'), device, iommu, logger: quiet });
  try {
    await server.start();
    const offer = server.capabilities;
    if (!offer) throw new Error('the server reported no capabilities');
    const out = {
      type: 'vfio-user',
      version: { major: PROTOCOL_VERSION.major, minor: PROTOCOL_VERSION.minor },
      capabilities: wireCapabilities(offer),
      // twin_socket is only enabled for a client that offers it (QEMU does not); the rest is always sent.
      device: {
        name: opts.device.name,
        flags: device.flags,
        regions: device.numRegions,
        irqs: device.numIrqs,
      },
      iommu: server.mirror.backend.name,
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

class DeviceOptionError extends Error {}

/** Opens the IOMMU backend, then builds the device (which may take its host device from the backend). */
async function setUp(
  opts: CliOptions,
  log: Logger,
): Promise<{ iommu: IommuBackend; device: VfioUserDevice }> {
  const iommu = await createIommu(opts, log);
  try {
    return { iommu, device: makeDevice(opts, iommu, log) };
  } catch (err) {
    await iommu.close().catch(() => {});
    throw new DeviceOptionError((err as Error).message);
  }
}

/**
 * A device factory refusing its options is a usage error (exit 2: the user must fix the command line); a host
 * IOMMU that cannot be set up is a runtime error (exit 1).
 */
function reportSetUpError(err: unknown, log: Logger): number {
  if (err instanceof DeviceOptionError) {
    process.stderr.write(`vfio-user-server: --device: ${err.message}\n`);
    return 2;
  }
  log.fatal({ err }, `cannot set up the host IOMMU: ${(err as Error).message}`);
  return 1;
}

/** Everything worth a line at exit. */
function counters(server: VfioUserServer, device: VfioUserDevice): Record<string, unknown> {
  const out: Record<string, unknown> = {
    stats: server.stats,
    dma: server.dma.snapshot(),
    iommu: server.mirror.stats,
    irq: server.irq.stats,
  };
  const ds = (device as { stats?: unknown }).stats;
  if (ds && typeof ds === 'object') out.device = ds;
  return out;
}

async function serve(opts: CliOptions, log: Logger): Promise<number> {
  // Signals are hooked before anything can take time, so a SIGTERM during start-up still shuts down cleanly.
  let signalled: ((sig: string) => void) | undefined;
  let pending: string | undefined;
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal: sig }, 'second signal during shutdown: exiting now');
      process.exit(1);
    }
    if (signalled) signalled(sig);
    else pending = sig;
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let iommu: IommuBackend;
  let device: VfioUserDevice;
  try {
    ({ iommu, device } = await setUp(opts, log));
  } catch (err) {
    return reportSetUpError(err, log);
  }
  const server = new VfioUserServer({ socketPath: opts.socketPath, fd: opts.fd, device, iommu, logger: log });
  try {
    await server.start();
  } catch (err) {
    log.fatal({ err }, 'cannot start the server');
    await server.close().catch(() => {});
    return 1;
  }
  log.info(
    {
      socket: opts.socketPath ?? `fd:${opts.fd}${opts.socketActivated ? ' (systemd)' : ''}`,
      device: opts.device.name,
      iommu: iommu.name,
      pid: process.pid,
    },
    'ready',
  );
  const sig = await new Promise<string>((resolve) => {
    if (pending) resolve(pending);
    else signalled = resolve;
  });
  log.info({ signal: sig }, 'shutting down');
  try {
    await server.close();
  } catch (err) {
    log.error({ err, ...counters(server, device) }, 'error during shutdown');
    return 1;
  }
  log.info(counters(server, device), 'stopped');
  return 0;
}

async function main(argv: string[]): Promise<number> {
  let opts: CliOptions;
  try {
    opts = parseCli(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`vfio-user-server: ${e.message}\n\n${usage(deviceNames())}`);
      return 2;
    }
    throw e;
  }
  if (opts.help) {
    process.stdout.write(usage(deviceNames()));
    return 0;
  }
  const log = createLogger({
    level: opts.logLevel,
    pretty: opts.logFormat === undefined ? undefined : opts.logFormat === 'pretty',
  });
  if (!deviceNames().includes(opts.device.name)) {
    process.stderr.write(
      `vfio-user-server: unknown device '${opts.device.name}' (known: ${deviceNames().join(', ')})\n\n${usage(deviceNames())}`,
    );
    return 2;
  }
  try {
    // Impossible combinations (--iommu vfio for an emulated device...) are usage errors, found before any set-up.
    resolveIommuChoice(opts.iommu, { hostFds: opts.hostFds, device: opts.device });
  } catch (e) {
    process.stderr.write(`vfio-user-server: ${(e as Error).message}\n`);
    return 2;
  }
  try {
    if (opts.printCapabilities) {
      let parts: { iommu: IommuBackend; device: VfioUserDevice };
      try {
        parts = await setUp(opts, log);
      } catch (err) {
        return reportSetUpError(err, log);
      }
      await printCapabilities(opts, parts.device, parts.iommu, log);
      return 0;
    }
    return await serve(opts, log);
  } catch (err) {
    log.fatal({ err }, (err as Error).message ?? String(err));
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Nothing else should keep the process alive once main is done; exit explicitly in case a handle leaked.
    setImmediate(() => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(
      `vfio-user-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
