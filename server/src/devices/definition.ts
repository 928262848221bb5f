// Device definitions: what a device module exports so that `vfio-user-server --device ./mine.js[,key=value...]`
// (or a package name, or a built-in name) can create it. A definition names the device, declares its options
// (the schema is how the command line checks and converts `key=value` strings, and how --help lists them), and
// creates the device from the checked values.
import type { DeviceLogger, HostDevice, VfioUserDevice } from '../device.js';

/** The type of one device option; command-line strings are converted to it. */
export type DeviceOptionType = 'string' | 'integer' | 'number' | 'boolean' | 'bigint';

/** One declared device option. */
export interface DeviceOptionSpec {
  /** How the value is converted and checked (`integer` takes decimal or 0x hex; `boolean` takes true/false/1/0). */
  type: DeviceOptionType;
  /** One line for `--help` and error messages. */
  description?: string;
  /** The value when the option is not given (omit it: the option is undefined unless `required`). */
  default?: string | number | boolean | bigint;
  /** Refuse a command line without this option. */
  required?: boolean;
  /** Smallest accepted value (integer, number, bigint). */
  min?: number | bigint;
  /** Largest accepted value (integer, number, bigint). */
  max?: number | bigint;
  /** The accepted values (string options). */
  choices?: readonly string[];
}

/** A device's declared options, by name. */
export type DeviceOptionSchema = Readonly<Record<string, DeviceOptionSpec>>;

type ValueOf<T extends DeviceOptionType> = T extends 'string'
  ? string
  : T extends 'integer' | 'number'
    ? number
    : T extends 'boolean'
      ? boolean
      : bigint;

/** The checked option values a definition's `create` receives: typed from the schema. */
export type DeviceOptionValues<S extends DeviceOptionSchema> = {
  [K in keyof S]: S[K] extends { required: true } | { default: unknown }
    ? ValueOf<S[K]['type']>
    : ValueOf<S[K]['type']> | undefined;
};

/** What the server gives a device factory besides its options. */
export interface DeviceEnvironment {
  /** The device's logger (the server's, with `device: <name>`): log through it, never install your own. */
  log: DeviceLogger;
  /** The host device the server's VFIO IOMMU backend opened (`--iommu`); only passthrough devices need it. */
  hostDevice?: HostDevice;
}

/** A device the server can create by name: `export default defineDevice({...})` in a device module. */
export interface DeviceDefinition<S extends DeviceOptionSchema = DeviceOptionSchema> {
  /** The device's name, for logs and `--print-capabilities`. */
  name: string;
  /** One line for `--help`. */
  description?: string;
  /** The options `--device NAME,key=value...` accepts; any other key is refused. */
  options: S;
  /** Creates the device from checked option values; may be async (e.g. to open a backing file). */
  create(options: DeviceOptionValues<S>, env: DeviceEnvironment): VfioUserDevice | Promise<VfioUserDevice>;
}

/** A device option the command line (or a caller) got wrong: the message names the option. */
export class DeviceOptionError extends Error {
  override name = 'DeviceOptionError';
}

/**
 * Declares a device: checks the definition's shape and returns it unchanged (typed, so `create` sees its option
 * values with the schema's types). A device module's default export.
 */
export function defineDevice<const S extends DeviceOptionSchema>(
  def: DeviceDefinition<S>,
): DeviceDefinition<S> {
  if (!isDeviceDefinition(def)) throw new TypeError('defineDevice: expected { name, options, create }');
  for (const [key, spec] of Object.entries(def.options)) {
    if (!OPTION_TYPES.includes(spec.type)) throw new TypeError(`defineDevice: option ${key}: unknown type`);
    if (FORBIDDEN_KEYS.has(key)) throw new TypeError(`defineDevice: option name '${key}' is reserved`);
  }
  return def;
}

const OPTION_TYPES: readonly DeviceOptionType[] = ['string', 'integer', 'number', 'boolean', 'bigint'];
/** Keys that never reach an options object (prototype pollution) or that name the environment. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype', 'log', 'hostDevice']);

/** Whether `v` looks like a device definition (a module's default export is checked with this). */
export function isDeviceDefinition(v: unknown): v is DeviceDefinition {
  if (typeof v !== 'object' || v === null) return false;
  const d = v as Record<string, unknown>;
  return (
    typeof d.name === 'string' &&
    typeof d.create === 'function' &&
    typeof d.options === 'object' &&
    d.options !== null
  );
}

function convert(key: string, spec: DeviceOptionSpec, raw: unknown): string | number | boolean | bigint {
  const bad = (what: string): never => {
    throw new DeviceOptionError(`option ${key}: expected ${what}, got '${String(raw)}'`);
  };
  let v: string | number | boolean | bigint;
  switch (spec.type) {
    case 'string':
      if (typeof raw !== 'string') bad('a string');
      v = raw as string;
      if (spec.choices && !spec.choices.includes(v)) bad(`one of ${spec.choices.join(', ')}`);
      return v;
    case 'boolean':
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1' || raw === 'on' || raw === 'yes') return true;
      if (raw === 'false' || raw === '0' || raw === 'off' || raw === 'no') return false;
      return bad('true or false');
    case 'integer':
      if (typeof raw === 'number') v = raw;
      else if (typeof raw === 'bigint') v = Number(raw);
      else if (typeof raw === 'string' && /^(0x[0-9a-f]+|-?\d+)$/i.test(raw)) v = Number(raw);
      else return bad('an integer');
      if (!Number.isSafeInteger(v)) bad('an integer');
      break;
    case 'number':
      v =
        typeof raw === 'number'
          ? raw
          : typeof raw === 'string' && raw.trim() !== ''
            ? Number(raw)
            : Number.NaN;
      if (!Number.isFinite(v)) bad('a number');
      break;
    case 'bigint':
      try {
        if (typeof raw !== 'bigint' && typeof raw !== 'number' && typeof raw !== 'string') throw new Error();
        v = BigInt(raw);
      } catch {
        return bad('an integer');
      }
      break;
  }
  if (spec.min !== undefined && v < spec.min) bad(`a value >= ${spec.min}`);
  if (spec.max !== undefined && v > spec.max) bad(`a value <= ${spec.max}`);
  return v;
}

/**
 * Checks and converts raw option values (strings from the command line, or typed values from a caller) against
 * a schema: unknown keys, missing required options and bad values throw DeviceOptionError naming the option.
 */
export function parseDeviceOptions<S extends DeviceOptionSchema>(
  schema: S,
  raw: Readonly<Record<string, unknown>>,
): DeviceOptionValues<S> {
  const out: Record<string, unknown> = Object.create(null);
  for (const key of Object.keys(raw)) {
    if (!Object.hasOwn(schema, key)) {
      const known = Object.keys(schema);
      throw new DeviceOptionError(
        `unknown option '${key}' (${known.length ? `known: ${known.join(', ')}` : 'the device takes no options'})`,
      );
    }
  }
  for (const [key, spec] of Object.entries(schema)) {
    const given = Object.hasOwn(raw, key) ? raw[key] : undefined;
    if (given === undefined) {
      if (spec.default !== undefined) out[key] = convert(key, spec, spec.default);
      else if (spec.required) throw new DeviceOptionError(`option ${key} is required`);
      continue;
    }
    out[key] = convert(key, spec, given);
  }
  return out as DeviceOptionValues<S>;
}

/** `  key=TYPE  description (default ...)` lines for --help. */
export function describeOptions(schema: DeviceOptionSchema): string[] {
  return Object.entries(schema).map(([key, s]) => {
    const dflt =
      s.default !== undefined ? ` (default ${String(s.default)})` : s.required ? ' (required)' : '';
    return `${key}=${s.choices ? s.choices.join('|') : s.type}${s.description ? `  ${s.description}` : ''}${dflt}`;
  });
}
