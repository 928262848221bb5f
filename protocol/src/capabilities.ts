// The VERSION capabilities JSON (spec "Version", table "Capabilities"): a NUL-terminated UTF-8 JSON object
// `{"capabilities": {...}}`. Absent keys take the spec's defaults. Type and range violations are EINVAL, as
// libvfio-user answers (conformance VER-09..26).

import { DEFAULT_MAX_DATA_XFER_SIZE, DEFAULT_MAX_DMA_MAPS, PAGE_SIZE } from './constants.js';
import { Errno, fail, ProtocolError } from './errors.js';

/** The VERSION capabilities JSON, decoded, with the spec's defaults for absent keys. */
export interface Capabilities {
  /** The most fds the sender can receive in one message (spec default 1). */
  maxMsgFds: number;
  /** The largest data count the sender accepts in one message (spec default 1 MiB). */
  maxDataXferSize: number;
  /** Bitmask of supported DMA page sizes (spec default 4096). */
  pgsizes: number;
  /** Concurrent DMA mappings the server supports (spec default 65535). */
  maxDmaMaps: number;
  /** Legacy migration parameters (not in the current spec's table; QEMU still sends them). */
  migration?: { pgsize: number; maxBitmapSize: number };
  /** Twin-socket support: in a reply with `supported`, `fdIndex` locates the second socket's fd. */
  twinSocket?: { supported: boolean; fdIndex?: number };
  /** REGION_WRITE_MULTI support (spec default false). */
  writeMultiple: boolean;
}

/** The spec's values for absent keys. Note QEMU assumes max_msg_fds 8 when a server omits it: always send it. */
export const DEFAULT_CAPABILITIES: Capabilities = Object.freeze({
  maxMsgFds: 1,
  maxDataXferSize: DEFAULT_MAX_DATA_XFER_SIZE,
  pgsizes: PAGE_SIZE,
  maxDmaMaps: DEFAULT_MAX_DMA_MAPS,
  writeMultiple: false,
});

/** Defaults inside a present `migration` object whose keys are missing (QEMU's values: 4 KiB, 256 MiB). */
export const DEFAULT_MIGRATION = Object.freeze({ pgsize: PAGE_SIZE, maxBitmapSize: 268435456 });

/**
 * Accepted ranges when parsing. `max_msg_fds` 0..1024 is libvfio-user's rule (VER-14/15; 0 is legal and means
 * "send me no fds", VER-16). The others must be positive safe integers: zero would make the peer unusable, and
 * JavaScript numbers lose integers beyond 2^53.
 */
export const CAPABILITY_RANGES = Object.freeze({
  maxMsgFds: { min: 0, max: 1024 },
  maxDataXferSize: { min: 1, max: Number.MAX_SAFE_INTEGER },
  pgsizes: { min: 1, max: Number.MAX_SAFE_INTEGER },
  maxDmaMaps: { min: 1, max: 0xffffffff },
  migrationPgsize: { min: PAGE_SIZE, max: 2 ** 30 },
  maxBitmapSize: { min: 1, max: Number.MAX_SAFE_INTEGER },
  fdIndex: { min: 0, max: 252 },
});

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const own = (o: object, k: string): boolean => Object.hasOwn(o, k);

function badCap(message: string): never {
  fail('BAD_CAPABILITY', message, Errno.EINVAL);
}

function integer(v: Json, key: string, range: { min: number; max: number }): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) badCap(`${key} must be an integer`);
  if (v < range.min || v > range.max) badCap(`${key} ${v} is outside ${range.min}..${range.max}`);
  return v;
}

function boolean(v: Json, key: string): boolean {
  if (typeof v !== 'boolean') badCap(`${key} must be a boolean`);
  return v;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The JSON text of a capabilities blob. The spec makes the NUL part of the data (VER-09: a blob without it is
 * EINVAL). libvfio-user hands the buffer to a C JSON parser that stops at the first NUL, so trailing NUL padding is
 * tolerated here too; any other byte after the first NUL is rejected.
 */
function jsonText(json: Uint8Array): string {
  if (json.byteLength === 0 || json[json.byteLength - 1] !== 0) {
    fail('BAD_JSON', 'capabilities JSON is not NUL-terminated');
  }
  const nul = json.indexOf(0);
  for (let i = nul; i < json.byteLength; i++) {
    if (json[i] !== 0) fail('BAD_JSON', 'capabilities JSON has bytes after its terminating NUL');
  }
  try {
    return utf8.decode(json.subarray(0, nul));
  } catch {
    fail('BAD_JSON', 'capabilities JSON is not valid UTF-8');
  }
}

/**
 * Parses a VERSION capabilities blob (the bytes after major/minor, NUL included). `undefined` or an empty array
 * means "no JSON" and yields the spec defaults (VER-07). Unknown keys are ignored for forward compatibility
 * (VER-25) and reported: capability keys by name (`x_vendor`), keys inside `migration`/`twin_socket` dotted
 * (`migration.foo`), and siblings of `capabilities` at the top level with a leading `/` (`/foo`).
 */
export function parseCapabilities(json: Uint8Array | undefined): {
  caps: Capabilities;
  unknownKeys: string[];
} {
  const caps: Capabilities = { ...DEFAULT_CAPABILITIES };
  const unknownKeys: string[] = [];
  if (json === undefined || json.byteLength === 0) return { caps, unknownKeys };

  let top: Json;
  try {
    top = JSON.parse(jsonText(json)) as Json;
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    fail('BAD_JSON', `capabilities JSON does not parse: ${(e as Error).message}`);
  }
  // libvfio-user treats a non-object top level as "no capabilities"; the recommendation is EINVAL (VER-26).
  if (!isObject(top)) fail('BAD_JSON', 'capabilities JSON is not an object');
  for (const k of Object.keys(top)) if (k !== 'capabilities') unknownKeys.push(`/${k}`);
  if (!own(top, 'capabilities')) return { caps, unknownKeys };
  const c = top.capabilities;
  if (!isObject(c)) badCap('"capabilities" must be an object'); // VER-12

  for (const [key, v] of Object.entries(c)) {
    switch (key) {
      case 'max_msg_fds':
        caps.maxMsgFds = integer(v, key, CAPABILITY_RANGES.maxMsgFds);
        break;
      case 'max_data_xfer_size':
        caps.maxDataXferSize = integer(v, key, CAPABILITY_RANGES.maxDataXferSize);
        break;
      case 'pgsizes':
        caps.pgsizes = integer(v, key, CAPABILITY_RANGES.pgsizes);
        break;
      case 'max_dma_maps':
        caps.maxDmaMaps = integer(v, key, CAPABILITY_RANGES.maxDmaMaps);
        break;
      case 'write_multiple':
        caps.writeMultiple = boolean(v, key);
        break;
      case 'migration': {
        if (!isObject(v)) badCap('"migration" must be an object'); // VER-19
        const m: { pgsize: number; maxBitmapSize: number } = { ...DEFAULT_MIGRATION };
        for (const [mk, mv] of Object.entries(v)) {
          if (mk === 'pgsize') {
            // A dirty-bitmap granule is a page: a power of two of at least 4 KiB (VER-20/21; QEMU: multiple of 4096).
            m.pgsize = integer(mv, 'migration.pgsize', CAPABILITY_RANGES.migrationPgsize);
            if ((m.pgsize & (m.pgsize - 1)) !== 0)
              badCap(`migration.pgsize ${m.pgsize} is not a power of two`);
          } else if (mk === 'max_bitmap_size') {
            m.maxBitmapSize = integer(mv, 'migration.max_bitmap_size', CAPABILITY_RANGES.maxBitmapSize);
          } else unknownKeys.push(`migration.${mk}`);
        }
        caps.migration = m;
        break;
      }
      case 'twin_socket': {
        if (!isObject(v)) badCap('"twin_socket" must be an object'); // VER-22
        const t: { supported: boolean; fdIndex?: number } = { supported: false };
        for (const [tk, tv] of Object.entries(v)) {
          if (tk === 'supported') t.supported = boolean(tv, 'twin_socket.supported');
          else if (tk === 'fd_index')
            t.fdIndex = integer(tv, 'twin_socket.fd_index', CAPABILITY_RANGES.fdIndex);
          else unknownKeys.push(`twin_socket.${tk}`);
        }
        caps.twinSocket = t;
        break;
      }
      default:
        unknownKeys.push(key);
    }
  }
  return { caps, unknownKeys };
}

/** Checks one capability value as parseCapabilities would; returns a problem or undefined. */
function checkForEncoding(caps: Partial<Capabilities>): string | undefined {
  const r = CAPABILITY_RANGES;
  const bad = (v: number | undefined, range: { min: number; max: number }) =>
    v !== undefined && (!Number.isSafeInteger(v) || v < range.min || v > range.max);
  if (bad(caps.maxMsgFds, r.maxMsgFds)) return 'maxMsgFds';
  if (bad(caps.maxDataXferSize, r.maxDataXferSize)) return 'maxDataXferSize';
  if (bad(caps.pgsizes, r.pgsizes)) return 'pgsizes';
  if (bad(caps.maxDmaMaps, r.maxDmaMaps)) return 'maxDmaMaps';
  if (caps.migration) {
    const p = caps.migration.pgsize;
    if (bad(p, r.migrationPgsize) || (p & (p - 1)) !== 0) return 'migration.pgsize';
    if (bad(caps.migration.maxBitmapSize, r.maxBitmapSize)) return 'migration.maxBitmapSize';
  }
  if (caps.twinSocket && bad(caps.twinSocket.fdIndex, r.fdIndex)) return 'twinSocket.fdIndex';
  return undefined;
}

const utf8Encoder = new TextEncoder();

/**
 * Produces the compact `{"capabilities":{...}}` JSON plus its NUL, with only the keys given, in the spec's
 * table order. Throws RangeError for a value parseCapabilities would reject (a caller bug).
 */
export function encodeCapabilities(caps: Partial<Capabilities>): Uint8Array {
  const problem = checkForEncoding(caps);
  if (problem) throw new RangeError(`capability ${problem} is out of range`);
  const c: Record<string, unknown> = {};
  if (caps.maxMsgFds !== undefined) c.max_msg_fds = caps.maxMsgFds;
  if (caps.maxDataXferSize !== undefined) c.max_data_xfer_size = caps.maxDataXferSize;
  if (caps.pgsizes !== undefined) c.pgsizes = caps.pgsizes;
  if (caps.maxDmaMaps !== undefined) c.max_dma_maps = caps.maxDmaMaps;
  if (caps.migration)
    c.migration = { pgsize: caps.migration.pgsize, max_bitmap_size: caps.migration.maxBitmapSize };
  if (caps.twinSocket) {
    c.twin_socket =
      caps.twinSocket.fdIndex === undefined
        ? { supported: caps.twinSocket.supported }
        : { supported: caps.twinSocket.supported, fd_index: caps.twinSocket.fdIndex };
  }
  if (caps.writeMultiple !== undefined) c.write_multiple = caps.writeMultiple;
  const text = utf8Encoder.encode(JSON.stringify({ capabilities: c }));
  const out = new Uint8Array(text.byteLength + 1);
  out.set(text);
  return out;
}
