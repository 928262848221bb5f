// Random valid messages of every command, for the round-trip property tests. Each generator returns the value
// and the fd count that must travel with it. Values set every optional field (argsz...) so that
// decode(encode(x)) must give back exactly x.

import {
  Command,
  DeviceFeatureFlags,
  DmaUnmapFlags,
  dirtyBitmapSize,
  encodeCapabilities,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeMigDeviceState,
  encodeMigrationFlags,
  FEATURE_OPS,
  Feature,
  type IoFdSubRegion,
  MigState,
  type RegionCap,
  RegionInfoFlags,
  regionInfoReplyFdRule,
  regionInfoReplyFor,
  regionIoFdsReplyFor,
  SetIrqsFlags,
  type SparseMmapArea,
  U64_MAX,
} from '../src/index.js';
import type { Prng } from './helpers.js';

export interface Generated {
  value: unknown;
  fds: number;
}
type Gen = (r: Prng) => Generated;

const MiB = 1048576;
const v = (value: unknown, fds = 0): Generated => ({ value, fds });

/** A range [address, address+size) with size >= 1 that does not pass 2^64. */
function range(r: Prng): { address: bigint; size: bigint } {
  let size = r.edgyU64();
  if (size === 0n) size = 1n;
  const room = U64_MAX - size + 1n; // address may go up to 2^64 - size
  const address = room === 0n ? 0n : r.u64() % (room + 1n);
  return { address, size };
}

function caps(r: Prng): Uint8Array | undefined {
  if (r.int(4) === 0) return undefined;
  return encodeCapabilities({
    ...(r.bool() ? { maxMsgFds: r.int(1025) } : {}),
    ...(r.bool() ? { maxDataXferSize: 1 + r.int(64 * MiB) } : {}),
    ...(r.bool() ? { pgsizes: r.pick([4096, 4096 | 0x200000, 0x40201000]) } : {}),
    ...(r.bool() ? { maxDmaMaps: 1 + r.int(65535) } : {}),
    ...(r.bool() ? { migration: { pgsize: 2 ** (12 + r.int(10)), maxBitmapSize: 1 + r.int(2 ** 28) } } : {}),
    ...(r.bool() ? { twinSocket: { supported: false } } : {}),
    ...(r.bool() ? { writeMultiple: r.bool() } : {}),
  });
}

function sparseAreas(r: Prng, regionSize: bigint): SparseMmapArea[] {
  const areas: SparseMmapArea[] = [];
  let at = 0n;
  const n = r.int(5);
  for (let i = 0; i < n && at < regionSize; i++) {
    const offset = at + BigInt(r.int(3)) * 0x1000n;
    const size = BigInt(r.int(4)) * 0x1000n; // zero-size areas are legal (QEMU drops them)
    if (offset + size > regionSize) break;
    areas.push({ offset, size });
    at = offset + size;
  }
  return areas;
}

function regionCaps(r: Prng, regionSize: bigint): RegionCap[] {
  const caps: RegionCap[] = [];
  const n = r.int(3);
  for (let i = 0; i < n; i++) {
    caps.push(
      r.bool()
        ? { id: 1, version: 1 + r.int(2), areas: sparseAreas(r, regionSize) }
        : { id: 2, version: 1, type: r.u32(), subtype: r.u32() },
    );
  }
  return caps;
}

function setIrqs(r: Prng): Generated {
  if (r.int(5) === 0) {
    return v({
      argsz: 20 + r.int(8),
      flags: SetIrqsFlags.DATA_NONE | SetIrqsFlags.ACTION_TRIGGER,
      index: r.int(5),
      start: 0,
      count: 0,
    });
  }
  const action = r.pick([SetIrqsFlags.ACTION_MASK, SetIrqsFlags.ACTION_UNMASK, SetIrqsFlags.ACTION_TRIGGER]);
  const data = r.pick([SetIrqsFlags.DATA_NONE, SetIrqsFlags.DATA_BOOL, SetIrqsFlags.DATA_EVENTFD]);
  const count = 1 + r.int(data === SetIrqsFlags.DATA_BOOL ? 64 : 16);
  const start = r.bool() ? r.int(2048) : 0xffffffff + 1 - count - r.int(3);
  const base = { flags: data | action, index: r.int(5), start, count };
  if (data === SetIrqsFlags.DATA_BOOL) {
    const bytes = Uint8Array.from({ length: count }, () => r.int(2));
    return v({ argsz: 20 + count, ...base, data: bytes });
  }
  return v({ argsz: 20, ...base }, data === SetIrqsFlags.DATA_EVENTFD && r.bool() ? count : 0);
}

function featureRequest(r: Prng): Generated {
  const { GET, SET, PROBE } = DeviceFeatureFlags;
  switch (r.int(6)) {
    case 0:
      return v({ argsz: 16 + r.int(64), flags: Feature.MIGRATION | GET, data: new Uint8Array(0) });
    case 1: {
      const state = r.pick([
        MigState.STOP,
        MigState.RUNNING,
        MigState.STOP_COPY,
        MigState.RESUMING,
        MigState.PRE_COPY,
      ]);
      const data = encodeMigDeviceState({ deviceState: state, dataFd: r.u32() });
      return v({ argsz: 16 + r.int(8), flags: Feature.MIG_DEVICE_STATE | SET, data });
    }
    case 2: {
      const ranges = [];
      let at = BigInt(r.int(1000)) * 0x1000n;
      for (let i = r.int(4); i > 0; i--) {
        const length = BigInt(1 + r.int(100)) * 0x1000n;
        ranges.push({ iova: at, length });
        at += length + BigInt(r.int(3)) * 0x1000n;
      }
      const data = encodeDmaLoggingControl({ pageSize: 1n << BigInt(12 + r.int(9)), ranges });
      return v({ argsz: 8 + data.byteLength + r.int(8), flags: Feature.DMA_LOGGING_START | SET, data });
    }
    case 3: {
      const pageSize = 1n << BigInt(12 + r.int(4));
      const length = BigInt(1 + r.int(4096)) * 0x1000n;
      const data = encodeDmaLoggingReport({ iova: BigInt(r.int(1 << 20)) * 0x1000n, length, pageSize });
      const argsz = 32 + Number(dirtyBitmapSize(length, pageSize)) + r.int(16);
      return v({ argsz, flags: Feature.DMA_LOGGING_REPORT | GET, data });
    }
    case 4: {
      const feature = r.pick([1, 2, 6, 7, 8]);
      const ops = FEATURE_OPS[feature]!;
      const flags = feature | PROBE | (r.bool() ? ops & GET : 0) | (r.bool() ? ops & SET : 0);
      return v({ argsz: 8, flags, data: new Uint8Array(0) });
    }
    default: {
      const feature = r.pick([0, 3, 4, 5, 9, 0xffff]);
      const ops = r.pick([GET, SET, PROBE, GET | PROBE, SET | PROBE, GET | SET | PROBE]);
      const data = r.bytes(r.int(32));
      return v({ argsz: 8 + data.byteLength + r.int(32), flags: feature | ops, data });
    }
  }
}

function featureReply(r: Prng): Generated {
  const { GET, SET } = DeviceFeatureFlags;
  switch (r.int(4)) {
    case 0:
      return v({
        argsz: 16,
        flags: Feature.MIGRATION | GET,
        data: encodeMigrationFlags(r.pick([1n, 5n, 7n])),
      });
    case 1:
      return v({
        argsz: 16,
        flags: Feature.MIG_DEVICE_STATE | GET,
        data: encodeMigDeviceState({ deviceState: r.int(8), dataFd: r.u32() }),
      });
    case 2: {
      const pageSize = 1n << BigInt(12 + r.int(4));
      const length = BigInt(1 + r.int(1024)) * 0x1000n;
      const bitmap = r.bytes(Number(dirtyBitmapSize(length, pageSize)));
      const data = encodeDmaLoggingReport({ iova: 0x100000n, length, pageSize, bitmap });
      return v({ argsz: 8 + data.byteLength, flags: Feature.DMA_LOGGING_REPORT | GET, data });
    }
    default: {
      const data = r.bytes(r.int(24));
      return v({ argsz: 8 + data.byteLength + r.int(8), flags: r.pick([2, 6, 7, 9]) | SET, data });
    }
  }
}

export const requestGenerators: Record<Command, Gen> = {
  [Command.VERSION]: (r) => {
    const c = caps(r);
    return v(
      c
        ? { major: r.int(3), minor: r.int(65536), capabilities: c }
        : { major: r.int(3), minor: r.int(65536) },
    );
  },
  [Command.DMA_MAP]: (r) => {
    const { address, size } = range(r);
    const offset = r.bool() ? 0n : (U64_MAX - size + 1n) / 2n;
    return v({ argsz: 32 + r.int(64), flags: 1 + r.int(3), offset, address, size }, r.int(2));
  },
  [Command.DMA_UNMAP]: (r) => {
    switch (r.int(3)) {
      case 0:
        return v({ argsz: 24 + r.int(MiB - 24), flags: DmaUnmapFlags.ALL, address: 0n, size: 0n });
      case 1: {
        const size = BigInt(r.int(4096));
        const bitmap = { pgsize: 1n << BigInt(r.int(30)), size };
        return v({
          argsz: 40 + Number(size) + r.int(64),
          flags: DmaUnmapFlags.GET_DIRTY_BITMAP,
          ...range(r),
          bitmap,
        });
      }
      default:
        return v({ argsz: 24 + r.int(64), flags: 0, ...range(r) });
    }
  },
  [Command.DEVICE_GET_INFO]: (r) => v({ argsz: 16 + r.int(100) }),
  [Command.DEVICE_GET_REGION_INFO]: (r) => v({ argsz: 32 + r.int(4096), index: r.edgyU32() }),
  [Command.DEVICE_GET_REGION_IO_FDS]: (r) => v({ argsz: 16 + r.int(MiB - 16), index: r.edgyU32() }),
  [Command.DEVICE_GET_IRQ_INFO]: (r) => v({ argsz: 16 + r.int(100), index: r.edgyU32() }),
  [Command.DEVICE_SET_IRQS]: setIrqs,
  [Command.REGION_READ]: (r) => v({ offset: r.edgyU64(), region: r.edgyU32(), count: r.int(MiB + 1) }),
  [Command.REGION_WRITE]: (r) => v({ offset: r.edgyU64(), region: r.edgyU32(), data: r.bytes(r.int(64)) }),
  [Command.DMA_READ]: (r) => {
    const count = BigInt(r.int(MiB + 1));
    return v({ address: r.u64() % (U64_MAX - count + 2n), count });
  },
  [Command.DMA_WRITE]: (r) => {
    const data = r.bytes(r.int(64));
    return v({ address: r.u64() % (U64_MAX - BigInt(data.byteLength) + 2n), data });
  },
  [Command.DEVICE_RESET]: () => v({}),
  [Command.REGION_WRITE_MULTI]: (r) =>
    v({
      writes: Array.from({ length: r.int(10) }, () => ({
        offset: r.edgyU64(),
        region: r.int(9),
        data: r.bytes(r.int(9)),
      })),
    }),
  [Command.DEVICE_FEATURE]: featureRequest,
  [Command.MIG_DATA_READ]: (r) => {
    const size = r.int(MiB + 1);
    return v({ argsz: 8 + size + r.int(100), size });
  },
  [Command.MIG_DATA_WRITE]: (r) => {
    const data = r.bytes(r.int(64));
    return v({ argsz: 8 + data.byteLength + r.int(8), data });
  },
};

export const replyGenerators: Record<Command, Gen> = {
  [Command.VERSION]: (r) => {
    const c = caps(r);
    return v(c ? { major: 0, minor: r.int(3), capabilities: c } : { major: 0, minor: r.int(3) });
  },
  [Command.DMA_MAP]: () => v({}),
  [Command.DMA_UNMAP]: (r) => {
    switch (r.int(3)) {
      case 0:
        return v({});
      case 1: {
        const data = r.bytes(r.int(64));
        const bitmap = { pgsize: 0x1000n, size: BigInt(data.byteLength), data };
        return v({ argsz: 40 + data.byteLength, flags: DmaUnmapFlags.GET_DIRTY_BITMAP, ...range(r), bitmap });
      }
      default:
        return v({ argsz: 24, flags: r.pick([0, 2]), ...range(r) });
    }
  },
  [Command.DEVICE_GET_INFO]: (r) =>
    v({ argsz: 16, flags: r.edgyU32(), numRegions: r.edgyU32(), numIrqs: r.edgyU32() }),
  [Command.DEVICE_GET_REGION_INFO]: (r) => {
    const size = BigInt(r.int(64)) * 0x1000n;
    const flags = r.int(8) & ~RegionInfoFlags.CAPS;
    const reply = regionInfoReplyFor(
      { flags, index: r.edgyU32(), size, offset: r.u64(), caps: regionCaps(r, size) },
      32 + r.int(200),
    );
    return v(reply, regionInfoReplyFdRule(reply).min);
  },
  [Command.DEVICE_GET_REGION_IO_FDS]: (r) => {
    // n sub-regions sharing n fds (each fd used at least once is not required of the codec, only fd_index < fds).
    const n = r.int(5);
    const subs: IoFdSubRegion[] = Array.from({ length: n }, () => ({
      offset: r.edgyU64(),
      size: r.edgyU64(),
      fdIndex: r.int(n),
      type: r.int(3),
      flags: r.u32(),
      datamatch: r.u64(),
    }));
    const reply = regionIoFdsReplyFor(r.int(9), subs, 16 + r.int(240));
    return v(reply, reply.subRegions.length);
  },
  [Command.DEVICE_GET_IRQ_INFO]: (r) =>
    v({ argsz: 16, flags: r.int(16), index: r.edgyU32(), count: r.edgyU32() }),
  [Command.DEVICE_SET_IRQS]: () => v({}),
  [Command.REGION_READ]: (r) => v({ offset: r.edgyU64(), region: r.edgyU32(), data: r.bytes(r.int(64)) }),
  [Command.REGION_WRITE]: (r) => v({ offset: r.edgyU64(), region: r.edgyU32(), count: r.int(MiB + 1) }),
  [Command.DMA_READ]: (r) => v({ address: r.edgyU64(), data: r.bytes(r.int(64)) }),
  [Command.DMA_WRITE]: (r) => v({ address: r.edgyU64(), count: r.edgyU64() }),
  [Command.DEVICE_RESET]: () => v({}),
  [Command.REGION_WRITE_MULTI]: (r) => v({ count: r.int(1000) }),
  [Command.DEVICE_FEATURE]: featureReply,
  [Command.MIG_DATA_READ]: (r) => {
    const data = r.bytes(r.int(64));
    return v({ argsz: r.edgyU32(), data });
  },
  [Command.MIG_DATA_WRITE]: () => v({}),
};
