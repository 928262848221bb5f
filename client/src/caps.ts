// VERSION negotiation from the client's side: what we propose, and how strictly we read the server's answer.
// The spec's rules (same major, minor <= ours, capabilities a subset of ours, NUL-terminated JSON object) are
// always checked; QEMU's extra limits (max_msg_fds <= 16, ...) only when asked, so the client can stand in for
// QEMU in tests of a server.

import {
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_MAX_DMA_MAPS,
  DEFAULT_MIGRATION,
  PAGE_SIZE,
  QEMU_LIMITS,
} from 'vfio-user-protocol';
/** Capabilities as they travel in JSON (spec key names). */
export interface CapabilitiesJson {
  max_msg_fds?: number;
  max_data_xfer_size?: number;
  max_dma_maps?: number;
  pgsizes?: number;
  migration?: { pgsize?: number; max_bitmap_size?: number };
  write_multiple?: boolean;
  twin_socket?: { supported: boolean; fd_index?: number };
  [key: string]: unknown;
}

/** The server's limits as the client will honour them (spec defaults filled in for absent keys). */
export interface ServerCapabilities {
  /** Most fds the server accepts in one message (chunks SET_IRQS). */
  maxMsgFds: number;
  /** Largest count the server accepts in REGION_READ/WRITE (chunks region I/O). */
  maxDataXferSize: number;
  maxDmaMaps: number;
  pgsizes: number;
  migration?: { pgsize: number; maxBitmapSize?: number };
  writeMultiple: boolean;
  twinSocket?: { supported: boolean; fdIndex?: number };
  /** Keys the server actually sent. */
  present: string[];
}

/** What the client proposes by default: QEMU's set (we can honour all of it). */
export function defaultClientCapabilities(maxMsgFds: number, maxDataXferSize: number): CapabilitiesJson {
  return {
    max_msg_fds: maxMsgFds,
    max_data_xfer_size: maxDataXferSize,
    max_dma_maps: DEFAULT_MAX_DMA_MAPS,
    pgsizes: PAGE_SIZE,
    migration: { pgsize: DEFAULT_MIGRATION.pgsize, max_bitmap_size: DEFAULT_MIGRATION.maxBitmapSize },
    write_multiple: true,
  };
}

/** Which defaults apply to keys the server omits: the spec's (max_msg_fds 1) or QEMU's (max_msg_fds 8). */
export type OmittedDefaults = 'spec' | 'qemu';

export interface VersionCheck {
  major: number;
  minor: number;
  /** The JSON text without its NUL (undefined when the reply had no JSON). */
  json: string | undefined;
  /** The parsed `capabilities` object as sent. */
  raw: Record<string, unknown> | undefined;
  capabilities: ServerCapabilities;
  /** Rule breaks: negotiation fails when there is any. */
  errors: string[];
  /** Oddities a lenient client lets pass (spurious keys, ambiguous subset cases). */
  warnings: string[];
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const KNOWN = new Set([
  'max_msg_fds',
  'max_data_xfer_size',
  'max_dma_maps',
  'pgsizes',
  'migration',
  'write_multiple',
  'twin_socket',
]);

/**
 * Check a VERSION reply payload against what we proposed.
 * `proposed` is the capabilities object we sent (undefined when we sent no JSON or raw bytes we cannot read).
 */
export function checkServerVersion(
  payload: Uint8Array,
  proposed: { major: number; minor: number; caps: Record<string, unknown> | undefined },
  opts: { qemuLimits?: boolean; omittedDefaults?: OmittedDefaults } = {},
): VersionCheck {
  const errors: string[] = [];
  const warnings: string[] = [];
  const qemu = opts.qemuLimits === true;
  const caps: ServerCapabilities = {
    maxMsgFds: opts.omittedDefaults === 'qemu' ? 8 : 1,
    maxDataXferSize: DEFAULT_MAX_DATA_XFER_SIZE,
    maxDmaMaps: DEFAULT_MAX_DMA_MAPS,
    pgsizes: PAGE_SIZE,
    writeMultiple: false,
    present: [],
  };
  const result: VersionCheck = {
    major: -1,
    minor: -1,
    json: undefined,
    raw: undefined,
    capabilities: caps,
    errors,
    warnings,
  };
  if (payload.length < 4) {
    errors.push(`VERSION reply payload of ${payload.length} bytes (needs at least 4)`);
    return result;
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  result.major = dv.getUint16(0, true);
  result.minor = dv.getUint16(2, true);
  if (result.major !== proposed.major) errors.push(`major ${result.major} != proposed ${proposed.major}`);
  if (result.minor > proposed.minor) errors.push(`minor ${result.minor} > proposed ${proposed.minor}`);
  if (payload.length === 4) {
    // The spec makes the JSON optional; QEMU would re-parse stale bytes of its own request (CLI-04).
    if (qemu) warnings.push('VERSION reply has no JSON (QEMU needs one)');
    return result;
  }
  const body = payload.subarray(4);
  if (body[body.length - 1] !== 0) {
    errors.push('VERSION JSON is not NUL-terminated');
    return result;
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(body.subarray(0, body.length - 1));
  result.json = text;
  if (text.includes('\0')) errors.push('VERSION JSON contains an embedded NUL');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    errors.push(`VERSION JSON does not parse: ${(e as Error).message}`);
    return result;
  }
  if (!isObj(doc)) {
    errors.push('VERSION JSON is not an object');
    return result;
  }
  for (const k of Object.keys(doc)) if (k !== 'capabilities') warnings.push(`unknown top-level key "${k}"`);
  const c = doc.capabilities;
  if (c === undefined) return result;
  if (!isObj(c)) {
    errors.push('"capabilities" is not an object');
    return result;
  }
  result.raw = c;
  caps.present = Object.keys(c);
  const offered = proposed.caps;
  for (const k of caps.present) {
    if (!KNOWN.has(k)) warnings.push(`spurious capability "${k}"`);
    else if (offered && !(k in offered)) {
      // The server's receive limits describe the server, so a reply may carry them unasked (VER-33); feature
      // keys the client did not offer may not be turned on (VER-27).
      if (k === 'twin_socket' || k === 'write_multiple') {
        const v = c[k];
        const on = k === 'write_multiple' ? v === true : isObj(v) && v.supported === true;
        if (on) errors.push(`server enabled "${k}", which the client did not offer`);
        else warnings.push(`capability "${k}" was not proposed`);
      } else warnings.push(`capability "${k}" was not proposed`);
    }
  }
  // The server's receive limits: integers (max_data_xfer_size > 0, the others >= 0), within QEMU's when asked.
  const limit = (key: string, field: 'maxMsgFds' | 'maxDataXferSize' | 'maxDmaMaps', positive: boolean) => {
    if (!(key in c)) return;
    const v = c[key];
    if (!isInt(v) || (positive ? v <= 0 : v < 0)) {
      errors.push(`${key} ${JSON.stringify(v)} is not a ${positive ? 'positive' : 'non-negative'} integer`);
    } else {
      caps[field] = v;
      if (qemu && v > QEMU_LIMITS[field]) errors.push(`${key} ${v} > QEMU's limit ${QEMU_LIMITS[field]}`);
    }
  };
  limit('max_msg_fds', 'maxMsgFds', false);
  limit('max_data_xfer_size', 'maxDataXferSize', true);
  limit('max_dma_maps', 'maxDmaMaps', false);
  if ('pgsizes' in c) {
    const v = c.pgsizes;
    if (!isInt(v) || v <= 0) errors.push(`pgsizes ${JSON.stringify(v)} is not a positive integer`);
    else {
      caps.pgsizes = v;
      if (qemu && v % 4096 !== 0) errors.push(`pgsizes 0x${v.toString(16)} is not a multiple of 4096`);
    }
  }
  if ('migration' in c) {
    const m = c.migration;
    if (!isObj(m)) errors.push('migration is not an object');
    else {
      const pg = m.pgsize;
      if (pg !== undefined && (!isInt(pg) || pg <= 0))
        errors.push(`migration.pgsize ${JSON.stringify(pg)} is invalid`);
      const mb = m.max_bitmap_size;
      if (mb !== undefined && (!isInt(mb) || mb <= 0)) {
        errors.push(`migration.max_bitmap_size ${JSON.stringify(mb)} is invalid`);
      }
      caps.migration = { pgsize: isInt(pg) ? pg : 4096 };
      if (isInt(mb)) caps.migration.maxBitmapSize = mb;
      if (qemu && isInt(pg) && pg % 4096 !== 0)
        errors.push(`migration.pgsize ${pg} is not a multiple of 4096`);
      if (qemu && isInt(mb) && mb > QEMU_LIMITS.maxBitmapSize) {
        errors.push(`migration.max_bitmap_size ${mb} > QEMU's limit ${QEMU_LIMITS.maxBitmapSize}`);
      }
    }
  }
  if ('write_multiple' in c) {
    const v = c.write_multiple;
    if (typeof v !== 'boolean') errors.push(`write_multiple ${JSON.stringify(v)} is not a boolean`);
    else caps.writeMultiple = v;
  }
  if ('twin_socket' in c) {
    const t = c.twin_socket;
    if (!isObj(t) || typeof t.supported !== 'boolean')
      errors.push('twin_socket is not {supported: boolean, ...}');
    else {
      caps.twinSocket = { supported: t.supported };
      if (t.fd_index !== undefined) {
        if (!isInt(t.fd_index) || t.fd_index < 0)
          errors.push(`twin_socket.fd_index ${JSON.stringify(t.fd_index)} is invalid`);
        else caps.twinSocket.fdIndex = t.fd_index;
      }
    }
  }
  return result;
}
