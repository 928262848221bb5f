// PCI config space through the VfioUserDevice interface: header values, BAR sizing, ROM, COMMAND/STATUS,
// byte-granular access, bounds, region/IRQ info, QEMU's startup and reset sequences, reset.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DeviceInfoFlags, IrqIndex, RegionInfoFlags } from 'vfio-user-protocol';
import { IrqInfoFlags } from '../src/device.js';
import { type BarHandler, PciDevice, type PciDeviceSpec } from '../src/pci/index.js';
import { CONFIG, cfgRead, cfgWrite, expectDeviceError, makeContext } from './pci-test-context.js';
import { sleep } from './wait.js';

const EINVAL = 22;

const regs: BarHandler = { read: () => 0, write: () => {} };

function spec(extra: Partial<PciDeviceSpec> = {}): PciDeviceSpec {
  return {
    vendorId: 0x1234,
    deviceId: 0xabcd,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    classCode: 0x018002,
    revision: 0x42,
    bars: [
      { size: 4096, handler: regs },
      { size: 0x100000, is64: true, handler: regs },
      null,
      { size: 1n << 33n, is64: true, prefetch: true, handler: regs },
      null,
      { size: 256, io: true, handler: regs },
    ],
    intxPin: 1,
    ...extra,
  };
}

const Cfg = suite('pci config');

Cfg('device info: PCI + RESET, 9 regions, 5 IRQ indexes', () => {
  const dev = new PciDevice(spec());
  assert.is(dev.flags, DeviceInfoFlags.PCI | DeviceInfoFlags.RESET);
  assert.is(dev.numRegions, 9);
  assert.is(dev.numIrqs, 5);
});

Cfg('type 0 header values', () => {
  const dev = new PciDevice(spec());
  assert.is(cfgRead(dev, 0x00, 2), 0x1234);
  assert.is(cfgRead(dev, 0x02, 2), 0xabcd);
  assert.is(cfgRead(dev, 0x00, 4), 0xabcd1234);
  assert.is(cfgRead(dev, 0x04, 2), 0, 'COMMAND at power-on');
  assert.is(cfgRead(dev, 0x06, 2) & 0x10, 0, 'no capability list without capabilities');
  assert.is(cfgRead(dev, 0x08, 1), 0x42, 'revision');
  assert.is(cfgRead(dev, 0x09, 1), 0x02, 'prog-if');
  assert.is(cfgRead(dev, 0x0a, 1), 0x80, 'sub-class');
  assert.is(cfgRead(dev, 0x0b, 1), 0x01, 'base class');
  assert.is(cfgRead(dev, 0x08, 4), 0x01800242);
  assert.is(cfgRead(dev, 0x0e, 1), 0, 'header type 0, single function');
  assert.is(cfgRead(dev, 0x2c, 2), 0x1af4);
  assert.is(cfgRead(dev, 0x2e, 2), 0x1100);
  assert.is(cfgRead(dev, 0x30, 4), 0, 'no ROM');
  assert.is(cfgRead(dev, 0x34, 1), 0, 'no capabilities');
  assert.is(cfgRead(dev, 0x3d, 1), 1, 'INTA');
  assert.is(cfgRead(dev, 0x3c, 1), 0, 'interrupt line');
});

Cfg('subsystem IDs default to vendor/device', () => {
  const dev = new PciDevice({ vendorId: 0x8086, deviceId: 0x1234, classCode: 0 });
  assert.is(cfgRead(dev, 0x2c, 4), 0x12348086);
});

Cfg('BAR type bits at power-on', () => {
  const dev = new PciDevice(spec());
  assert.is(cfgRead(dev, 0x10, 4), 0x0, '32-bit memory');
  assert.is(cfgRead(dev, 0x14, 4), 0x4, '64-bit memory');
  assert.is(cfgRead(dev, 0x18, 4), 0x0, 'upper half');
  assert.is(cfgRead(dev, 0x1c, 4), 0xc, '64-bit prefetchable');
  assert.is(cfgRead(dev, 0x24, 4), 0x1, 'I/O');
});

Cfg('BAR sizing: 32-bit memory, 4 KiB (CFG-02)', () => {
  const dev = new PciDevice(spec());
  cfgWrite(dev, 0x10, 4, 0xffffffff);
  assert.is(cfgRead(dev, 0x10, 4), 0xfffff000);
  cfgWrite(dev, 0x10, 4, 0xfebf1234);
  assert.is(cfgRead(dev, 0x10, 4), 0xfebf1000, 'address bits kept, low bits read-only (CFG-09)');
});

Cfg('BAR sizing: 64-bit pair, 1 MiB (CFG-08)', () => {
  const dev = new PciDevice(spec());
  cfgWrite(dev, 0x14, 4, 0xffffffff);
  cfgWrite(dev, 0x18, 4, 0xffffffff);
  assert.is(cfgRead(dev, 0x14, 4), 0xfff00004);
  assert.is(cfgRead(dev, 0x18, 4), 0xffffffff);
  cfgWrite(dev, 0x14, 4, 0xe0000000);
  cfgWrite(dev, 0x18, 4, 0x00000080);
  assert.is(cfgRead(dev, 0x14, 4), 0xe0000004);
  assert.is(cfgRead(dev, 0x18, 4), 0x80);
});

Cfg('BAR sizing: 64-bit prefetchable, 8 GiB', () => {
  const dev = new PciDevice(spec());
  cfgWrite(dev, 0x1c, 4, 0xffffffff);
  cfgWrite(dev, 0x20, 4, 0xffffffff);
  assert.is(cfgRead(dev, 0x1c, 4), 0x0000000c, 'no writable bits in the low dword of an 8 GiB BAR');
  assert.is(cfgRead(dev, 0x20, 4), 0xfffffffe);
});

Cfg('BAR sizing: I/O, 256 bytes', () => {
  const dev = new PciDevice(spec());
  cfgWrite(dev, 0x24, 4, 0xffffffff);
  assert.is(cfgRead(dev, 0x24, 4), 0xffffff01);
});

Cfg('unimplemented BAR reads 0, before and after all-ones (CFG-03)', () => {
  const dev = new PciDevice({
    vendorId: 1,
    deviceId: 2,
    classCode: 0,
    bars: [{ size: 4096, handler: regs }],
  });
  for (let off = 0x14; off <= 0x24; off += 4) {
    assert.is(cfgRead(dev, off, 4), 0);
    cfgWrite(dev, off, 4, 0xffffffff);
    assert.is(cfgRead(dev, off, 4), 0, `BAR at 0x${off.toString(16)}`);
  }
  assert.equal(dev.regionInfo(1), { size: 0n, flags: 0 });
});

Cfg('ROM register hard-wired to 0 without a ROM (CFG-04..07)', () => {
  const dev = new PciDevice(spec());
  for (const v of [0xfffff800, 0xffffffff, 0, 0x12345600, 0xfffff801]) {
    cfgWrite(dev, 0x30, 4, v);
    assert.is(cfgRead(dev, 0x30, 4), 0, `after 0x${v.toString(16)}`);
  }
  assert.equal(dev.regionInfo(6), { size: 0n, flags: 0 });
  expectDeviceError(() => dev.regionRead(6, 0n, 4), EINVAL);
});

Cfg('a ROM: sizable register and region 6', () => {
  const rom = new Uint8Array(3000).map((_, i) => i & 0xff);
  rom[0] = 0x55;
  rom[1] = 0xaa;
  const dev = new PciDevice(spec({ rom }));
  assert.equal(dev.regionInfo(6), { size: 4096n, flags: RegionInfoFlags.READ });
  cfgWrite(dev, 0x30, 4, 0xfffff800);
  assert.is(cfgRead(dev, 0x30, 4), 0xfffff000);
  cfgWrite(dev, 0x30, 4, 0xfeb00001);
  assert.is(cfgRead(dev, 0x30, 4), 0xfeb00001, 'address + enable');
  const head = dev.regionRead(6, 0n, 4);
  assert.equal([...head], [0x55, 0xaa, 2, 3]);
  const tail = dev.regionRead(6, 4092n, 4);
  assert.equal([...tail], [0, 0, 0, 0], 'past the image: zeros');
  expectDeviceError(() => dev.regionRead(6, 4093n, 4), EINVAL);
  expectDeviceError(() => dev.regionWrite(6, 0n, new Uint8Array(4)), EINVAL);
});

Cfg('COMMAND: writable bits stored, others ignored (CFG-10, CFG-11)', () => {
  const dev = new PciDevice(spec());
  for (const v of [0x0006, 0x0000, 0x0407]) {
    cfgWrite(dev, 0x04, 2, v);
    assert.is(cfgRead(dev, 0x04, 2), v);
  }
  cfgWrite(dev, 0x04, 2, 0x0240);
  assert.is(cfgRead(dev, 0x04, 2), 0x0040, 'PARITY kept, FAST_B2B (not writable) dropped');
  cfgWrite(dev, 0x04, 2, 0xffff);
  assert.is(cfgRead(dev, 0x04, 2), 0x0547);
});

Cfg('STATUS: RW1C bits, read-only bits (CFG-12)', () => {
  const dev = new PciDevice(spec({ caps: { pm: true } }));
  // The device records a received master abort and a detected parity error.
  dev.config.update16(0x06, 0x2000 | 0x8000, true);
  assert.is(cfgRead(dev, 0x06, 2), 0xa010);
  cfgWrite(dev, 0x06, 2, 0x0000);
  assert.is(cfgRead(dev, 0x06, 2), 0xa010, 'writing 0 leaves RW1C bits');
  cfgWrite(dev, 0x06, 2, 0x2000);
  assert.is(cfgRead(dev, 0x06, 2), 0x8010, 'writing 1 clears that bit only');
  cfgWrite(dev, 0x06, 2, 0xffff);
  assert.is(cfgRead(dev, 0x06, 2), 0x0010, 'CAP_LIST is read-only');
  // A dword write to COMMAND+STATUS: COMMAND stored, STATUS bits written with 0 untouched.
  dev.config.update16(0x06, 0x4000, true);
  cfgWrite(dev, 0x04, 4, 0x00000006);
  assert.is(cfgRead(dev, 0x04, 4), 0x40100006);
});

Cfg('read-only registers ignore writes without error, logged at debug (CFG-13)', () => {
  const dev = new PciDevice(spec());
  const ctx = makeContext();
  dev.attach(ctx);
  const before = dev.regionRead(CONFIG, 0n, 256);
  cfgWrite(dev, 0x00, 4, 0xffffffff);
  cfgWrite(dev, 0x08, 4, 0xffffffff);
  cfgWrite(dev, 0x2c, 4, 0);
  cfgWrite(dev, 0x3d, 1, 4);
  cfgWrite(dev, 0x3e, 2, 0xffff);
  cfgWrite(dev, 0x0e, 1, 0x80);
  assert.equal(dev.regionRead(CONFIG, 0n, 256), before);
  assert.ok(ctx.log.at('debug').length >= 6);
});

Cfg('byte-granular writes at any offset (CFG-14)', () => {
  const dev = new PciDevice(spec());
  cfgWrite(dev, 0x05, 1, 0x04);
  assert.is(cfgRead(dev, 0x04, 2), 0x0400, '1-byte write to the high byte of COMMAND');
  cfgWrite(dev, 0x04, 1, 0x02);
  assert.is(cfgRead(dev, 0x04, 2), 0x0402);
  // Interrupt line is RW, pin and min_gnt/max_lat are RO: one dword write covers all four.
  cfgWrite(dev, 0x3c, 4, 0xffffffff);
  assert.is(cfgRead(dev, 0x3c, 4), 0x000001ff);
  // An unaligned word write across BAR0's bytes 1..2.
  cfgWrite(dev, 0x11, 2, 0xffff);
  assert.is(cfgRead(dev, 0x10, 4), 0x00fff000);
  // Cache line size (RW) via a word write at 0x0c that also hits the read-only latency timer.
  cfgWrite(dev, 0x0c, 2, 0xff10);
  assert.is(cfgRead(dev, 0x0c, 2), 0x0010);
});

Cfg('reads of 1, 2 and 4 bytes at every offset agree with the full dump', () => {
  const dev = new PciDevice(
    spec({ caps: { pm: true, msi: { vectors: 2 }, pcie: { dsn: 0x1122334455667788n } } }),
  );
  cfgWrite(dev, 0x10, 4, 0xfebf0000);
  const dump = dev.regionRead(CONFIG, 0n, 4096);
  assert.is(dump.length, 4096);
  const v = new DataView(dump.buffer);
  for (let off = 0; off < 4096; off++) {
    assert.is(cfgRead(dev, off, 1), dump[off]);
    if (off + 2 <= 4096) assert.is(cfgRead(dev, off, 2), v.getUint16(off, true));
    if (off + 4 <= 4096) assert.is(cfgRead(dev, off, 4), v.getUint32(off, true));
  }
});

Cfg('config bounds: EINVAL past the end, saturating offsets, count 0 is fine', () => {
  const dev = new PciDevice(spec());
  assert.equal(dev.regionInfo(7), { size: 256n, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE });
  assert.is(dev.regionRead(CONFIG, 0n, 256).length, 256);
  expectDeviceError(() => dev.regionRead(CONFIG, 0xffn, 2), EINVAL);
  expectDeviceError(() => dev.regionRead(CONFIG, 0n, 257), EINVAL);
  expectDeviceError(() => dev.regionRead(CONFIG, 0xffffffffffffffffn, 256), EINVAL);
  expectDeviceError(() => dev.regionWrite(CONFIG, 0x100n, new Uint8Array(1)), EINVAL);
  expectDeviceError(() => dev.regionWrite(CONFIG, 0xfffffffffffffffcn, new Uint8Array(8)), EINVAL);
  assert.is(dev.regionRead(CONFIG, 256n, 0).length, 0);
  dev.regionWrite(CONFIG, 0n, new Uint8Array(0));
});

Cfg('region info for every index; bad indexes are EINVAL', () => {
  const dev = new PciDevice(spec());
  assert.equal(dev.regionInfo(0), { size: 4096n, flags: 3 });
  assert.equal(dev.regionInfo(1), { size: 0x100000n, flags: 3 });
  assert.equal(dev.regionInfo(2), { size: 0n, flags: 0 }, 'upper half of a 64-bit BAR');
  assert.equal(dev.regionInfo(3), { size: 1n << 33n, flags: 3 });
  assert.equal(dev.regionInfo(5), { size: 256n, flags: 3 });
  assert.equal(dev.regionInfo(8), { size: 0n, flags: 0 }, 'no VGA');
  expectDeviceError(() => dev.regionInfo(9), EINVAL);
  expectDeviceError(() => dev.regionInfo(-1), EINVAL);
  expectDeviceError(() => dev.regionRead(9, 0n, 4), EINVAL);
  expectDeviceError(() => dev.regionRead(2, 0n, 4), EINVAL);
  expectDeviceError(() => dev.regionRead(8, 0n, 1), EINVAL);
});

Cfg('IRQ info: INTx iff pin, MSI/MSI-X counts, ERR 1, REQ 0', () => {
  const dev = new PciDevice(
    spec({ caps: { msi: { vectors: 4 }, msix: { vectors: 16, bar: 0, tableOffset: 0, pbaOffset: 0x800 } } }),
  );
  const { EVENTFD, MASKABLE, AUTOMASKED, NORESIZE } = IrqInfoFlags;
  assert.equal(dev.irqInfo(IrqIndex.INTX), { count: 1, flags: EVENTFD | MASKABLE | AUTOMASKED });
  assert.equal(dev.irqInfo(IrqIndex.MSI), { count: 4, flags: EVENTFD | NORESIZE });
  assert.equal(dev.irqInfo(IrqIndex.MSIX), { count: 16, flags: EVENTFD | NORESIZE });
  assert.equal(dev.irqInfo(IrqIndex.ERR), { count: 1, flags: EVENTFD });
  assert.equal(dev.irqInfo(IrqIndex.REQ), { count: 0, flags: 0 });
  expectDeviceError(() => dev.irqInfo(5), EINVAL);

  const nopin = new PciDevice(spec({ intxPin: 0 }));
  assert.is(cfgRead(nopin, 0x3d, 1), 0);
  assert.equal(nopin.irqInfo(IrqIndex.INTX), { count: 0, flags: 0 }, 'CFG-20: pin 0 <=> no INTx');
  assert.equal(nopin.irqInfo(IrqIndex.MSI), { count: 0, flags: 0 });
});

Cfg('QEMU startup and reset sequence (protocol 6.3 steps 4-12, CFG-22)', async () => {
  const dev = new PciDevice(spec({ caps: { pcie: true, msi: { vectors: 1 } } }));
  const ctx = makeContext();
  dev.attach(ctx);
  // 4-6: GET_INFO, region info 0-5 and 7, IRQ info ERR.
  assert.ok(dev.flags & DeviceInfoFlags.PCI);
  const sizes = [0, 1, 2, 3, 4, 5].map((i) => dev.regionInfo(i).size);
  assert.is(dev.regionInfo(7).size, 4096n);
  assert.is(dev.irqInfo(IrqIndex.ERR).count, 1);
  // 7: the whole config space in one read.
  const dump = dev.regionRead(CONFIG, 0n, 4096);
  assert.is(dump.length, 4096);
  // 8: ROM sizing.
  const rom = cfgRead(dev, 0x30, 4);
  cfgWrite(dev, 0x30, 4, 0xfffff800);
  assert.is(cfgRead(dev, 0x30, 4), 0, 'no invented ROM');
  cfgWrite(dev, 0x30, 4, rom);
  // 9: BAR type bits, then the pin twice.
  const types = sizes.map((s, i) => (s ? cfgRead(dev, 0x10 + 4 * i, 4) & 0xf : -1));
  assert.equal(types, [0x0, 0x4, -1, 0xc, -1, 0x1]);
  assert.is(cfgRead(dev, 0x3d, 1), 1);
  assert.is(cfgRead(dev, 0x3d, 1), 1);
  // Firmware programs the device a bit.
  cfgWrite(dev, 0x10, 4, 0xfebf0000);
  cfgWrite(dev, 0x04, 2, 0x0007);
  // 12: machine reset.
  const cmd = cfgRead(dev, 0x04, 2);
  assert.is(cmd, 0x0007);
  cfgWrite(dev, 0x04, 2, 0);
  await dev.reset();
  assert.is(cfgRead(dev, 0x3d, 1), 1);
  for (let off = 0x10; off <= 0x24; off += 4) cfgWrite(dev, off, 4, 0);
  assert.equal(dev.regionRead(CONFIG, 0n, 4096), dump, 'back to the power-on image');
});

Cfg('reset restores the power-on config space and calls the model', async () => {
  let resets = 0;
  const dev = new PciDevice(spec({ caps: { msi: { vectors: 2 }, pm: true } }), {
    reset: () => void resets++,
  });
  const power = dev.regionRead(CONFIG, 0n, 256);
  cfgWrite(dev, 0x04, 2, 0x0406);
  cfgWrite(dev, 0x10, 4, 0xfebf0000);
  cfgWrite(dev, 0x3c, 1, 11);
  const msi = dev.msi!.offset;
  cfgWrite(dev, msi + 2, 2, 0x0011);
  cfgWrite(dev, msi + 4, 4, 0xfee00000);
  assert.not.equal(dev.regionRead(CONFIG, 0n, 256), power);
  await dev.reset();
  assert.equal(dev.regionRead(CONFIG, 0n, 256), power);
  assert.is(resets, 1);
});

Cfg('an async model reset is awaited; a failing one becomes EIO', async () => {
  let done = false;
  const ok = new PciDevice(spec(), {
    reset: async () => {
      await sleep(5);
      done = true;
    },
  });
  await ok.reset();
  assert.ok(done);
  const bad = new PciDevice(spec(), {
    reset: async () => {
      throw new Error('boom');
    },
  });
  await expectDeviceError(() => bad.reset(), 5);
});

Cfg('invalid specs are refused at construction', () => {
  const base = { vendorId: 1, deviceId: 2, classCode: 0 };
  assert.throws(() => new PciDevice({ ...base, bars: [{ size: 3000 }] }), /power of two/);
  assert.throws(() => new PciDevice({ ...base, bars: [{ size: 8 }] }), />= 16/);
  assert.throws(() => new PciDevice({ ...base, bars: [{ size: 16, io: true, is64: true }] }), /I\/O/);
  assert.throws(
    () =>
      new PciDevice({
        ...base,
        bars: [undefined, undefined, undefined, undefined, undefined, { size: 16, is64: true }],
      }),
    /next slot/,
  );
  assert.throws(
    () => new PciDevice({ ...base, bars: [{ size: 16, is64: true }, { size: 16 }] }),
    /must be empty/,
  );
  assert.throws(() => new PciDevice({ ...base, bars: [{ size: 1n << 32n }] }), /2 GiB/);
  assert.throws(() => new PciDevice({ ...base, intxPin: 5 }), /intxPin/);
  assert.throws(() => new PciDevice({ ...base, caps: { msi: { vectors: 3 } } }), /power of two/);
  assert.throws(() => new PciDevice({ ...base, caps: { msix: { vectors: 4, bar: 1 } } }), /memory BAR/);
  assert.throws(
    () =>
      new PciDevice({ ...base, bars: [{ size: 16, handler: regs }], caps: { msix: { vectors: 4, bar: 0 } } }),
    /fit/,
  );
});

Cfg.run();
