// Capabilities through config space and BARs: chain walks, PM, MSI, MSI-X table/PBA, PCIe + FLR + DSN.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { IrqIndex } from 'vfio-user-protocol';
import { PciDevice, type PciDeviceSpec } from '../src/pci/index.js';
import {
  CONFIG,
  cfgRead,
  cfgWrite,
  makeContext,
  regRead,
  regWrite,
  walkExtended,
  walkLegacy,
} from './pci-test-context.js';

function full(extra: Partial<PciDeviceSpec> = {}): PciDeviceSpec {
  return {
    vendorId: 0x1234,
    deviceId: 0x0002,
    classCode: 0xff0000,
    bars: [{ size: 0x4000, maxAccess: 8 }],
    caps: {
      pm: true,
      msi: { vectors: 4 },
      msix: { vectors: 8, bar: 0, tableOffset: 0x1000, pbaOffset: 0x2000 },
      pcie: { dsn: 0x0123456789abcdefn },
    },
    ...extra,
  };
}

const Caps = suite('pci capabilities');

Caps('legacy chain: PM, MSI, MSI-X, PCIe, terminating, STATUS.CAP_LIST set (CFG-21)', () => {
  const dev = new PciDevice(full());
  const cfg = dev.regionRead(CONFIG, 0n, 4096);
  assert.is(cfgRead(dev, 0x06, 2) & 0x10, 0x10);
  const chain = walkLegacy(cfg);
  assert.equal(
    chain.map((c) => c.id),
    [0x01, 0x05, 0x11, 0x10],
  );
  assert.is(chain[0]!.offset, 0x40);
  for (let i = 1; i < chain.length; i++) assert.ok(chain[i]!.offset > chain[i - 1]!.offset);
  assert.is(dev.msi!.offset, chain[1]!.offset);
  assert.is(dev.msix!.offset, chain[2]!.offset);
  assert.is(dev.pcie!.offset, chain[3]!.offset);
});

Caps('extended chain: DSN at 0x100; no extended caps reads 0 at 0x100', () => {
  const dev = new PciDevice(full());
  const cfg = dev.regionRead(CONFIG, 0n, 4096);
  const ext = walkExtended(cfg);
  assert.equal(ext, [{ id: 0x3, version: 1, offset: 0x100 }]);
  assert.is(cfgRead(dev, 0x104, 4), 0x89abcdef);
  assert.is(cfgRead(dev, 0x108, 4), 0x01234567);
  cfgWrite(dev, 0x104, 4, 0);
  assert.is(cfgRead(dev, 0x104, 4), 0x89abcdef, 'DSN is read-only (ignored, CFG-16 lenient)');

  const plain = new PciDevice({ vendorId: 1, deviceId: 2, classCode: 0, caps: { pcie: true } });
  assert.equal(plain.regionInfo(7).size, 4096n);
  assert.is(cfgRead(plain, 0x100, 4), 0);
  assert.equal(walkExtended(plain.regionRead(CONFIG, 0n, 4096)), []);
});

Caps('no capabilities: pointer 0, STATUS.CAP_LIST clear, 256-byte config', () => {
  const dev = new PciDevice({ vendorId: 1, deviceId: 2, classCode: 0 });
  assert.is(cfgRead(dev, 0x34, 1), 0);
  assert.is(cfgRead(dev, 0x06, 2) & 0x10, 0);
  assert.equal(walkLegacy(dev.regionRead(CONFIG, 0n, 256)), []);
  assert.is(dev.regionInfo(7).size, 256n);
});

Caps('capability headers are read-only (CFG-15, lenient)', () => {
  const dev = new PciDevice(full());
  const before = dev.regionRead(CONFIG, 0n, 4096);
  for (const c of walkLegacy(before)) cfgWrite(dev, c.offset, 2, 0xffff);
  cfgWrite(dev, 0x34, 1, 0x80);
  cfgWrite(dev, 0x100, 4, 0);
  assert.equal(dev.regionRead(CONFIG, 0n, 4096), before);
});

Caps('PM: D0 <-> D3hot; D1/D2 writes discarded; No_Soft_Reset', () => {
  const dev = new PciDevice(full());
  const pm = dev.pm!.offset;
  assert.is(cfgRead(dev, pm + 2, 2) & 0x7, 3, 'PM 1.2');
  assert.is(cfgRead(dev, pm + 4, 2), 0x0008);
  cfgWrite(dev, pm + 4, 2, 3);
  assert.is(cfgRead(dev, pm + 4, 2), 0x000b);
  assert.is(dev.pm!.powerState, 3);
  cfgWrite(dev, pm + 4, 2, 1);
  assert.is(cfgRead(dev, pm + 4, 2), 0x000b, 'D1 not supported');
  cfgWrite(dev, pm + 4, 1, 0);
  assert.is(cfgRead(dev, pm + 4, 2), 0x0008);
});

Caps('MSI: control bits, MME clamped to MMC (CFG-17), address/data RW', () => {
  const dev = new PciDevice(full());
  const m = dev.msi!.offset;
  // 4 vectors (MMC = 2), 64-bit, per-vector masking.
  assert.is(cfgRead(dev, m + 2, 2), 0x0184);
  cfgWrite(dev, m + 2, 2, 0x0071);
  assert.is(cfgRead(dev, m + 2, 2), 0x01a5, 'MME 7 clamped to 2, enabled');
  assert.is(dev.msi!.enabledVectors, 4);
  cfgWrite(dev, m + 2, 2, 0x0011);
  assert.is(dev.msi!.enabledVectors, 2);
  cfgWrite(dev, m + 4, 4, 0xfee0100f);
  assert.is(cfgRead(dev, m + 4, 4), 0xfee0100c, 'address bits 1:0 read-only');
  cfgWrite(dev, m + 8, 4, 0x12345678);
  assert.is(cfgRead(dev, m + 8, 4), 0x12345678);
  cfgWrite(dev, m + 12, 4, 0xffffffff);
  assert.is(cfgRead(dev, m + 12, 4), 0xffff, 'data is 16 bits, then reserved');
  cfgWrite(dev, m + 16, 4, 0xffffffff);
  assert.is(cfgRead(dev, m + 16, 4), 0xf, 'mask bits of 4 vectors');
  cfgWrite(dev, m + 20, 4, 0xffffffff);
  assert.is(cfgRead(dev, m + 20, 4), 0, 'pending bits are read-only');
});

Caps('MSI: enable routes raise(); masked vectors pend and fire on unmask', () => {
  const dev = new PciDevice(full());
  const ctx = makeContext();
  dev.attach(ctx);
  const m = dev.msi!.offset;
  cfgWrite(dev, m + 2, 2, 0x0021); // enable, 4 vectors
  assert.is(dev.raise(2), 'msi');
  assert.equal(ctx.irq.events, [{ index: IrqIndex.MSI, vector: 2 }]);
  ctx.irq.clear();
  cfgWrite(dev, m + 16, 4, 0x2); // mask vector 1
  dev.raise(1);
  assert.equal(ctx.irq.events, []);
  assert.is(cfgRead(dev, m + 20, 4), 0x2, 'vector 1 pending');
  dev.raise(1);
  cfgWrite(dev, m + 16, 4, 0x0);
  assert.equal(ctx.irq.events, [{ index: IrqIndex.MSI, vector: 1 }], 'one delivery on unmask');
  assert.is(cfgRead(dev, m + 20, 4), 0);
  ctx.irq.clear();
  // Fewer vectors enabled than asked for: fold onto the last one.
  cfgWrite(dev, m + 2, 2, 0x0001);
  dev.raise(3);
  assert.equal(ctx.irq.events, [{ index: IrqIndex.MSI, vector: 0 }]);
  // Disabled: back to INTx.
  ctx.irq.clear();
  cfgWrite(dev, m + 2, 2, 0);
  assert.is(dev.raise(0), 'intx');
  assert.equal(ctx.irq.events, [{ index: IrqIndex.INTX, vector: 0 }]);
});

Caps('MSI without per-vector masking, 32-bit', () => {
  const dev = new PciDevice({
    vendorId: 1,
    deviceId: 2,
    classCode: 0,
    caps: { msi: { vectors: 1, is64: false, perVectorMask: false } },
  });
  const m = dev.msi!.offset;
  assert.is(cfgRead(dev, m + 2, 2), 0x0000);
  cfgWrite(dev, m + 8, 4, 0xffffffff);
  assert.is(cfgRead(dev, m + 8, 2), 0xffff, 'data right after the 32-bit address');
  assert.is(cfgRead(dev, m + 10, 2), 0, 'end of the 10-byte capability');
});

Caps('MSI-X: capability fields; table and PBA served from the BAR', () => {
  const dev = new PciDevice(full());
  const x = dev.msix!.offset;
  assert.is(cfgRead(dev, x + 2, 2), 7, 'table size 8');
  assert.is(cfgRead(dev, x + 4, 4), 0x1000, 'table offset, BIR 0');
  assert.is(cfgRead(dev, x + 8, 4), 0x2000, 'PBA offset, BIR 0');
  cfgWrite(dev, x + 4, 4, 0);
  assert.is(cfgRead(dev, x + 4, 4), 0x1000, 'read-only');
  for (let v = 0; v < 8; v++) {
    assert.is(regRead(dev, 0, 0x1000 + 16 * v + 12, 4), 1n, `vector ${v} masked at power-on`);
  }
  assert.is(regRead(dev, 0, 0x2000, 8), 0n, 'nothing pending');
  regWrite(dev, 0, 0x1020, 8, 0x00000000fee00003n);
  regWrite(dev, 0, 0x1028, 4, 0x4041);
  regWrite(dev, 0, 0x102c, 4, 0xfffffffe);
  assert.is(regRead(dev, 0, 0x1020, 8), 0xfee00000n, 'address bits 1:0 reserved');
  assert.is(
    regRead(dev, 0, 0x1028, 8),
    0x0000000000004041n,
    'data; vector control bits 31:1 reserved, mask cleared',
  );
  regWrite(dev, 0, 0x2000, 8, -1n);
  assert.is(regRead(dev, 0, 0x2000, 8), 0n, 'PBA is read-only');
  // Outside the table and PBA the BAR is the device's (RAM here).
  regWrite(dev, 0, 0x3000, 4, 0xabcd);
  assert.is(regRead(dev, 0, 0x3000, 4), 0xabcdn);
});

Caps('MSI-X: enable routes raise(); function mask pends, unmask delivers', () => {
  const dev = new PciDevice(full());
  const ctx = makeContext();
  dev.attach(ctx);
  const x = dev.msix!.offset;
  cfgWrite(dev, dev.msi!.offset + 2, 2, 0x0001); // MSI enabled too: MSI-X wins
  cfgWrite(dev, x + 2, 2, 0x8000);
  assert.is(dev.raise(5), 'msix');
  assert.equal(
    ctx.irq.events,
    [{ index: IrqIndex.MSIX, vector: 5 }],
    "table mask is the client's (QEMU emulates it)",
  );
  ctx.irq.clear();
  assert.is(dev.raise(8), 'none', 'no vector 8');
  cfgWrite(dev, x + 3, 1, 0xc0); // enable + function mask, a byte write
  dev.raise(3);
  dev.raise(6);
  assert.equal(ctx.irq.events, []);
  assert.is(regRead(dev, 0, 0x2000, 4), 0x48n, 'vectors 3 and 6 pending');
  cfgWrite(dev, x + 2, 2, 0x8000);
  assert.equal(ctx.irq.events, [
    { index: IrqIndex.MSIX, vector: 3 },
    { index: IrqIndex.MSIX, vector: 6 },
  ]);
  assert.is(regRead(dev, 0, 0x2000, 4), 0n);
});

Caps('MSI-X with device-side table masking', () => {
  const dev = new PciDevice(
    full({ caps: { msix: { vectors: 4, bar: 0, tableOffset: 0, pbaOffset: 0x800, honourTableMask: true } } }),
  );
  const ctx = makeContext();
  dev.attach(ctx);
  cfgWrite(dev, dev.msix!.offset + 2, 2, 0x8000);
  dev.raise(2);
  assert.equal(ctx.irq.events, [], 'vector 2 masked at power-on');
  assert.is(regRead(dev, 0, 0x800, 1), 0x4n);
  regWrite(dev, 0, 2 * 16 + 12, 4, 0);
  assert.equal(ctx.irq.events, [{ index: IrqIndex.MSIX, vector: 2 }]);
  assert.is(regRead(dev, 0, 0x800, 1), 0n);
});

Caps('PCIe: capability registers, FLR resets the function (CFG-18)', async () => {
  let resets = 0;
  const dev = new PciDevice(full(), { reset: () => void resets++ });
  const ctx = makeContext();
  dev.attach(ctx);
  const e = dev.pcie!.offset;
  assert.is(cfgRead(dev, e + 2, 2), 0x0002, 'v2 endpoint');
  assert.ok(cfgRead(dev, e + 4, 4) & 0x10000000, 'FLR advertised');
  const power = dev.regionRead(CONFIG, 0n, 4096);
  cfgWrite(dev, 0x04, 2, 0x0006);
  cfgWrite(dev, 0x10, 4, 0xfe000000);
  regWrite(dev, 0, 0x3000, 4, 0x55);
  cfgWrite(dev, e + 8, 2, 0x2810 | 0x8000);
  assert.is(resets, 1);
  assert.equal(dev.regionRead(CONFIG, 0n, 4096), power, 'config back to power-on');
  assert.is(cfgRead(dev, e + 8, 2) & 0x8000, 0, 'Initiate FLR reads 0');
  assert.is(regRead(dev, 0, 0x3000, 4), 0n, 'RAM BAR cleared');
  assert.ok(ctx.log.at('info').some((r) => r.obj === 'function level reset'));
  // A DevCtl write without the FLR bit does not reset.
  cfgWrite(dev, e + 8, 2, 0x0010);
  assert.is(resets, 1);
  assert.is(cfgRead(dev, e + 8, 2), 0x0010);
});

Caps('PCIe without FLR: the bit is not writable and nothing resets', () => {
  let resets = 0;
  const dev = new PciDevice(
    { vendorId: 1, deviceId: 2, classCode: 0, caps: { pcie: { flr: false } } },
    {
      reset: () => void resets++,
    },
  );
  const e = dev.pcie!.offset;
  assert.is(cfgRead(dev, e + 4, 4) & 0x10000000, 0);
  cfgWrite(dev, 0x04, 2, 0x0002);
  cfgWrite(dev, e + 8, 2, 0xa810);
  assert.is(resets, 0);
  assert.is(cfgRead(dev, 0x04, 2), 0x0002);
  assert.is(cfgRead(dev, e + 8, 2), 0x2810);
});

Caps('reset re-masks the MSI-X table and clears pending bits', async () => {
  const dev = new PciDevice(full());
  dev.attach(makeContext());
  cfgWrite(dev, dev.msix!.offset + 2, 2, 0xc000);
  dev.raise(1);
  regWrite(dev, 0, 0x100c, 4, 0);
  assert.is(regRead(dev, 0, 0x2000, 1), 0x2n);
  await dev.reset();
  assert.is(regRead(dev, 0, 0x100c, 4), 1n);
  assert.is(regRead(dev, 0, 0x2000, 1), 0n);
  assert.is(cfgRead(dev, dev.msix!.offset + 2, 2), 7);
});

Caps.run();
