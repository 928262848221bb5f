// VERSION from the client's side: judging a server's reply against what the client proposed (spec "Version").
// The spec's rules are always errors: the same major, a minor <= the proposed one, a NUL-terminated JSON object,
// values of the right type, and no opt-in feature (twin_socket, write_multiple) the client did not offer (VER-27).
// The server's receive limits (max_msg_fds, max_data_xfer_size, max_dma_maps, pgsizes) describe the server, so a
// reply may carry them unasked (VER-33): a warning, like unknown keys. QEMU's limits apply only on request, so a
// client can stand in for QEMU when testing a server.
//
// Unlike parseCapabilities (the server reading a client's offer: it refuses at the first fault with the errno
// libvfio-user answers, and holds values to libvfio-user's ranges), every problem is collected here, and a value
// is only held to its type: a client judging a server wants every fault at once, and a server may well accept
// more fds than libvfio-user does.

import { DEFAULT_MAX_DATA_XFER_SIZE, DEFAULT_MAX_DMA_MAPS, PAGE_SIZE } from './constants.js';
import { fail } from './errors.js';
import { encodeVersionReply, type VersionReply, type VersionRequest } from './messages/version.js';
import { QEMU_OMITTED_MAX_MSG_FDS, qemuLimitProblems } from './qemu.js';

/** The server's limits as a client honours them (defaults filled in for absent keys). */
export interface ServerCapabilities {
  /** Most fds the server accepts in one message. */
  maxMsgFds: number;
  /** Largest count the server accepts in REGION_READ/WRITE. */
  maxDataXferSize: number;
  maxDmaMaps: number;
  pgsizes: number;
  migration?: { pgsize: number; maxBitmapSize?: number };
  writeMultiple: boolean;
  twinSocket?: { supported: boolean; fdIndex?: number };
  /** Keys the server actually sent. */
  present: string[];
}

/** Which defaults apply to keys the server omits: the spec's (max_msg_fds 1) or QEMU's (max_msg_fds 8). */
export type OmittedDefaults = 'spec' | 'qemu';

/** How strictly a client judges a VERSION reply (QEMU's limits, omitted defaults). */
export interface VersionReplyRules {
  /** Also hold the values to QEMU_LIMITS, and warn about a reply without JSON (QEMU needs one). */
  qemuLimits?: boolean;
  omittedDefaults?: OmittedDefaults;
}

/** What the client proposed: `caps` is the capabilities object it sent (undefined: none, or unreadable). */
export interface VersionProposal {
  major: number;
  minor: number;
  caps: Record<string, unknown> | undefined;
}

/** Everything a client can say about a VERSION reply: version, capabilities, problems and warnings. */
export interface VersionReplyReport {
  /** -1 when the payload is too short to carry them. */
  major: number;
  minor: number;
  /** The JSON text without its NUL (undefined when the reply had no JSON). */
  json: string | undefined;
  /** The parsed `capabilities` object as sent. */
  raw: Record<string, unknown> | undefined;
  capabilities: ServerCapabilities;
  /** Rule breaks: negotiation fails when there is any. The major/minor ones come first. */
  errors: string[];
  /** Oddities a client lets pass (unasked limits, unknown keys). */
  warnings: string[];
  /** True when the major or the minor broke the rules. */
  versionMismatch: boolean;
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

/** Opt-in features: the server may only turn on what the client offered. */
const FEATURES = new Set(['write_multiple', 'twin_socket']);

/**
 * Judges a VERSION reply payload (major, minor, optional NUL-terminated JSON) against the proposal. Never
 * throws: every problem is in `errors` or `warnings`. The twin socket's fd is the caller's (twinSocketFdProblem).
 */
export function judgeVersionReply(
  payload: Uint8Array,
  proposal: VersionProposal,
  rules: VersionReplyRules = {},
): VersionReplyReport {
  const report: VersionReplyReport = {
    major: -1,
    minor: -1,
    json: undefined,
    raw: undefined,
    capabilities: {
      maxMsgFds: rules.omittedDefaults === 'qemu' ? QEMU_OMITTED_MAX_MSG_FDS : 1,
      maxDataXferSize: DEFAULT_MAX_DATA_XFER_SIZE,
      maxDmaMaps: DEFAULT_MAX_DMA_MAPS,
      pgsizes: PAGE_SIZE,
      writeMultiple: false,
      present: [],
    },
    errors: [],
    warnings: [],
    versionMismatch: false,
  };
  if (!judgeVersionNumbers(payload, proposal, report)) return report;
  if (payload.byteLength === 4) {
    // The spec makes the JSON optional; QEMU would re-parse stale bytes of its own request (CLI-04).
    if (rules.qemuLimits) report.warnings.push('VERSION reply has no JSON (QEMU needs one)');
    return report;
  }
  const c = readCapabilitiesObject(payload.subarray(4), report);
  if (!c) return report;
  report.raw = c;
  report.capabilities.present = Object.keys(c);
  judgeKeys(c, proposal.caps, report);
  readLimits(c, report);
  readMigration(c, report);
  readFeatures(c, report);
  if (rules.qemuLimits) report.errors.push(...qemuLimitProblems(report.capabilities));
  return report;
}

/** Major and minor (false when the payload is too short for them). */
function judgeVersionNumbers(
  payload: Uint8Array,
  proposal: VersionProposal,
  report: VersionReplyReport,
): boolean {
  if (payload.byteLength < 4) {
    report.errors.push(`VERSION reply payload of ${payload.byteLength} bytes (needs at least 4)`);
    return false;
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  report.major = dv.getUint16(0, true);
  report.minor = dv.getUint16(2, true);
  if (report.major !== proposal.major)
    report.errors.push(`major ${report.major} != proposed ${proposal.major}`);
  if (report.minor > proposal.minor) report.errors.push(`minor ${report.minor} > proposed ${proposal.minor}`);
  report.versionMismatch = report.errors.length > 0;
  return true;
}

/** The `capabilities` object of a NUL-terminated JSON document (undefined when absent or broken). */
function readCapabilitiesObject(
  body: Uint8Array,
  report: VersionReplyReport,
): Record<string, unknown> | undefined {
  const { errors, warnings } = report;
  if (body[body.byteLength - 1] !== 0) {
    errors.push('VERSION JSON is not NUL-terminated');
    return undefined;
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(body.subarray(0, body.byteLength - 1));
  report.json = text;
  if (text.includes('\0')) errors.push('VERSION JSON contains an embedded NUL');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    errors.push(`VERSION JSON does not parse: ${(e as Error).message}`);
    return undefined;
  }
  if (!isObj(doc)) {
    errors.push('VERSION JSON is not an object');
    return undefined;
  }
  for (const k of Object.keys(doc)) if (k !== 'capabilities') warnings.push(`unknown top-level key "${k}"`);
  const c = doc.capabilities;
  if (c === undefined) return undefined;
  if (!isObj(c)) {
    errors.push('"capabilities" is not an object');
    return undefined;
  }
  return c;
}

/** Unknown keys and keys the client did not propose. */
function judgeKeys(
  c: Record<string, unknown>,
  offered: Record<string, unknown> | undefined,
  r: VersionReplyReport,
) {
  for (const k of Object.keys(c)) {
    if (!KNOWN.has(k)) r.warnings.push(`spurious capability "${k}"`);
    else if (offered && !(k in offered)) {
      const v = c[k];
      const on = k === 'write_multiple' ? v === true : isObj(v) && v.supported === true;
      if (FEATURES.has(k) && on) r.errors.push(`server enabled "${k}", which the client did not offer`);
      else r.warnings.push(`capability "${k}" was not proposed`);
    }
  }
}

/** The server's receive limits: integers (max_data_xfer_size and pgsizes > 0, the others >= 0). */
function readLimits(c: Record<string, unknown>, r: VersionReplyReport) {
  const caps = r.capabilities;
  const limit = (
    key: string,
    field: 'maxMsgFds' | 'maxDataXferSize' | 'maxDmaMaps' | 'pgsizes',
    min: 0 | 1,
  ) => {
    if (!(key in c)) return;
    const v = c[key];
    if (isInt(v) && v >= min) caps[field] = v;
    else r.errors.push(`${key} ${JSON.stringify(v)} is not a ${min ? 'positive' : 'non-negative'} integer`);
  };
  limit('max_msg_fds', 'maxMsgFds', 0);
  limit('max_data_xfer_size', 'maxDataXferSize', 1);
  limit('max_dma_maps', 'maxDmaMaps', 0);
  limit('pgsizes', 'pgsizes', 1);
}

/** The legacy migration object: positive integers where present (pgsize defaults to a page). */
function readMigration(c: Record<string, unknown>, r: VersionReplyReport) {
  if (!('migration' in c)) return;
  const m = c.migration;
  if (!isObj(m)) {
    r.errors.push('migration is not an object');
    return;
  }
  const positive = (key: 'pgsize' | 'max_bitmap_size'): number | undefined => {
    const v = m[key];
    if (v === undefined) return undefined;
    if (isInt(v) && v > 0) return v;
    r.errors.push(`migration.${key} ${JSON.stringify(v)} is invalid`);
    return undefined;
  };
  const pgsize = positive('pgsize');
  const maxBitmapSize = positive('max_bitmap_size');
  r.capabilities.migration = { pgsize: pgsize ?? PAGE_SIZE };
  if (maxBitmapSize !== undefined) r.capabilities.migration.maxBitmapSize = maxBitmapSize;
}

/** write_multiple (a boolean) and twin_socket ({supported: boolean, fd_index?: integer >= 0}). */
function readFeatures(c: Record<string, unknown>, r: VersionReplyReport) {
  if ('write_multiple' in c) {
    const v = c.write_multiple;
    if (typeof v === 'boolean') r.capabilities.writeMultiple = v;
    else r.errors.push(`write_multiple ${JSON.stringify(v)} is not a boolean`);
  }
  if (!('twin_socket' in c)) return;
  const t = c.twin_socket;
  if (!isObj(t) || typeof t.supported !== 'boolean') {
    r.errors.push('twin_socket is not {supported: boolean, ...}');
    return;
  }
  r.capabilities.twinSocket = { supported: t.supported };
  if (t.fd_index === undefined) return;
  if (isInt(t.fd_index) && t.fd_index >= 0) r.capabilities.twinSocket.fdIndex = t.fd_index;
  else r.errors.push(`twin_socket.fd_index ${JSON.stringify(t.fd_index)} is invalid`);
}

/**
 * The reply's fds: with twin-socket, fd_index must name one of them (spec: otherwise the client closes the
 * connection); without it, the reply carries none. Returns the problem, or undefined.
 */
export function twinSocketFdProblem(
  twinSocket: { supported: boolean; fdIndex?: number } | undefined,
  fdCount: number,
): string | undefined {
  if (twinSocket?.supported) {
    const i = twinSocket.fdIndex;
    if (i === undefined || i >= fdCount)
      return `twin_socket fd_index ${i} does not name one of the ${fdCount} fds`;
  } else if (fdCount > 0) return `VERSION reply carries ${fdCount} fds without twin-socket`;
  return undefined;
}

/** The `capabilities` object of a proposal's JSON blob (NUL optional); undefined when there is none to read. */
export function proposedCapabilities(json: Uint8Array | undefined): Record<string, unknown> | undefined {
  if (!json || json.byteLength === 0) return undefined;
  try {
    const text = new TextDecoder().decode(json[json.byteLength - 1] === 0 ? json.subarray(0, -1) : json);
    const c = (JSON.parse(text) as { capabilities?: unknown } | null)?.capabilities;
    return isObj(c) ? c : undefined;
  } catch {
    return undefined;
  }
}

/** A client's verdict on a VERSION reply it accepted: the server's capabilities (defaults applied) and warnings. */
export interface VersionReplyCheck {
  /** The server's capabilities, defaults filled in. */
  server: ServerCapabilities;
  warnings: string[];
  /** With twin-socket: the index of the twin socket among the reply's fds. */
  twinSocketFdIndex: number | undefined;
  writeMultiple: boolean;
}

/**
 * judgeVersionReply as a gate: throws a ProtocolError (EINVAL; VERSION_MISMATCH for the major/minor, otherwise
 * NEGOTIATION) for the first problem, including fds that do not fit twinSocketFdProblem. A request without JSON
 * offered no feature.
 */
export function checkVersionReply(
  request: VersionRequest,
  reply: VersionReply,
  fdCount = 0,
): VersionReplyCheck {
  const offered = proposedCapabilities(request.capabilities) ?? {};
  const report = judgeVersionReply(encodeVersionReply(reply), {
    major: request.major,
    minor: request.minor,
    caps: offered,
  });
  const [first] = report.errors;
  if (first !== undefined) fail(report.versionMismatch ? 'VERSION_MISMATCH' : 'NEGOTIATION', first);
  const server = report.capabilities;
  const fdProblem = twinSocketFdProblem(server.twinSocket, fdCount);
  if (fdProblem) fail('NEGOTIATION', fdProblem);
  return {
    server,
    warnings: report.warnings,
    twinSocketFdIndex: server.twinSocket?.supported ? server.twinSocket.fdIndex : undefined,
    writeMultiple: server.writeMultiple,
  };
}
