// Command-line parsing of `vfio-user-server` (cli.ts is the entry point). Kept apart from cli.ts so tests can
// parse argument vectors without starting a server. Conventions (vfio-user spec appendix, modelled on
// vhost-user backends): `--socket-path PATH` or `--fd N`, mutually exclusive; systemd socket activation
// (LISTEN_FDS=1, LISTEN_PID = us) stands for `--fd 3`; `--print-capabilities` prints JSON and exits.
import { parseArgs } from 'node:util';
import { IOMMU_CHOICES, type IommuChoice } from './iommu/select.js';
import { LOG_LEVELS, type LogLevel } from './log.js';

/** One line about a device for --help: its name and options. */
export interface DeviceHelp {
  name: string;
  description?: string;
  options: string[];
}

/** The short usage printed after a usage error. */
export const SHORT_USAGE = `Usage: vfio-user-server (--socket-path PATH | --fd N) [--device SPEC] [options]
Run 'vfio-user-server --help' for every option.
`;

export function usage(devices: readonly DeviceHelp[]): string {
  const deviceLines = devices
    .map((d) =>
      [
        `    ${d.name}${d.description ? ` - ${d.description}` : ''}`,
        ...d.options.map((o) => `        ${o}`),
      ].join('\n'),
    )
    .join('\n');
  return `Usage: vfio-user-server (--socket-path PATH | --fd N) [options]

  --socket-path PATH     listen on a new UNIX socket at PATH (mode 0600; a stale socket file is replaced)
  --fd N                 serve on an inherited listening socket fd (also: systemd LISTEN_FDS=1 -> fd 3)
  --device SPEC          NAME[,key=value...] (default edu). NAME is a built-in device, a module path
                         (./mine.js: its default export is defineDevice({...})) or an installed package
  --iommu MODE           host IOMMU mirror: ${IOMMU_CHOICES.join(' | ')} (default none)
  --iommufd-fd N, --vfio-container-fd N, --vfio-group-fd N, --vfio-device-fd N
                         pre-opened host fds handed over by a management layer
  --log-level LEVEL      ${LOG_LEVELS.join(' | ')} (default info)
  --version-timeout-ms N disconnect a client that has not sent VERSION after N ms (default 5000; 0: never)
  --log-format FMT       json | pretty (default: pretty on a terminal, json otherwise)
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics (and /healthz); off by default
  --control-socket PATH  a control socket (mode 0600): stats, dma, irqs, session, log-level, trace, migration
                         (client: vfio-user-ctl PATH COMMAND)
  --record FILE          record every message both ways to FILE (decode with vfio-user-trace FILE)
  --print-capabilities   print what this server advertises in VERSION, as JSON, and exit (only --device and
                         --iommu are read; other options are ignored)
  --version              print the version and exit
  -h, --help             this text

Built-in devices and their options:
${deviceLines}

Logs go to stderr; SIGTERM or SIGINT stops the server, removes the socket and logs its counters; SIGUSR1 logs
the counters and goes on. Under systemd (NOTIFY_SOCKET) it reports READY=1 once listening, STATUS= and STOPPING=1.
SIGUSR2 hands the running device over to a new process started with the same command line (docs/handover.md).
Exit status: 0 after a clean shutdown, 1 on a runtime error, 2 on a usage error.
`;
}

/** A bad command line: the CLI prints the message and the usage, and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface DeviceSpec {
  name: string;
  params: Record<string, string>;
}

export interface CliOptions {
  socketPath?: string;
  fd?: number;
  /** True when `fd` came from systemd's LISTEN_FDS. */
  socketActivated: boolean;
  device: DeviceSpec;
  iommu: IommuChoice;
  hostFds: { iommufd?: number; container?: number; group?: number; device?: number };
  logLevel: LogLevel;
  logFormat?: 'json' | 'pretty';
  printCapabilities: boolean;
  help: boolean;
  version: boolean;
  /** --metrics HOST:PORT */
  metrics?: { host: string; port: number };
  controlSocket?: string;
  record?: string;
  /** --version-timeout-ms (undefined: the server's default). */
  versionTimeoutMs?: number;
}

/** `HOST:PORT` (IPv6 as `[::1]:9464`) -> { host, port }. */
export function parseHostPort(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(spec);
  if (!m) throw new UsageError(`--metrics: expected HOST:PORT (e.g. 127.0.0.1:9464), not '${spec}'`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--metrics: port ${port} out of range`);
  return { host: (m[1] ?? m[2])!, port };
}

function intArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw new UsageError(`--${name} takes a non-negative integer, not '${v}'`);
  return Number(v);
}

/** `edu` or `edu,dmaDelayMs=100` -> { name, params }. */
export function parseDeviceSpec(spec: string): DeviceSpec {
  const [name, ...rest] = spec.split(',');
  if (!name) throw new UsageError(`--device: empty device name in '${spec}'`);
  const params: Record<string, string> = {};
  for (const kv of rest) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--device: expected key=value, got '${kv}'`);
    const key = kv.slice(0, eq);
    // Device options are spread into an object: never let a key reach the prototype.
    if (
      key === '__proto__' ||
      key === 'constructor' ||
      key === 'prototype' ||
      key === 'log' ||
      key === 'iommu'
    ) {
      throw new UsageError(`--device: option '${key}' is not allowed`);
    }
    params[key] = kv.slice(eq + 1);
  }
  return { name, params };
}

/** Parses argv (without node and the script). Throws UsageError for anything the user must fix. */
export function parseCli(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  pid = process.pid,
): CliOptions {
  let values: Record<string, string | boolean | undefined>;
  // --print-capabilities ignores every other option (the vfio-user/vhost-user backend program conventions) except
  // the two that change the answer: --device and --iommu (with its host fds).
  const capsOnly = argv.includes('--print-capabilities');
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: !capsOnly,
      allowPositionals: false,
      options: {
        'socket-path': { type: 'string' },
        fd: { type: 'string' },
        device: { type: 'string', default: 'edu' },
        iommu: { type: 'string', default: 'none' },
        'iommufd-fd': { type: 'string' },
        'vfio-container-fd': { type: 'string' },
        'vfio-group-fd': { type: 'string' },
        'vfio-device-fd': { type: 'string' },
        'log-level': { type: 'string', default: 'info' },
        'log-format': { type: 'string' },
        'version-timeout-ms': { type: 'string' },
        'print-capabilities': { type: 'boolean', default: false },
        metrics: { type: 'string' },
        'control-socket': { type: 'string' },
        record: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', default: false },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (capsOnly) {
    const kept: Record<string, string | boolean | undefined> = {
      'print-capabilities': true,
      'log-level': 'warn',
    };
    for (const k of [
      'device',
      'iommu',
      'iommufd-fd',
      'vfio-container-fd',
      'vfio-group-fd',
      'vfio-device-fd',
    ]) {
      if (typeof values[k] === 'string') kept[k] = values[k];
    }
    kept.device ??= 'edu';
    kept.iommu ??= 'none';
    values = kept;
  }
  const socketPath = values['socket-path'] as string | undefined;
  if (socketPath === '') throw new UsageError('--socket-path must not be empty');
  let fd = intArg('fd', values.fd as string | undefined);
  let socketActivated = false;
  // systemd socket activation: LISTEN_FDS=1 with LISTEN_PID = us hands over fd 3 (SD_LISTEN_FDS_START).
  if (fd === undefined && socketPath === undefined && env.LISTEN_FDS) {
    if (!env.LISTEN_PID || Number(env.LISTEN_PID) === pid) {
      if (env.LISTEN_FDS !== '1')
        throw new UsageError(`LISTEN_FDS=${env.LISTEN_FDS}: exactly one socket is supported`);
      fd = 3;
      socketActivated = true;
    }
  }
  const help = values.help === true;
  const version = values.version === true;
  const printCapabilities = values['print-capabilities'] === true;
  if (socketPath !== undefined && fd !== undefined)
    throw new UsageError('--socket-path and --fd are exclusive');
  // A hand-over successor (docs/handover.md) gets its listener from the running server, whatever the command line
  // (or systemd's LISTEN_FDS, which named that server) said.
  const successor = env.VFIO_USER_HANDOVER_FD !== undefined;
  if (!help && !version && !printCapabilities && !successor && socketPath === undefined && fd === undefined) {
    throw new UsageError('one of --socket-path or --fd is required');
  }
  const iommu = values.iommu as string;
  if (!(IOMMU_CHOICES as readonly string[]).includes(iommu)) {
    throw new UsageError(`--iommu must be one of ${IOMMU_CHOICES.join(', ')}, not '${iommu}'`);
  }
  const logLevel = values['log-level'] as string;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, not '${logLevel}'`);
  }
  const logFormat = values['log-format'] as string | undefined;
  if (logFormat !== undefined && logFormat !== 'json' && logFormat !== 'pretty') {
    throw new UsageError(`--log-format must be json or pretty, not '${logFormat}'`);
  }
  const metrics = values.metrics as string | undefined;
  const controlSocket = values['control-socket'] as string | undefined;
  const record = values.record as string | undefined;
  if (controlSocket === '') throw new UsageError('--control-socket must not be empty');
  if (record === '') throw new UsageError('--record must not be empty');
  if (controlSocket !== undefined && controlSocket === socketPath)
    throw new UsageError('--control-socket must differ from --socket-path');
  return {
    socketPath,
    fd,
    metrics: metrics === undefined ? undefined : parseHostPort(metrics),
    controlSocket,
    record,
    socketActivated,
    device: parseDeviceSpec(values.device as string),
    iommu: iommu as IommuChoice,
    hostFds: {
      iommufd: intArg('iommufd-fd', values['iommufd-fd'] as string | undefined),
      container: intArg('vfio-container-fd', values['vfio-container-fd'] as string | undefined),
      group: intArg('vfio-group-fd', values['vfio-group-fd'] as string | undefined),
      device: intArg('vfio-device-fd', values['vfio-device-fd'] as string | undefined),
    },
    logLevel: logLevel as LogLevel,
    logFormat: logFormat as 'json' | 'pretty' | undefined,
    printCapabilities,
    help,
    version,
    versionTimeoutMs: intArg('version-timeout-ms', values['version-timeout-ms'] as string | undefined),
  };
}
