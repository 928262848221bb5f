// VERSION negotiation from the server's side (spec "Version"; the client's side is version-reply.ts): the reply's
// major must equal the proposed major, its minor must be <= the proposed minor, and its capabilities must be a
// subset of those proposed. max_msg_fds, max_data_xfer_size, pgsizes and max_dma_maps describe the sender's own
// limits, so "subset" binds only the opt-in features, twin_socket and write_multiple (VER-27, VER-33).

import { type Capabilities, encodeCapabilities, parseCapabilities } from './capabilities.js';
import { PROTOCOL_VERSION } from './constants.js';
import { fail } from './errors.js';
import type { VersionReply, VersionRequest } from './messages/version.js';

/** What a server makes of a client's VERSION: the reply to send and the client's capabilities. */
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
