// Session dispatch over a real socketpair with raw protocol bytes: ordering (pipelining, posted writes, an
// asynchronous DMA_MAP holding later messages back), NO_REPLY, error replies and fd hygiene, the device
// commands, DMA_MAP/UNMAP through the wire, server->client DMA (chunking, interleaving, errors, timeouts), and
// disconnects (mid-message, garbage) with the device state kept.

import { constants } from 'node:os';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import {
  Command,
  decodeDeviceGetInfoReply,
  decodeDmaUnmapReply,
  decodeIrqInfoReply,
  decodeRegionInfoReply,
  decodeRegionReadReply,
  encodeDeviceFeatureRequest,
  encodeDeviceGetInfoRequest,
  encodeDmaMapRequest,
  encodeDmaReadRequest,
  encodeDmaUnmapRequest,
  encodeIrqInfoRequest,
  encodeMessage,
  encodeMigDataReadRequest,
  encodeRegionInfoRequest,
  encodeRegionReadRequest,
  encodeRegionWriteRequest,
  encodeSetIrqsRequest,
  HEADER_SIZE,
  MsgFlags,
  SetIrqsFlags,
} from 'vfio-user-protocol';
import { DeviceError } from '../src/device.js';
import { DmaAddressSpace } from '../src/dma/address-space.js';
import type { IommuBackend } from '../src/iommu/backend.js';
import { IommuMirror } from '../src/iommu/mirror.js';
import { Observers } from '../src/session/observers.js';
import { fdTable, TestDevice } from './engine-fixtures.js';
import { isError, isOk, type SessionRig, startSession, versionPayload } from './session-harness.js';
import { sleep, until } from './wait.js';

const E = constants.errno;
const NO_REPLY = MsgFlags.NO_REPLY;

const getInfo = () => encodeDeviceGetInfoRequest();
const read = (region: number, offset: bigint, count: number) =>
  encodeRegionReadRequest({ offset, region, count });
const write = (region: number, offset: bigint, data: Uint8Array) =>
  encodeRegionWriteRequest({ offset, region, data });
const u32le = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
const dmaMap = (address: bigint, size: bigint, flags = 3, offset = 0n) =>
  encodeDmaMapRequest({ flags, offset, address, size });
const dmaUnmap = (address: bigint, size: bigint, flags = 0) =>
  encodeDmaUnmapRequest({ flags, address, size });

async function ready(opts?: Parameters<typeof startSession>[0]): Promise<SessionRig> {
  const rig = startSession(opts);
  const r = await rig.client.version();
  assert.ok(isOk(r));
  return rig;
}

/**
 * A ready session whose address space is mirrored by a backend that holds each DMA_MAP until `release()` (which
 * completes the latest map).
 */
async function readyWithSlowMap(): Promise<{ rig: SessionRig; mirror: IommuMirror; release: () => void }> {
  let release!: () => void;
  const slow: IommuBackend = {
    name: 'slow',
    mapsBy: 'nothing',
    async attach() {
      return { pgsizes: 4096n, iovaRanges: [{ start: 0n, last: (1n << 64n) - 1n }], maxDmaMaps: 65535 };
    },
    map: () =>
      new Promise<void>((r) => {
        release = r;
      }),
    async unmap() {},
    async unmapAll() {},
    async close() {},
  };
  const dma = new DmaAddressSpace();
  const mirror = new IommuMirror(slow);
  await mirror.start(dma);
  const rig = await ready({ dma });
  return { rig, mirror, release: () => release() };
}

function startCopy(rig: SessionRig, src: bigint, dst: bigint, len: number): void {
  new DataView(rig.device.bar0.buffer).setUint32(0x11c, 0, true); // so the test can wait for "not 0"
  const regs = new Uint8Array(24);
  const dv = new DataView(regs.buffer);
  dv.setBigUint64(0, src, true);
  dv.setBigUint64(8, dst, true);
  dv.setUint32(16, len, true);
  rig.client.send(Command.REGION_WRITE, write(0, 0x108n, regs), { flags: NO_REPLY });
  rig.client.send(Command.REGION_WRITE, write(0, 0x100n, u32le(1)), { flags: NO_REPLY });
}
const dmaStatus = (rig: SessionRig) => new DataView(rig.device.bar0.buffer).getUint32(0x11c, true);

test('64 posted writes then a read: exactly one reply, and it sees the last write (HDR-27)', async () => {
  const rig = await ready();
  const before = rig.client.inbox.length;
  for (let i = 0; i < 64; i++)
    rig.client.send(Command.REGION_WRITE, write(0, 0x40n, u32le(i)), { flags: NO_REPLY });
  const r = await rig.client.request(Command.REGION_READ, read(0, 0x40n, 4));
  assert.equal(decodeRegionReadReply(r.payload).data, u32le(63));
  await sleep(10);
  assert.is(rig.client.inbox.length - before, 1);
  await rig.teardown();
});

/** The replies after VERSION's, once `n` have come and nothing more has for 30 ms, as comparable records. */
async function settledReplies(rig: SessionRig, n: number) {
  const c = rig.client;
  await until(() => c.inbox.length >= 1 + n, 5000, 'replies');
  await sleep(30);
  return c.inbox.slice(1).map((m) => ({
    id: m.h.id,
    command: m.h.command,
    flags: m.h.flags,
    error: m.h.error,
    payload: [...m.payload],
  }));
}

/** TestDevice with a failing, an asynchronous and a wrong-length spot in BAR0 (for the in-place tests). */
class TrickyDevice extends TestDevice {
  override regionRead(index: number, offset: bigint, count: number): Uint8Array | Promise<Uint8Array> {
    if (index === 0 && offset === 0x800n) throw new DeviceError(E.EIO, 'read fails here');
    if (index === 0 && offset === 0x900n)
      return new Promise((r) => setTimeout(() => r(this.bar0.slice(0x900, 0x900 + count)), 20));
    if (index === 0 && offset === 0xa00n) return new Uint8Array(count + 1);
    return super.regionRead(index, offset, count);
  }

  override regionWrite(index: number, offset: bigint, data: Uint8Array): void | Promise<void> {
    if (index === 0 && offset === 0x900n)
      return new Promise((r) =>
        setTimeout(() => {
          this.bar0.set(data, 0x900);
          r();
        }, 20),
      );
    super.regionWrite(index, offset, data);
  }
}

test('REGION_READ/WRITE answered in place: the same replies, bytes and order as the full way', async () => {
  // The same pipelined requests, once with the fast path (silent log) and once without (trace logging turns it
  // off): plain accesses, a write then a read of it, errors the fast path declines (out of range, absent region,
  // count 0, offset >= 2^53, NO_REPLY, larger than the outbox) and ones the device raises (a throw, a wrong
  // length), and asynchronous device answers that later requests must queue behind.
  const run = async (level: 'silent' | 'trace') => {
    const rig = await ready({
      device: new TrickyDevice(),
      log: pino({ level }, pino.destination({ dest: '/dev/null', sync: true })),
    });
    const c = rig.client;
    const pattern = (n: number, seed: number) =>
      Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
    const sent = [
      c.send(Command.REGION_READ, read(7, 0n, 4)),
      c.send(Command.REGION_WRITE, write(0, 0x10n, pattern(8, 1))),
      c.send(Command.REGION_READ, read(0, 0x10n, 8)),
      c.send(Command.REGION_READ, read(0, 0xffen, 4)), // out of range
      c.send(Command.REGION_READ, read(3, 0n, 4)), // absent region
      c.send(Command.REGION_READ, read(0, 0x800n, 4)), // the device throws EIO
      c.send(Command.REGION_READ, read(0, 0xa00n, 4)), // the device answers 5 bytes
      c.send(Command.REGION_READ, read(7, 0n, 0)), // count 0
      c.send(Command.REGION_READ, read(0, 1n << 60n, 4)), // offset >= 2^53
      c.send(Command.REGION_WRITE, write(0, 0x20n, pattern(4, 3)), { flags: NO_REPLY }),
      c.send(Command.REGION_READ, read(0, 0x20n, 4)),
      c.send(Command.REGION_READ, read(4, 0n, 3000)),
      c.send(Command.REGION_READ, read(4, 0n, 65536)), // larger than the outbox
      c.send(Command.REGION_WRITE, write(0, 0xff0n, pattern(16, 4))),
      c.send(Command.REGION_READ, read(0, 0xff0n, 16)),
      c.send(Command.REGION_WRITE, write(0, 0x900n, pattern(4, 2))), // asynchronous
      c.send(Command.REGION_READ, read(0, 0x900n, 4)), // asynchronous, queued behind the write
      c.send(Command.REGION_READ, read(0, 0x10n, 4)), // queued behind both
    ];
    const replies = await settledReplies(rig, sent.length - 1); // all but the NO_REPLY one
    const inPlace = rig.session.inPlace;
    await rig.teardown();
    return { replies, inPlace, sent };
  };
  const fast = await run('silent');
  const full = await run('trace');
  assert.is(full.inPlace, 0, 'trace logging turns the fast path off');
  assert.ok(fast.inPlace >= 8, `answered in place: ${fast.inPlace}`);
  assert.is(fast.replies.length, fast.sent.length - 1, 'one reply per request but the NO_REPLY one');
  assert.equal(fast.replies, full.replies);
  // and the replies are the right ones, in request order
  assert.equal(
    fast.replies.map((r) => r.id),
    fast.sent.filter((_, i) => i !== 9),
  );
  assert.equal(
    fast.replies.map((r) => r.error),
    [0, 0, 0, E.EINVAL, E.EINVAL, E.EIO, E.EINVAL, 0, E.EINVAL, 0, 0, 0, 0, 0, 0, 0, 0],
  );
  assert.equal(
    fast.replies[2]!.payload.slice(16),
    [...Array(8).keys()].map((i) => (i * 7 + 1) & 0xff),
  );
  assert.equal(
    fast.replies[9]!.payload.slice(16),
    [3, 10, 17, 24],
    'a read sees the NO_REPLY write before it',
  );
  assert.equal(
    fast.replies[13]!.payload.slice(16),
    [...Array(16).keys()].map((i) => (i * 7 + 4) & 0xff),
  );
  assert.equal(fast.replies[15]!.payload.slice(16), [2, 9, 16, 23], 'the read behind an async write sees it');
});

/** TrickyDevice whose config space (region 7) may be read without a call (directReadBytes). */
class DirectDevice extends TrickyDevice {
  directReadBytes(index: number): Uint8Array | undefined {
    return index === 7 ? this.config : undefined;
  }
}

test('config space reads answered by the addon (direct reads): the same replies, bytes and order', async () => {
  // Config space reads mixed with everything that must stop the addon answering them by itself: a read it must
  // decline (out of range, count 0, NO_REPLY), a write of the bytes it reads, and an asynchronous write that
  // later reads queue behind. Run with direct reads (silent log), without them (a device without
  // directReadBytes) and with the fast paths off (trace log): the same replies.
  const run = async (device: TestDevice, level: 'silent' | 'trace') => {
    const rig = await ready({
      device,
      log: pino({ level }, pino.destination({ dest: '/dev/null', sync: true })),
    });
    const c = rig.client;
    const cfg = (offset: bigint, count: number) => c.send(Command.REGION_READ, read(7, offset, count));
    const sent = [
      cfg(0n, 4),
      cfg(0n, 4),
      cfg(0x10n, 16),
      cfg(0xfcn, 8), // out of range
      cfg(0xfcn, 4),
      cfg(0n, 0), // count 0 (an empty answer, from the full way)
      c.send(Command.REGION_WRITE, write(7, 0x40n, u32le(0x12345678))),
      cfg(0x40n, 4), // sees the write
      c.send(Command.REGION_READ, read(7, 0x40n, 4), { flags: NO_REPLY }),
      c.send(Command.REGION_WRITE, write(0, 0x900n, u32le(7))), // asynchronous: what follows waits
      cfg(0x40n, 2),
      cfg(0x42n, 2),
      c.send(Command.REGION_READ, read(0, 0x900n, 4)),
    ];
    await until(() => c.inbox.length >= sent.length, 5000, 'replies'); // VERSION's, and all but the NO_REPLY one
    sent.push(
      ...Array.from({ length: 200 }, (_, i) => cfg(BigInt(i & 0xfc), 4)), // past the budget: re-armed
      c.send(Command.REGION_WRITE, write(7, 0x40n, u32le(0xcafe))),
      cfg(0x40n, 4),
    );
    const replies = await settledReplies(rig, sent.length - 1); // all but the NO_REPLY one
    const direct = rig.session.directReads;
    rig.session.syncStats();
    const counted = rig.stats.messages.REGION_READ;
    await rig.teardown();
    return { replies, direct, sent, counted };
  };
  const direct = await run(new DirectDevice(), 'silent');
  const inPlace = await run(new TrickyDevice(), 'silent');
  const full = await run(new DirectDevice(), 'trace');
  assert.ok(direct.direct >= 150, `answered by the addon: ${direct.direct}`);
  assert.is(inPlace.direct, 0);
  assert.is(full.direct, 0, 'trace logging turns direct reads off');
  assert.is(direct.replies.length, direct.sent.length - 1, 'one reply per request but the NO_REPLY one');
  assert.equal(direct.replies, inPlace.replies);
  assert.equal(direct.replies, full.replies);
  assert.equal(
    direct.replies.map((r) => r.id),
    direct.sent.filter((_, i) => i !== 8),
    'request order',
  );
  assert.equal(
    direct.replies.slice(0, 12).map((r) => r.error),
    [0, 0, 0, E.EINVAL, 0, 0, 0, 0, 0, 0, 0, 0],
  );
  assert.equal(direct.replies[0]!.payload.slice(16), [0x36, 0x1b, 0x05, 0x00]);
  assert.equal(
    direct.replies[7]!.payload.slice(16),
    [0x78, 0x56, 0x34, 0x12],
    'a read sees the write before it',
  );
  assert.equal(direct.replies[9]!.payload.slice(16), [0x78, 0x56]);
  assert.equal(direct.replies.at(-1)!.payload.slice(16), [0xfe, 0xca, 0, 0]);
  // Every REGION_READ is counted, whoever answered it (the NO_REPLY one too).
  assert.is(direct.counted, 1 + 200 + 11);
  assert.is(direct.counted, inPlace.counted);
});

test('directReadBytes() that does not match its region, or throws: reads go through regionRead()', async () => {
  for (const bad of [
    (d: TestDevice) => d.config.subarray(0, 128), // not the whole region
    () => new Uint16Array(128), // 256 bytes, but not a Uint8Array
    () => () => {
      throw new Error('broken device');
    },
  ]) {
    const device = new TrickyDevice() as TrickyDevice & { directReadBytes?: (i: number) => unknown };
    const r = bad(device);
    device.directReadBytes = typeof r === 'function' ? r : (i: number) => (i === 7 ? r : undefined);
    const rig = await ready({ device });
    const c = rig.client;
    for (let i = 0; i < 10; i++) c.send(Command.REGION_READ, read(7, 0n, 4));
    await until(() => c.inbox.length === 11, 5000, 'replies');
    assert.is(rig.session.directReads, 0);
    assert.ok(c.inbox.slice(1).every((m) => m.h.error === 0 && m.payload[16] === 0x36));
    await rig.teardown();
  }
});

test('direct reads stop as soon as an observer is added: it sees every later message', async () => {
  const observers = new Observers();
  const rig = await ready({ device: new DirectDevice(), observers });
  const c = rig.client;
  for (let i = 0; i < 20; i++) c.send(Command.REGION_READ, read(7, 0n, 4));
  await until(() => c.inbox.length === 21, 5000, 'replies');
  assert.ok(rig.session.directReads >= 15, `answered by the addon: ${rig.session.directReads}`);
  const seen: string[] = [];
  const remove = observers.add({
    wire: (fromServer, _twin, bytes) =>
      seen.push(`${fromServer ? 'S>C' : 'C>S'} ${bytes[0]! | (bytes[1]! << 8)}`),
  });
  const ids = Array.from({ length: 20 }, () => c.send(Command.REGION_READ, read(7, 0n, 4)));
  await until(() => c.inbox.length === 41, 5000, 'replies');
  assert.equal(
    seen,
    ids.flatMap((id) => [`C>S ${id}`, `S>C ${id}`]),
  );
  remove();
  for (let i = 0; i < 20; i++) c.send(Command.REGION_READ, read(7, 0n, 4));
  await until(() => c.inbox.length === 61, 5000, 'replies');
  assert.ok(rig.session.directReads >= 30, 'answered by the addon again once the observer is gone');
  assert.is(seen.length, 40);
  await rig.teardown();
});

test('direct reads stop at once when the log level becomes trace and the observers are told (log-level)', async () => {
  const observers = new Observers();
  const log = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true }));
  const rig = await ready({ device: new DirectDevice(), observers, log });
  const c = rig.client;
  for (let i = 0; i < 10; i++) c.send(Command.REGION_READ, read(7, 0n, 4));
  await until(() => c.inbox.length === 11, 5000, 'replies');
  const before = rig.session.directReads;
  assert.ok(before >= 5, `answered by the addon: ${before}`);
  log.level = 'trace'; // the session's logger is a child: it follows
  observers.changed();
  for (let i = 0; i < 10; i++) c.send(Command.REGION_READ, read(7, 0n, 4));
  await until(() => c.inbox.length === 21, 5000, 'replies');
  assert.is(rig.session.directReads, before, 'every read after the change went through JS');
  await rig.teardown();
});

test('256 pipelined commands: 256 replies in request order; repeated ids echoed in order', async () => {
  const rig = await ready();
  const ids: number[] = [];
  for (let i = 0; i < 256; i++)
    ids.push(rig.client.send(Command.DEVICE_GET_INFO, getInfo(), { id: (i * 7) & 0xffff }));
  rig.client.send(Command.REGION_READ, read(7, 0n, 4), { id: 0xffff });
  rig.client.send(Command.DEVICE_GET_INFO, getInfo(), { id: 0xffff });
  await until(() => rig.client.inbox.length >= 1 + 258, 3000, '258 replies');
  const got = rig.client.inbox.slice(1);
  assert.equal(
    got.slice(0, 256).map((m) => m.h.id),
    ids,
  );
  assert.equal(
    got.slice(256).map((m) => [m.h.id, m.h.command]),
    [
      [0xffff, Command.REGION_READ],
      [0xffff, Command.DEVICE_GET_INFO],
    ],
  );
  assert.is(rig.stats.messages.DEVICE_GET_INFO, 257);
  await rig.teardown();
});

test('an asynchronous DMA_MAP holds later messages back: replies keep arrival order', async () => {
  const { rig, mirror, release } = await readyWithSlowMap();
  const mapId = rig.client.send(Command.DMA_MAP, dmaMap(0x1000n, 0x1000n));
  rig.client.send(Command.REGION_WRITE, write(0, 0x10n, u32le(0xabcd)), { flags: NO_REPLY });
  const readId = rig.client.send(Command.REGION_READ, read(0, 0x10n, 4));
  await sleep(30);
  assert.is(rig.client.inbox.length, 1, 'only the VERSION reply so far');
  assert.is(rig.device.bar0[0x10], 0, 'the posted write waits behind the map');
  release();
  await until(() => rig.client.inbox.length === 3);
  assert.equal(
    rig.client.inbox.slice(1).map((m) => m.h.id),
    [mapId, readId],
  );
  assert.equal(decodeRegionReadReply(rig.client.inbox[2]!.payload).data, u32le(0xabcd));
  await rig.teardown();
  await mirror.close();
});

test('backpressure: a flood behind a slow DMA_MAP pauses reading, then everything runs in order', async () => {
  const { rig, mirror, release } = await readyWithSlowMap();
  rig.client.send(Command.DMA_MAP, dmaMap(0x1000n, 0x1000n));
  for (let i = 0; i < 6000; i++)
    rig.client.send(Command.REGION_WRITE, write(0, 0x50n, u32le(i)), { flags: NO_REPLY });
  await until(() => rig.session.pauses > 0, 3000, 'reading paused');
  release();
  const r = await rig.client.request(Command.REGION_READ, read(0, 0x50n, 4));
  assert.equal(decodeRegionReadReply(r.payload).data, u32le(5999));
  assert.is(rig.stats.messages.REGION_WRITE, 6000);
  await rig.teardown();
  await mirror.close();
});

// 1 MiB reads take the full way (the reply does not fit the outbox); 65,000-byte ones are answered in place,
// where the addon queues the replies the client does not take and the session looks at the queue periodically.
for (const [count, n] of [
  [0x100000, 200],
  [65_000, 400],
] as const) {
  test(`backpressure: a client that does not read its replies stops being read, then catches up (${count}-byte reads)`, async () => {
    const [a, b] = native.socketpair();
    const { Session } = await import('../src/session/session.js');
    const { IrqController } = await import('../src/irq/irq-controller.js');
    const { DEFAULT_OFFER, newStats } = await import('./session-harness.js');
    const device = new TestDevice();
    const session = new Session(native.Connection.fromFd(a), {
      id: 1,
      device,
      dma: new DmaAddressSpace(),
      irq: new IrqController(device),
      log: (await import('pino')).default({ level: 'silent' }),
      offer: DEFAULT_OFFER,
      dmaTimeoutMs: 1000,
      stats: newStats(),
    });
    session.start();
    const client = native.Connection.fromFd(b); // not reading yet
    client.send(encodeMessage({ id: 0, command: Command.VERSION }, versionPayload()));
    // 200 replies of 1 MiB, or 400 of 60,000 bytes: more than the 16 MiB of unsent replies the server accepts before
    // it stops reading. (The client's own send queue holds what the server does not read; it flushes once the
    // client starts.)
    for (let i = 1; i <= n; i++)
      client.send(encodeMessage({ id: i, command: Command.REGION_READ }, read(4, 0n, count)));
    await until(() => session.pauses > 0, 3000, 'reading paused');
    if (count < 0x10000) assert.ok(session.inPlace > 0, 'answered in place');
    let replies = 0;
    client.start({
      onMessage: (data) => {
        if (data.readUInt32LE(8) === MsgFlags.TYPE_REPLY) replies++;
      },
      onClose: () => {},
    });
    await until(() => replies === n + 1, 5000, 'every reply');
    client.close();
    await session.closed;
    device.close();
  });
}

test('errors: unknown commands, wrong direction, NO_REPLY failures, header-only error replies', async () => {
  const rig = await ready();
  for (const cmd of [0, 14, 19, 0x7fff, 0xffff]) {
    const r = await rig.client.request(cmd, getInfo());
    assert.ok(isError(r, E.EINVAL), `command ${cmd}`);
    assert.is(r.h.command, cmd);
  }
  let r = await rig.client.request(Command.DMA_READ, encodeDmaReadRequest({ address: 0n, count: 4n }));
  assert.ok(isError(r, E.EINVAL), 'DMA_READ from the client');
  // NO_REPLY failures: unknown command, bad region write, bad payload.
  const n = rig.client.inbox.length;
  rig.client.send(99, getInfo(), { flags: NO_REPLY });
  rig.client.send(Command.REGION_WRITE, write(0, 0x2000n, u32le(1)), { flags: NO_REPLY });
  rig.client.send(Command.DEVICE_GET_INFO, new Uint8Array(8), { flags: NO_REPLY });
  r = await rig.client.request(Command.DEVICE_GET_INFO, getInfo());
  assert.ok(isOk(r));
  assert.is(rig.client.inbox.length, n + 1, 'no reply to the NO_REPLY failures');
  // Reserved header bits and the ERROR bit in a command are ignored; the error field too.
  rig.client.sendRaw(
    encodeMessage({ id: 77, command: Command.DEVICE_GET_INFO, flags: 0x20 | 0x40000, error: 5 }, getInfo()),
  );
  r = await rig.client.waitReply(77);
  assert.ok(isOk(r));
  // Payload errors.
  r = await rig.client.request(Command.DEVICE_GET_INFO, new Uint8Array(8));
  assert.ok(isError(r, E.EINVAL), 'short GET_INFO');
  r = await rig.client.request(
    Command.DEVICE_FEATURE,
    encodeDeviceFeatureRequest({ flags: 1 | (1 << 16), data: new Uint8Array(8) }),
  );
  assert.ok(isError(r, E.EINVAL), 'no migration');
  r = await rig.client.request(Command.MIG_DATA_READ, encodeMigDataReadRequest({ size: 8 }));
  assert.ok(isError(r, E.EINVAL), 'MIG_DATA_READ');
  r = await rig.client.request(Command.REGION_WRITE_MULTI, new Uint8Array(8));
  assert.ok(isError(r, E.EINVAL), 'WRITE_MULTI not negotiated');
  assert.not.ok(rig.client.closed);
  await rig.teardown();
});

test('fds: stray fds on GET_INFO are closed; invalid SET_IRQS closes its fds; more than max_msg_fds is EINVAL', async () => {
  const base = native.openFds();
  const rig = await ready({ offer: { maxMsgFds: 4 } });
  const fds0 = native.openFds();
  const e = [native.eventfd(), native.eventfd(), native.eventfd(), native.eventfd(), native.eventfd()];
  let r = await rig.client.request(Command.DEVICE_GET_INFO, getInfo(), { fds: e.slice(0, 2) });
  assert.ok(isOk(r));
  const setIrqs = (flags: number, index: number, start: number, count: number, data?: Uint8Array) =>
    encodeSetIrqsRequest({ flags, index, start, count, data });
  const TE = SetIrqsFlags.DATA_EVENTFD | SetIrqsFlags.ACTION_TRIGGER;
  r = await rig.client.request(Command.DEVICE_SET_IRQS, setIrqs(TE, 2, 7, 2), { fds: e.slice(0, 2) });
  assert.ok(isError(r, E.EINVAL), 'start N-1 count 2');
  r = await rig.client.request(
    Command.DEVICE_SET_IRQS,
    setIrqs(SetIrqsFlags.DATA_NONE | SetIrqsFlags.ACTION_TRIGGER, 2, 0, 1),
    { fds: e.slice(0, 1) },
  );
  assert.ok(isError(r, E.EINVAL), 'NONE with an fd');
  r = await rig.client.request(Command.DEVICE_SET_IRQS, setIrqs(TE, 2, 0, 5), { fds: e });
  assert.ok(isError(r, E.EINVAL), 'more fds than max_msg_fds');
  r = await rig.client.request(Command.DEVICE_SET_IRQS, setIrqs(TE, 2, 0, 2), { fds: e.slice(0, 1) });
  assert.ok(isError(r, E.EINVAL), 'count 2 with 1 fd');
  r = await rig.client.request(Command.DEVICE_SET_IRQS, setIrqs(TE, 5, 0, 1), { fds: e.slice(0, 1) });
  assert.ok(isError(r, E.EINVAL), 'index = num_irqs');
  await sleep(5);
  assert.is(native.openFds(), fds0 + 5, 'only our own copies remain');

  // A valid assignment: the server keeps dups, signals them, and closes them on disconnect.
  r = await rig.client.request(Command.DEVICE_SET_IRQS, setIrqs(TE, 2, 0, 4), { fds: e.slice(0, 4) });
  assert.ok(isOk(r));
  assert.is(native.openFds(), fds0 + 9);
  rig.irq.trigger(2, 3);
  assert.is(native.eventfdRead(e[3]!), 1n);
  await rig.teardown();
  assert.is(native.openFds(), base + 5, 'IRQ fds closed at disconnect');
  for (const fd of e) native.closeFd(fd);
});

test('SET_IRQS pass-through: a device hook that takes the request gets borrowed fds, the engine keeps no state', async () => {
  const device = new TestDevice();
  const seen: string[] = [];
  let take = true;
  (device as TestDevice & { setIrqs: unknown }).setIrqs = (
    index: number,
    flags: number,
    start: number,
    count: number,
    fds: readonly number[],
  ) => {
    seen.push(
      `${index} 0x${flags.toString(16)} ${start}+${count} fds=${fds.length} ${fds.map((fd) => native.fdInfo(fd).type)}`,
    );
    return take;
  };
  const rig = await ready({ device });
  const fds0 = native.openFds();
  const e = native.eventfd();
  const TE = SetIrqsFlags.DATA_EVENTFD | SetIrqsFlags.ACTION_TRIGGER;
  let r = await rig.client.request(
    Command.DEVICE_SET_IRQS,
    encodeSetIrqsRequest({ flags: TE, index: 2, start: 0, count: 1 }),
    { fds: [e] },
  );
  assert.ok(isOk(r));
  assert.equal(seen, ['2 0x24 0+1 fds=1 unknown']);
  assert.not.ok(rig.irq.isEnabled(2, 0), 'the engine kept nothing');
  await sleep(5);
  assert.is(native.openFds(), fds0 + 1, 'the borrowed fd was closed by the engine');
  // Invalid requests never reach the hook.
  r = await rig.client.request(
    Command.DEVICE_SET_IRQS,
    encodeSetIrqsRequest({ flags: TE, index: 2, start: 7, count: 2 }),
    { fds: [e, e] },
  );
  assert.ok(isError(r, E.EINVAL));
  assert.is(seen.length, 1);
  // A hook that declines: the engine handles it as usual.
  take = false;
  r = await rig.client.request(
    Command.DEVICE_SET_IRQS,
    encodeSetIrqsRequest({ flags: TE, index: 2, start: 0, count: 1 }),
    { fds: [e] },
  );
  assert.ok(isOk(r));
  assert.ok(rig.irq.isEnabled(2, 0));
  native.closeFd(e);
  await rig.teardown();
});

test('device commands: GET_INFO, IRQ_INFO, REGION_INFO (caps, argsz, fd), region access checks, RESET', async () => {
  const rig = await ready();
  let r = await rig.client.request(Command.DEVICE_GET_INFO, getInfo());
  assert.equal(decodeDeviceGetInfoReply(r.payload), { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
  r = await rig.client.request(Command.DEVICE_GET_IRQ_INFO, encodeIrqInfoRequest({ index: 2 }));
  assert.equal(decodeIrqInfoReply(r.payload), { argsz: 16, flags: 0xb, index: 2, count: 8 });
  r = await rig.client.request(Command.DEVICE_GET_IRQ_INFO, encodeIrqInfoRequest({ index: 5 }));
  assert.ok(isError(r, E.EINVAL));

  // BAR1 has a sparse cap: argsz 32 gets the truncated info (CAPS clear, no fd), then the full one with 1 fd.
  r = await rig.client.request(
    Command.DEVICE_GET_REGION_INFO,
    encodeRegionInfoRequest({ index: 1, argsz: 32 }),
  );
  let info = decodeRegionInfoReply(r.payload, r.fds.length);
  assert.is(r.payload.length, 32);
  assert.is(info.argsz, 64);
  assert.is(info.flags & 0x8, 0);
  assert.is(r.fds.length, 0);
  r = await rig.client.request(
    Command.DEVICE_GET_REGION_INFO,
    encodeRegionInfoRequest({ index: 1, argsz: 64 }),
  );
  info = decodeRegionInfoReply(r.payload, r.fds.length);
  assert.is(info.flags, 0xf);
  assert.is(info.capOffset, 32);
  assert.equal(info.caps, [{ id: 1, version: 1, areas: [{ offset: 0x1000n, size: 0x1000n }] }]);
  assert.is(r.fds.length, 1);
  // The fd maps the same bytes REGION_READ sees.
  native.pwrite(rig.device.bar1Fd, u32le(0x12345678), 0x1004n);
  const ab = native.mmap(r.fds[0]!, 0x1000n, 0x1000);
  assert.is(new DataView(ab).getUint32(4, true), 0x12345678);
  native.munmap(ab);
  native.closeFd(r.fds[0]!);
  r = await rig.client.request(
    Command.DEVICE_GET_REGION_INFO,
    encodeRegionInfoRequest({ index: 7, argsz: 40 }),
  );
  assert.is(r.payload.length, 32, 'never padded to the budget');
  r = await rig.client.request(Command.DEVICE_GET_REGION_INFO, encodeRegionInfoRequest({ index: 9 }));
  assert.ok(isError(r, E.EINVAL));

  // Region access: bounds, absent regions, max_data_xfer_size, count 0.
  r = await rig.client.request(Command.REGION_READ, read(7, 0n, 256));
  assert.is(decodeRegionReadReply(r.payload).data.length, 256);
  assert.is(
    new DataView(decodeRegionReadReply(r.payload).data.buffer.slice(0)).getUint32(16, true),
    0x00051b36,
  );
  for (const [what, p] of [
    ['past the end', read(0, 0xffcn, 8)],
    ['offset 2^64-1', read(0, (1n << 64n) - 1n, 256)],
    ['absent region', read(2, 0n, 4)],
    ['index 9', read(9, 0n, 4)],
    ['count > max', read(0, 0n, 1048576 + 8)],
  ] as const) {
    r = await rig.client.request(Command.REGION_READ, p);
    assert.ok(isError(r, E.EINVAL), what);
  }
  r = await rig.client.request(Command.REGION_READ, read(0, 0n, 0));
  assert.is(r.payload.length, 16, 'count 0: the 16-byte echo');
  r = await rig.client.request(Command.REGION_WRITE, write(0, 0x20n, u32le(7)));
  assert.is(r.payload.length, 16);
  assert.is(rig.device.bar0[0x20], 7);
  r = await rig.client.request(Command.DEVICE_RESET);
  assert.ok(isOk(r));
  assert.is(rig.device.resets, 1);
  assert.is(rig.device.bar0[0x20], 0);
  await rig.teardown();
});

// With a silent log DMA_MAP/DMA_UNMAP run in place (from the connection's inbox, session.ts); trace logging turns
// that off: both ways must behave the same.
for (const level of ['silent', 'trace'] as const) {
  test(`DMA_MAP/UNMAP over the wire: fd maps, echo replies, covering and empty unmaps, FLAG_ALL, errnos (${level} log)`, async () => {
    // A destination opened synchronously: the fd counts below must not see it appear late.
    const rig = await ready({ log: pino({ level }, pino.destination({ dest: '/dev/null', sync: true })) });
    const memfd = native.memfdCreate('guest', 0x100000);
    const fds0 = native.openFds();
    let r = await rig.client.request(Command.DMA_MAP, dmaMap(0x100000n, 0x10000n, 3, 0x10000n), {
      give: [native.dupFd(memfd)],
    });
    assert.ok(isOk(r));
    assert.is(r.h.size, 16);
    // Each map carries a fresh dup, as QEMU does; the server keeps one fd per file.
    for (let i = 0n; i < 4n; i++) {
      r = await rig.client.request(
        Command.DMA_MAP,
        dmaMap(0x200000n + i * 0x1000n, 0x1000n, 1, i * 0x1000n),
        {
          give: [native.dupFd(memfd)],
        },
      );
      assert.ok(isOk(r));
    }
    assert.is(native.openFds(), fds0 + 1);
    // The device sees guest memory through the mapping.
    native.pwrite(memfd, u32le(0xfeedf00d), 0x10040n);
    assert.equal(await rig.dma.read(0x100040n, 4), u32le(0xfeedf00d));
    r = await rig.client.request(Command.DMA_MAP, dmaMap(0x100000n, 0x10000n, 3, 0x10000n), {
      give: [native.dupFd(memfd)],
    });
    assert.ok(isError(r, E.EEXIST), 'identical re-map');
    r = await rig.client.request(Command.DMA_MAP, dmaMap(0x300000n, 0x1000n, 3, 0x800n), {
      give: [native.dupFd(memfd)],
    });
    assert.ok(isError(r, E.EINVAL), 'misaligned offset');
    r = await rig.client.request(Command.DMA_MAP, dmaMap(0x300000n, 0x1000n, 0));
    assert.ok(isError(r, E.EINVAL), 'no prot');
    r = await rig.client.request(Command.DMA_MAP, dmaMap(0x300000n, 0x1000n, 3), {
      give: [native.eventfd()],
    });
    assert.ok(isError(r, E.ENODEV), 'eventfd');
    // A bisecting unmap, a covering one, an empty one.
    r = await rig.client.request(Command.DMA_UNMAP, dmaUnmap(0x100000n, 0x1000n));
    assert.ok(isError(r, E.EINVAL));
    r = await rig.client.request(Command.DMA_UNMAP, dmaUnmap(0x200000n, 0x200000n));
    assert.ok(isOk(r));
    assert.equal(decodeDmaUnmapReply(r.payload), {
      argsz: 24,
      flags: 0,
      address: 0x200000n,
      size: 0x200000n,
    });
    r = await rig.client.request(Command.DMA_UNMAP, dmaUnmap(0x40000000n, 0x1000n));
    assert.ok(isOk(r), 'nothing there');
    r = await rig.client.request(Command.DMA_UNMAP, dmaUnmap(0x1000n, 0x1000n, 2));
    assert.ok(isError(r, E.EINVAL), 'ALL with an address');
    r = await rig.client.request(Command.DMA_UNMAP, dmaUnmap(0n, 0n, 2));
    assert.ok(isOk(r), 'FLAG_ALL');
    assert.is(rig.dma.size, 0);
    await sleep(5);
    assert.is(native.openFds(), fds0, 'every DMA fd closed');
    // NO_REPLY maps apply silently.
    const n = rig.client.inbox.length;
    rig.client.send(Command.DMA_MAP, dmaMap(0x1000n, 0x1000n), { flags: NO_REPLY });
    r = await rig.client.request(Command.DMA_UNMAP, dmaUnmap(0x1000n, 0x1000n));
    assert.ok(isOk(r));
    assert.is(rig.client.inbox.length, n + 1);
    assert.is(rig.stats.dmaMaps, 6);
    assert.is(rig.stats.dmaUnmaps, 4);
    if (level === 'silent') assert.ok(rig.session.inPlace >= 15, `in place: ${rig.session.inPlace}`);
    else assert.is(rig.session.inPlace, 0);
    await rig.teardown();
    native.closeFd(memfd);
  });
}

test('two messages in one write, the first carrying an fd: the fd belongs to the first (exact framing)', async () => {
  const rig = await ready();
  const memfd = native.memfdCreate('guest', 0x1000);
  const map = encodeMessage({ id: 0xa01, command: Command.DMA_MAP }, dmaMap(0x10000n, 0x1000n));
  const info = encodeMessage({ id: 0xa02, command: Command.DEVICE_GET_INFO }, getInfo());
  const both = new Uint8Array(map.length + info.length);
  both.set(map);
  both.set(info, map.length);
  rig.client.sendRaw(both, [memfd]);
  assert.ok(isOk(await rig.client.waitReply(0xa01)));
  assert.ok(isOk(await rig.client.waitReply(0xa02)));
  assert.is(rig.dma.find(0x10000n)?.access, 'mmap');
  await rig.dma.write(0x10000n, u32le(0xf00dfeed));
  const b = new Uint8Array(4);
  native.pread(memfd, b, 0n);
  assert.equal(b, u32le(0xf00dfeed));
  native.closeFd(memfd);
  await rig.teardown();
});

test('server->client DMA: after the reply, chunked, interleaved with client commands, errors and timeouts', async () => {
  const rig = await ready({ dmaTimeoutMs: 300 });
  const g = new Uint8Array(0x40000).map((_, i) => (i * 7) & 0xff);
  rig.client.guest = g;
  let r = await rig.client.request(Command.DMA_MAP, dmaMap(0n, 0x40000n));
  assert.ok(isOk(r));
  // The REGION_WRITE that starts the engine is answered before any DMA request goes out.
  const kick = write(0, 0x100n, u32le(1));
  const regs = new Uint8Array(24);
  new DataView(regs.buffer).setBigUint64(0, 0x1000n, true);
  new DataView(regs.buffer).setBigUint64(8, 0x30000n, true);
  new DataView(regs.buffer).setUint32(16, 0x3000, true);
  await rig.client.request(Command.REGION_WRITE, write(0, 0x108n, regs));
  // The client sends a command of its own before answering each DMA request (SDMA-06, HDR-29).
  let interleaved = 0;
  rig.client.beforeDmaReply = () => {
    interleaved++;
    rig.client.send(Command.DEVICE_GET_INFO, getInfo());
  };
  const kickId = rig.client.send(Command.REGION_WRITE, kick);
  const kr = await rig.client.waitReply(kickId);
  assert.ok(isOk(kr));
  const arrivals = rig.client.arrivals;
  const kickAt = arrivals.indexOf(`reply REGION_WRITE ${kickId}`);
  const firstDma = arrivals.findIndex((a) => a.startsWith('request DMA_READ'));
  assert.ok(
    kickAt >= 0 && (firstDma < 0 || firstDma > kickAt),
    `no DMA request before the reply: ${arrivals.join(', ')}`,
  );
  await until(() => dmaStatus(rig) !== 0, 3000, 'copy done');
  assert.is(dmaStatus(rig), 1);
  assert.equal(g.subarray(0x30000, 0x33000), g.subarray(0x1000, 0x4000));
  assert.ok(interleaved >= 2);
  rig.client.beforeDmaReply = undefined;
  const reqs = rig.client.serverRequests;
  assert.equal(
    reqs.map((m) => m.h.command),
    [Command.DMA_READ, Command.DMA_WRITE],
  );
  assert.ok(reqs.every((m) => m.fds.length === 0));
  assert.is(reqs[0]!.payload.length, 16);
  assert.is(reqs[1]!.payload.length, 16 + 0x3000);

  // The client refuses (EFAULT): the device sees the errno.
  rig.client.dmaErrno = E.EFAULT;
  startCopy(rig, 0x1000n, 0x2000n, 16);
  await until(() => dmaStatus(rig) !== 0);
  assert.is(dmaStatus(rig), 0x100 + E.EFAULT);
  rig.client.dmaErrno = undefined;

  // Outside every map: no message at all, EFAULT.
  const n = reqs.length;
  startCopy(rig, 0x50000n, 0x2000n, 16);
  await until(() => dmaStatus(rig) !== 0);
  assert.is(dmaStatus(rig), 0x100 + E.EFAULT);
  assert.is(reqs.length, n);

  // An unanswered request times out; commands are still served meanwhile.
  rig.client.guest = undefined;
  startCopy(rig, 0x1000n, 0x2000n, 16);
  await until(() => reqs.length > n);
  r = await rig.client.request(Command.DEVICE_GET_INFO, getInfo());
  assert.ok(isOk(r));
  await until(() => dmaStatus(rig) !== 0, 4000, 'timeout');
  assert.is(dmaStatus(rig), 0x100 + E.ETIMEDOUT);
  await rig.teardown();
});

test('server->client DMA is chunked by the client max_data_xfer_size', async () => {
  const rig = startSession();
  await rig.client.version(versionPayload('{"capabilities":{"max_data_xfer_size":4096}}'.padEnd(120)));
  rig.client.guest = new Uint8Array(0x10000).fill(0x5a);
  await rig.client.request(Command.DMA_MAP, dmaMap(0n, 0x10000n));
  startCopy(rig, 0n, 0x8000n, 10000);
  await until(() => dmaStatus(rig) === 1);
  const sizes = rig.client.serverRequests.map((m) => [
    m.h.command,
    Number(new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(8, true)),
  ]);
  assert.equal(sizes, [
    [Command.DMA_READ, 4096],
    [Command.DMA_READ, 4096],
    [Command.DMA_READ, 1808],
    [Command.DMA_WRITE, 4096],
    [Command.DMA_WRITE, 4096],
    [Command.DMA_WRITE, 1808],
  ]);
  await rig.teardown();
});

test('disconnect mid-message: cleanup (maps, IRQ fds, device detached, state kept), then a new session works', async () => {
  const fds0 = native.openFds();
  const t0 = fdTable();
  const dev = new TestDevice(); // +1 fd (its BAR1 memfd), closed by the last teardown
  const dma = new DmaAddressSpace();
  const memfd = native.memfdCreate('guest', 0x10000);
  const rig = startSession({ device: dev, dma });
  await rig.client.version();
  await rig.client.request(Command.REGION_WRITE, write(0, 0x30n, u32le(0x1234)));
  await rig.client.request(Command.DMA_MAP, dmaMap(0n, 0x10000n), { give: [native.dupFd(memfd)] });
  const e = native.eventfd();
  await rig.client.request(
    Command.DEVICE_SET_IRQS,
    encodeSetIrqsRequest({
      flags: SetIrqsFlags.DATA_EVENTFD | SetIrqsFlags.ACTION_TRIGGER,
      index: 2,
      start: 0,
      count: 1,
    }),
    { fds: [e] },
  );
  assert.is(
    native.openFds(),
    fds0 +
      1 /* device */ +
      1 /* memfd */ +
      1 /* kept DMA fd */ +
      1 /* e */ +
      1 /* IRQ dup */ +
      2 /* socketpair */,
  );
  // Half a message, then EOF.
  const whole = encodeMessage({ id: 9, command: Command.REGION_READ }, read(0, 0n, 4));
  rig.client.sendRaw(whole.subarray(0, 20));
  await sleep(5);
  rig.client.close();
  await rig.session.closed;
  assert.is(dev.detaches, 1);
  assert.is(dma.size, 0);
  assert.is(
    native.openFds(),
    fds0 + 3,
    `only the device's, our memfd and eventfd remain: ${t0.join(' ')} / ${fdTable().join(' ')}`,
  );
  native.closeFd(e);

  // The next client: VERSION again, the old maps are gone, the device state is kept.
  const rig2 = startSession({ device: dev, dma });
  await rig2.client.version();
  let r = await rig2.client.request(Command.REGION_READ, read(0, 0x30n, 4));
  assert.equal(decodeRegionReadReply(r.payload).data, u32le(0x1234));
  r = await rig2.client.request(Command.DMA_MAP, dmaMap(0n, 0x10000n), { give: [native.dupFd(memfd)] });
  assert.ok(isOk(r), 'the same range maps again');
  await rig2.teardown();
  native.closeFd(memfd);
  assert.is(native.openFds(), fds0);
});

test('garbage after VERSION (bad header size / type) closes the connection after an EINVAL', async () => {
  for (const bad of [
    encodeMessage({ id: 3, command: Command.DEVICE_GET_INFO, flags: 2 }, getInfo()), // type 2
  ]) {
    const rig = await ready();
    rig.client.sendRaw(bad);
    await rig.session.closed;
    await until(() => rig.client.closed);
    const last = rig.client.inbox.at(-1)!;
    assert.ok(isError(last, E.EINVAL));
    assert.is(rig.device.detaches, 1);
    await rig.teardown();
  }
  // size < 16: the transport refuses the framing and closes.
  const rig = await ready();
  const h = new Uint8Array(HEADER_SIZE);
  new DataView(h.buffer).setUint32(4, 8, true);
  rig.client.sendRaw(h);
  await rig.session.closed;
  assert.match(rig.session.closeReason ?? '', /error|closed/);
  await rig.teardown();
});

test.run();
