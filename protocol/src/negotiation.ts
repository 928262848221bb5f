// VERSION negotiation (spec "Version"): the reply's major must equal the proposed major, its minor must be <=
// the proposed minor, and its capabilities must be a subset of those proposed. max_msg_fds, max_data_xfer_size,
// pgsizes and max_dma_maps describe the sender's own limits, so "subset" binds only the opt-in features,
// twin_socket and write_multiple (VER-27, VER-33).

import { type Capabilities, encodeCapabilities, parseCapabilities } from './capabilities.js';
import { HEADER_SIZE, PROTOCOL_VERSION } from './constants.js';
import { Errno, fail } from './errors.js';
import type { VersionReply, VersionRequest } from './messages/version.js';

export interface VersionNegotiation {
  /** The reply to send (JSON always present: QEMU misparses a reply without one). */
  reply: VersionReply;
  /** The client's capabilities, defaults filled in. */
  client: Capabilities;
  /** Unknown keys the client sent (ignored; worth a log line). */
  unknownKeys: string[];
  /** True when the reply enables twin-socket: send the client end of a socketpair as the reply's only fd. */
  twinSocket: boolean;
  /** True when both sides agreed on REGION_WRITE_MULTI. */
  writeMultiple: boolean;
}

/**
 * Server side: validates the client's VERSION and builds the reply.
 * - major != ours: EINVAL (VER-04; the spec says the server closes the connection; libvfio-user first answers
 *   EINVAL, so callers send this error and then close);
 * - malformed JSON: EINVAL (VER-09..26);
 * - minor = min(client's, ours) (VER-05/06);
 * - twin_socket only if the client offered `supported: true` and can receive an fd (max_msg_fds >= 1; VER-23/24),
 *   always with fd_index 0; write_multiple only if the client offered it.
 */
export function negotiateVersion(
  request: VersionRequest,
  server: { capabilities: Partial<Capabilities>; major?: number; minor?: number },
): VersionNegotiation {
  const major = server.major ?? PROTOCOL_VERSION.major;
  if (request.major !== major) {
    fail('VERSION_MISMATCH', `client proposes major ${request.major}, server speaks ${major}`);
  }
  const { caps: client, unknownKeys } = parseCapabilities(request.capabilities);
  const offered: Partial<Capabilities> = { ...server.capabilities };
  const twinSocket =
    offered.twinSocket?.supported === true && client.twinSocket?.supported === true && client.maxMsgFds >= 1;
  if (twinSocket) offered.twinSocket = { supported: true, fdIndex: 0 };
  else delete offered.twinSocket;
  const writeMultiple = offered.writeMultiple === true && client.writeMultiple;
  if (writeMultiple) offered.writeMultiple = true;
  else delete offered.writeMultiple;
  const reply: VersionReply = {
    major,
    minor: Math.min(request.minor, server.minor ?? PROTOCOL_VERSION.minor),
    capabilities: encodeCapabilities(offered),
  };
  return { reply, client, unknownKeys, twinSocket, writeMultiple };
}

export interface VersionReplyCheck {
  /** The server's capabilities, defaults filled in. */
  server: Capabilities;
  unknownKeys: string[];
  /** With twin-socket: the index of the twin socket among the reply's fds. */
  twinSocketFdIndex: number | undefined;
  writeMultiple: boolean;
}

/**
 * Client side: checks a server's VERSION reply against what the client proposed (VER-27). EINVAL for a major
 * mismatch, a higher minor, malformed JSON, a twin_socket or write_multiple the client did not offer, a
 * twin_socket without a valid fd_index (spec: the client must close), or fds without twin-socket.
 */
export function checkVersionReply(
  request: VersionRequest,
  reply: VersionReply,
  fdCount = 0,
): VersionReplyCheck {
  if (reply.major !== request.major) fail('VERSION_MISMATCH', `server replied major ${reply.major}`);
  if (reply.minor > request.minor) {
    fail('VERSION_MISMATCH', `server replied minor ${reply.minor} > proposed ${request.minor}`);
  }
  const proposed = parseCapabilities(request.capabilities).caps;
  const { caps: server, unknownKeys } = parseCapabilities(reply.capabilities);
  let twinSocketFdIndex: number | undefined;
  if (server.twinSocket?.supported) {
    if (!proposed.twinSocket?.supported)
      fail('NEGOTIATION', 'server enabled twin_socket, which was not offered');
    const i = server.twinSocket.fdIndex;
    if (i === undefined || i >= fdCount) fail('NEGOTIATION', `twin_socket fd_index ${i} but ${fdCount} fds`);
    twinSocketFdIndex = i;
  } else if (fdCount > 0) {
    fail('NEGOTIATION', `VERSION reply carries ${fdCount} fds without twin-socket`, Errno.EINVAL);
  }
  if (server.writeMultiple && !proposed.writeMultiple) {
    fail('NEGOTIATION', 'server enabled write_multiple, which was not offered');
  }
  return { server, unknownKeys, twinSocketFdIndex, writeMultiple: server.writeMultiple };
}

/** What QEMU's vfio-user-pci client (10.1/11.1) accepts in a server's capabilities ("QEMU's limit" column). */
export const QEMU_LIMITS = Object.freeze({
  maxMsgFds: 16,
  maxDataXferSize: 64 * 1024 * 1024,
  maxDmaMaps: 65535,
  /** pgsizes and migration.pgsize must have the low 12 bits clear. */
  pageGranule: 4096,
  maxBitmapSize: 256 * 1024 * 1024,
});

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
  const L = QEMU_LIMITS;
  if (!present.has('max_msg_fds')) problems.push('max_msg_fds absent (QEMU would assume 8, the spec says 1)');
  if (!present.has('max_data_xfer_size')) problems.push('max_data_xfer_size absent');
  if (caps.maxMsgFds > L.maxMsgFds) problems.push(`max_msg_fds ${caps.maxMsgFds} > ${L.maxMsgFds}`);
  if (caps.maxDataXferSize > L.maxDataXferSize) {
    problems.push(`max_data_xfer_size ${caps.maxDataXferSize} > ${L.maxDataXferSize}`);
  }
  if (caps.maxDmaMaps > L.maxDmaMaps) problems.push(`max_dma_maps ${caps.maxDmaMaps} > ${L.maxDmaMaps}`);
  if (caps.pgsizes % L.pageGranule !== 0)
    problems.push(`pgsizes 0x${caps.pgsizes.toString(16)} has low 12 bits set`);
  if (caps.migration) {
    if (caps.migration.pgsize % L.pageGranule !== 0)
      problems.push(`migration.pgsize ${caps.migration.pgsize}`);
    if (caps.migration.maxBitmapSize > L.maxBitmapSize) {
      problems.push(`migration.max_bitmap_size ${caps.migration.maxBitmapSize} > ${L.maxBitmapSize}`);
    }
  }
  if (caps.twinSocket?.supported) problems.push('twin_socket enabled, but QEMU never offers it');
  return problems;
}
