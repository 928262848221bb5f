// Wire tracing: the recorded-stream file format (docs/wire-trace.md) and a dissector that turns one message into
// one readable line (command, decoded fields with flags by name, reply errno), pairing replies with their
// requests for latency. No I/O: the server's recorder writes these bytes, `vfio-user-trace` reads them.
//
// File format (little-endian):
//   file header, 32 bytes: magic "VFUTRACE" @0 | u16 version (1) @8 | u16 header size (32) @10 | u32 0 @12 |
//                          u64 wall-clock start, Unix ns @16 | u64 0 @24
//   records, each a 16-byte record header + body:
//                          u8 kind @0 | u8 flags @1 | u16 fd count @2 | u32 body length @4 |
//                          u64 ns since the start (monotonic) @8
//   kind 1 MESSAGE: body = the message exactly as it crossed the socket (header included); flags bit 0 = sent by
//          the server, bit 1 = on the twin socket; fd count = fds attached to it (the fds themselves are not kept)
//   kind 2 SESSION_START, 3 SESSION_END: body = UTF-8 JSON ({session, peer} / {session, reason})
//   kind 4 DROPPED: body = UTF-8 JSON {records, bytes}: what the recorder could not write (a slow disk)

import { u16, u32, u64, viewOf } from './bytes.js';
import { decodeReply, decodeRequest } from './codec.js';
import { Command, commandName, HEADER_SIZE, isKnownCommand, MsgFlags } from './constants.js';
import { errnoName } from './errors.js';
import { decodeHeader, type Header } from './header.js';
import { DeviceFeatureFlags, Feature } from './messages/device-feature.js';
import { DeviceInfoFlags } from './messages/device-info.js';
import { DmaMapFlags } from './messages/dma-map.js';
import { DmaUnmapFlags } from './messages/dma-unmap.js';
import { IrqIndex, IrqInfoFlags } from './messages/irq-info.js';
import { RegionInfoFlags } from './messages/region-info.js';
import { SetIrqsFlags } from './messages/set-irqs.js';

/** The first 8 bytes of a wire trace file. */
export const TRACE_MAGIC = 'VFUTRACE';
/** The trace file format version this package reads and writes. */
export const TRACE_VERSION = 1;
/** Size of a trace file's header in bytes. */
export const TRACE_FILE_HEADER_SIZE = 32;
/** Size of a trace record's header in bytes. */
export const TRACE_RECORD_HEADER_SIZE = 16;
/** Record kinds. */
export const TraceKind = { MESSAGE: 1, SESSION_START: 2, SESSION_END: 3, DROPPED: 4 } as const;
/** Record flags. */
export const TraceFlags = { FROM_SERVER: 0x1, TWIN: 0x2 } as const;
/** The largest record body a reader accepts (a message is at most max_data_xfer_size + overhead: 64 MiB+). */
export const TRACE_MAX_BODY = 80 << 20;

/** One record of a trace file: kind, flags, fd count, timestamp and the message bytes. */
export interface TraceRecord {
  kind: number;
  flags: number;
  fds: number;
  /** Nanoseconds since the recording started. */
  timeNs: bigint;
  body: Uint8Array;
}

/** A trace file's header: format version and the recording's start time. */
export interface TraceFileHeader {
  version: number;
  /** Wall-clock time of the recording's start, Unix nanoseconds. */
  startNs: bigint;
}

/** Encode a trace file header for a recording that started at `startNs` (Unix nanoseconds). */
export function encodeTraceFileHeader(startNs: bigint): Uint8Array {
  const out = new Uint8Array(TRACE_FILE_HEADER_SIZE);
  const dv = viewOf(out);
  out.set(new TextEncoder().encode(TRACE_MAGIC), 0);
  dv.setUint16(8, TRACE_VERSION, true);
  dv.setUint16(10, TRACE_FILE_HEADER_SIZE, true);
  dv.setBigUint64(16, startNs, true);
  return out;
}

/** The 16-byte header of one record (the body follows it in the file). */
export function encodeTraceRecordHeader(
  kind: number,
  flags: number,
  fds: number,
  bodyLength: number,
  timeNs: bigint,
): Uint8Array {
  const out = new Uint8Array(TRACE_RECORD_HEADER_SIZE);
  const dv = viewOf(out);
  dv.setUint8(0, kind);
  dv.setUint8(1, flags);
  dv.setUint16(2, Math.min(fds, 0xffff), true);
  dv.setUint32(4, bodyLength, true);
  dv.setBigUint64(8, timeNs, true);
  return out;
}

/** Raised for a file that is not a trace or is corrupt. */
export class TraceFormatError extends Error {
  override name = 'TraceFormatError';
}

/**
 * Parses a trace file pushed in chunks of any size: push() returns the records completed by that chunk (the file
 * header first, via `header`). end() throws if the file stopped inside a record.
 */
export class TraceParser {
  header: TraceFileHeader | undefined;
  private buf = new Uint8Array(0);

  push(chunk: Uint8Array): TraceRecord[] {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf, 0);
    joined.set(chunk, this.buf.length);
    let at = 0;
    const out: TraceRecord[] = [];
    const dv = viewOf(joined);
    if (!this.header) {
      if (joined.length < TRACE_FILE_HEADER_SIZE) {
        this.buf = joined;
        return out;
      }
      const magic = new TextDecoder().decode(joined.subarray(0, 8));
      if (magic !== TRACE_MAGIC) throw new TraceFormatError('not a vfio-user trace (bad magic)');
      const version = u16(dv, 8);
      if (version !== TRACE_VERSION) throw new TraceFormatError(`trace format version ${version} unknown`);
      const size = u16(dv, 10);
      if (size < TRACE_FILE_HEADER_SIZE) throw new TraceFormatError(`file header size ${size}`);
      if (joined.length < size) {
        this.buf = joined;
        return out;
      }
      this.header = { version, startNs: u64(dv, 16) };
      at = size;
    }
    while (joined.length - at >= TRACE_RECORD_HEADER_SIZE) {
      const len = u32(dv, at + 4);
      if (len > TRACE_MAX_BODY) throw new TraceFormatError(`record of ${len} bytes at offset ${at}`);
      if (joined.length - at < TRACE_RECORD_HEADER_SIZE + len) break;
      out.push({
        kind: dv.getUint8(at),
        flags: dv.getUint8(at + 1),
        fds: u16(dv, at + 2),
        timeNs: u64(dv, at + 8),
        body: joined.slice(at + TRACE_RECORD_HEADER_SIZE, at + TRACE_RECORD_HEADER_SIZE + len),
      });
      at += TRACE_RECORD_HEADER_SIZE + len;
    }
    this.buf = joined.slice(at);
    return out;
  }

  end(): void {
    if (!this.header) throw new TraceFormatError('not a vfio-user trace (too short)');
    if (this.buf.length) throw new TraceFormatError(`file ends inside a record (${this.buf.length} bytes)`);
  }
}

// ---- dissector ---------------------------------------------------------------------------------------------

type FlagTable = Readonly<Record<string, number>>;

/** Bits of `value` by name (`READ|WRITE`), unknown bits in hex. */
export function flagNames(value: number, table: FlagTable): string {
  const names: string[] = [];
  let rest = value >>> 0;
  for (const [name, bit] of Object.entries(table)) {
    if (bit !== 0 && (rest & bit) === bit) {
      names.push(name);
      rest = (rest & ~bit) >>> 0;
    }
  }
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.length ? names.join('|') : '0';
}

const nameOf = (table: FlagTable, v: number): string =>
  Object.entries(table).find(([, x]) => x === v)?.[0] ?? String(v);

const FEATURE_OP_FLAGS = {
  GET: DeviceFeatureFlags.GET,
  SET: DeviceFeatureFlags.SET,
  PROBE: DeviceFeatureFlags.PROBE,
};

/** The flag table of a field, by command and direction (request/reply). */
function flagTable(command: number, reply: boolean): FlagTable | undefined {
  switch (command) {
    case Command.DMA_MAP:
      return DmaMapFlags;
    case Command.DMA_UNMAP:
      return DmaUnmapFlags;
    case Command.DEVICE_GET_INFO:
      return reply ? DeviceInfoFlags : undefined;
    case Command.DEVICE_GET_REGION_INFO:
      return reply ? RegionInfoFlags : undefined;
    case Command.DEVICE_GET_IRQ_INFO:
      return reply ? IrqInfoFlags : undefined;
    case Command.DEVICE_SET_IRQS:
      return SetIrqsFlags;
    default:
      return undefined;
  }
}

const MAX_DATA_SHOWN = 16;
const MAX_ITEMS_SHOWN = 4;
const MAX_TEXT_SHOWN = 240;

function bytesText(b: Uint8Array): string {
  const shown = Array.from(b.subarray(0, MAX_DATA_SHOWN), (x) => x.toString(16).padStart(2, '0')).join('');
  return `${b.length}B${b.length ? ` ${shown}${b.length > MAX_DATA_SHOWN ? '…' : ''}` : ''}`;
}

function valueText(key: string, v: unknown, command: number, reply: boolean): string {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (typeof v === 'number') {
    if (key === 'flags') {
      if (command === Command.DEVICE_FEATURE) {
        const feature = v & DeviceFeatureFlags.MASK;
        return `${flagNames(v & ~DeviceFeatureFlags.MASK, FEATURE_OP_FLAGS)} feature=${nameOf(Feature, feature)}`;
      }
      const table = flagTable(command, reply);
      if (table) return flagNames(v, table);
      return `0x${v.toString(16)}`;
    }
    if (key === 'index' && (command === Command.DEVICE_SET_IRQS || command === Command.DEVICE_GET_IRQ_INFO))
      return nameOf(IrqIndex, v);
    return String(v);
  }
  if (v instanceof Uint8Array) {
    if (key === 'capabilities') {
      const end = v.indexOf(0);
      const text = new TextDecoder().decode(v.subarray(0, end < 0 ? v.length : end));
      return text.length > MAX_TEXT_SHOWN ? `${text.slice(0, MAX_TEXT_SHOWN)}…` : text;
    }
    return bytesText(v);
  }
  if (Array.isArray(v)) {
    const items = v.slice(0, MAX_ITEMS_SHOWN).map((x) => valueText('', x, command, reply));
    if (v.length > MAX_ITEMS_SHOWN) items.push(`…${v.length - MAX_ITEMS_SHOWN} more`);
    return `[${items.join(', ')}]`;
  }
  if (v && typeof v === 'object') return `{${fieldsText(v as Record<string, unknown>, command, reply)}}`;
  return String(v);
}

function fieldsText(body: Record<string, unknown>, command: number, reply: boolean): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(body)) {
    if (v === undefined) continue;
    parts.push(`${k}=${valueText(k, v, command, reply)}`);
  }
  return parts.join(' ');
}

/** Decoding limits generous enough for any conforming message (a trace shows what was sent, not a verdict). */
const LAX = { maxDataXferSize: 64 << 20, maxMsgFds: 253 };

/** One message decoded for a trace line: its header, command name, kind and decoded fields. */
export interface MessageSummary {
  header: Header;
  name: string;
  kind: 'command' | 'reply' | 'error';
  noReply: boolean;
  /** Error replies: the errno. */
  errno?: number;
  /** Decoded fields, `key=value` separated by spaces (or why the body did not decode). */
  fields: string;
}

/** One message (header included) as a readable summary. Never throws. */
export function describeMessage(bytes: Uint8Array, fds = 0): MessageSummary | undefined {
  if (bytes.length < HEADER_SIZE) return undefined;
  const header = decodeHeader(bytes);
  const type = header.flags & MsgFlags.TYPE_MASK;
  const reply = type === MsgFlags.TYPE_REPLY;
  const error = reply && (header.flags & MsgFlags.ERROR) !== 0;
  const noReply = !reply && (header.flags & MsgFlags.NO_REPLY) !== 0;
  const name = commandName(header.command);
  const s: MessageSummary = {
    header,
    name,
    kind: error ? 'error' : reply ? 'reply' : 'command',
    noReply,
    fields: '',
  };
  if (error) {
    s.errno = header.error;
    return s;
  }
  if (type !== MsgFlags.TYPE_COMMAND && type !== MsgFlags.TYPE_REPLY) {
    s.fields = `<message type ${type}>`;
    return s;
  }
  const payload = bytes.subarray(HEADER_SIZE, Math.min(bytes.length, Math.max(header.size, HEADER_SIZE)));
  if (!isKnownCommand(header.command)) {
    s.fields = payload.length ? `payload=${bytesText(payload)}` : '';
    return s;
  }
  try {
    const body = reply
      ? decodeReply(header.command, payload, fds, LAX)
      : decodeRequest(header.command, payload, fds, LAX);
    s.fields = fieldsText(body as Record<string, unknown>, header.command, reply);
  } catch (err) {
    s.fields = `<undecodable: ${(err as Error).message}> payload=${bytesText(payload)}`;
  }
  if (fds) s.fields += `${s.fields ? ' ' : ''}fds=${fds}`;
  return s;
}

// ---- pairing and lines ----------------------------------------------------------------------------------------

/** One decoded message of a trace, as `vfio-user-trace` prints it. */
export interface TraceLine {
  /** Nanoseconds since the recording started. */
  timeNs: bigint;
  fromServer: boolean;
  twin: boolean;
  summary: MessageSummary;
  /** Replies: time since the request they answer (ns). */
  latencyNs?: bigint;
  /** Replies: the summary of the request they answer, when it was seen. */
  request?: TraceLine;
}

/** Bound on requests awaiting their reply (ids are u16 per direction). */
const MAX_PENDING = 2 * 65536;

/**
 * Pairs replies with requests (same id and command, opposite direction) as messages are fed in order, so each
 * reply line carries its latency and its request. Requests that never get a reply are forgotten past a bound.
 */
export class TracePairer {
  private readonly pending = new Map<string, TraceLine>();

  feed(
    timeNs: bigint,
    fromServer: boolean,
    twin: boolean,
    bytes: Uint8Array,
    fds = 0,
  ): TraceLine | undefined {
    const summary = describeMessage(bytes, fds);
    if (!summary) return undefined;
    const line: TraceLine = { timeNs, fromServer, twin, summary };
    const h = summary.header;
    if (summary.kind === 'command') {
      if (!summary.noReply) {
        if (this.pending.size >= MAX_PENDING) {
          const oldest = this.pending.keys().next().value;
          if (oldest !== undefined) this.pending.delete(oldest);
        }
        this.pending.set(`${fromServer ? 's' : 'c'}${h.id}`, line);
      }
      return line;
    }
    const key = `${fromServer ? 'c' : 's'}${h.id}`;
    const req = this.pending.get(key);
    if (req && req.summary.header.command === h.command) {
      this.pending.delete(key);
      line.request = req;
      line.latencyNs = timeNs - req.timeNs;
    }
    return line;
  }

  /** Forgets every pending request (a new session). */
  reset(): void {
    this.pending.clear();
  }
}

/** `12.345678` seconds with microseconds. */
function secondsText(ns: bigint): string {
  const us = ns / 1000n;
  return `${us / 1000000n}.${(us % 1000000n).toString().padStart(6, '0')}`;
}

function msText(ns: bigint): string {
  return `${(Number(ns) / 1e6).toFixed(3)}ms`;
}

/**
 * One line: `   0.001234 C>S #3 DMA_MAP argsz=32 flags=READ|WRITE offset=0x0 address=0x100000 size=0x10000 fds=1`,
 * replies `   0.001300 S>C #3 DMA_MAP ok 0.066ms`, errors `... S>C #4 REGION_READ error EINVAL(22) 0.012ms`.
 */
export function formatTraceLine(line: TraceLine): string {
  const s = line.summary;
  const dir = `${line.fromServer ? 'S>C' : 'C>S'}${line.twin ? '(twin)' : ''}`;
  let text = `${secondsText(line.timeNs).padStart(12)} ${dir} #${s.header.id} ${s.name}`;
  if (s.kind === 'command') {
    if (s.noReply) text += ' NO_REPLY';
    if (s.fields) text += ` ${s.fields}`;
    return text;
  }
  if (s.kind === 'error') text += ` error ${errnoName(s.errno!)}(${s.errno})`;
  else text += ` ok${s.fields ? ` ${s.fields}` : ''}`;
  if (line.latencyNs !== undefined) text += ` ${msText(line.latencyNs)}`;
  return text;
}
