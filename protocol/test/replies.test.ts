// What a client checks in a server's replies, the reply builders a server uses (argsz budgets), fd rules,
// and the migration state machine.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  ANY_FDS,
  Command,
  checkSparseAreas,
  DeviceFeatureFlags,
  decodeDeviceFeatureReply,
  decodeDeviceGetInfoReply,
  decodeDmaMapReply,
  decodeDmaUnmapReply,
  decodeIrqInfoReply,
  decodeRegionInfoReply,
  decodeRegionIoFdsReply,
  decodeRegionReadReply,
  decodeRegionWriteMultiReply,
  decodeVersionReply,
  deviceFeatureEcho,
  deviceFeatureGetReply,
  dirtyBitmapSize,
  dmaUnmapEcho,
  Errno,
  encodeDmaLoggingReport,
  encodeRegionInfoReply,
  encodeRegionInfoReplyFor,
  encodeRegionIoFdsReplyFor,
  Feature,
  fdCountFits,
  fdRule,
  isRegionInfoTruncated,
  MigState,
  migStatePath,
  NO_FDS,
  type RegionCap,
  RegionInfoFlags,
  rangeOverflows,
  rangesOverlap,
  regionInfoReplyFor,
  saturatingAdd64,
  strictRequestFds,
  toHex,
  U64_MAX,
} from '../src/index.js';
import { le, nul, throwsErrno } from './helpers.js';

const { EINVAL } = Errno;

// ---- GET_REGION_INFO ------------------------------------------------------------------------------------------
const rgn = suite('GET_REGION_INFO replies');
const sparse: RegionCap = {
  id: 1,
  version: 1,
  areas: [
    { offset: 0n, size: 0x1000n },
    { offset: 0x3000n, size: 0x1000n },
  ],
};
const BAR2 = {
  flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE | RegionInfoFlags.MMAP,
  index: 2,
  size: 0x4000n,
  offset: 0n,
};

rgn('RGN-06: no caps, argsz 40 -> 32 bytes, argsz 32, no padding', () => {
  const out = encodeRegionInfoReplyFor({ flags: 3, index: 7, size: 256n, offset: 0n }, 40);
  assert.is(out.byteLength, 32);
  assert.is(decodeRegionInfoReply(out, 0).argsz, 32);
});

rgn('RGN-07: caps with argsz 32 -> exactly 32 bytes, argsz 80, CAPS clear, no fd', () => {
  const out = encodeRegionInfoReplyFor({ ...BAR2, caps: [sparse] }, 32);
  assert.is(out.byteLength, 32);
  const r = decodeRegionInfoReply(out, 0);
  assert.is(r.argsz, 80);
  assert.is(r.flags & RegionInfoFlags.CAPS, 0);
  assert.is(r.capOffset, 0);
  assert.ok(isRegionInfoTruncated(r));
  assert.equal(fdRule(Command.DEVICE_GET_REGION_INFO, 'reply', r), { min: 0, max: 1 });
});

rgn('RGN-08: argsz = full size -> CAPS, cap_offset 32, sparse cap, exactly 1 fd', () => {
  const out = encodeRegionInfoReplyFor({ ...BAR2, caps: [sparse] }, 80);
  assert.is(out.byteLength, 80);
  const r = decodeRegionInfoReply(out, 1);
  assert.is(r.flags, 0xf);
  assert.is(r.capOffset, 32);
  assert.equal(r.caps, [sparse]);
  assert.not.ok(isRegionInfoTruncated(r));
  throwsErrno(() => decodeRegionInfoReply(out, 0), EINVAL, 'BAD_FD_COUNT');
  throwsErrno(() => decodeRegionInfoReply(out, 2), EINVAL, 'BAD_FD_COUNT'); // CLI-10
});

rgn('RGN-09: argsz = full + 64 -> the full size, not padded', () => {
  assert.is(encodeRegionInfoReplyFor({ ...BAR2, caps: [sparse] }, 144).byteLength, 80);
});

rgn('RGN-15: the reply never exceeds the budget, for every budget', () => {
  const caps: RegionCap[] = [{ id: 2, version: 1, type: 1, subtype: 2 }, sparse];
  for (let budget = 32; budget <= 128; budget++) {
    const out = encodeRegionInfoReplyFor({ ...BAR2, caps }, budget);
    assert.ok(out.byteLength <= budget, `budget ${budget}`);
    const r = decodeRegionInfoReply(out, budget >= 96 ? 1 : 0);
    assert.is(r.argsz, 96);
    assert.is(r.caps.length, budget >= 96 ? 2 : 0);
  }
  assert.throws(() => regionInfoReplyFor(BAR2, 31), RangeError);
});

rgn('a region with MMAP but no caps (whole-region mmap) needs exactly one fd (RGN-17)', () => {
  const out = encodeRegionInfoReplyFor(BAR2, 32);
  decodeRegionInfoReply(out, 1);
  throwsErrno(() => decodeRegionInfoReply(out, 0), EINVAL, 'BAD_FD_COUNT');
});

rgn('CLI-09: CAPS with cap_offset 0 (or beyond argsz) is EINVAL', () => {
  const bad = le([
    [32, 4],
    [0xf, 4],
    [2, 4],
    [0, 4],
    [0x4000n, 8],
    [0n, 8],
  ]);
  throwsErrno(() => decodeRegionInfoReply(bad, 0), EINVAL, 'BAD_CAP_CHAIN');
  const beyond = le([
    [80, 4],
    [0xb, 4],
    [2, 4],
    [80, 4],
    [0x4000n, 8],
    [0n, 8],
  ]);
  throwsErrno(() => decodeRegionInfoReply(beyond, 0), EINVAL, 'BAD_CAP_CHAIN');
});

rgn('a reply longer than its own argsz, or trailing bytes without CAPS, is EINVAL', () => {
  const full = encodeRegionInfoReplyFor({ ...BAR2, caps: [sparse] }, 80);
  const lying = Uint8Array.from(full);
  lying[0] = 79;
  throwsErrno(() => decodeRegionInfoReply(lying, 1), EINVAL, 'BAD_ARGSZ');
  const noCaps = Uint8Array.from([
    ...le([
      [40, 4],
      [3, 4],
      [7, 4],
      [0, 4],
      [256n, 8],
      [0n, 8],
    ]),
    ...new Uint8Array(8),
  ]);
  throwsErrno(() => decodeRegionInfoReply(noCaps, 0), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeRegionInfoReply(new Uint8Array(31), 0), EINVAL, 'BAD_PAYLOAD_SIZE');
});

/** A 64-byte region info reply (READ|WRITE|CAPS) with two TYPE caps at 32 and 48; a fresh copy each call. */
const twoTypeCapsReply = () =>
  encodeRegionInfoReply({
    argsz: 64,
    flags: 0xb,
    index: 9,
    capOffset: 32,
    size: 0x1000n,
    offset: 0n,
    caps: [
      { id: 2, version: 1, type: 1, subtype: 1 },
      { id: 2, version: 1, type: 2, subtype: 2 },
    ],
  });

rgn('cap chains that loop, point backwards or overrun are EINVAL', () => {
  const reply = twoTypeCapsReply();
  decodeRegionInfoReply(reply, 0);
  const loop = Uint8Array.from(reply);
  new DataView(loop.buffer).setUint32(48 + 4, 32, true); // second cap points back at the first
  throwsErrno(() => decodeRegionInfoReply(loop, 0), EINVAL, 'BAD_CAP_CHAIN');
  const self = Uint8Array.from(reply);
  new DataView(self.buffer).setUint32(32 + 4, 40, true); // next inside its own cap
  throwsErrno(() => decodeRegionInfoReply(self, 0), EINVAL, 'BAD_CAP_CHAIN');
  const overrun = Uint8Array.from(reply);
  new DataView(overrun.buffer).setUint32(32 + 4, 60, true);
  throwsErrno(() => decodeRegionInfoReply(overrun, 0), EINVAL, 'BAD_CAP_CHAIN');
  const manyAreas = encodeRegionInfoReply({
    argsz: 48,
    flags: 0xf,
    index: 2,
    capOffset: 32,
    size: 0x4000n,
    offset: 0n,
    caps: [{ id: 1, version: 1, areas: [] }],
  });
  new DataView(manyAreas.buffer).setUint32(32 + 8, 0xffffffff, true);
  throwsErrno(() => decodeRegionInfoReply(manyAreas, 1), EINVAL, 'BAD_CAP_CHAIN');
});

rgn('unknown cap ids are skipped, as QEMU does', () => {
  const reply = twoTypeCapsReply();
  new DataView(reply.buffer).setUint16(32, 3, true); // first cap becomes id 3 (MSIX_MAPPABLE)
  assert.equal(decodeRegionInfoReply(reply, 0).caps, [{ id: 2, version: 1, type: 2, subtype: 2 }]);
});

rgn('sparse areas outside the region or overlapping are EINVAL; zero-size areas are ignored', () => {
  checkSparseAreas(0x4000n, [
    { offset: 0n, size: 0x1000n },
    { offset: 0x9000n, size: 0n },
    { offset: 0x1000n, size: 0x3000n },
  ]);
  throwsErrno(() => checkSparseAreas(0x4000n, [{ offset: 0x3000n, size: 0x2000n }]), EINVAL, 'BAD_RANGE');
  throwsErrno(() => checkSparseAreas(0x4000n, [{ offset: U64_MAX, size: 2n }]), EINVAL, 'BAD_RANGE');
  throwsErrno(
    () =>
      checkSparseAreas(0x4000n, [
        { offset: 0x2000n, size: 0x1000n },
        { offset: 0x1000n, size: 0x2000n },
      ]),
    EINVAL,
    'BAD_RANGE',
  );
});

// ---- other replies --------------------------------------------------------------------------------------------
const rep = suite('other replies');

rep('DEVICE_GET_INFO and GET_IRQ_INFO replies must be exactly 16 bytes', () => {
  throwsErrno(() => decodeDeviceGetInfoReply(new Uint8Array(24)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeIrqInfoReply(new Uint8Array(8)), EINVAL, 'BAD_PAYLOAD_SIZE');
});

rep('replies carrying unexpected fds are EINVAL (QEMU: "unexpected FDs")', () => {
  throwsErrno(() => decodeDmaMapReply(new Uint8Array(0), 1), EINVAL, 'BAD_FD_COUNT');
  throwsErrno(() => decodeDeviceGetInfoReply(new Uint8Array(16), 1), EINVAL, 'BAD_FD_COUNT');
  throwsErrno(
    () => decodeVersionReply(Uint8Array.from([0, 0, 0, 0, ...nul('{}')]), 1),
    EINVAL,
    'BAD_FD_COUNT',
  );
});

rep('a DMA_MAP reply with a payload is EINVAL', () => {
  throwsErrno(() => decodeDmaMapReply(new Uint8Array(4)), EINVAL, 'BAD_PAYLOAD_SIZE');
});

rep('DMA_UNMAP: the echo is built from the request; header-only decodes to {}', () => {
  const echo = dmaUnmapEcho({ flags: 0, address: 0x1000n, size: 0x2000n });
  assert.equal(echo, { argsz: 24, flags: 0, address: 0x1000n, size: 0x2000n });
  assert.equal(decodeDmaUnmapReply(new Uint8Array(0)), {});
  throwsErrno(() => decodeDmaUnmapReply(new Uint8Array(20)), EINVAL, 'BAD_PAYLOAD_SIZE');
});

rep('RW-12: a header-only REGION_READ reply decodes as an empty read', () => {
  const r = decodeRegionReadReply(new Uint8Array(0));
  assert.is(r.data.byteLength, 0);
});

rep('CLI-18: a REGION_READ reply whose data does not match its count is EINVAL', () => {
  const p = Uint8Array.from([
    ...le([
      [0n, 8],
      [7, 4],
      [4, 4],
    ]),
    1,
    2,
    3,
    4,
    5,
  ]);
  throwsErrno(() => decodeRegionReadReply(p), EINVAL, 'BAD_PAYLOAD_SIZE');
});

rep('GET_REGION_IO_FDS: truncated replies, fd_index bounds and fd counts', () => {
  const subs = [
    { offset: 0n, size: 4n, fdIndex: 0, type: 0, flags: 0, datamatch: 0n },
    { offset: 8n, size: 4n, fdIndex: 1, type: 0, flags: 0, datamatch: 0n },
  ];
  const truncated = encodeRegionIoFdsReplyFor(0, subs, 16);
  assert.is(truncated.byteLength, 16);
  assert.equal(decodeRegionIoFdsReply(truncated, 0), {
    argsz: 96,
    flags: 0,
    index: 0,
    count: 2,
    subRegions: [],
  });
  throwsErrno(() => decodeRegionIoFdsReply(truncated, 1), EINVAL, 'BAD_FD_COUNT');
  const full = encodeRegionIoFdsReplyFor(0, subs, 96);
  assert.is(decodeRegionIoFdsReply(full, 2).subRegions.length, 2);
  throwsErrno(() => decodeRegionIoFdsReply(full, 1), EINVAL, 'BAD_FD_COUNT'); // fd_index 1 with one fd
  throwsErrno(() => decodeRegionIoFdsReply(full, 0), EINVAL, 'BAD_FD_COUNT');
  const none = encodeRegionIoFdsReplyFor(0, [], 16);
  assert.equal(decodeRegionIoFdsReply(none, 0).subRegions, []); // IOF-08
});

rep('REGION_WRITE_MULTI reply must be 8 bytes', () => {
  throwsErrno(() => decodeRegionWriteMultiReply(new Uint8Array(4)), EINVAL, 'BAD_PAYLOAD_SIZE');
});

rep('DEVICE_FEATURE: GET replies carry feature data of the right size; SET/PROBE echo', () => {
  const { GET, SET, PROBE } = DeviceFeatureFlags;
  const get = { argsz: 16, flags: Feature.MIGRATION | GET, data: new Uint8Array(0) };
  const reply = deviceFeatureGetReply(get, new Uint8Array(8));
  assert.is(reply.argsz, 16);
  throwsErrno(
    () =>
      decodeDeviceFeatureReply(
        le([
          [16, 4],
          [Feature.MIGRATION | GET, 4],
          [5, 4],
        ]),
      ),
    EINVAL,
  );
  const set = { argsz: 16, flags: Feature.MIG_DEVICE_STATE | SET, data: new Uint8Array(8) };
  assert.equal(deviceFeatureEcho(set), { ...set });
  decodeDeviceFeatureReply(
    le([
      [8, 4],
      [Feature.MIGRATION | GET | PROBE, 4],
    ]),
  );
  const report = encodeDmaLoggingReport({
    iova: 0n,
    length: 0x10000n,
    pageSize: 0x1000n,
    bitmap: new Uint8Array(7),
  });
  const bad = Uint8Array.from([
    ...le([
      [39, 4],
      [Feature.DMA_LOGGING_REPORT | GET, 4],
    ]),
    ...report,
  ]);
  throwsErrno(() => decodeDeviceFeatureReply(bad), EINVAL, 'BAD_PAYLOAD_SIZE');
});

rep('dirty bitmap sizes are whole u64 words', () => {
  assert.is(dirtyBitmapSize(0x1000n, 0x1000n), 8n);
  assert.is(dirtyBitmapSize(64n * 0x1000n, 0x1000n), 8n);
  assert.is(dirtyBitmapSize(65n * 0x1000n, 0x1000n), 16n);
  assert.is(dirtyBitmapSize(0x1001n, 0x1000n), 8n);
  assert.is(dirtyBitmapSize(0x200000n, 0x1000n), 64n);
});

// ---- fd rules -------------------------------------------------------------------------------------------------
const fds = suite('fd rules');

fds('the fd count of each message type', () => {
  assert.equal(fdRule(Command.DMA_MAP, 'request'), { min: 0, max: 1 });
  assert.equal(fdRule(Command.VERSION, 'request'), NO_FDS);
  assert.equal(fdRule(Command.VERSION, 'reply'), { min: 0, max: 1 });
  const twin = {
    major: 0,
    minor: 0,
    capabilities: nul('{"capabilities":{"twin_socket":{"supported":true,"fd_index":0}}}'),
  };
  assert.equal(fdRule(Command.VERSION, 'reply', twin), { min: 1, max: 1 });
  assert.equal(fdRule(Command.VERSION, 'reply', { major: 0, minor: 0 }), NO_FDS);
  assert.equal(fdRule(Command.DEVICE_GET_REGION_INFO, 'reply'), { min: 0, max: 1 });
  const set = { argsz: 20, flags: 0x24, index: 2, start: 0, count: 4 };
  const rule = fdRule(Command.DEVICE_SET_IRQS, 'request', set);
  assert.ok(fdCountFits(rule, 4));
  assert.ok(fdCountFits(rule, 0));
  assert.not.ok(fdCountFits(rule, 2));
  assert.equal(fdRule(Command.DEVICE_SET_IRQS, 'request', { ...set, flags: 0x21 }), NO_FDS);
  assert.equal(fdRule(Command.DEVICE_SET_IRQS, 'request'), ANY_FDS);
  for (const c of [
    Command.DMA_UNMAP,
    Command.DEVICE_GET_INFO,
    Command.REGION_READ,
    Command.REGION_WRITE,
    Command.DMA_READ,
    Command.DMA_WRITE,
    Command.DEVICE_RESET,
    Command.REGION_WRITE_MULTI,
    Command.DEVICE_FEATURE,
    Command.MIG_DATA_READ,
    Command.MIG_DATA_WRITE,
  ]) {
    assert.equal(fdRule(c, 'request'), NO_FDS, `${c} request`);
    assert.equal(fdRule(c, 'reply'), NO_FDS, `${c} reply`);
  }
});

fds('strict vs tolerant requests', () => {
  assert.ok(strictRequestFds(Command.VERSION));
  assert.ok(strictRequestFds(Command.DMA_READ));
  assert.not.ok(strictRequestFds(Command.DEVICE_GET_INFO));
});

// ---- migration FSM and ranges -------------------------------------------------------------------------------
const fsm = suite('migration state machine and range helpers');
const { STOP, RUNNING, STOP_COPY, RESUMING, PRE_COPY, ERROR, RUNNING_P2P } = MigState;

fsm('direct arcs are one step', () => {
  assert.equal(migStatePath(RUNNING, STOP), [STOP]);
  assert.equal(migStatePath(STOP, RESUMING), [RESUMING]);
  assert.equal(migStatePath(PRE_COPY, STOP_COPY), [STOP_COPY]);
  assert.equal(migStatePath(RUNNING, RUNNING), []);
});
fsm('FEA-16/17/18: multi-step paths', () => {
  assert.equal(migStatePath(RUNNING, STOP_COPY), [STOP, STOP_COPY]);
  assert.equal(migStatePath(RESUMING, RUNNING), [STOP, RUNNING]);
  assert.equal(migStatePath(PRE_COPY, STOP), [RUNNING, STOP]);
  assert.equal(migStatePath(PRE_COPY, RESUMING), [RUNNING, STOP, RESUMING]);
  assert.equal(migStatePath(STOP_COPY, RESUMING), [STOP, RESUMING]);
  assert.equal(migStatePath(STOP, PRE_COPY), [RUNNING, PRE_COPY]);
});
fsm('FEA-13/14/15: impossible requests are EINVAL', () => {
  throwsErrno(() => migStatePath(STOP_COPY, PRE_COPY), EINVAL, 'BAD_STATE_TRANSITION');
  throwsErrno(() => migStatePath(RUNNING, ERROR), EINVAL, 'BAD_STATE_TRANSITION');
  throwsErrno(() => migStatePath(RUNNING, RUNNING_P2P), EINVAL, 'BAD_STATE_TRANSITION');
  throwsErrno(() => migStatePath(ERROR, RUNNING), EINVAL, 'BAD_STATE_TRANSITION');
  throwsErrno(() => migStatePath(RUNNING, PRE_COPY, { preCopy: false }), EINVAL, 'BAD_STATE_TRANSITION');
});
fsm('saving states never appear as interior steps', () => {
  const states = [STOP, RUNNING, STOP_COPY, RESUMING, PRE_COPY];
  for (const from of states) {
    for (const to of states) {
      if (from === STOP_COPY && to === PRE_COPY) continue;
      const path = migStatePath(from, to);
      for (const s of path.slice(0, -1)) assert.ok(s !== STOP_COPY && s !== PRE_COPY, `${from}->${to}`);
    }
  }
});
fsm('range helpers saturate instead of wrapping', () => {
  assert.ok(rangeOverflows(U64_MAX, 2n));
  assert.not.ok(rangeOverflows(U64_MAX, 1n));
  assert.is(saturatingAdd64(U64_MAX, 5n), U64_MAX);
  assert.ok(rangesOverlap(0n, 10n, 9n, 1n));
  assert.not.ok(rangesOverlap(0n, 10n, 10n, 1n));
  assert.not.ok(rangesOverlap(0n, 0n, 0n, 10n));
  assert.is(toHex(new Uint8Array([0xab])), 'ab');
});

rgn.run();
rep.run();
fds.run();
fsm.run();
