// The real edu model (createDevice('edu')) driven by the client: registers, factorial with its interrupt, DMA
// through an fd map and through an fd-less map (DMA_READ/WRITE messages), state kept across a reconnect, and
// the answers to what the server does not support.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory, VfioUserClient, type VfioUserError } from 'vfio-user-client';
import { openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import { DeviceFeatureFlags } from 'vfio-user-protocol';
import { createDevice } from 'vfio-user-server';
import { Edu } from '../lib/edu-regs.js';
import { until } from '../lib/wait.js';
import { readU32, startServer, u32, u64 } from './helpers.js';

const BAR0 = 0;
const CONFIG = 7;
const INTX = 0;

async function rd(c: VfioUserClient, reg: number): Promise<number> {
  return readU32(await c.regionRead(BAR0, BigInt(reg), 4));
}
async function wr(c: VfioUserClient, reg: number, v: number | bigint): Promise<void> {
  await c.regionWrite(BAR0, BigInt(reg), typeof v === 'bigint' ? u64(v) : u32(v));
}

/** One edu DMA transfer; waits for the start bit to clear. */
async function eduDma(
  c: VfioUserClient,
  src: bigint,
  dst: bigint,
  count: number,
  toRam: boolean,
  irq = false,
) {
  await wr(c, Edu.DMA_SRC, src);
  await wr(c, Edu.DMA_DST, dst);
  await wr(c, Edu.DMA_COUNT, BigInt(count));
  await wr(c, Edu.DMA_CMD, BigInt(1 | (toRam ? 2 : 0) | (irq ? 4 : 0)));
  const t0 = Date.now();
  while ((await rd(c, Edu.DMA_CMD)) & 1) {
    if (Date.now() - t0 > 5000) throw new Error('edu DMA never finished');
  }
}

test('edu over vfio-user: identity, liveness, factorial interrupt on INTx, DMA both ways, reconnect', async () => {
  const before = await openFdsSettled();
  const dev = createDevice('edu');
  const s = await startServer(dev);
  const c = await VfioUserClient.connect(s.path, { maxDataXferSize: 1024 });
  await c.negotiate({ qemuLimits: true });
  const info = await c.getDeviceInfo();
  assert.is(info.numRegions, 9);
  assert.is((await c.getRegionInfo(BAR0)).size, 1n << 20n);
  const cfg = await c.regionRead(CONFIG, 0n, 4);
  assert.is(readU32(cfg), 0x11e81234, 'vendor 1234, device 11e8');
  assert.is(await rd(c, Edu.IDENT), 0x010000ed);
  await wr(c, Edu.LIVENESS, 0x12345678);
  assert.is(await rd(c, Edu.LIVENESS), ~0x12345678 >>> 0);

  // Factorial with its completion interrupt on INTx.
  const [intx] = await c.enableEventfds(INTX, 0, 1);
  await wr(c, Edu.STATUS, 0x80);
  await wr(c, Edu.FACTORIAL, 10);
  await intx!.wait(1);
  assert.is(await rd(c, Edu.FACTORIAL), 3628800);
  assert.is(await rd(c, Edu.IRQ_STATUS), 1);
  await wr(c, Edu.IRQ_ACK, 1);

  // Bus mastering on, then DMA: guest RAM (fd map) -> edu buffer -> guest RAM (fd-less map, by messages).
  await c.regionWrite(CONFIG, 4n, Uint8Array.of(0x06, 0x00));
  const mem = GuestMemory.create(0x4000);
  await c.mapMemory(mem, { address: 0x100000n, size: 0x2000 });
  await c.mapMemory(mem, { address: 0x200000n, size: 0x2000, memoryOffset: 0x2000, withFd: false });
  const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 5 + 3) & 0xff);
  mem.write(0, pattern);
  await eduDma(c, 0x100000n, Edu.BUFFER, 4096, false);
  await c.unmaskIrqs(INTX, 0, 1);
  await eduDma(c, Edu.BUFFER, 0x200000n, 4096, true, true);
  assert.equal(mem.read(0x2000, 4096), pattern, 'the edu buffer arrived in the fd-less map');
  assert.is(c.dmaStats.writes, 4, '4096 bytes as four 1024-byte DMA_WRITE messages');
  assert.is(c.dmaStats.maxCount, 1024);
  assert.equal(c.guestRead(0x200000n, 8), pattern.subarray(0, 8));
  await intx!.wait(2);
  assert.is(await rd(c, Edu.DMA_ERROR), 0);
  // And the way back: fd-less map -> edu -> fd map.
  mem.write(0x2000, new Uint8Array(4096).fill(0xab));
  await eduDma(c, 0x200000n, Edu.BUFFER, 4096, false);
  await eduDma(c, Edu.BUFFER, 0x101000n, 4096, true);
  assert.equal(mem.read(0x1000, 4096), new Uint8Array(4096).fill(0xab));
  assert.is(c.dmaStats.reads, 4);

  // Reconnect: the register state survives; the maps do not (DMA to the old IOVA fails, the error register says).
  c.close();
  mem.close();
  await until(() => !s.server.clients.active);
  const d = await VfioUserClient.connect(s.path);
  await d.negotiate();
  assert.is(await rd(d, Edu.LIVENESS), ~0x12345678 >>> 0);
  await eduDma(d, 0x100000n, Edu.BUFFER, 16, false);
  assert.ok((await rd(d, Edu.DMA_ERROR)) >>> 16 >= 1, 'the failed transfer is counted');
  d.close();
  await s.close();
  assert.is(await openFdsBackTo(before), before);
});

test('what the server refuses: an unknown feature, migration data while RUNNING, write-multiple', async () => {
  const s = await startServer(createDevice('edu'));
  const c = await VfioUserClient.connect(s.path);
  const r = await c.negotiate();
  assert.not.ok(r.capabilities.writeMultiple, 'the server does not offer write_multiple');
  const errno = (p: Promise<unknown>) =>
    p.then(
      () => 0,
      (e) => (e as VfioUserError).errno,
    );
  // edu offers migration (migration.test.ts), but not feature 3.
  assert.is(
    await errno(c.deviceFeature({ feature: 3, ops: DeviceFeatureFlags.PROBE | DeviceFeatureFlags.GET })),
    22,
  );
  assert.is(await errno(c.migDataRead(64)), 22, 'MIG_DATA_READ outside PRE_COPY/STOP_COPY');
  assert.is(
    await errno(c.regionWriteMulti([{ region: 0, offset: 4n, data: u32(1) }])),
    22,
    'refused locally',
  );
  assert.is(
    await errno(
      c.regionWriteMulti([{ region: 0, offset: 4n, data: u32(1) }], { force: true, noReply: false }),
    ),
    22,
    'the server answers EINVAL (WMU-01)',
  );
  // Posted: no reply at all, and the connection stays usable.
  await c.regionWriteMulti([{ region: 0, offset: 4n, data: u32(1) }], { force: true });
  assert.is(await rd(c, Edu.IDENT), 0x010000ed);
  assert.is(c.violations.length, 0);
  c.close();
  await s.close();
});

test.run();
