// BAR regions: bounds, splitting into device-sized accesses, value encoding, handler errors, overlays.

import { ftruncateSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mmap, munmap, openFds } from 'vfio-user-native';
import { RegionInfoFlags } from 'vfio-user-protocol';
import { DeviceError } from '../src/device.js';
import { type AccessSize, type BarSpec, PciDevice } from '../src/pci/index.js';
import { expectDeviceError, makeContext, regRead, regWrite } from './pci-test-context.js';

const EINVAL = 22;
const EIO = 5;

/** A handler that records its calls and answers with offset-derived values. */
function recorder() {
  const calls: string[] = [];
  return {
    calls,
    handler: {
      read(offset: number, size: AccessSize) {
        calls.push(`r${size}@${offset}`);
        // Byte i of the register at `offset` reads (offset + i) & 0xff, whatever the access size.
        let v = 0n;
        for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt((offset + i) & 0xff);
        return size === 8 ? v : Number(v);
      },
      write(offset: number, size: AccessSize, value: bigint) {
        calls.push(`w${size}@${offset}=${value.toString(16)}`);
      },
    },
  };
}

function device(bar: BarSpec) {
  return new PciDevice({ vendorId: 1, deviceId: 2, classCode: 0, bars: [bar] });
}

const Bar = suite('pci BARs');

Bar('RAM-backed BAR: read back what was written, 1/2/4/8 and larger', () => {
  const dev = device({ size: 4096 });
  regWrite(dev, 0, 0x10, 8, 0x1122334455667788n);
  assert.is(regRead(dev, 0, 0x10, 8), 0x1122334455667788n);
  assert.is(regRead(dev, 0, 0x10, 4), 0x55667788n);
  assert.is(regRead(dev, 0, 0x16, 2), 0x1122n);
  assert.is(regRead(dev, 0, 0x17, 1), 0x11n);
  const big = new Uint8Array(4096).map((_, i) => (i * 7) & 0xff);
  dev.regionWrite(0, 0n, big);
  assert.equal(dev.regionRead(0, 0n, 4096), big);
});

Bar('bounds: EINVAL past the end and for huge offsets; count 0 at the end is fine', () => {
  const dev = device({ size: 4096 });
  expectDeviceError(() => dev.regionRead(0, 4092n, 8), EINVAL);
  expectDeviceError(() => dev.regionRead(0, 4096n, 1), EINVAL);
  expectDeviceError(() => dev.regionRead(0, 0xffffffffffffffffn, 256), EINVAL);
  expectDeviceError(() => dev.regionWrite(0, 0xfffffffffffffff8n, new Uint8Array(16)), EINVAL);
  expectDeviceError(() => dev.regionRead(0, -1n, 1), EINVAL);
  assert.is(dev.regionRead(0, 4096n, 0).length, 0);
  expectDeviceError(() => dev.regionRead(1, 0n, 4), EINVAL);
});

Bar('accesses are split into naturally aligned chunks of at most maxAccess', () => {
  const r = recorder();
  const dev = device({ size: 256, handler: r.handler });
  const out = dev.regionRead(0, 0x20n, 16);
  assert.equal(r.calls, ['r8@32', 'r8@40']);
  assert.equal(
    [...out],
    Array.from({ length: 16 }, (_, i) => 0x20 + i),
  );
  r.calls.length = 0;
  dev.regionRead(0, 1n, 7);
  assert.equal(r.calls, ['r1@1', 'r2@2', 'r4@4']);
  r.calls.length = 0;
  dev.regionRead(0, 2n, 4);
  assert.equal(r.calls, ['r2@2', 'r2@4'], 'an unaligned dword is two words');
  r.calls.length = 0;
  regWrite(dev, 0, 8, 8, 0x0102030405060708n);
  assert.equal(r.calls, ['w8@8=102030405060708']);

  const r4 = recorder();
  const dev4 = device({ size: 256, handler: r4.handler, maxAccess: 4 });
  regWrite(dev4, 0, 0x10, 8, 0xaabbccdd11223344n);
  assert.equal(r4.calls, ['w4@16=11223344', 'w4@20=aabbccdd']);
});

Bar('split: false refuses what the device cannot take', () => {
  const r = recorder();
  const dev = device({ size: 256, handler: r.handler, maxAccess: 4, split: false });
  assert.is(regRead(dev, 0, 4, 4), 0x07060504n);
  assert.is(regRead(dev, 0, 5, 4), 0x08070605n, 'one unaligned access passes as is');
  expectDeviceError(() => dev.regionRead(0, 0n, 8), EINVAL);
  expectDeviceError(() => dev.regionRead(0, 0n, 3), EINVAL);
  expectDeviceError(() => dev.regionWrite(0, 0n, new Uint8Array(16)), EINVAL);
  assert.equal(r.calls, ['r4@4', 'r4@5']);
});

Bar('handler values: numbers and bigints, little-endian, truncated to the access size', () => {
  const values: Array<bigint | number> = [0x1ff, -1, 0x123456789n, 2 ** 40, Number.NaN];
  let i = 0;
  const dev = device({ size: 64, handler: { read: () => values[i++]!, write: () => {} } });
  assert.is(regRead(dev, 0, 0, 1), 0xffn);
  assert.is(regRead(dev, 0, 0, 4), 0xffffffffn);
  assert.is(regRead(dev, 0, 0, 4), 0x23456789n);
  assert.is(regRead(dev, 0, 0, 8), 0x10000000000n);
  assert.is(regRead(dev, 0, 0, 8), 0n, 'NaN reads as 0, no throw');
});

Bar('handler exceptions: DeviceError passes through, others become EIO and are logged', () => {
  const dev = device({
    size: 64,
    handler: {
      read: (o) => {
        if (o === 0) throw new DeviceError(EINVAL, 'no');
        throw new TypeError('bug');
      },
      write: () => {
        throw new Error('bug');
      },
    },
  });
  const ctx = makeContext();
  dev.attach(ctx);
  expectDeviceError(() => dev.regionRead(0, 0n, 4), EINVAL);
  expectDeviceError(() => dev.regionRead(0, 8n, 4), EIO);
  expectDeviceError(() => dev.regionWrite(0, 8n, new Uint8Array(4)), EIO);
  assert.is(ctx.log.at('error').length, 2);
});

Bar('I/O BAR accesses go to the handler too', () => {
  const r = recorder();
  const dev = device({ size: 32, io: true, handler: r.handler });
  regWrite(dev, 0, 4, 2, 0xbeef);
  assert.equal(r.calls, ['w2@4=beef']);
  assert.equal(dev.regionInfo(0), { size: 32n, flags: 3 });
});

Bar(
  'sparse BAR: memfd areas, region info, the client mapping agrees with REGION_READ/WRITE (RW-10, RW-16)',
  () => {
    const r = recorder();
    const dev = device({
      size: 0x4000,
      handler: r.handler,
      sparse: [
        { offset: 0x3000, size: 0x1000 },
        { offset: 0x1000, size: 0x1000 },
      ],
    });
    const info = dev.regionInfo(0);
    assert.is(info.size, 0x4000n);
    assert.is(info.flags, RegionInfoFlags.READ | RegionInfoFlags.WRITE | RegionInfoFlags.MMAP);
    assert.ok(info.mmap && info.mmap.fd >= 0);
    assert.is(info.mmap!.offset, 0n);
    assert.equal(info.mmap!.areas, [
      { offset: 0x1000n, size: 0x1000n },
      { offset: 0x3000n, size: 0x1000n },
    ]);
    // The client maps the fd as QEMU does (MAP_SHARED at offset + area.offset).
    const ab = mmap(info.mmap!.fd, 0x1000n, 0x1000);
    const client = new Uint8Array(ab);
    client[0x10] = 0x5a; // a guest store into the mmapped doorbell
    assert.is(dev.barMemory(0)![0x1010], 0x5a, 'the device model sees it without a message');
    assert.is(regRead(dev, 0, 0x1010, 1), 0x5an);
    regWrite(dev, 0, 0x1ff8, 8, 0x1122334455667788n);
    assert.equal([...client.subarray(0xff8)], [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    assert.equal(r.calls, [], 'area accesses never reach the handler');
    // Outside the areas: the handler, split at the area boundary.
    regRead(dev, 0, 0x20, 4);
    const straddle = dev.regionRead(0, 0xff8n, 16);
    assert.equal(r.calls, ['r4@32', 'r8@4088']);
    assert.equal([...straddle.subarray(0, 8)], [0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff]);
    assert.is(straddle[8], 0);
    munmap(ab);
    // The client cannot shrink the memfd under our mapping (sealed).
    assert.throws(() => ftruncateSync(info.mmap!.fd, 0), /EPERM|not permitted/);
    const fds = openFds();
    dev.close();
    assert.is(openFds(), fds - 1, 'close() closes the memfd');
    assert.is(dev.barMemory(0)!.length, 0, 'and unmaps it');
    dev.close();
  },
);

Bar('sparse: true maps the whole BAR; reset zeroes it', async () => {
  const dev = device({ size: 0x2000, sparse: true });
  const info = dev.regionInfo(0);
  assert.equal(info.mmap && { offset: info.mmap.offset, areas: info.mmap.areas }, {
    offset: 0n,
    areas: undefined,
  });
  regWrite(dev, 0, 0x1234, 4, 0xcafef00d);
  assert.is(new DataView(dev.barMemory(0)!.buffer).getUint32(0x1234, true), 0xcafef00d);
  await dev.reset();
  assert.is(regRead(dev, 0, 0x1234, 4), 0n);
  dev.close();
});

Bar('a spec that fails after a memfd was made does not leak it', () => {
  const fds = openFds();
  assert.throws(
    () =>
      new PciDevice({
        vendorId: 1,
        deviceId: 2,
        classCode: 0,
        bars: [{ size: 0x2000, sparse: true }],
        caps: { msix: { vectors: 4, bar: 0 } },
      }),
    /mmapped area/,
  );
  assert.is(openFds(), fds);
});

Bar('sparse areas are validated; an injected SharedMemoryFactory is used', () => {
  assert.throws(
    () => device({ size: 8192, handler: recorder().handler, sparse: [{ offset: 100, size: 4096 }] }),
    /page aligned/,
  );
  assert.throws(() => device({ size: 8192, sparse: [{ offset: 4096, size: 8192 }] }), /inside the BAR/);
  assert.throws(() => device({ size: 64, io: true, sparse: true }), /I\/O/);
  const made: string[] = [];
  let closed = 0;
  const dev = new PciDevice({
    vendorId: 1,
    deviceId: 2,
    classCode: 0,
    name: 'x',
    bars: [null, { size: 4096, sparse: true }],
    sharedMemory: (name, size) => {
      made.push(`${name}:${size}`);
      return { fd: 99, bytes: new Uint8Array(size), close: () => void closed++ };
    },
  });
  assert.equal(made, ['x-bar1:4096']);
  assert.is(dev.regionInfo(1).mmap!.fd, 99);
  dev.close();
  assert.is(closed, 1);
});

Bar.run();
