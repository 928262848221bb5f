// Drives the counter device (counter.js) with the client library: negotiate, enable MSI with an eventfd, add to
// the counter three times and wait for each interrupt, read the counter back.
// Run it: node client.js /tmp/counter.sock
import { enableDevice, enableMsi, VfioUserClient } from 'vfio-user-client';

const BAR0 = 0;
const u32 = (v) => new Uint8Array(new Uint32Array([v]).buffer);
const readU32 = async (client, offset) =>
  new DataView((await client.regionRead(BAR0, offset, 4)).buffer).getUint32(0, true);

const client = await VfioUserClient.connect(process.argv[2] ?? '/tmp/counter.sock');
try {
  await client.negotiate();
  const info = await client.getDeviceInfo();
  console.log(`device: ${info.numRegions} regions, ${info.numIrqs} IRQ types`);
  await enableDevice(client);
  const [msi] = await enableMsi(client);
  const before = await readU32(client, 0x0n);
  for (const n of [1, 2, 3]) {
    const seen = msi.count;
    await client.regionWrite(BAR0, 0x4n, u32(n));
    await msi.wait(seen + 1);
  }
  const after = await readU32(client, 0x0n);
  console.log(`count: ${before} -> ${after}, interrupts: ${msi.count}`);
  if (after !== before + 6 || msi.count !== 3) process.exitCode = 1;
} finally {
  client.close();
}
