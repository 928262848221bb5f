// Dispatch by command number: one table of codecs so a session can decode any request or reply without a
// switch, plus the fd rule of every message and the command-level checks (unknown command, wrong direction).

import { Command, commandName, commandSender, isKnownCommand, type Limits } from './constants.js';
import { fail } from './errors.js';
import { ANY_FDS, type FdRule, NO_FDS } from './messages/common.js';
import * as deviceFeature from './messages/device-feature.js';
import * as deviceInfo from './messages/device-info.js';
import * as deviceReset from './messages/device-reset.js';
import * as dmaMap from './messages/dma-map.js';
import * as dmaRw from './messages/dma-rw.js';
import * as dmaUnmap from './messages/dma-unmap.js';
import * as irqInfo from './messages/irq-info.js';
import * as migData from './messages/mig-data.js';
import * as regionInfo from './messages/region-info.js';
import * as regionIoFds from './messages/region-io-fds.js';
import * as regionRw from './messages/region-rw.js';
import * as regionWriteMulti from './messages/region-write-multi.js';
import * as setIrqs from './messages/set-irqs.js';
import * as version from './messages/version.js';

/** The request body type of each command. */
export interface RequestTypes {
  [Command.VERSION]: version.VersionRequest;
  [Command.DMA_MAP]: dmaMap.DmaMapRequest;
  [Command.DMA_UNMAP]: dmaUnmap.DmaUnmapRequest;
  [Command.DEVICE_GET_INFO]: deviceInfo.DeviceGetInfoRequest;
  [Command.DEVICE_GET_REGION_INFO]: regionInfo.RegionInfoRequest;
  [Command.DEVICE_GET_REGION_IO_FDS]: regionIoFds.RegionIoFdsRequest;
  [Command.DEVICE_GET_IRQ_INFO]: irqInfo.IrqInfoRequest;
  [Command.DEVICE_SET_IRQS]: setIrqs.SetIrqsRequest;
  [Command.REGION_READ]: regionRw.RegionReadRequest;
  [Command.REGION_WRITE]: regionRw.RegionWriteRequest;
  [Command.DMA_READ]: dmaRw.DmaReadRequest;
  [Command.DMA_WRITE]: dmaRw.DmaWriteRequest;
  [Command.DEVICE_RESET]: deviceReset.DeviceResetRequest;
  [Command.REGION_WRITE_MULTI]: regionWriteMulti.RegionWriteMultiRequest;
  [Command.DEVICE_FEATURE]: deviceFeature.DeviceFeatureRequest;
  [Command.MIG_DATA_READ]: migData.MigDataReadRequest;
  [Command.MIG_DATA_WRITE]: migData.MigDataWriteRequest;
}

/** The (successful) reply body type of each command. */
export interface ReplyTypes {
  [Command.VERSION]: version.VersionReply;
  [Command.DMA_MAP]: dmaMap.DmaMapReply;
  [Command.DMA_UNMAP]: dmaUnmap.DmaUnmapReply;
  [Command.DEVICE_GET_INFO]: deviceInfo.DeviceGetInfoReply;
  [Command.DEVICE_GET_REGION_INFO]: regionInfo.RegionInfoReply;
  [Command.DEVICE_GET_REGION_IO_FDS]: regionIoFds.RegionIoFdsReply;
  [Command.DEVICE_GET_IRQ_INFO]: irqInfo.IrqInfoReply;
  [Command.DEVICE_SET_IRQS]: setIrqs.SetIrqsReply;
  [Command.REGION_READ]: regionRw.RegionReadReply;
  [Command.REGION_WRITE]: regionRw.RegionWriteReply;
  [Command.DMA_READ]: dmaRw.DmaReadReply;
  [Command.DMA_WRITE]: dmaRw.DmaWriteReply;
  [Command.DEVICE_RESET]: deviceReset.DeviceResetReply;
  [Command.REGION_WRITE_MULTI]: regionWriteMulti.RegionWriteMultiReply;
  [Command.DEVICE_FEATURE]: deviceFeature.DeviceFeatureReply;
  [Command.MIG_DATA_READ]: migData.MigDataReadReply;
  [Command.MIG_DATA_WRITE]: migData.MigDataWriteReply;
}

type Decode<T> = (payload: Uint8Array, fdCount?: number, limits?: Limits) => T;

interface MessageCodec<Req, Rep> {
  encodeRequest(v: Req): Uint8Array;
  decodeRequest: Decode<Req>;
  encodeReply(v: Rep): Uint8Array;
  decodeReply: Decode<Rep>;
  /** The fds a conforming sender attaches, optionally refined by the decoded body. */
  requestFds(body?: Req): FdRule;
  replyFds(body?: Rep): FdRule;
}

const none = () => NO_FDS;

const CODECS: { readonly [C in Command]: MessageCodec<RequestTypes[C], ReplyTypes[C]> } = {
  [Command.VERSION]: {
    encodeRequest: version.encodeVersionRequest,
    decodeRequest: version.decodeVersionRequest,
    encodeReply: version.encodeVersionReply,
    decodeReply: version.decodeVersionReply,
    requestFds: none,
    replyFds: version.versionReplyFdRule,
  },
  [Command.DMA_MAP]: {
    encodeRequest: dmaMap.encodeDmaMapRequest,
    decodeRequest: dmaMap.decodeDmaMapRequest,
    encodeReply: dmaMap.encodeDmaMapReply,
    decodeReply: dmaMap.decodeDmaMapReply,
    requestFds: () => dmaMap.DMA_MAP_FD_RULE,
    replyFds: none,
  },
  [Command.DMA_UNMAP]: {
    encodeRequest: dmaUnmap.encodeDmaUnmapRequest,
    decodeRequest: dmaUnmap.decodeDmaUnmapRequest,
    encodeReply: dmaUnmap.encodeDmaUnmapReply,
    decodeReply: dmaUnmap.decodeDmaUnmapReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DEVICE_GET_INFO]: {
    encodeRequest: deviceInfo.encodeDeviceGetInfoRequest,
    decodeRequest: deviceInfo.decodeDeviceGetInfoRequest,
    encodeReply: deviceInfo.encodeDeviceGetInfoReply,
    decodeReply: deviceInfo.decodeDeviceGetInfoReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DEVICE_GET_REGION_INFO]: {
    encodeRequest: regionInfo.encodeRegionInfoRequest,
    decodeRequest: regionInfo.decodeRegionInfoRequest,
    encodeReply: regionInfo.encodeRegionInfoReply,
    decodeReply: regionInfo.decodeRegionInfoReply,
    requestFds: none,
    replyFds: regionInfo.regionInfoReplyFdRule,
  },
  [Command.DEVICE_GET_REGION_IO_FDS]: {
    encodeRequest: regionIoFds.encodeRegionIoFdsRequest,
    decodeRequest: regionIoFds.decodeRegionIoFdsRequest,
    encodeReply: regionIoFds.encodeRegionIoFdsReply,
    decodeReply: regionIoFds.decodeRegionIoFdsReply,
    requestFds: none,
    replyFds: regionIoFds.regionIoFdsReplyFdRule,
  },
  [Command.DEVICE_GET_IRQ_INFO]: {
    encodeRequest: irqInfo.encodeIrqInfoRequest,
    decodeRequest: irqInfo.decodeIrqInfoRequest,
    encodeReply: irqInfo.encodeIrqInfoReply,
    decodeReply: irqInfo.decodeIrqInfoReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DEVICE_SET_IRQS]: {
    encodeRequest: setIrqs.encodeSetIrqsRequest,
    decodeRequest: setIrqs.decodeSetIrqsRequest,
    encodeReply: setIrqs.encodeSetIrqsReply,
    decodeReply: setIrqs.decodeSetIrqsReply,
    requestFds: setIrqs.setIrqsFdRule,
    replyFds: none,
  },
  [Command.REGION_READ]: {
    encodeRequest: regionRw.encodeRegionReadRequest,
    decodeRequest: regionRw.decodeRegionReadRequest,
    encodeReply: regionRw.encodeRegionReadReply,
    decodeReply: regionRw.decodeRegionReadReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.REGION_WRITE]: {
    encodeRequest: regionRw.encodeRegionWriteRequest,
    decodeRequest: regionRw.decodeRegionWriteRequest,
    encodeReply: regionRw.encodeRegionWriteReply,
    decodeReply: regionRw.decodeRegionWriteReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DMA_READ]: {
    encodeRequest: dmaRw.encodeDmaReadRequest,
    decodeRequest: dmaRw.decodeDmaReadRequest,
    encodeReply: dmaRw.encodeDmaReadReply,
    decodeReply: dmaRw.decodeDmaReadReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DMA_WRITE]: {
    encodeRequest: dmaRw.encodeDmaWriteRequest,
    decodeRequest: dmaRw.decodeDmaWriteRequest,
    encodeReply: dmaRw.encodeDmaWriteReply,
    decodeReply: dmaRw.decodeDmaWriteReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DEVICE_RESET]: {
    encodeRequest: deviceReset.encodeDeviceResetRequest,
    decodeRequest: deviceReset.decodeDeviceResetRequest,
    encodeReply: deviceReset.encodeDeviceResetReply,
    decodeReply: deviceReset.decodeDeviceResetReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.REGION_WRITE_MULTI]: {
    encodeRequest: regionWriteMulti.encodeRegionWriteMultiRequest,
    decodeRequest: regionWriteMulti.decodeRegionWriteMultiRequest,
    encodeReply: regionWriteMulti.encodeRegionWriteMultiReply,
    decodeReply: regionWriteMulti.decodeRegionWriteMultiReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.DEVICE_FEATURE]: {
    encodeRequest: deviceFeature.encodeDeviceFeatureRequest,
    decodeRequest: deviceFeature.decodeDeviceFeatureRequest,
    encodeReply: deviceFeature.encodeDeviceFeatureReply,
    decodeReply: deviceFeature.decodeDeviceFeatureReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.MIG_DATA_READ]: {
    encodeRequest: migData.encodeMigDataReadRequest,
    decodeRequest: migData.decodeMigDataReadRequest,
    encodeReply: migData.encodeMigDataReadReply,
    decodeReply: migData.decodeMigDataReadReply,
    requestFds: none,
    replyFds: none,
  },
  [Command.MIG_DATA_WRITE]: {
    encodeRequest: migData.encodeMigDataWriteRequest,
    decodeRequest: migData.decodeMigDataWriteRequest,
    encodeReply: migData.encodeMigDataWriteReply,
    decodeReply: migData.decodeMigDataWriteReply,
    requestFds: none,
    replyFds: none,
  },
};

/**
 * How many fds a message may carry (spec "File descriptors"): DMA_MAP request 0..1; SET_IRQS request with
 * DATA_EVENTFD exactly `count` or 0; GET_REGION_INFO reply 0..1 (exactly 1 for a complete MMAP reply);
 * GET_REGION_IO_FDS reply >= 1 when it lists sub-regions; VERSION reply 1 with twin-socket, else 0; everything
 * else 0. Pass the decoded body to get the precise rule; without it the rule covers every legal body.
 * Decoders enforce these, except that stray fds on requests whose fds mean nothing are tolerated (the receiver
 * closes them; HDR-24): see `strictRequestFds`.
 */
export function fdRule(command: Command, kind: 'request' | 'reply', body?: unknown): FdRule {
  const codec = CODECS[command] as MessageCodec<unknown, unknown> | undefined;
  if (!codec) return ANY_FDS;
  return kind === 'request' ? codec.requestFds(body) : codec.replyFds(body);
}

/**
 * Requests whose decoder refuses fds it does not expect (EINVAL): VERSION (VER-03), DMA_MAP (> 1), SET_IRQS
 * (IRQS-23..25) and the server's DMA_READ/WRITE (QEMU answers EINVAL, CLI-14). Other requests tolerate stray fds.
 */
export function strictRequestFds(command: Command): boolean {
  return (
    command === Command.VERSION ||
    command === Command.DMA_MAP ||
    command === Command.DEVICE_SET_IRQS ||
    command === Command.DMA_READ ||
    command === Command.DMA_WRITE
  );
}

/**
 * Command-level checks for a received command: an unknown number (0, 14, 19+) is EINVAL (HDR-14..16; libvfio-user's
 * choice, QEMU uses ENOSYS on its side), and so is a command sent in the wrong direction, e.g. DMA_READ from a
 * client (HDR-18).
 */
export function checkCommand(command: number, sender: 'client' | 'server'): Command {
  if (!isKnownCommand(command)) fail('UNKNOWN_COMMAND', `unknown command ${command}`);
  if (commandSender(command) !== sender)
    fail('WRONG_DIRECTION', `${commandName(command)} sent by the ${sender}`);
  return command;
}

/** Encode the payload of a request for `command` (the codec of that command). */
export function encodeRequest<C extends Command>(command: C, body: RequestTypes[C]): Uint8Array {
  return (CODECS[command] as MessageCodec<RequestTypes[C], ReplyTypes[C]>).encodeRequest(body);
}
/**
 * Decode and validate the payload of a request for `command`; a malformed one throws ProtocolError with the errno
 * to answer.
 */
export function decodeRequest<C extends Command>(
  command: C,
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RequestTypes[C] {
  return (CODECS[command] as MessageCodec<RequestTypes[C], ReplyTypes[C]>).decodeRequest(
    payload,
    fdCount,
    limits,
  );
}
/** Encode the payload of a reply to `command`. */
export function encodeReply<C extends Command>(command: C, body: ReplyTypes[C]): Uint8Array {
  return (CODECS[command] as MessageCodec<RequestTypes[C], ReplyTypes[C]>).encodeReply(body);
}
/** Decode and validate the payload of a reply to `command`; a malformed one throws ProtocolError. */
export function decodeReply<C extends Command>(
  command: C,
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): ReplyTypes[C] {
  return (CODECS[command] as MessageCodec<RequestTypes[C], ReplyTypes[C]>).decodeReply(
    payload,
    fdCount,
    limits,
  );
}
