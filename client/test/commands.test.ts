// Layouts of the remaining commands as the client sends them, and how it reads their replies: DEVICE_RESET,
// DEVICE_FEATURE, MIG_DATA_READ/WRITE, GET_REGION_IO_FDS (argsz two-phase, fds to the caller).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, eventfd, openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import { DeviceFeatureFlags } from 'vfio-user-protocol';
import { ProtocolViolationError } from '../src/index.js';
import { concat, dv, le, negotiated } from './fake-peer.js';

test('DEVICE_RESET is header-only both ways; a reply with a payload is oversize (strict)', async () => {
  const { client, peer } = await negotiated();
  const p = client.reset();
  const m = await peer.expect(13);
  assert.is(m.size, 16);
  peer.reply(m);
  await p;
  const q = client.reset();
  peer.reply(await peer.expect(13), Uint8Array.of(0, 0, 0, 0));
  await q.then(
    () => assert.unreachable(),
    (e) => assert.is((e as Error).name, 'ConnectionClosedError'),
  );
  assert.is(client.violations[0]!.kind, 'oversize-reply');
  peer.close();
});

test('DEVICE_FEATURE: argsz, index|ops flags, data; GET reply data returned', async () => {
  const { client, peer } = await negotiated();
  const p = client.deviceFeature({ feature: 1, ops: DeviceFeatureFlags.GET, argsz: 16 });
  const m = await peer.expect(16);
  assert.equal(
    [m.size, dv(m.payload).getUint32(0, true), dv(m.payload).getUint32(4, true)],
    [24, 16, 0x10001],
  );
  peer.reply(m, le([4, 16], [4, 0x10001], [8, 5n]));
  const r = await p;
  assert.equal([r.argsz, r.flags, dv(r.data).getBigUint64(0, true)], [16, 0x10001, 5n]);
  // A GET MIGRATION reply whose data is not 8 bytes is malformed: the call fails, the connection stays.
  const q = client.deviceFeature({ feature: 1, ops: DeviceFeatureFlags.GET, argsz: 16 });
  peer.reply(await peer.expect(16), le([4, 12], [4, 0x10001], [4, 5]));
  await q.then(
    () => assert.unreachable(),
    (e) => assert.instance(e, ProtocolViolationError),
  );
  assert.not.ok(client.closed);
  client.close();
  peer.close();
});

test('MIG_DATA_READ / MIG_DATA_WRITE layouts; a short read is the end of the data', async () => {
  const { client, peer } = await negotiated();
  const p = client.migDataRead(64);
  const m = await peer.expect(17);
  assert.equal([m.size, dv(m.payload).getUint32(0, true), dv(m.payload).getUint32(4, true)], [24, 72, 64]);
  peer.reply(m, concat(le([4, 11], [4, 3]), Uint8Array.of(7, 8, 9)));
  assert.equal([...(await p)], [7, 8, 9]);
  const w = client.migDataWrite(Uint8Array.of(1, 2, 3, 4, 5));
  const mw = await peer.expect(18);
  assert.equal([mw.size, dv(mw.payload).getUint32(0, true), dv(mw.payload).getUint32(4, true)], [29, 13, 5]);
  assert.equal([...mw.payload.subarray(8)], [1, 2, 3, 4, 5]);
  peer.reply(mw);
  await w;
  client.close();
  peer.close();
});

test('GET_REGION_IO_FDS: ask with 16, then with the announced argsz; the fds belong to the caller', async () => {
  const before = await openFdsSettled();
  const { client, peer } = await negotiated();
  const p = client.getRegionIoFds(0);
  const m1 = await peer.expect(6);
  assert.equal([dv(m1.payload).getUint32(0, true), dv(m1.payload).getUint32(8, true)], [16, 0]);
  peer.reply(m1, le([4, 16 + 80], [4, 0], [4, 0], [4, 2]));
  const m2 = await peer.expect(6);
  assert.is(dv(m2.payload).getUint32(0, true), 96);
  const e = eventfd();
  const sub = (off: bigint, dm: bigint) => le([8, off], [8, 4n], [4, 0], [4, 0], [4, 0], [4, 0], [8, dm]);
  peer.reply(m2, concat(le([4, 96], [4, 0], [4, 0], [4, 2]), sub(0x10n, 1n), sub(0x20n, 2n)), [e]);
  closeFd(e);
  const r = await p;
  assert.is(r.count, 2);
  assert.equal(
    r.subRegions.map((x) => [x.offset, x.size, x.fdIndex, x.datamatch]),
    [
      [0x10n, 4n, 0, 1n],
      [0x20n, 4n, 0, 2n],
    ],
  );
  assert.is(r.fds.length, 1);
  for (const fd of r.fds) closeFd(fd);
  client.close();
  peer.close();
  assert.is(await openFdsBackTo(before), before);
});

test.run();
