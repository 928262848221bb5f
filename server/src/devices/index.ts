// The device registry: `createDevice('edu', opts)` for the CLI and tests. Options arrive loosely typed (from
// the command line they may be strings), so each factory parses its own.
import type { DeviceLogger, VfioUserDevice } from '../device.js';
import { createEdu, type EduOptions } from './edu.js';
import { createVfioPci } from './vfio-pci.js';

export type DeviceOptions = Record<string, unknown>;
export type DeviceFactory = (opts: DeviceOptions) => VfioUserDevice;

const registry = new Map<string, DeviceFactory>();

/** Register (or replace) a device factory under `name`. */
export function registerDevice(name: string, factory: DeviceFactory): void {
  registry.set(name, factory);
}

/** The registered device names, sorted. */
export function deviceNames(): string[] {
  return [...registry.keys()].sort();
}

/** Create device `name`; throws an Error naming the known devices when there is no such device. */
export function createDevice(name: string, opts: DeviceOptions = {}): VfioUserDevice {
  const factory = registry.get(name);
  if (!factory) throw new Error(`unknown device '${name}' (known: ${deviceNames().join(', ')})`);
  return factory(opts);
}

function optNumber(opts: DeviceOptions, key: string): number | undefined {
  const v = opts[key];
  if (v === undefined) return undefined;
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`option ${key}: expected a non-negative number`);
  return n;
}

function optBigint(opts: DeviceOptions, key: string): bigint | undefined {
  const v = opts[key];
  if (v === undefined) return undefined;
  try {
    if (typeof v === 'bigint' || typeof v === 'number' || typeof v === 'string') return BigInt(v);
  } catch {
    // fall through
  }
  throw new Error(`option ${key}: expected an integer`);
}

registerDevice('edu', (opts) => {
  const eduOpts: EduOptions = {
    dmaDelayMs: optNumber(opts, 'dmaDelayMs'),
    factDelayMs: optNumber(opts, 'factDelayMs'),
    dmaMask: optBigint(opts, 'dmaMask'),
  };
  if (typeof opts.name === 'string') eduOpts.name = opts.name;
  if (opts.log && typeof opts.log === 'object') eduOpts.log = opts.log as DeviceLogger;
  return createEdu(eduOpts);
});

// Host device passthrough: needs the VFIO backend object as `iommu` (see iommu/select.ts).
registerDevice('vfio-pci', (opts) => createVfioPci(opts));

export { createEdu, Edu, type EduDevice, type EduOptions, type EduStats } from './edu.js';
