// `vfio-user-server`: the device process's command line (bin/vfio-user-server.js imports this module, which runs
// at once). Backend-program conventions of the vfio-user spec: `--socket-path PATH` or `--fd N` (exclusive;
// systemd LISTEN_FDS too), no daemonizing, fds 0/1/2 keep their meaning (stdout only for --help and
// --print-capabilities, logs on stderr), SIGTERM/SIGINT shut down cleanly (the socket file is removed and the
// counters are logged). Option parsing lives in cli-options.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { encodeCapabilities, PROTOCOL_VERSION } from 'vfio-user-protocol';
import { type CliOptions, type DeviceHelp, parseCli, SHORT_USAGE, UsageError, usage } from './cli-options.js';
import type { VfioUserDevice } from './device.js';
import {
  builtinDevice,
  type DeviceDefinition,
  type DeviceEnvironment,
  DeviceOptionError,
  describeOptions,
  deviceNames,
  instantiateDevice,
  loadDeviceDefinition,
  parseDeviceOptions,
} from './devices/index.js';
import { Channel } from './handover/channel.js';
import { cancelHandover, handOver } from './handover/source.js';
import { HANDOVER_FD_ENV } from './handover/successor.js';
import { requestHost, takeOver } from './handover/target.js';
import type { IommuBackend } from './iommu/backend.js';
import { isHostDeviceBackend } from './iommu/host-device.js';
import { adoptIommuBackend, createIommuBackend, resolveIommuChoice } from './iommu/select.js';
import { createLogger } from './log.js';
import { ControlServer } from './ops/control.js';
import { collectCounters } from './ops/counters.js';
import { ServerMetrics, serveMetrics } from './ops/metrics.js';
import { SystemdNotifier } from './ops/notify.js';
import { Tracing } from './ops/tracing.js';
import { VfioUserServer } from './server.js';
import { offerCapabilities, type ServerOffer } from './session/negotiate.js';

/** The host IOMMU backend for --iommu (and the pre-opened host fds), opened; iommu/select.ts decides. */
async function createIommu(opts: CliOptions, log: Logger): Promise<IommuBackend> {
  return await createIommuBackend(opts.iommu, { hostFds: opts.hostFds, device: opts.device, log });
}

const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/** The built-in devices and their options, for --help. */
function builtinHelp(): DeviceHelp[] {
  return deviceNames().map((name) => {
    const d = builtinDevice(name)!;
    return { name, description: d.description, options: describeOptions(d.options) };
  });
}

/** An error's one-line reason (the first line of its message). */
function reason(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

/** A runtime error: one line naming what failed and why; the stack only at debug level. */
function fatal(log: Logger, what: string, err: unknown): void {
  log.debug({ err }, what);
  log.fatal(`${what}: ${reason(err)}`);
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
  def: DeviceDefinition,
  device: VfioUserDevice,
  iommu: IommuBackend,
  log: Logger,
): Promise<void> {
  const quiet = log.child({}, { level: 'warn' });
  const dir = mkdtempSync(join(tmpdir(), 'vfio-user-caps-'));
  const server = new VfioUserServer({ socketPath: join(dir, 'probe.sock'), device, iommu, logger: quiet });
  const name = def.name;
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
        name,
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

/** A failure while creating the device (not while opening the host IOMMU). */
class DeviceCreateError extends Error {
  constructor(override readonly cause: unknown) {
    super(reason(cause));
  }
}

/**
 * Opens the IOMMU backend, then creates the device (a passthrough device takes its host device from the
 * backend; a factory gets the logger, so device authors never set one up).
 */
async function setUp(
  opts: CliOptions,
  def: DeviceDefinition,
  log: Logger,
  adopted?: IommuBackend,
): Promise<{ iommu: IommuBackend; device: VfioUserDevice }> {
  const iommu = adopted ?? (await createIommu(opts, log));
  try {
    const env: DeviceEnvironment = { log: log.child({ device: def.name }) };
    // The server hands a passthrough device the host device its VFIO backend opened.
    if (isHostDeviceBackend(iommu)) env.hostDevice = iommu.hostDevice();
    const device = await instantiateDevice(def, opts.device.params, env);
    return { iommu, device };
  } catch (err) {
    // An adopted backend (hand-over successor) still belongs to the running server: never torn down here.
    if (!adopted) await iommu.close().catch(() => {});
    throw new DeviceCreateError(err);
  }
}

/**
 * A device factory refusing its options (DeviceOptionError) is a usage error (exit 2: the user must fix the
 * command line); a device that fails to come up, or a host IOMMU that cannot be set up, is a runtime error (1).
 */
function reportSetUpError(err: unknown, opts: CliOptions, log: Logger): number {
  if (err instanceof DeviceCreateError) {
    if (err.cause instanceof DeviceOptionError) {
      process.stderr.write(`vfio-user-server: --device ${opts.device.name}: ${err.message}\n`);
      return 2;
    }
    fatal(log, `cannot create device ${opts.device.name}`, err.cause);
    return 1;
  }
  fatal(log, 'cannot set up the host IOMMU', err);
  return 1;
}

const counters = collectCounters;

/** The operations side of a running server: metrics, control socket, tracing, systemd notifications. */
interface Ops {
  tracing: Tracing;
  notifier: SystemdNotifier;
  metrics?: ServerMetrics;
  metricsHttp?: { close(): Promise<void> };
  control?: ControlServer;
}

/** Stops whatever of `ops` was started; never throws. */
async function closeOps(ops: Ops, log: Logger): Promise<void> {
  const steps: [string, (() => Promise<void>) | undefined][] = [
    ['control socket', ops.control && (() => ops.control!.close())],
    ['metrics server', ops.metricsHttp && (() => ops.metricsHttp!.close())],
    ['metrics', ops.metrics && (() => ops.metrics!.close())],
    ['tracing', () => ops.tracing.stop()],
  ];
  for (const [what, fn] of steps) {
    try {
      await fn?.();
    } catch (err) {
      log.warn({ err }, `closing the ${what} failed`);
    }
  }
}

/** What STATUS= says: the client state. */
function clientStatus(server: VfioUserServer): string {
  const s = server.session;
  const waiting = server.clients.waiting ? `, ${server.clients.waiting} waiting` : '';
  if (!s) return `listening, no client${waiting}`;
  return `serving client ${s.session}${s.peer ? ` (pid ${s.peer.pid})` : ''}${waiting}`;
}

async function serve(opts: CliOptions, def: DeviceDefinition, log: Logger): Promise<number> {
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
  // SIGUSR2: hand the device over to a new process (docs/handover.md). Hooked now: its default action kills.
  let onHandover: (() => void) | undefined;
  process.on('SIGUSR2', () => {
    if (onHandover) onHandover();
    else log.warn('SIGUSR2 (hand-over) before the server is ready: ignored');
  });
  // A successor of a hand-over: the channel to the running server is inherited (successor.ts).
  const channel = process.env[HANDOVER_FD_ENV];
  delete process.env[HANDOVER_FD_ENV];
  const notifier = new SystemdNotifier(process.env, log);

  // A successor first takes the running server's host IOMMU backend (its fds, adopted without any host call),
  // so its device is built around the same host device and entries.
  let chan: Channel | undefined;
  let adopted: IommuBackend | undefined;
  if (channel !== undefined) {
    try {
      chan = new Channel(Number(channel));
      const host = await requestHost(chan);
      adopted = adoptIommuBackend(host.backend, host.fds, host.meta, log);
    } catch (err) {
      log.fatal({ err }, `hand-over: not taking over: ${(err as Error).message}`);
      process.exit(1);
    }
  }
  let iommu: IommuBackend;
  let device: VfioUserDevice;
  try {
    ({ iommu, device } = await setUp(opts, def, log, adopted));
  } catch (err) {
    if (adopted) {
      // The host side still belongs to the running server: exit without closing anything.
      fatal(log, 'hand-over: not taking over: cannot build the device', err);
      process.exit(1);
    }
    return reportSetUpError(err, opts, log);
  }
  // A successor adopts its listener from the running server; the fd given here is never opened then.
  const listen =
    channel !== undefined && opts.socketPath === undefined && opts.fd === undefined
      ? { fd: Number(channel) }
      : { socketPath: opts.socketPath, fd: opts.fd };
  const server = new VfioUserServer({
    ...listen,
    device,
    deviceName: def.name,
    iommu,
    logger: log,
    ...(opts.versionTimeoutMs !== undefined && { versionTimeoutMs: opts.versionTimeoutMs }),
  });
  const where = opts.socketPath ?? `fd:${opts.fd}${opts.socketActivated ? ' (systemd)' : ''}`;
  const ops: Ops = { tracing: new Tracing(server, log.child({ module: 'trace' })), notifier };
  // Recording starts before serving, so the first client's VERSION is in the file.
  if (opts.record) {
    try {
      await ops.tracing.startRecord(opts.record);
    } catch (err) {
      fatal(log, `cannot record to ${opts.record}`, err);
      return 1;
    }
  }
  if (opts.metrics) ops.metrics = new ServerMetrics({ server, device, deviceName: def.name, socket: where });
  if (channel !== undefined) {
    try {
      await takeOver({
        channel: chan!,
        deviceName: def.name,
        device,
        server,
        log,
        // systemd must learn the new main process before the old one exits (NotifyAccess=all).
        beforeRunning: () => notifier.notify({ MAINPID: process.pid }),
      });
    } catch (err) {
      // Nothing may be torn down: the device, the sockets and the host mappings still belong to the running
      // server, which keeps serving.
      log.fatal({ err }, `hand-over: not taking over: ${(err as Error).message}`);
      process.exit(1);
    }
  } else {
    try {
      await server.start();
    } catch (err) {
      fatal(log, `cannot serve on ${where}`, err);
      await closeOps(ops, log);
      await server.close().catch(() => {});
      return 1;
    }
  }
  try {
    // A hand-over successor may find the previous process still holding the metrics port and control socket
    // for a moment: it retries while they are in use.
    await startOps(opts, ops, { server, device, deviceName: def.name, log }, channel !== undefined);
  } catch (err) {
    fatal(log, 'cannot start the operations endpoints', err);
    await closeOps(ops, log);
    await server.close().catch(() => {});
    return 1;
  }
  const onUsr1 = () => log.info(counters(server, device), 'counters');
  process.on('SIGUSR1', onUsr1);
  const updateStatus = () => notifier.status(clientStatus(server));
  server.on('connect', updateStatus);
  server.on('disconnect', updateStatus);
  // pino's base record already carries pid.
  log.info({ socket: where, device: def.name, iommu: iommu.name }, 'ready');
  // Everything listens: systemd may start the VMM now (MAINPID: a hand-over successor becomes the main process).
  notifier.ready(clientStatus(server));
  let sig = await new Promise<string>((resolve) => {
    if (pending) resolve(pending);
    else signalled = resolve;
    onHandover = () => {
      void handOver(server, device, { deviceName: def.name, log }).then((r) => {
        if (r.ok) resolve('handover');
      });
    };
  });
  process.off('SIGUSR1', onUsr1);
  if (sig !== 'handover') {
    // A signal during a hand-over: before GO the successor is killed (and reaped) and we shut down as usual;
    // after GO it already serves, and closing anything here would take the device away from under it.
    const ending = cancelHandover(`signal ${sig}`);
    if (ending) {
      log.info({ signal: sig }, 'hand-over in progress: ending it before shutting down');
      if ((await ending).ok) sig = 'handover';
    }
  }
  if (sig === 'handover') {
    // The successor serves everything now; closing anything here would take it away from under it. Only the
    // operations endpoints are ours alone: they are freed for the successor.
    await closeOps(ops, log);
    log.info(counters(server, device), 'handed over');
    return 0;
  }
  log.info({ signal: sig }, 'shutting down');
  notifier.stopping();
  await closeOps(ops, log);
  try {
    await server.close();
  } catch (err) {
    log.debug({ err }, 'error during shutdown');
    log.error(counters(server, device), `error during shutdown: ${reason(err)}`);
    return 1;
  }
  log.info(counters(server, device), 'stopped');
  return 0;
}

/** Starts the metrics endpoint and the control socket; `retryInUse`: retry EADDRINUSE for up to 10 s. */
async function startOps(
  opts: CliOptions,
  ops: Ops,
  ctx: { server: VfioUserServer; device: VfioUserDevice; deviceName: string; log: Logger },
  retryInUse: boolean,
): Promise<void> {
  const retry = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (let waited = 0; ; waited += 100) {
      try {
        return await fn();
      } catch (err) {
        if (!retryInUse || (err as { code?: string }).code !== 'EADDRINUSE' || waited >= 10_000) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  if (ops.metrics && opts.metrics) {
    const { host, port } = opts.metrics;
    await ops.metrics.start();
    const http = await retry(() => serveMetrics(ops.metrics!, host, port, ctx.log));
    ops.metricsHttp = http;
    ctx.log.info({ address: http.address.address, port: http.address.port }, 'metrics listening');
  }
  if (opts.controlSocket) {
    const control = new ControlServer({ ...ctx, tracing: ops.tracing });
    await retry(() => control.listen(opts.controlSocket!));
    ops.control = control;
    ctx.log.info({ path: opts.controlSocket }, 'control socket listening');
  }
}

function usageError(message: string): number {
  process.stderr.write(`vfio-user-server: ${message}\n${SHORT_USAGE}`);
  return 2;
}

async function main(argv: string[]): Promise<number> {
  let opts: CliOptions;
  try {
    opts = parseCli(argv);
  } catch (e) {
    if (e instanceof UsageError) return usageError(e.message);
    throw e;
  }
  if (opts.version) {
    process.stdout.write(`vfio-user-server ${VERSION}\n`);
    return 0;
  }
  if (opts.help) {
    process.stdout.write(usage(builtinHelp()));
    return 0;
  }
  const log = createLogger({
    level: opts.logLevel,
    pretty: opts.logFormat === undefined ? undefined : opts.logFormat === 'pretty',
  });
  // The device and its options are checked before anything is set up: a typo is a usage error (exit 2).
  let def: DeviceDefinition;
  try {
    def = await loadDeviceDefinition(opts.device.name);
    parseDeviceOptions(def.options, opts.device.params);
  } catch (e) {
    if (e instanceof DeviceOptionError) return usageError(`--device ${opts.device.name}: ${e.message}`);
    throw e;
  }
  try {
    // Impossible combinations (--iommu vfio for an emulated device...) are usage errors, found before any set-up.
    resolveIommuChoice(opts.iommu, { hostFds: opts.hostFds, device: opts.device });
  } catch (e) {
    return usageError(reason(e));
  }
  try {
    if (opts.printCapabilities) {
      let parts: { iommu: IommuBackend; device: VfioUserDevice };
      try {
        parts = await setUp(opts, def, log);
      } catch (err) {
        return reportSetUpError(err, opts, log);
      }
      await printCapabilities(def, parts.device, parts.iommu, log);
      return 0;
    }
    return await serve(opts, def, log);
  } catch (err) {
    fatal(log, 'failed', err);
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
