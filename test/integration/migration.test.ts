// vfio-user migration v2 end to end (conformance MIG-10): two servers, each with its own edu, driven by the
// client library. Source: state built up (liveness, a factorial, a DMA buffer filled from guest memory, dirty
// logging seeing the device's DMA writes), PRE_COPY reads, a change while still running, STOP_COPY reads until a
// short one, STOP. Destination: RESUMING writes, STOP, RUNNING; every edu register, the DMA buffer (read back
// by DMA into the destination's guest memory) and config space equal the source's.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory, VfioUserClient } from 'vfio-user-client';
import { openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import {
  DeviceFeatureFlags,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeMigDeviceState,
  Feature,
  MigState,
} from 'vfio-user-protocol';
import { createDevice } from 'vfio-user-server';
import { Edu } from '../lib/edu-regs.js';
import { sleep } from '../lib/wait.js';
import { readU32, startServer, u32, u64 } from './helpers.js';

const { GET, SET } = DeviceFeatureFlags;
const BAR0 = 0;
const CONFIG = 7;
const CHUNK = 1024;

const rd = async (c: VfioUserClient, reg: number, size: 4 | 8 = 4): Promise<bigint> => {
  const b = await c.regionRead(BAR0, BigInt(reg), size);
  return size === 8 ? Buffer.from(b).readBigUInt64LE(0) : BigInt(readU32(b));
};
const wr = (c: VfioUserClient, reg: number, v: number | bigint) =>
  c.regionWrite(BAR0, BigInt(reg), typeof v === 'bigint' ? u64(v) : u32(v));

async function eduDma(c: VfioUserClient, src: bigint, dst: bigint, count: number, toRam: boolean) {
  await wr(c, Edu.DMA_SRC, src);
  await wr(c, Edu.DMA_DST, dst);
  await wr(c, Edu.DMA_COUNT, BigInt(count));
  await wr(c, Edu.DMA_CMD, BigInt(1 | (toRam ? 2 : 0)));
  const t0 = Date.now();
  while ((await rd(c, Edu.DMA_CMD)) & 1n) {
    if (Date.now() - t0 > 5000) throw new Error('edu DMA never finished');
  }
}

const setState = (c: VfioUserClient, s: number) =>
  c.deviceFeature({
    feature: Feature.MIG_DEVICE_STATE,
    ops: SET,
    data: encodeMigDeviceState({ deviceState: s }),
  });
async function getState(c: VfioUserClient): Promise<number> {
  const r = await c.deviceFeature({ feature: Feature.MIG_DEVICE_STATE, ops: GET, argsz: 16 });
  return Buffer.from(r.data).readUInt32LE(0);
}

/** Reads the current migration data until a short read. */
async function drain(c: VfioUserClient): Promise<{ data: Buffer; reads: number }> {
  const parts: Uint8Array[] = [];
  for (let i = 1; i <= 10_000; i++) {
    const p = await c.migDataRead(CHUNK);
    assert.ok(p.length <= CHUNK, 'reply size <= requested');
    parts.push(p);
    if (p.length < CHUNK) return { data: Buffer.concat(parts), reads: i };
  }
  throw new Error('the migration stream never ended');
}

/** Every edu register the guest reads. */
async function registers(c: VfioUserClient): Promise<Record<string, bigint>> {
  const out: Record<string, bigint> = {};
  for (const [k, off] of Object.entries(Edu)) {
    if (typeof off !== 'number' || off >= 0x100 || k === 'IRQ_RAISE' || k === 'IRQ_ACK') continue;
    out[k] = await rd(c, off, off >= 0x80 && off !== Edu.DMA_ERROR ? 8 : 4);
  }
  return out;
}

test('migration between two edu servers: PRE_COPY, STOP_COPY until short, RESUMING; the device state is equal', async () => {
  const before = await openFdsSettled();
  const srcServer = await startServer(createDevice('edu'));
  const dstServer = await startServer(createDevice('edu'));
  const src = await VfioUserClient.connect(srcServer.path, { maxDataXferSize: CHUNK });
  const caps = (await src.negotiate()).capabilities;
  assert.ok(caps.migration, 'VERSION offers migration');
  assert.is(caps.migration?.pgsize, 4096);
  const flags = await src.deviceFeature({ feature: Feature.MIGRATION, ops: GET, argsz: 16 });
  assert.is(Buffer.from(flags.data).readBigUInt64LE(0), 5n, 'STOP_COPY | PRE_COPY');

  // Build up state on the source.
  const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 13 + 1) & 0xff);
  const srcMem = GuestMemory.create(0x4000);
  await src.mapMemory(srcMem, { address: 0x100000n, size: 0x4000 });
  await src.regionWrite(CONFIG, 4n, Uint8Array.of(0x06, 0x00)); // memory + bus master
  srcMem.write(0, pattern);
  await eduDma(src, 0x100000n, Edu.BUFFER, 4096, false);
  await wr(src, Edu.LIVENESS, 0x0badcafe);
  await wr(src, Edu.FACTORIAL, 12);
  while ((await rd(src, Edu.STATUS)) & 1n) await sleep(2);
  assert.is(await rd(src, Edu.FACTORIAL), 479001600n);

  // Dirty logging sees the device's DMA into guest memory (page 2 of the map).
  const page = 4096n;
  const report = async () => {
    const r = await src.deviceFeature({
      feature: Feature.DMA_LOGGING_REPORT,
      ops: GET,
      data: encodeDmaLoggingReport({ iova: 0x100000n, length: 0x4000n, pageSize: page }),
      argsz: 8 + 24 + 8,
    });
    return r.data[24];
  };
  await src.deviceFeature({
    feature: Feature.DMA_LOGGING_START,
    ops: SET,
    data: encodeDmaLoggingControl({ pageSize: page, ranges: [] }),
  });
  assert.is(await report(), 0);
  await eduDma(src, Edu.BUFFER + 0x10n, 0x102000n, 64, true);
  assert.is(await report(), 0b100, 'page 2 dirty');
  assert.is(await report(), 0, 'clear on read');

  // PRE_COPY: an early copy while the device still runs.
  await setState(src, MigState.PRE_COPY);
  const pre = await drain(src);
  assert.ok(pre.reads >= 2, `the state spans several ${CHUNK}-byte reads (${pre.data.length} bytes)`);
  await wr(src, Edu.LIVENESS, 0x13572468); // still running: must reach the destination via STOP_COPY
  await wr(src, Edu.DMA_SRC, 0x1122334455667788n);
  await setState(src, MigState.STOP_COPY);
  assert.is(await getState(src), MigState.STOP_COPY);
  const fin = await drain(src);
  assert.is((await src.migDataRead(CHUNK)).length, 0, 'drained');
  await setState(src, MigState.STOP);
  const config = await src.regionRead(CONFIG, 0n, 256); // region access is allowed in STOP
  await setState(src, MigState.RUNNING);
  const expected = await registers(src);
  assert.is(expected.LIVENESS, BigInt(~0x13572468 >>> 0));

  // Destination: resume from the whole stream (PRE_COPY data first, superseded by the STOP_COPY snapshot).
  const dst = await VfioUserClient.connect(dstServer.path, { maxDataXferSize: CHUNK });
  await dst.negotiate();
  const dstMem = GuestMemory.create(0x4000);
  await dst.mapMemory(dstMem, { address: 0x100000n, size: 0x4000 });
  assert.not.equal(await registers(dst), expected, 'a fresh edu differs');
  await setState(dst, MigState.RESUMING); // RUNNING -> STOP -> RESUMING
  const stream = Buffer.concat([pre.data, fin.data]);
  for (let o = 0; o < stream.length; o += CHUNK) await dst.migDataWrite(stream.subarray(o, o + CHUNK));
  await setState(dst, MigState.STOP);
  await setState(dst, MigState.RUNNING);
  assert.is(await getState(dst), MigState.RUNNING);

  assert.equal(await registers(dst), expected, 'edu registers');
  assert.is(await rd(dst, Edu.FACTORIAL), 479001600n);
  assert.equal(await dst.regionRead(CONFIG, 0n, 256), config, 'config space (bus master included)');
  // The DMA buffer: bus mastering came with the config space, so DMA it out into the destination's memory.
  await eduDma(dst, Edu.BUFFER, 0x101000n, 4096, true);
  assert.equal(dstMem.read(0x1000, 4096), pattern, 'DMA buffer');
  assert.is(await rd(dst, Edu.DMA_ERROR), 0n);

  src.close();
  dst.close();
  srcMem.close();
  dstMem.close();
  await srcServer.close();
  await dstServer.close();
  assert.is(await openFdsBackTo(before), before);
});

test.run();
