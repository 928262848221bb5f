// VERSION: the server's side of the negotiation, plus the reply-size rule.
//
// The spec rules (major equal, minor = min(client, ours), capabilities a subset for the opt-in features) are the
// protocol package's negotiateVersion. What is added here: QEMU reads the VERSION reply into the buffer of its
// own request, so the whole reply must never be larger than the request (214 bytes for QEMU 11.1; a longer reply
// made device realize fail). When the JSON would not fit, optional keys are dropped, least useful first: keys
// whose value equals the spec default (the client assumes it anyway), then migration, max_dma_maps, pgsizes,
// max_data_xfer_size, twin_socket (twin-socket then stays off), and max_msg_fds last (QEMU assumes 8 when absent,
// not the spec's 1). If not even `{"capabilities":{}}` fits, the reply has no JSON at all (a 4-byte payload:
// legal, the spec makes the JSON optional; only a client that sent no JSON itself can get there).

import {
  type Capabilities,
  DEFAULT_CAPABILITIES,
  encodeVersionReply,
  HEADER_SIZE,
  negotiateVersion,
  type VersionNegotiation,
  type VersionRequest,
} from 'vfio-user-protocol';

/** What the server offers (its own receive limits and features). */
export interface ServerOffer {
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: number;
  maxDmaMaps: number;
  migration?: { pgsize: number; maxBitmapSize: number };
  /** Whether the server would use twin-socket if the client offers it. */
  twinSocket: boolean;
}

export interface NegotiatedVersion extends VersionNegotiation {
  /** The encoded reply payload (major, minor, JSON). */
  payload: Uint8Array;
  /** Keys dropped to respect the reply-size rule. */
  dropped: string[];
}

type Key = 'maxMsgFds' | 'maxDataXferSize' | 'pgsizes' | 'maxDmaMaps' | 'migration' | 'twinSocket';

/** Drop order: the first entries go first. */
const DROP_ORDER: Key[] = [
  'migration',
  'maxDmaMaps',
  'pgsizes',
  'maxDataXferSize',
  'twinSocket',
  'maxMsgFds',
];

/** The capabilities `offer` advertises in full (a fresh object: negotiate() drops keys from it). */
export function offerCapabilities(offer: Readonly<ServerOffer>): Partial<Capabilities> {
  const caps: Partial<Capabilities> = {
    maxMsgFds: offer.maxMsgFds,
    maxDataXferSize: offer.maxDataXferSize,
    pgsizes: offer.pgsizes,
    maxDmaMaps: offer.maxDmaMaps,
  };
  if (offer.migration) caps.migration = offer.migration;
  if (offer.twinSocket) caps.twinSocket = { supported: true };
  return caps;
}

/**
 * Negotiates `request` (the decoded VERSION payload; `requestSize` is its whole message size, header included).
 * Throws ProtocolError (EINVAL) for a wrong major or malformed capabilities.
 */
export function negotiate(
  request: VersionRequest,
  requestSize: number,
  offer: ServerOffer,
): NegotiatedVersion {
  const caps = offerCapabilities(offer);

  const budget = requestSize - HEADER_SIZE;
  const dropped: string[] = [];
  const attempt = () => {
    const n = negotiateVersion(request, { capabilities: caps });
    return { n, payload: encodeVersionReply(n.reply) };
  };
  let { n, payload } = attempt();
  if (payload.length <= budget) return { ...n, payload, dropped };

  // First the keys that only restate the spec defaults.
  for (const k of ['maxDataXferSize', 'pgsizes', 'maxDmaMaps'] as const) {
    if (caps[k] !== undefined && caps[k] === DEFAULT_CAPABILITIES[k]) {
      delete caps[k];
      dropped.push(k);
    }
  }
  ({ n, payload } = attempt());
  for (const k of DROP_ORDER) {
    if (payload.length <= budget) break;
    if (caps[k] === undefined) continue;
    delete caps[k];
    dropped.push(k);
    ({ n, payload } = attempt());
  }
  if (payload.length <= budget) return { ...n, payload, dropped };
  // Not even an empty capabilities object fits: reply without JSON.
  const bare = { ...n, reply: { major: n.reply.major, minor: n.reply.minor }, twinSocket: false };
  dropped.push('json');
  return { ...bare, payload: encodeVersionReply(bare.reply), dropped };
}
