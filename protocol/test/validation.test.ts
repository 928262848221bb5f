// Malformed requests from the conformance catalogue (docs/conformance-index.md) that can be judged from the payload alone: each must become a
// ProtocolError carrying the errno the server answers with. Device-level cases use the pure helpers.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Command,
  checkCommand,
  checkSetIrqsAgainstDevice,
  decodeDeviceFeatureRequest,
  decodeDeviceGetInfoRequest,
  decodeDeviceResetRequest,
  decodeDmaMapRequest,
  decodeDmaReadRequest,
  decodeDmaUnmapRequest,
  decodeDmaWriteRequest,
  decodeIrqInfoRequest,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  decodeRegionInfoRequest,
  decodeRegionIoFdsRequest,
  decodeRegionReadRequest,
  decodeRegionWriteMultiRequest,
  decodeRegionWriteRequest,
  decodeSetIrqsRequest,
  decodeVersionRequest,
  Errno,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeMigDeviceState,
  MigState,
  rangeWithin,
  type SetIrqsRequest,
} from '../src/index.js';
import { ascii, le, nul, throwsErrno } from './helpers.js';

const { EINVAL, E2BIG, EFAULT } = Errno;
const MiB = 1048576;

// ---- VERSION ------------------------------------------------------------------------------------------------
const ver = suite('validation: VERSION');
const version = (json?: Uint8Array, major = 0, minor = 0) =>
  json
    ? Uint8Array.from([
        ...le([
          [major, 2],
          [minor, 2],
        ]),
        ...json,
      ])
    : le([
        [major, 2],
        [minor, 2],
      ]);

ver('VER-02: a 0- or 2-byte payload is EINVAL', () => {
  throwsErrno(() => decodeVersionRequest(new Uint8Array(0)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeVersionRequest(new Uint8Array(2)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
ver('VER-03: VERSION carrying an fd is EINVAL', () => {
  throwsErrno(() => decodeVersionRequest(version(), 1), EINVAL, 'BAD_FD_COUNT');
});
ver('VER-07/08: no JSON, or {}, is fine', () => {
  assert.equal(decodeVersionRequest(version(), 0), { major: 0, minor: 0 });
  decodeVersionRequest(version(nul('{}')), 0);
});
ver('VER-09: {} without its NUL is EINVAL', () => {
  throwsErrno(() => decodeVersionRequest(version(ascii('{}'))), EINVAL, 'BAD_JSON');
});
const badJson: [string, string, string][] = [
  ['VER-10', '{', 'BAD_JSON'],
  ['VER-11', '"', 'BAD_JSON'],
  ['VER-12', '{"capabilities": "23"}', 'BAD_CAPABILITY'],
  ['VER-13', '{"capabilities": {"max_msg_fds": "foo"}}', 'BAD_CAPABILITY'],
  ['VER-14', '{"capabilities": {"max_msg_fds": -1}}', 'BAD_CAPABILITY'],
  ['VER-15', '{"capabilities": {"max_msg_fds": 1025}}', 'BAD_CAPABILITY'],
  ['VER-17', '{"capabilities": {"max_data_xfer_size": "x"}}', 'BAD_CAPABILITY'],
  ['VER-19', '{"capabilities": {"migration": "23"}}', 'BAD_CAPABILITY'],
  ['VER-20', '{"capabilities": {"migration": {"pgsize": "foo"}}}', 'BAD_CAPABILITY'],
  ['VER-21', '{"capabilities": {"migration": {"pgsize": 4095}}}', 'BAD_CAPABILITY'],
  ['VER-22a', '{"capabilities": {"twin_socket": 5}}', 'BAD_CAPABILITY'],
  ['VER-22b', '{"capabilities": {"twin_socket": {"supported": "yes"}}}', 'BAD_CAPABILITY'],
  ['VER-26', '[]', 'BAD_JSON'],
];
for (const [id, json, code] of badJson) {
  ver(`${id}: ${json} is EINVAL`, () => {
    throwsErrno(() => decodeVersionRequest(version(nul(json))), EINVAL, code);
  });
}
ver('VER-16: max_msg_fds 0 is accepted', () => {
  decodeVersionRequest(version(nul('{"capabilities": {"max_msg_fds": 0}}')));
});
ver('VER-25: unknown keys are ignored', () => {
  decodeVersionRequest(version(nul('{"capabilities": {"x_vendor": 1}}')));
});

// ---- DMA_MAP --------------------------------------------------------------------------------------------------
const map = suite('validation: DMA_MAP');
const dmaMap = (argsz: number, flags: number, offset: bigint, address: bigint, size: bigint) =>
  le([
    [argsz, 4],
    [flags, 4],
    [offset, 8],
    [address, 8],
    [size, 8],
  ]);

map('MAP-04: a 24-byte payload is EINVAL', () => {
  throwsErrno(
    () => decodeDmaMapRequest(dmaMap(32, 3, 0n, 0n, 0x1000n).subarray(0, 24)),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
map('MAP-05: argsz 8 is EINVAL', () => {
  throwsErrno(() => decodeDmaMapRequest(dmaMap(8, 3, 0n, 0n, 0x1000n)), EINVAL, 'BAD_ARGSZ');
});
map('MAP-06: argsz 64 with a 32-byte payload is fine', () => {
  assert.is(decodeDmaMapRequest(dmaMap(64, 3, 0n, 0n, 0x1000n)).argsz, 64);
});
map('MAP-07: flags bit 4 or bit 31 is EINVAL', () => {
  throwsErrno(() => decodeDmaMapRequest(dmaMap(32, 0x13, 0n, 0n, 0x1000n), 1), EINVAL, 'BAD_FLAGS');
  throwsErrno(() => decodeDmaMapRequest(dmaMap(32, 0x80000003, 0n, 0n, 0x1000n), 1), EINVAL, 'BAD_FLAGS');
});
map('MAP-08: flags 0 is EINVAL (kernel type1)', () => {
  throwsErrno(() => decodeDmaMapRequest(dmaMap(32, 0, 0n, 0n, 0x1000n)), EINVAL, 'BAD_FLAGS');
});
map("MAP-09: libvfio-user's MMAP bit without an fd is EINVAL", () => {
  throwsErrno(() => decodeDmaMapRequest(dmaMap(32, 0x7, 0n, 0n, 0x1000n), 0), EINVAL, 'BAD_FLAGS');
});
map('MAP-16: size 0 is EINVAL', () => {
  throwsErrno(() => decodeDmaMapRequest(dmaMap(32, 3, 0n, 0x1000n, 0n)), EINVAL, 'BAD_RANGE');
});
map('MAP-17: address + size wrapping past 2^64 is EINVAL; ending at 2^64 is fine', () => {
  throwsErrno(
    () => decodeDmaMapRequest(dmaMap(32, 3, 0n, 0xfffffffffffff000n, 0x2000n)),
    EINVAL,
    'BAD_RANGE',
  );
  decodeDmaMapRequest(dmaMap(32, 3, 0n, 0xfffffffffffff000n, 0x1000n));
  throwsErrno(
    () => decodeDmaMapRequest(dmaMap(32, 3, 0xffffffffffffffffn, 0n, 0x2n), 1),
    EINVAL,
    'BAD_RANGE',
  );
});
map('MAP-25: two fds is EINVAL; MAP-01/02: one fd or none is fine', () => {
  throwsErrno(() => decodeDmaMapRequest(dmaMap(32, 3, 0n, 0n, 0x1000n), 2), EINVAL, 'BAD_FD_COUNT');
  decodeDmaMapRequest(dmaMap(32, 3, 0n, 0n, 0x1000n), 1);
  decodeDmaMapRequest(dmaMap(32, 1, 0n, 0n, 0x1000n), 0);
});

// ---- DMA_UNMAP ------------------------------------------------------------------------------------------------
const unm = suite('validation: DMA_UNMAP');
const dmaUnmap = (argsz: number, flags: number, address: bigint, size: bigint) =>
  le([
    [argsz, 4],
    [flags, 4],
    [address, 8],
    [size, 8],
  ]);

unm('sizes decode exactly whatever the previous message had (the remembered size bigint)', () => {
  // getU64Memo reuses the bigint of the last size decoded while the bytes are equal.
  const sizes = [0x1000n, 0x1000n, 0x2000n, (1n << 32n) + 0x1000n, 0x1000n, 1n << 62n, 0x1000n];
  for (const size of sizes) {
    assert.is(decodeDmaMapRequest(dmaMap(32, 3, 0n, 0x10000n, size)).size, size);
    assert.is(decodeDmaUnmapRequest(dmaUnmap(24, 0, 0x10000n, size)).size, size);
  }
  assert.is(decodeDmaMapRequest(dmaMap(32, 3, 0n, 0x10000n, 0x1000n)).size, 0x1000n);
  assert.is(decodeDmaUnmapRequest(dmaUnmap(24, 0, 0x10000n, 0x100000000n)).size, 0x100000000n);
  assert.is(decodeDmaMapRequest(dmaMap(32, 3, 0n, 0x10000n, 0x1000n)).size, 0x1000n);
});

unm('UNM-02: a 16-byte payload is EINVAL', () => {
  throwsErrno(
    () => decodeDmaUnmapRequest(dmaUnmap(24, 0, 0n, 0x1000n).subarray(0, 16)),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
unm('UNM-03: argsz 8 is EINVAL', () => {
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(8, 0, 0n, 0x1000n)), EINVAL, 'BAD_ARGSZ');
});
unm('UNM-04: argsz 1 MiB + 8 is EINVAL (above max_data_xfer_size)', () => {
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(MiB + 8, 0, 0n, 0x1000n)), EINVAL, 'BAD_ARGSZ');
  decodeDmaUnmapRequest(dmaUnmap(MiB + 8, 0, 0n, 0x1000n), 0, { maxDataXferSize: 2 * MiB });
});
unm('UNM-05: flags 0x4 (kernel VADDR) or any unknown bit is EINVAL', () => {
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(24, 0x4, 0n, 0x1000n)), EINVAL, 'BAD_FLAGS');
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(24, 0x80000000, 0n, 0x1000n)), EINVAL, 'BAD_FLAGS');
});
unm('UNM-11: FLAG_ALL with address = size = 0 is fine', () => {
  assert.is(decodeDmaUnmapRequest(dmaUnmap(24, 2, 0n, 0n)).flags, 2);
});
unm('UNM-12: FLAG_ALL with address or size set is EINVAL', () => {
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(24, 2, 0x1000n, 0n)), EINVAL, 'BAD_RANGE');
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(24, 2, 0n, 0x1000n)), EINVAL, 'BAD_RANGE');
});
unm('UNM-13: FLAG_ALL | GET_DIRTY_BITMAP is EINVAL', () => {
  const p = Uint8Array.from([
    ...dmaUnmap(48, 3, 0n, 0n),
    ...le([
      [4096n, 8],
      [8n, 8],
    ]),
  ]);
  throwsErrno(() => decodeDmaUnmapRequest(p), EINVAL, 'BAD_FLAGS');
});
unm('UNM-16: a bitmap larger than argsz allows is EINVAL', () => {
  const p = Uint8Array.from([
    ...dmaUnmap(48, 1, 0n, 0x1000n),
    ...le([
      [4096n, 8],
      [9n, 8],
    ]),
  ]);
  throwsErrno(() => decodeDmaUnmapRequest(p), EINVAL, 'BAD_ARGSZ');
  const huge = Uint8Array.from([
    ...dmaUnmap(48, 1, 0n, 0x1000n),
    ...le([
      [4096n, 8],
      [0xffffffffffffffffn, 8],
    ]),
  ]);
  throwsErrno(() => decodeDmaUnmapRequest(huge), EINVAL, 'BAD_ARGSZ');
});
unm('GET_DIRTY_BITMAP without its bitmap header is EINVAL', () => {
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(48, 1, 0n, 0x1000n)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
unm('size 0 without FLAG_ALL, or a wrapping range, is EINVAL (kernel type1)', () => {
  throwsErrno(() => decodeDmaUnmapRequest(dmaUnmap(24, 0, 0x1000n, 0n)), EINVAL, 'BAD_RANGE');
  throwsErrno(
    () => decodeDmaUnmapRequest(dmaUnmap(24, 0, 0xfffffffffffff000n, 0x2000n)),
    EINVAL,
    'BAD_RANGE',
  );
});

// ---- DEVICE_GET_INFO / REGION_INFO / IO_FDS / IRQ_INFO -------------------------------------------------------
const info = suite('validation: GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS, GET_IRQ_INFO');

info('INF-02: an 8-byte payload is EINVAL', () => {
  throwsErrno(
    () =>
      decodeDeviceGetInfoRequest(
        le([
          [16, 4],
          [0, 4],
        ]),
      ),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
info('INF-03: argsz 8 is EINVAL', () => {
  throwsErrno(
    () =>
      decodeDeviceGetInfoRequest(
        le([
          [8, 4],
          [0, 4],
          [0, 4],
          [0, 4],
        ]),
      ),
    EINVAL,
    'BAD_ARGSZ',
  );
});
info('INF-04/05: argsz 32 and non-zero request fields are fine', () => {
  assert.equal(
    decodeDeviceGetInfoRequest(
      le([
        [32, 4],
        [3, 4],
        [9, 4],
        [5, 4],
      ]),
    ),
    { argsz: 32 },
  );
});
info('HDR-06: GET_INFO with no payload is EINVAL', () => {
  throwsErrno(() => decodeDeviceGetInfoRequest(new Uint8Array(0)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
info('HDR-24: GET_INFO carrying fds is processed (the caller closes them)', () => {
  decodeDeviceGetInfoRequest(
    le([
      [16, 4],
      [0, 4],
      [0, 4],
      [0, 4],
    ]),
    2,
  );
});
info('HDR-26: more fds than max_msg_fds is EINVAL', () => {
  throwsErrno(
    () =>
      decodeDeviceGetInfoRequest(
        le([
          [16, 4],
          [0, 4],
          [0, 4],
          [0, 4],
        ]),
        9,
        { maxMsgFds: 8 },
      ),
    EINVAL,
    'BAD_FD_COUNT',
  );
});
const regionInfo = (argsz: number, index: number) =>
  le([
    [argsz, 4],
    [0, 4],
    [index, 4],
    [0, 4],
    [0n, 8],
    [0n, 8],
  ]);
info('RGN-02: an 8-byte payload is EINVAL', () => {
  throwsErrno(() => decodeRegionInfoRequest(regionInfo(32, 0).subarray(0, 8)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
info('RGN-03: argsz 8 is EINVAL', () => {
  throwsErrno(() => decodeRegionInfoRequest(regionInfo(8, 0)), EINVAL, 'BAD_ARGSZ');
});
info('RGN-05: index 0xffffffff decodes; the server judges it against num_regions', () => {
  assert.is(decodeRegionInfoRequest(regionInfo(32, 0xffffffff)).index, 0xffffffff);
});
const ioFds = (argsz: number, flags: number, index: number, count: number) =>
  le([
    [argsz, 4],
    [flags, 4],
    [index, 4],
    [count, 4],
  ]);
info('IOF-01: an 8-byte payload is EINVAL', () => {
  throwsErrno(() => decodeRegionIoFdsRequest(ioFds(16, 0, 0, 0).subarray(0, 8)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
info('IOF-02: flags 1 is EINVAL', () => {
  throwsErrno(() => decodeRegionIoFdsRequest(ioFds(16, 1, 0, 0)), EINVAL, 'BAD_FLAGS');
});
info('IOF-03: count 1 in the request is EINVAL', () => {
  throwsErrno(() => decodeRegionIoFdsRequest(ioFds(16, 0, 0, 1)), EINVAL, 'BAD_VALUE');
});
info('IOF-06: argsz < 16 is EINVAL', () => {
  throwsErrno(() => decodeRegionIoFdsRequest(ioFds(15, 0, 0, 0)), EINVAL, 'BAD_ARGSZ');
});
info('IOF-07: argsz > max_data_xfer_size is EINVAL', () => {
  throwsErrno(() => decodeRegionIoFdsRequest(ioFds(MiB + 1, 0, 0, 0)), EINVAL, 'BAD_ARGSZ');
  throwsErrno(
    () => decodeRegionIoFdsRequest(ioFds(4097, 0, 0, 0), 0, { maxDataXferSize: 4096 }),
    EINVAL,
    'BAD_ARGSZ',
  );
});
const irqInfo = (argsz: number, index: number) =>
  le([
    [argsz, 4],
    [0, 4],
    [index, 4],
    [0, 4],
  ]);
info('IRQI-02: an 8-byte payload is EINVAL', () => {
  throwsErrno(() => decodeIrqInfoRequest(irqInfo(16, 0).subarray(0, 8)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
info('IRQI-03: argsz 8 is EINVAL; IRQI-05: argsz 32 is fine', () => {
  throwsErrno(() => decodeIrqInfoRequest(irqInfo(8, 0)), EINVAL, 'BAD_ARGSZ');
  assert.is(decodeIrqInfoRequest(irqInfo(32, 3)).index, 3);
});

// ---- DEVICE_SET_IRQS ----------------------------------------------------------------------------------------
const irqs = suite('validation: DEVICE_SET_IRQS');
const NONE = 0x1;
const BOOL = 0x2;
const EVENTFD = 0x4;
const MASK = 0x8;
const UNMASK = 0x10;
const TRIGGER = 0x20;
const setIrqs = (
  flags: number,
  index: number,
  start: number,
  count: number,
  data: number[] = [],
  argsz?: number,
) =>
  Uint8Array.from([
    ...le([
      [argsz ?? 20 + data.length, 4],
      [flags, 4],
      [index, 4],
      [start, 4],
      [count, 4],
    ]),
    ...data,
  ]);
/** A device with INTx 1, MSI 1, MSI-X 16, ERR 1, REQ 1 vectors. */
const VECTORS = [1, 1, 16, 1, 1];
const onDevice = (p: Uint8Array, fds = 0) => {
  const req: SetIrqsRequest = decodeSetIrqsRequest(p, fds);
  checkSetIrqsAgainstDevice(req, VECTORS.length, VECTORS[req.index] ?? 0);
  return req;
};

irqs('IRQS-01..05: the legal forms pass', () => {
  onDevice(setIrqs(EVENTFD | TRIGGER, 2, 0, 1), 1);
  onDevice(setIrqs(EVENTFD | TRIGGER, 2, 0, 16), 16);
  onDevice(setIrqs(EVENTFD | TRIGGER, 2, 8, 8), 8);
  onDevice(setIrqs(EVENTFD | TRIGGER, 2, 0, 16), 0);
  onDevice(setIrqs(NONE | TRIGGER, 0, 0, 0));
});
irqs('IRQS-06: a 16-byte payload is EINVAL', () => {
  throwsErrno(
    () => decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, 0, 0, 0).subarray(0, 16)),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
irqs('IRQS-07: argsz 3 is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, 0, 0, 1, [], 3)), EINVAL, 'BAD_ARGSZ');
});
irqs('IRQS-08: index = num_irqs is EINVAL (device check)', () => {
  throwsErrno(() => onDevice(setIrqs(NONE | TRIGGER, 5, 0, 1)), EINVAL, 'BAD_VALUE');
});
irqs('IRQS-09: MASK|UNMASK together is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | MASK | UNMASK, 2, 0, 1)), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-10: no ACTION bit is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE, 2, 0, 1)), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-11: NONE|BOOL together is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | BOOL | TRIGGER, 2, 0, 1, [1])), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-12: no DATA bit is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(TRIGGER, 2, 0, 1)), EINVAL, 'BAD_FLAGS');
});
irqs('reserved flag bits are EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | TRIGGER | 0x40, 2, 0, 1)), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-13/14: vectors past the index are EINVAL (device check)', () => {
  throwsErrno(() => onDevice(setIrqs(NONE | TRIGGER, 2, 15, 2)), EINVAL, 'BAD_RANGE');
  throwsErrno(() => onDevice(setIrqs(NONE | TRIGGER, 2, 17, 1)), EINVAL, 'BAD_RANGE');
});
irqs('IRQS-15: start 284 count 0xffffffff (u32 overflow) is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, 2, 284, 0xffffffff)), EINVAL, 'BAD_RANGE');
});
irqs('IRQS-16/17: MASK on ERR or REQ is EINVAL (device check)', () => {
  throwsErrno(() => onDevice(setIrqs(NONE | MASK, 3, 0, 1)), EINVAL, 'BAD_FLAGS');
  throwsErrno(() => onDevice(setIrqs(NONE | MASK, 4, 0, 1)), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-18/19: TRIGGER count 2 on ERR or REQ is EINVAL (device check)', () => {
  const big = [1, 1, 16, 4, 4]; // even if the device claimed more vectors
  for (const index of [3, 4]) {
    const req = decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, index, 0, 2));
    throwsErrno(() => checkSetIrqsAgainstDevice(req, 5, big[index]!), EINVAL, 'BAD_RANGE');
  }
});
irqs('IRQS-20: count 0 with start 1 is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, 2, 1, 0)), EINVAL, 'BAD_RANGE');
});
irqs('IRQS-21: count 0 with MASK is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | MASK, 2, 0, 0)), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-22: count 0 with BOOL|TRIGGER is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(BOOL | TRIGGER, 2, 0, 0)), EINVAL, 'BAD_FLAGS');
});
irqs('IRQS-23: BOOL|TRIGGER with an fd is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(BOOL | TRIGGER, 2, 0, 1, [1]), 1), EINVAL, 'BAD_FD_COUNT');
});
irqs('IRQS-24: NONE|TRIGGER with an fd is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, 2, 0, 1), 1), EINVAL, 'BAD_FD_COUNT');
});
irqs('IRQS-25: EVENTFD count 2 with 1 fd is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(EVENTFD | TRIGGER, 2, 0, 2), 1), EINVAL, 'BAD_FD_COUNT');
});
irqs('IRQS-26/27: BOOL count 2 with 1 or 3 data bytes is EINVAL', () => {
  throwsErrno(() => decodeSetIrqsRequest(setIrqs(BOOL | TRIGGER, 2, 0, 2, [1])), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(
    () => decodeSetIrqsRequest(setIrqs(BOOL | TRIGGER, 2, 0, 2, [1, 0, 1])),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
irqs('EVENTFD with payload data is EINVAL (the fds travel in SCM_RIGHTS)', () => {
  throwsErrno(
    () => decodeSetIrqsRequest(setIrqs(EVENTFD | TRIGGER, 2, 0, 1, [0, 0, 0, 0]), 1),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
irqs('IRQS-34: disabling an index with no vectors is accepted (recommended over LVU)', () => {
  const req = decodeSetIrqsRequest(setIrqs(NONE | TRIGGER, 4, 0, 0));
  checkSetIrqsAgainstDevice(req, 5, 0);
});
irqs('IRQS-35: more fds than max_msg_fds is EINVAL', () => {
  throwsErrno(
    () => decodeSetIrqsRequest(setIrqs(EVENTFD | TRIGGER, 2, 0, 9), 9, { maxMsgFds: 8 }),
    EINVAL,
    'BAD_FD_COUNT',
  );
});

// ---- REGION_READ / WRITE / WRITE_MULTI ----------------------------------------------------------------------
const rw = suite('validation: REGION_READ, REGION_WRITE, REGION_WRITE_MULTI');
const regionRw = (offset: bigint, region: number, count: number, data: number[] = []) =>
  Uint8Array.from([
    ...le([
      [offset, 8],
      [region, 4],
      [count, 4],
    ]),
    ...data,
  ]);

rw('RW-03: an 8-byte payload is EINVAL', () => {
  throwsErrno(() => decodeRegionReadRequest(regionRw(0n, 0, 4).subarray(0, 8)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeRegionWriteRequest(regionRw(0n, 0, 4).subarray(0, 8)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
rw('RW-04: count = max_data_xfer_size + 8 is EINVAL; RW-05: = max is fine', () => {
  throwsErrno(() => decodeRegionReadRequest(regionRw(0n, 0, MiB + 8)), EINVAL, 'LIMIT_EXCEEDED');
  decodeRegionReadRequest(regionRw(0n, 0, MiB));
  throwsErrno(() => decodeRegionReadRequest(regionRw(0n, 0, 4097), 0, { maxDataXferSize: 4096 }), EINVAL);
  throwsErrno(() => decodeRegionWriteRequest(regionRw(0n, 0, MiB + 8)), EINVAL, 'LIMIT_EXCEEDED');
});
rw('RW-06: WRITE with fewer data bytes than count is EINVAL', () => {
  throwsErrno(() => decodeRegionWriteRequest(regionRw(0n, 0, 4, [1, 2, 3])), EINVAL, 'BAD_PAYLOAD_SIZE');
});
rw('RW-07: WRITE with more data bytes than count is EINVAL', () => {
  throwsErrno(
    () => decodeRegionWriteRequest(regionRw(0n, 0, 4, [1, 2, 3, 4, 5])),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
rw('RW-09/10: bounds are a saturating check (device helper)', () => {
  assert.ok(rangeWithin(0xffcn, 4n, 0x1000n));
  assert.not.ok(rangeWithin(0xffdn, 4n, 0x1000n));
  assert.not.ok(
    rangeWithin(0xffffffffffffffffn, 256n, 0x1000n),
    'offset 2^64-1 count 256 does not wrap to valid',
  );
  assert.ok(rangeWithin(0x1000n, 0n, 0x1000n), 'count 0 at the end');
});
rw('RW-12/13: count 0 reads and writes are fine', () => {
  decodeRegionReadRequest(regionRw(0n, 0, 0));
  decodeRegionWriteRequest(regionRw(0n, 0, 0));
});
const multi = (entries: [bigint, number, number, number[]][], wrCnt = entries.length) => {
  const parts = [le([[BigInt(wrCnt), 8]])];
  for (const [offset, region, count, data] of entries) {
    const d = new Uint8Array(8);
    d.set(data);
    parts.push(
      le([
        [offset, 8],
        [region, 4],
        [count, 4],
      ]),
      d,
    );
  }
  return Uint8Array.from(parts.flatMap((p) => [...p]));
};
rw('WMU-04: an entry with count 9 is EINVAL', () => {
  throwsErrno(() => decodeRegionWriteMultiRequest(multi([[0n, 0, 9, []]])), EINVAL, 'BAD_VALUE');
});
rw('WMU-05: payload size != 8 + 24 * wr_cnt is EINVAL', () => {
  throwsErrno(() => decodeRegionWriteMultiRequest(multi([[0n, 0, 4, [1]]], 2)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeRegionWriteMultiRequest(multi([[0n, 0, 4, [1]]], 0)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeRegionWriteMultiRequest(new Uint8Array(4)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(
    () => decodeRegionWriteMultiRequest(le([[0xffffffffffffffffn, 8]])),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
rw('WMU-07: wr_cnt 0 is fine', () => {
  assert.equal(decodeRegionWriteMultiRequest(multi([])), { writes: [] });
});

// ---- DMA_READ / DMA_WRITE (client side) ------------------------------------------------------------------
const sdma = suite('validation: DMA_READ, DMA_WRITE received by a client');
sdma('CLI-14: a DMA_READ carrying an fd is EINVAL', () => {
  throwsErrno(
    () =>
      decodeDmaReadRequest(
        le([
          [0x1000n, 8],
          [4n, 8],
        ]),
        1,
      ),
    EINVAL,
    'BAD_FD_COUNT',
  );
});
sdma('CLI-16: count above max_data_xfer_size is E2BIG', () => {
  throwsErrno(
    () =>
      decodeDmaReadRequest(
        le([
          [0x1000n, 8],
          [BigInt(MiB + 1), 8],
        ]),
      ),
    E2BIG,
    'LIMIT_EXCEEDED',
  );
  const write = Uint8Array.from([
    ...le([
      [0n, 8],
      [4097n, 8],
    ]),
    ...new Uint8Array(4097),
  ]);
  throwsErrno(() => decodeDmaWriteRequest(write, 0, { maxDataXferSize: 4096 }), E2BIG, 'LIMIT_EXCEEDED');
});
sdma('a DMA_WRITE whose data does not match count is EINVAL; a wrapping range is EFAULT', () => {
  throwsErrno(
    () =>
      decodeDmaWriteRequest(
        Uint8Array.from([
          ...le([
            [0n, 8],
            [4n, 8],
          ]),
          1,
          2,
        ]),
      ),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
  throwsErrno(
    () =>
      decodeDmaReadRequest(
        le([
          [0xfffffffffffffffen, 8],
          [4n, 8],
        ]),
      ),
    EFAULT,
    'BAD_RANGE',
  );
});

// ---- DEVICE_RESET -------------------------------------------------------------------------------------------
const rst = suite('validation: DEVICE_RESET');
rst('RST-01/02: header-only and an 8-byte payload are both accepted', () => {
  assert.equal(decodeDeviceResetRequest(new Uint8Array(0)), {});
  assert.equal(decodeDeviceResetRequest(new Uint8Array(8)), {});
});

// ---- DEVICE_FEATURE -----------------------------------------------------------------------------------------
const fea = suite('validation: DEVICE_FEATURE');
const GET = 1 << 16;
const SET = 1 << 17;
const PROBE = 1 << 18;
const feature = (argsz: number, flags: number, data: Uint8Array = new Uint8Array(0)) =>
  Uint8Array.from([
    ...le([
      [argsz, 4],
      [flags >>> 0, 4],
    ]),
    ...data,
  ]);

fea('FEA-01: a 4-byte payload is EINVAL', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(new Uint8Array(4)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
fea('FEA-04: a feature index without GET/SET/PROBE is EINVAL', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(feature(16, 1)), EINVAL, 'BAD_FLAGS');
});
fea('FEA-05: GET|SET without PROBE is EINVAL; with PROBE it is fine', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(feature(16, 2 | GET | SET)), EINVAL, 'BAD_FLAGS');
  decodeDeviceFeatureRequest(feature(8, 2 | GET | SET | PROBE));
});
fea('FEA-06/07: PROBE|GET on MIGRATION is fine; PROBE|SET on MIGRATION is EINVAL', () => {
  decodeDeviceFeatureRequest(feature(8, 1 | GET | PROBE));
  throwsErrno(() => decodeDeviceFeatureRequest(feature(8, 1 | SET | PROBE)), EINVAL, 'BAD_FLAGS');
});
fea('FEA-08: GET MIGRATION with argsz 8 is EINVAL; FEA-09: argsz 16 is fine', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(feature(8, 1 | GET)), EINVAL, 'BAD_ARGSZ');
  decodeDeviceFeatureRequest(feature(16, 1 | GET));
});
fea('FEA-11: SET MIG_DEVICE_STATE with argsz < payload length is EINVAL', () => {
  const data = encodeMigDeviceState({ deviceState: MigState.STOP });
  throwsErrno(() => decodeDeviceFeatureRequest(feature(8, 2 | SET, data)), EINVAL, 'BAD_ARGSZ');
});
fea('FEA-12/13/14: SET to 0xabcd, RUNNING_P2P, PRE_COPY_P2P or ERROR is EINVAL', () => {
  for (const s of [0xabcd, MigState.RUNNING_P2P, MigState.PRE_COPY_P2P, MigState.ERROR]) {
    const data = encodeMigDeviceState({ deviceState: s });
    throwsErrno(() => decodeDeviceFeatureRequest(feature(16, 2 | SET, data)), EINVAL, 'BAD_VALUE');
  }
});
fea('SET MIG_DEVICE_STATE without its data is EINVAL', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(feature(16, 2 | SET)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
fea('FEA-20: DMA_LOGGING_START with page_size 0 (or not a power of two) is EINVAL', () => {
  for (const pageSize of [0n, 4095n]) {
    const data = encodeDmaLoggingControl({ pageSize, ranges: [] });
    throwsErrno(() => decodeDeviceFeatureRequest(feature(24, 6 | SET, data)), EINVAL, 'BAD_VALUE');
  }
});
fea('DMA_LOGGING_START with overlapping or wrapping ranges, or a bad num_ranges, is EINVAL', () => {
  const overlap = encodeDmaLoggingControl({
    pageSize: 4096n,
    ranges: [
      { iova: 0x1000n, length: 0x2000n },
      { iova: 0x2000n, length: 0x1000n },
    ],
  });
  throwsErrno(() => decodeDeviceFeatureRequest(feature(56, 6 | SET, overlap)), EINVAL, 'BAD_RANGE');
  const wrap = encodeDmaLoggingControl({
    pageSize: 4096n,
    ranges: [{ iova: 0xfffffffffffff000n, length: 0x2000n }],
  });
  throwsErrno(() => decodeDeviceFeatureRequest(feature(40, 6 | SET, wrap)), EINVAL, 'BAD_RANGE');
  const short = encodeDmaLoggingControl({
    pageSize: 4096n,
    ranges: [{ iova: 0n, length: 0x1000n }],
  }).subarray(0, 24);
  throwsErrno(() => decodeDeviceFeatureRequest(feature(32, 6 | SET, short)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
fea('GET on a SET-only feature (DMA_LOGGING_START) is EINVAL', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(feature(64, 6 | GET)), EINVAL, 'BAD_FLAGS');
});
fea('FEA-26: REPORT with argsz too small for the bitmap, or page_size not a power of two, is EINVAL', () => {
  const report = encodeDmaLoggingReport({ iova: 0n, length: 0x200000n, pageSize: 4096n }); // 64-byte bitmap
  throwsErrno(() => decodeDeviceFeatureRequest(feature(95, 8 | GET, report)), EINVAL, 'BAD_ARGSZ');
  decodeDeviceFeatureRequest(feature(96, 8 | GET, report));
  const odd = encodeDmaLoggingReport({ iova: 0n, length: 0x200000n, pageSize: 3000n });
  throwsErrno(() => decodeDeviceFeatureRequest(feature(4096, 8 | GET, odd)), EINVAL, 'BAD_VALUE');
});
fea('reserved flag bits (19-31) are EINVAL', () => {
  throwsErrno(() => decodeDeviceFeatureRequest(feature(16, 1 | GET | (1 << 19))), EINVAL, 'BAD_FLAGS');
});
fea('FEA-02: an unknown feature index decodes; the device refuses it', () => {
  decodeDeviceFeatureRequest(feature(16, 3 | GET));
  decodeDeviceFeatureRequest(feature(16, 0xffff | GET));
});

// ---- MIG_DATA_READ / WRITE ----------------------------------------------------------------------------------
const mig = suite('validation: MIG_DATA_READ, MIG_DATA_WRITE');
mig('MIG-01: a 4-byte payload is EINVAL for both', () => {
  throwsErrno(() => decodeMigDataReadRequest(new Uint8Array(4)), EINVAL, 'BAD_PAYLOAD_SIZE');
  throwsErrno(() => decodeMigDataWriteRequest(new Uint8Array(4)), EINVAL, 'BAD_PAYLOAD_SIZE');
});
mig('MIG-04: MIG_DATA_READ size > max_data_xfer_size is EINVAL', () => {
  throwsErrno(
    () =>
      decodeMigDataReadRequest(
        le([
          [MiB + 9, 4],
          [MiB + 1, 4],
        ]),
      ),
    EINVAL,
    'LIMIT_EXCEEDED',
  );
});
mig('MIG-05: MIG_DATA_READ argsz < 8 + size is EINVAL', () => {
  throwsErrno(
    () =>
      decodeMigDataReadRequest(
        le([
          [23, 4],
          [16, 4],
        ]),
      ),
    EINVAL,
    'BAD_ARGSZ',
  );
  decodeMigDataReadRequest(
    le([
      [24, 4],
      [16, 4],
    ]),
  );
});
mig('MIG-08: MIG_DATA_WRITE payload shorter than 8 + size is EINVAL', () => {
  throwsErrno(
    () =>
      decodeMigDataWriteRequest(
        Uint8Array.from([
          ...le([
            [12, 4],
            [4, 4],
          ]),
          1,
          2,
        ]),
      ),
    EINVAL,
    'BAD_PAYLOAD_SIZE',
  );
});
mig('MIG-09: MIG_DATA_WRITE size > max is EINVAL', () => {
  const p = Uint8Array.from([
    ...le([
      [8 + 4097, 4],
      [4097, 4],
    ]),
    ...new Uint8Array(4097),
  ]);
  throwsErrno(() => decodeMigDataWriteRequest(p, 0, { maxDataXferSize: 4096 }), EINVAL, 'LIMIT_EXCEEDED');
});
mig('MIG_DATA_WRITE argsz below 8 + size is EINVAL', () => {
  throwsErrno(
    () =>
      decodeMigDataWriteRequest(
        Uint8Array.from([
          ...le([
            [8, 4],
            [4, 4],
          ]),
          1,
          2,
          3,
          4,
        ]),
      ),
    EINVAL,
    'BAD_ARGSZ',
  );
});

// ---- commands -----------------------------------------------------------------------------------------------
const cmd = suite('validation: command numbers and direction');
cmd('HDR-14/15/16: commands 0, 14, 19, 0x7fff and 0xffff are EINVAL', () => {
  for (const c of [0, 14, 19, 0x7fff, 0xffff])
    throwsErrno(() => checkCommand(c, 'client'), EINVAL, 'UNKNOWN_COMMAND');
});
cmd('HDR-18: DMA_READ/DMA_WRITE from a client are EINVAL', () => {
  throwsErrno(() => checkCommand(Command.DMA_READ, 'client'), EINVAL, 'WRONG_DIRECTION');
  throwsErrno(() => checkCommand(Command.DMA_WRITE, 'client'), EINVAL, 'WRONG_DIRECTION');
  assert.is(checkCommand(Command.DMA_WRITE, 'server'), Command.DMA_WRITE);
});
cmd('CLI-13: a client refuses server requests other than DMA_READ/WRITE', () => {
  throwsErrno(() => checkCommand(Command.DEVICE_GET_REGION_INFO, 'server'), EINVAL, 'WRONG_DIRECTION');
});

ver.run();
map.run();
unm.run();
info.run();
irqs.run();
rw.run();
sdma.run();
rst.run();
fea.run();
mig.run();
cmd.run();
