// A counter device for vfio-user-server: one 4 KiB BAR with three 32-bit registers and one MSI vector.
//   0x0 COUNT    (read)  the counter
//   0x4 ADD      (write) adds the value written to COUNT, then raises MSI vector 0 (INTx when MSI is off)
//   0x8 SCRATCH  (read/write) reads back what was written
// Run it: npx vfio-user-server --device ./counter.js[,start=N] --socket-path /tmp/counter.sock
import { DeviceError, defineDevice, PciDevice } from 'vfio-user-server';

export default defineDevice({
  name: 'counter',
  description: 'a counter register that interrupts on every write',
  options: {
    start: { type: 'integer', default: 0, min: 0, max: 0xffffffff, description: 'COUNT after reset' },
  },
  create({ start }) {
    let count = start;
    let scratch = 0;
    const pci = new PciDevice(
      {
        name: 'counter',
        vendorId: 0x1234,
        deviceId: 0xc0c0,
        classCode: 0xff0000, // unclassified device
        bars: [{ size: 4096, maxAccess: 4, split: false, handler: { read, write } }],
        caps: { msi: { vectors: 1 } },
      },
      {
        reset() {
          count = start;
          scratch = 0;
        },
      },
    );
    function read(offset) {
      if (offset === 0x0) return count;
      if (offset === 0x8) return scratch;
      return 0; // unassigned registers read as zero
    }
    function write(offset, size, value) {
      if (size !== 4) throw new DeviceError(22, 'registers are 32-bit'); // EINVAL to the client
      if (offset === 0x4) {
        count = (count + Number(value)) >>> 0;
        pci.raise(0);
      } else if (offset === 0x8) scratch = Number(value);
    }
    return pci;
  },
});
