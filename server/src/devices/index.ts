// The device registry (built-in devices by name) and the loader for device modules (`--device ./mine.js`, or a
// package name). Every device is a DeviceDefinition (definition.ts): its declared options are checked the same
// way whether they come from the command line (strings) or from a caller.

import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type DeviceLogger, type HostDevice, silentLogger, type VfioUserDevice } from '../device.js';
import {
  type DeviceDefinition,
  type DeviceEnvironment,
  DeviceOptionError,
  defineDevice,
  isDeviceDefinition,
  parseDeviceOptions,
} from './definition.js';
import { createEdu } from './edu.js';
import { createNvme, NVME_MAX_QUEUES } from './nvme/index.js';
import { createVfioPci } from './vfio-pci.js';

const registry = new Map<string, DeviceDefinition>();

/** Register (or replace) a device definition under its name. */
export function registerDevice(def: DeviceDefinition): void {
  registry.set(def.name, def);
}

/** The registered device names, sorted. */
export function deviceNames(): string[] {
  return [...registry.keys()].sort();
}

/** The registered definition called `name`, if any. */
export function builtinDevice(name: string): DeviceDefinition | undefined {
  return registry.get(name);
}

/**
 * Create the registered device `name` (synchronous factories only, as the built-ins are). `opts` are its options
 * (strings as on the command line, or typed values); `log` and `hostDevice` are taken as the environment. Throws an
 * Error naming the known devices when there is no such device, and DeviceOptionError naming a bad option.
 */
export function createDevice(name: string, opts: Record<string, unknown> = {}): VfioUserDevice {
  const def = registry.get(name);
  if (!def) throw new Error(`unknown device '${name}' (known: ${deviceNames().join(', ')})`);
  const { log, hostDevice, ...rest } = opts;
  const env: DeviceEnvironment = { log: (log as DeviceLogger | undefined) ?? silentLogger };
  if (hostDevice) env.hostDevice = hostDevice as HostDevice;
  const dev = def.create(parseDeviceOptions(def.options, rest), env);
  if (dev instanceof Promise)
    throw new Error(`device '${name}' is created asynchronously: use instantiateDevice`);
  return dev;
}

/** Create a device from any definition: options checked against its schema, async factories awaited. */
export async function instantiateDevice(
  def: DeviceDefinition,
  opts: Readonly<Record<string, unknown>>,
  env: DeviceEnvironment,
): Promise<VfioUserDevice> {
  const values = parseDeviceOptions(def.options, opts);
  const dev = await def.create(values, env);
  if (!dev || typeof dev.regionRead !== 'function' || typeof dev.regionInfo !== 'function') {
    throw new Error(
      `device '${def.name}': create() did not return a device (a PciDevice or a VfioUserDevice)`,
    );
  }
  return dev;
}

/** Whether a --device name is a path to a module (rather than a built-in or a package name). */
export function isDevicePath(name: string): boolean {
  return name.startsWith('./') || name.startsWith('../') || isAbsolute(name) || /\.[cm]?js$/.test(name);
}

/**
 * The definition for a --device name: a built-in, a module path (relative to `cwd`), or an installed package
 * (resolved from `cwd`). The module's default export must be a definition (`export default defineDevice(...)`).
 * Throws DeviceOptionError with a one-line reason.
 */
export async function loadDeviceDefinition(name: string, cwd = process.cwd()): Promise<DeviceDefinition> {
  const builtin = registry.get(name);
  if (builtin && !isDevicePath(name)) return builtin;
  let url: string;
  if (isDevicePath(name)) {
    url = pathToFileURL(resolve(cwd, name)).href;
  } else {
    try {
      url = pathToFileURL(createRequire(resolve(cwd, 'package.json')).resolve(name)).href;
    } catch {
      throw new DeviceOptionError(
        `unknown device '${name}' (known: ${deviceNames().join(', ')}; no package '${name}' is installed here)`,
      );
    }
  }
  let mod: { default?: unknown };
  try {
    mod = (await import(url)) as { default?: unknown };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ERR_MODULE_NOT_FOUND' ? 'no such module' : (e.message ?? String(err)).split('\n')[0];
    throw new DeviceOptionError(`cannot load device module '${name}': ${why}`);
  }
  if (!isDeviceDefinition(mod.default)) {
    throw new DeviceOptionError(
      `'${name}' does not export a device: its default export must be defineDevice({ name, options, create })`,
    );
  }
  return mod.default;
}

registerDevice(
  defineDevice({
    name: 'edu',
    description: "QEMU's educational device (1234:11e8): factorial, DMA engine, interrupts",
    options: {
      dmaDelayMs: { type: 'number', min: 0, description: 'delay before a DMA transfer runs, ms (QEMU: 100)' },
      factDelayMs: { type: 'number', min: 0, description: 'delay before a factorial completes, ms' },
      dmaMask: { type: 'bigint', min: 0n, description: 'AND-mask applied to DMA addresses' },
      name: { type: 'string', description: 'a name for logs and memfds' },
    },
    create: (o, env) => createEdu({ ...o, log: env.log }),
  }),
);

registerDevice(
  defineDevice({
    name: 'nvme',
    description: 'an NVMe SSD (1b36:0010) with one namespace over a raw image file (see docs/nvme.md)',
    options: {
      image: { type: 'string', required: true, description: 'raw image file; created sparse when missing' },
      size: {
        type: 'string',
        description:
          'namespace size in bytes, K/M/G/T suffixes (default: the image size; grows a shorter image)',
      },
      serial: { type: 'string', description: 'serial number (20 characters at most)' },
      queues: { type: 'integer', min: 1, max: NVME_MAX_QUEUES, description: 'I/O queue pairs (default 4)' },
      blockSize: { type: 'integer', min: 512, max: 4096, description: 'logical block size: 512 or 4096' },
      shadowDoorbells: { type: 'boolean', description: 'offer Doorbell Buffer Config (default false)' },
      name: { type: 'string', description: 'a name for logs' },
    },
    create: (o, env) =>
      createNvme({
        image: o.image,
        size: o.size === undefined ? undefined : parseSize(o.size),
        serial: o.serial,
        queues: o.queues,
        blockSize: o.blockSize,
        shadowDoorbells: o.shadowDoorbells,
        name: o.name,
        log: env.log,
      }),
  }),
);

/** Bytes, with an optional K/M/G/T suffix (powers of 1024). */
function parseSize(v: string): bigint {
  const m = /^([0-9]+)([KMGT]?)$/i.exec(v.trim());
  if (!m)
    throw new DeviceOptionError(`option size: expected bytes with an optional K/M/G/T suffix, got '${v}'`);
  const shift = { '': 0n, K: 10n, M: 20n, G: 30n, T: 40n }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return BigInt(m[1]!) << shift;
}

// Host device passthrough: needs the host device the VFIO backend opened (--iommu vfio|iommufd|auto).
registerDevice(
  defineDevice({
    name: 'vfio-pci',
    description: 'a host PCI device passed through with VFIO',
    options: { host: { type: 'string', description: 'the host device, e.g. 0000:00:05.0' } },
    create: (o, env) => createVfioPci({ ...o, hostDevice: env.hostDevice, log: env.log }),
  }),
);

export * from './definition.js';
export { createEdu, Edu, type EduDevice, type EduOptions, type EduStats } from './edu.js';
export {
  createNvme,
  NvmeController,
  type NvmeDevice,
  type NvmeOptions,
  type NvmeStats,
} from './nvme/index.js';
