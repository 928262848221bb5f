// The device-model example from the top of pci-device.ts, verbatim, so the documentation compiles and works.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IrqIndex } from 'vfio-user-protocol';
import type { DeviceContext } from '../src/device.js';
import { type AccessSize, PciDevice, type PciDeviceModel } from '../src/pci/index.js';
import { cfgWrite, makeContext, regRead, regWrite } from './pci-test-context.js';
import { until } from './wait.js';

// --- begin example ---
export class Scratch implements PciDeviceModel {
  private readonly regs = new Uint32Array(1024);
  private ctx: DeviceContext | undefined;
  readonly pci = new PciDevice(
    {
      vendorId: 0x1234,
      deviceId: 0x0001,
      classCode: 0xff0000,
      revision: 1,
      bars: [
        {
          size: 4096,
          maxAccess: 4,
          handler: {
            // Sub-dword reads use the low bytes of the returned value.
            read: (offset: number) => this.regs[offset >> 2]! >>> ((offset & 3) * 8),
            write: (offset: number, size: AccessSize, value: bigint) => this.write(offset, size, value),
          },
        },
      ],
      caps: { msi: { vectors: 1 } },
      intxPin: 1,
    },
    this,
  );
  private write(offset: number, _size: AccessSize, value: bigint): void {
    this.regs[offset >> 2] = Number(value & 0xffffffffn);
    if (offset === 0x10) this.pci.raise(0);
    if (offset === 0x14 && this.ctx && this.pci.busMasterEnabled) {
      const data = new Uint8Array(this.regs.buffer, 0, 4).slice();
      this.ctx.dma.write(value, data).catch((err) => this.pci.log.warn({ err }, 'DMA failed'));
    }
    if (offset === 0x18) this.pci.lower();
  }
  reset(): void {
    this.regs.fill(0);
  }
  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }
  detach(): void {
    this.ctx = undefined;
  }
}
// --- end example ---

test('the documented example device works', async () => {
  const dev = new Scratch().pci;
  const ctx = makeContext(0x100000n, 0x1000);
  dev.attach(ctx);
  regWrite(dev, 0, 0, 4, 0xa1b2c3d4);
  assert.is(regRead(dev, 0, 1, 1), 0xc3n);
  assert.is(regRead(dev, 0, 2, 2), 0xa1b2n);
  regWrite(dev, 0, 0x10, 4, 1);
  assert.equal(ctx.irq.events, [{ index: IrqIndex.INTX, vector: 0 }]);
  regWrite(dev, 0, 0x18, 4, 1);
  assert.not.ok(dev.intxAsserted);
  cfgWrite(dev, 0x04, 2, 0x0006);
  regWrite(dev, 0, 0x14, 4, 0x100010);
  await until(() => ctx.dma.bytes[0x10] !== 0);
  assert.equal([...ctx.dma.bytes.subarray(0x10, 0x14)], [0xd4, 0xc3, 0xb2, 0xa1]);
  regWrite(dev, 0, 0x14, 4, 0x900000);
  await until(() => ctx.log.at('warn').length === 1);
  await dev.reset();
  assert.is(regRead(dev, 0, 0, 4), 0n);
});

test.run();
