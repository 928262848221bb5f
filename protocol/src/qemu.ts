// What QEMU's vfio-user-pci client (10.1/11.1) sends and accepts, beyond the spec: its exact VERSION proposal and
// the limits it holds a server's VERSION reply to. Kept apart from the spec's negotiation rules (negotiation.ts)
// so a reader can tell "the protocol says" from "QEMU does".

import { type Capabilities, parseCapabilities } from './capabilities.js';
import { DEFAULT_MAX_DMA_MAPS, HEADER_SIZE, PAGE_SIZE } from './constants.js';
import type { VersionReply } from './messages/version.js';

/** The capabilities JSON QEMU 11.1.3 proposes in VERSION, byte for byte (observed on the wire; no NUL). */
export const QEMU_VERSION_JSON =
  '{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": 1048576, ' +
  '"migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": true}}';

/** QEMU's whole VERSION request with QEMU_VERSION_JSON: QEMU reads the reply into a buffer of this size. */
export const QEMU_VERSION_REQUEST_SIZE = 214;

/** What QEMU's vfio-user-pci client (10.1/11.1) accepts in a server's capabilities ("QEMU's limit" column). */
export const QEMU_LIMITS = Object.freeze({
  maxMsgFds: 16,
  maxDataXferSize: 64 * 1024 * 1024,
  maxDmaMaps: DEFAULT_MAX_DMA_MAPS,
  /** pgsizes and migration.pgsize must have the low 12 bits clear. */
  pageGranule: PAGE_SIZE,
  maxBitmapSize: 256 * 1024 * 1024,
});

/** What QEMU assumes for max_msg_fds when a server's reply omits it (the spec says 1). */
export const QEMU_OMITTED_MAX_MSG_FDS = 8;

/** The values in `caps` that QEMU_LIMITS refuse, one line each (CLI-03). */
export function qemuLimitProblems(caps: {
  maxMsgFds: number;
  maxDataXferSize: number;
  maxDmaMaps: number;
  pgsizes: number;
  migration?: { pgsize: number; maxBitmapSize?: number };
}): string[] {
  const L = QEMU_LIMITS;
  const problems: string[] = [];
  const above = (key: string, v: number, max: number) => {
    if (v > max) problems.push(`${key} ${v} > QEMU's limit ${max}`);
  };
  above('max_msg_fds', caps.maxMsgFds, L.maxMsgFds);
  above('max_data_xfer_size', caps.maxDataXferSize, L.maxDataXferSize);
  above('max_dma_maps', caps.maxDmaMaps, L.maxDmaMaps);
  if (caps.pgsizes % L.pageGranule !== 0)
    problems.push(`pgsizes 0x${caps.pgsizes.toString(16)} has low 12 bits set`);
  if (caps.migration) {
    if (caps.migration.pgsize % L.pageGranule !== 0)
      problems.push(`migration.pgsize ${caps.migration.pgsize} is not a multiple of ${L.pageGranule}`);
    if (caps.migration.maxBitmapSize !== undefined)
      above('migration.max_bitmap_size', caps.migration.maxBitmapSize, L.maxBitmapSize);
  }
  return problems;
}

/**
 * Lists every reason QEMU would refuse (or mis-handle) this VERSION reply; empty means it fits.
 * `requestSize` is QEMU's whole request message size (214 for 11.1.3): QEMU reads the reply into that buffer,
 * so the whole reply must not be larger ("reply larger than recv buffer", CLI-01). QEMU also wants major 0 and
 * minor <= its proposal (0), a NUL-terminated JSON object (a reply without one makes it re-parse its own
 * request), values within QEMU_LIMITS (CLI-03), and no twin-socket (it never offers it). max_msg_fds and
 * max_data_xfer_size should be present, because QEMU's defaults for absent keys differ from the spec's (VER-29).
 */
export function checkQemuVersionReply(requestSize: number, reply: VersionReply, proposedMinor = 0): string[] {
  const problems: string[] = [];
  const total = HEADER_SIZE + 4 + (reply.capabilities?.byteLength ?? 0);
  if (total > requestSize)
    problems.push(`reply is ${total} bytes, more than the ${requestSize}-byte request`);
  if (reply.major !== 0) problems.push(`major ${reply.major} is not 0`);
  if (reply.minor > proposedMinor)
    problems.push(`minor ${reply.minor} is above the proposed ${proposedMinor}`);
  if (!reply.capabilities || reply.capabilities.byteLength === 0) {
    problems.push('no capabilities JSON');
    return problems;
  }
  let caps: Capabilities;
  let present: Set<string>;
  try {
    caps = parseCapabilities(reply.capabilities).caps;
    const text = new TextDecoder().decode(reply.capabilities.subarray(0, reply.capabilities.indexOf(0)));
    const c = (JSON.parse(text) as { capabilities?: Record<string, unknown> }).capabilities ?? {};
    present = new Set(Object.keys(c));
  } catch (e) {
    problems.push(`capabilities do not parse: ${(e as Error).message}`);
    return problems;
  }
  if (!present.has('max_msg_fds'))
    problems.push(`max_msg_fds absent (QEMU would assume ${QEMU_OMITTED_MAX_MSG_FDS}, the spec says 1)`);
  if (!present.has('max_data_xfer_size')) problems.push('max_data_xfer_size absent');
  problems.push(...qemuLimitProblems(caps));
  if (caps.twinSocket?.supported) problems.push('twin_socket enabled, but QEMU never offers it');
  return problems;
}
