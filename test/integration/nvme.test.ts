// The NVMe controller driven by a small host driver (test/lib/nvme-driver.ts) through the vfio-user client over a
// real socket, with real memfd guest memory and a real image file: registers and bring-up, identify and the admin
// commands Linux sends, reads/writes through PRP1/PRP2/PRP lists (chained too) checked against the image file's
// bytes, discard and write zeroes punching holes, flush and shutdown, controller reset with I/O in flight, MSI-X
// per CQ and INTx, the copying path for fd-less guest memory, malformed commands, and migration of a live
// controller to a second server.
import { closeSync, fstatSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VfioUserClient } from 'vfio-user-client';
import { createNvme, type NvmeDevice } from 'vfio-user-server';
import { bringUp, NvmeDriver, REG } from '../lib/nvme-driver.js';
import { startServer, type TestServer } from './helpers.js';

const MiB = 1 << 20;

interface Rig {
  dir: string;
  image: string;
  dev: NvmeDevice;
  s: TestServer;
  d: NvmeDriver;
  done(): Promise<void>;
}

async function rig(
  opts: {
    size?: bigint;
    queues?: number;
    withFd?: boolean;
    irq?: 'msix' | 'intx' | 'none';
    image?: string;
  } = {},
): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'nvme-it-'));
  const image = opts.image ?? join(dir, 'disk.img');
  const dev = createNvme({
    image,
    size: opts.size ?? 64n * BigInt(MiB),
    queues: opts.queues ?? 2,
    serial: 'TESTSERIAL42',
  });
  const s = await startServer(dev);
  const d = await NvmeDriver.open(s.path, { withFd: opts.withFd ?? true, irq: opts.irq ?? 'msix' });
  return {
    dir,
    image,
    dev,
    s,
    d,
    done: async () => {
      d.close();
      await s.close();
      await dev.controller.closeAndWait();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function fileBytes(path: string, offset: number, len: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(len);
    readSync(fd, b, 0, len, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

const ascii = (b: Uint8Array, at: number, len: number) =>
  String.fromCharCode(...b.subarray(at, at + len)).trimEnd();
const le32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getUint32(at, true);
const le64 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getBigUint64(at, true);

test('registers, bring-up and identify: what Linux reads at probe', async () => {
  const r = await rig({ size: 48n * BigInt(MiB) });
  const { d } = r;
  try {
    const cap = await d.r64(REG.CAP);
    assert.is(Number(cap & 0xffffn) + 1, 1024, 'MQES + 1');
    assert.is(Number((cap >> 16n) & 1n), 1, 'CQR');
    assert.is(Number((cap >> 37n) & 1n), 1, 'CSS: NVM');
    assert.is(Number((cap >> 32n) & 0xfn), 0, 'DSTRD 0');
    assert.is(await d.r32(REG.VS), 0x00010400);
    assert.is(await d.r32(REG.CSTS), 0, 'not ready before enable');
    // Config space: class NVMe, MSI-X with queues + 1 vectors.
    const cfg = await d.c.regionRead(7, 0n, 64);
    assert.is(le32(cfg, 8) >>> 8, 0x010802, 'class code');
    assert.ok(d.msixCap > 0, 'MSI-X capability');
    assert.is(((await d.cfg16(d.msixCap + 2)) & 0x7ff) + 1, 3);

    await bringUp(d, 2);
    const { cqe, data } = await d.identify(1);
    assert.is(cqe.status, 0);
    assert.is(data[0]! | (data[1]! << 8), 0x1b36, 'VID');
    assert.is(ascii(data, 4, 20), 'TESTSERIAL42');
    assert.is(ascii(data, 24, 40), 'vfio-user-node NVMe');
    assert.is(data[77], 7, 'MDTS 512 KiB');
    assert.is(le32(data, 80), 0x00010400, 'VER');
    assert.is(le32(data, 516), 1, 'NN');
    assert.is(data[512], 0x66);
    assert.is(data[513], 0x44);
    assert.ok(ascii(data, 768, 256).replace(/\0+$/, '').startsWith('nqn.'), 'SUBNQN');

    const ns = await d.identify(0, 1);
    assert.is(ns.cqe.status, 0);
    assert.is(le64(ns.data, 0), (48n * BigInt(MiB)) / 512n, 'NSZE in 512-byte blocks');
    assert.is((le32(ns.data, 128) >>> 16) & 0xff, 9, 'LBADS');
    assert.is(ns.data[33]! & 7, 1, 'DLFEAT: deallocated reads zeros');

    const list = await d.identify(2, 0);
    assert.equal([le32(list.data, 0), le32(list.data, 4)], [1, 0], 'active namespace list');
    assert.is(
      (await d.identify(2, 1)).data.every((b) => b === 0),
      true,
      'no namespace above 1',
    );
    const desc = await d.identify(3, 1);
    assert.equal([desc.data[0], desc.data[1], desc.data[20], desc.data[21]], [2, 16, 3, 16], 'NGUID + UUID');
    assert.is((await d.identify(6, 0, 0)).cqe.status, 0, 'I/O command set specific controller (NVM)');
    const bad = await d.identify(0, 2);
    assert.is(bad.cqe.status, 0x00b, 'namespace 2: Invalid Namespace');
    assert.ok(bad.cqe.dnr);

    // Number of queues: asked for 8, granted what the controller has (2, 0-based 1).
    const nq = await d.admin({ opcode: 0x09, cdw10: 0x07, cdw11: (7 << 16) | 7 });
    assert.is(nq.dw0, (1 << 16) | 1);
    assert.is(
      (await d.admin({ opcode: 0x0a, cdw10: 0x07 })).dw0,
      (1 << 16) | 1,
      'Get Features number of queues',
    );
    assert.is((await d.admin({ opcode: 0x0a, cdw10: 0x06 })).dw0, 1, 'volatile write cache enabled');
    assert.is((await d.admin({ opcode: 0x09, cdw10: 0x0b, cdw11: 0x100 })).status, 0, 'async event config');
    assert.is((await d.admin({ opcode: 0x09, cdw10: 0x0c })).status, 0x002, 'APST: Invalid Field');

    // Log pages: SMART, firmware slot, error; an unknown one is refused.
    const off = d.alloc(4096);
    const smart = await d.admin({
      opcode: 0x02,
      nsid: 0xffffffff,
      prp1: d.iova(off),
      cdw10: 0x02 | (127 << 16),
    });
    assert.is(smart.status, 0);
    assert.is(d.mem.bytes[off + 3], 100, 'available spare');
    assert.is((await d.admin({ opcode: 0x02, prp1: d.iova(off), cdw10: 0x03 | (127 << 16) })).status, 0);
    assert.is((await d.admin({ opcode: 0x02, prp1: d.iova(off), cdw10: 0x01 | (15 << 16) })).status, 0);
    assert.is((await d.admin({ opcode: 0x02, prp1: d.iova(off), cdw10: 0x7f })).status, 0x109);
    const huge = await d.admin({ opcode: 0x02, prp1: d.iova(off), cdw10: 0x02 | (0xffff << 16), cdw11: 1 });
    assert.is(huge.status, 0x002, 'a 512 KiB log read is refused, not allocated');

    // Async Event Request stays outstanding (no completion); Abort answers "not aborted".
    const aerCid = d.place(0, { opcode: 0x0c });
    await d.ring(0);
    const abort = await d.admin({ opcode: 0x08, cdw10: aerCid << 16 });
    assert.is(abort.status, 0);
    assert.is(abort.dw0 & 1, 1);
    assert.is(d.poll(0), undefined, 'the AER did not complete');
    assert.is((await d.admin({ opcode: 0x7f })).status, 0x001, 'unknown opcode');
    const page = d.iova(d.alloc(8192));
    const dbbc = await d.admin({ opcode: 0x7c, prp1: page, prp2: page + 4096n });
    assert.is(dbbc.status, 0x001, 'Doorbell Buffer Config not offered by default');
  } finally {
    await r.done();
  }
});

test('read/write: PRP1 only, PRP1+PRP2, PRP list, chained PRP list; image bytes match; errors', async () => {
  const r = await rig();
  const { d } = r;
  try {
    await bringUp(d, 1);
    const cases = [
      { lba: 0n, bytes: 512, off: d.alloc(4096) + 512 }, // inside one page
      { lba: 8n, bytes: 8192, off: d.alloc(12288) + 2048 }, // PRP1 + PRP2 (crosses a page)
      { lba: 100n, bytes: 128 * 1024, off: d.alloc(128 * 1024) }, // PRP list
      { lba: 1000n, bytes: 512 * 1024, off: d.alloc(512 * 1024) }, // MDTS, one full list
    ];
    let seed = 1;
    for (const c of cases) {
      const data = pattern(c.bytes, seed++);
      d.mem.write(c.off, data);
      const w = await d.cmd(1, d.rwCmd(true, c.lba, c.bytes / 512, c.off, c.bytes));
      assert.is(w.status, 0, `write ${c.bytes}`);
      assert.equal(fileBytes(r.image, Number(c.lba) * 512, c.bytes), data, `image bytes for ${c.bytes}`);
      const back = d.alloc(c.bytes + 4096);
      const rd = await d.cmd(1, d.rwCmd(false, c.lba, c.bytes / 512, back, c.bytes));
      assert.is(rd.status, 0);
      assert.equal(d.mem.bytes.slice(back, back + c.bytes), data, `read back ${c.bytes}`);
    }
    // A PRP list starting 16 bytes before its page end: two slots, so it chains through several list pages.
    const data = pattern(64 * 1024, 99);
    const off = d.alloc(64 * 1024);
    d.mem.write(off, data);
    assert.is(
      (await d.cmd(1, d.rwCmd(true, 5000n, 128, off, 64 * 1024, 4096 - 16))).status,
      0,
      'chained write',
    );
    assert.equal(fileBytes(r.image, 5000 * 512, 64 * 1024), data);
    const back = d.alloc(64 * 1024);
    assert.is((await d.cmd(1, d.rwCmd(false, 5000n, 128, back, 64 * 1024, 4096 - 24))).status, 0);
    assert.equal(d.mem.bytes.slice(back, back + 64 * 1024), data, 'chained read');

    // Errors: past the namespace, beyond MDTS, misaligned PRP entry, unmapped buffer, bad namespace, SGL.
    const blocks = (64 * MiB) / 512;
    const past = await d.cmd(1, d.rwCmd(false, BigInt(blocks - 1), 2, back, 1024));
    assert.is(past.status, 0x080, 'LBA Out of Range');
    assert.ok(past.dnr);
    const big = await d.cmd(1, { opcode: 0x02, nsid: 1, prp1: d.iova(back), cdw12: 2047 }); // 1 MiB
    assert.is(big.status, 0x002, 'beyond MDTS: Invalid Field');
    const mis = await d.cmd(1, {
      opcode: 0x02,
      nsid: 1,
      prp1: d.iova(back),
      prp2: d.iova(back) + 8n,
      cdw12: 15,
    });
    assert.is(mis.status, 0x002, 'misaligned PRP2');
    const unmapped = await d.cmd(1, { opcode: 0x02, nsid: 1, prp1: 0x1000n, cdw12: 0 });
    assert.is(unmapped.status, 0x004, 'read into unmapped memory: Data Transfer Error');
    const badNs = await d.cmd(1, { ...d.rwCmd(false, 0n, 1, back, 512), nsid: 2 });
    assert.is(badNs.status, 0x00b);
    const sgl = await d.cmd(1, { ...d.rwCmd(false, 0n, 1, back, 512), flags: 0x40 });
    assert.is(sgl.status, 0x002, 'SGL (PSDT != 0) refused');
    assert.is(
      r.dev.controller.stats.bounced,
      1,
      'only the unmapped one bounced; the rest went straight into mapped memory',
    );
  } finally {
    await r.done();
  }
});

test('queue depth 32 on two queues: every command completes once, data intact', async () => {
  const r = await rig();
  const { d } = r;
  try {
    await bringUp(d, 2, 64);
    const per = 32;
    const bufs: { q: number; lba: bigint; off: number; data: Uint8Array }[] = [];
    for (let q = 1; q <= 2; q++) {
      for (let i = 0; i < per; i++) {
        const data = pattern(4096, q * 1000 + i);
        const off = d.alloc(4096);
        d.mem.write(off, data);
        const lba = BigInt(((q - 1) * per + i) * 8);
        bufs.push({ q, lba, off, data });
        d.place(q, d.rwCmd(true, lba, 8, off, 4096));
      }
      await d.ring(q);
    }
    const done = [...(await d.reap(1, per)), ...(await d.reap(2, per))];
    assert.is(done.length, 2 * per);
    assert.ok(done.every((c) => c.status === 0));
    assert.is(
      new Set(done.filter((c) => c.sqid === 1).map((c) => c.cid)).size,
      per,
      'distinct cids on queue 1',
    );
    for (const b of bufs) assert.equal(fileBytes(r.image, Number(b.lba) * 512, 4096), b.data);
    // MSI-X: vector q fired for queue q, the admin vector for admin completions.
    await d.waitFor(() => (d.irqs[1]?.count ?? 0) > 0 && (d.irqs[2]?.count ?? 0) > 0, 'per-queue vectors');
    assert.ok((d.irqs[0]?.count ?? 0) >= 4, 'admin vector');
  } finally {
    await r.done();
  }
});

test('discard (Dataset Management) and Write Zeroes punch holes; reads return zeros', async () => {
  const r = await rig();
  const { d } = r;
  try {
    await bringUp(d, 1);
    const len = 4 * MiB;
    const chunk = 512 * 1024;
    const src = d.alloc(chunk);
    for (let i = 0; i < len / chunk; i++) {
      d.mem.write(src, pattern(chunk, 7 + i));
      assert.is(
        (await d.cmd(1, d.rwCmd(true, BigInt((i * chunk) / 512), chunk / 512, src, chunk))).status,
        0,
      );
    }
    assert.is((await d.cmd(1, { opcode: 0x00, nsid: 1 })).status, 0, 'flush');
    const before = statSync(r.image).blocks;
    assert.ok(before * 512 >= len, `image holds the data (${before} blocks)`);
    // Deallocate the first 2 MiB in two ranges.
    const list = d.alloc(4096);
    const dv = new DataView(d.mem.bytes.buffer, d.mem.bytes.byteOffset + list, 32);
    dv.setUint32(4, 2048, true);
    dv.setBigUint64(8, 0n, true);
    dv.setUint32(16 + 4, 2048, true);
    dv.setBigUint64(16 + 8, 2048n, true);
    const dsm = await d.cmd(1, { opcode: 0x09, nsid: 1, prp1: d.iova(list), cdw10: 1, cdw11: 1 << 2 });
    assert.is(dsm.status, 0);
    const mid = statSync(r.image).blocks;
    assert.ok(before - mid >= (2 * MiB) / 512, `discard freed blocks: ${before} -> ${mid}`);
    // Write Zeroes with deallocate over the next 1 MiB.
    const wz = await d.cmd(1, { opcode: 0x08, nsid: 1, cdw10: 4096, cdw12: (2047 & 0xffff) | (1 << 25) });
    assert.is(wz.status, 0);
    const after = statSync(r.image).blocks;
    assert.ok(mid - after >= MiB / 512, `write zeroes freed blocks: ${mid} -> ${after}`);
    const back = d.alloc(chunk);
    d.mem.bytes.fill(0xee, back, back + chunk);
    assert.is((await d.cmd(1, d.rwCmd(false, 1024n, chunk / 512, back, chunk))).status, 0);
    assert.ok(
      d.mem.bytes.subarray(back, back + chunk).every((b) => b === 0),
      'discarded range reads zeros',
    );
    // Untouched data after the holes.
    assert.is((await d.cmd(1, d.rwCmd(false, 6144n, chunk / 512, back, chunk))).status, 0);
    assert.equal(d.mem.bytes.slice(back, back + chunk), pattern(chunk, 7 + 6));
    // A range past the end is refused, nothing discarded.
    dv.setBigUint64(8, BigInt((64 * MiB) / 512), true);
    const badDsm = await d.cmd(1, { opcode: 0x09, nsid: 1, prp1: d.iova(list), cdw10: 0, cdw11: 1 << 2 });
    assert.is(badDsm.status, 0x080);
  } finally {
    await r.done();
  }
});

test('controller reset (CC.EN) with I/O in flight, shutdown notification, re-enable', async () => {
  const r = await rig();
  const { d } = r;
  try {
    await bringUp(d, 1);
    const off = d.alloc(512 * 1024);
    for (let i = 0; i < 16; i++) d.place(1, d.rwCmd(true, BigInt(i * 1024), 1024, off, 512 * 1024));
    await d.ring(1);
    // Disable at once: RDY drops only after the writes in flight settled; nothing more completes.
    await d.w32(REG.CC, 0);
    await d.waitFor(async () => ((await d.r32(REG.CSTS)) & 1) === 0, 'RDY = 0');
    assert.is(r.dev.controller.image.busy, 0, 'no image I/O in flight once RDY is 0');
    assert.is(r.dev.controller.stats.resets, 1);
    // Old queues are gone: a doorbell on queue 1 does nothing.
    await d.w32(0x1000 + 8, 3);
    // Bring it up again on fresh queues; I/O works.
    await bringUp(d, 1);
    const data = pattern(4096, 5);
    d.mem.write(off, data);
    assert.is((await d.cmd(1, d.rwCmd(true, 77n, 8, off, 4096))).status, 0);
    assert.equal(fileBytes(r.image, 77 * 512, 4096), data);
    // Shutdown notification: SHST goes to complete after the flush.
    await d.w32(REG.CC, (await d.r32(REG.CC)) | (1 << 14));
    await d.waitFor(async () => (((await d.r32(REG.CSTS)) >> 2) & 3) === 2, 'SHST = complete');
    assert.ok(r.dev.controller.image.stats.flushes >= 1);
    await d.disable();
    // Enable with bad parameters: Controller Fatal Status, never ready.
    await d.w32(REG.AQA, 0);
    await d.w32(REG.CC, 1 | (6 << 16) | (4 << 20));
    assert.is((await d.r32(REG.CSTS)) & 3, 2, 'CFS set, RDY clear');
    await d.enable();
    assert.is((await d.r32(REG.CSTS)) & 3, 1, 'ready again, CFS cleared');
    // DEVICE_RESET from the client: back to power-on registers.
    await d.c.reset();
    assert.is(await d.r32(REG.CC), 0);
    assert.is(await d.r32(REG.CSTS), 0);
  } finally {
    await r.done();
  }
});

test('queue management errors and hostile doorbells', async () => {
  const r = await rig();
  const { d } = r;
  try {
    await bringUp(d, 1);
    const q = d.alloc(4096);
    const st = async (e: Parameters<NvmeDriver['admin']>[0]) => (await d.admin(e)).status;
    assert.is(
      await st({ opcode: 0x05, prp1: d.iova(q), cdw10: (63 << 16) | 1, cdw11: 3 }),
      0x101,
      'CQ 1 exists',
    );
    assert.is(
      await st({ opcode: 0x05, prp1: d.iova(q), cdw10: (63 << 16) | 9, cdw11: 3 }),
      0x101,
      'qid > queues',
    );
    assert.is(
      await st({ opcode: 0x05, prp1: d.iova(q), cdw10: (4095 << 16) | 2, cdw11: 3 }),
      0x102,
      'too big',
    );
    assert.is(
      await st({ opcode: 0x05, prp1: d.iova(q), cdw10: (63 << 16) | 2, cdw11: 2 }),
      0x002,
      'not contiguous',
    );
    assert.is(
      await st({ opcode: 0x05, prp1: d.iova(q), cdw10: (63 << 16) | 2, cdw11: (60 << 16) | 3 }),
      0x108,
      'vector',
    );
    assert.is(
      await st({ opcode: 0x01, prp1: d.iova(q), cdw10: (63 << 16) | 2, cdw11: (7 << 16) | 1 }),
      0x100,
      'no CQ 7',
    );
    assert.is(await st({ opcode: 0x04, cdw10: 1 }), 0x10c, 'CQ 1 still has SQ 1');
    assert.is(await st({ opcode: 0x00, cdw10: 0 }), 0x101, 'admin SQ cannot be deleted');
    // Doorbells past the queue size, on missing queues, misaligned: ignored, controller keeps working.
    await d.w32(0x1000 + 8, 5000);
    await d.w32(0x1000 + 8 * 30, 1);
    await d.c.regionWrite(0, 0x1001n, Uint8Array.of(1, 2));
    assert.is((await d.cmd(1, { opcode: 0x00, nsid: 1 })).status, 0, 'still works');
    assert.is(await d.r32(0x1000), 0, 'doorbells read 0');
    // Delete and re-create the pair.
    await d.deleteQueuePair(1);
    await d.createQueuePair(1, 16, 1);
    assert.is((await d.cmd(1, { opcode: 0x00, nsid: 1 })).status, 0);
    assert.is((await d.r32(REG.CSTS)) & 2, 0, 'no fatal status');
  } finally {
    await r.done();
  }
});

test('shadow doorbells (Doorbell Buffer Config): tails and heads from the shadow page, event indexes published', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nvme-it-'));
  const dev = createNvme({ image: join(dir, 'd.img'), size: 16n * BigInt(MiB), shadowDoorbells: true });
  const s = await startServer(dev);
  const d = await NvmeDriver.open(s.path);
  try {
    await bringUp(d, 1);
    const id = await d.identify(1);
    assert.is(le32(id.data, 256) & 0x100, 0x100, 'OACS advertises Doorbell Buffer Config');
    const dbs = d.alloc(4096);
    const eis = d.alloc(4096);
    assert.is(
      (await d.admin({ opcode: 0x7c, prp1: d.iova(dbs), prp2: d.iova(eis + 8) })).status,
      0x002,
      'misaligned',
    );
    assert.is((await d.admin({ opcode: 0x7c, prp1: d.iova(dbs), prp2: d.iova(eis) })).status, 0);
    const shadow = new DataView(d.mem.bytes.buffer, d.mem.bytes.byteOffset + dbs, 4096);
    const event = new DataView(d.mem.bytes.buffer, d.mem.bytes.byteOffset + eis, 4096);
    // Three flushes placed; the shadow tail says 3 while the MMIO doorbell only says 1 (the host skipped the rest).
    for (let i = 0; i < 3; i++) d.place(1, { opcode: 0x00, nsid: 1 });
    shadow.setUint32(8, 3, true);
    await d.w32(0x1000 + 8, 1);
    const done = await d.reap(1, 3);
    assert.ok(
      done.every((c) => c.status === 0),
      'all three ran',
    );
    assert.is(event.getUint32(8, true), 3, 'SQ event index = the tail consumed');
    // The CQ head moves only in the shadow; the device picks it up when it needs room, and publishes it.
    shadow.setUint32(12, 3, true);
    d.place(1, { opcode: 0x00, nsid: 1 });
    shadow.setUint32(8, 4, true);
    await d.w32(0x1000 + 8, 4);
    assert.is((await d.reap(1, 1))[0]!.status, 0);
    assert.is(dev.controller.stats.ioCommands, 4);
  } finally {
    d.close();
    await s.close();
    await dev.controller.closeAndWait();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('INTx: the line follows unconsumed completions; INTMS masks it', async () => {
  const r = await rig({ irq: 'intx' });
  const { d } = r;
  try {
    await bringUp(d, 1);
    const intx = d.irqs[0]!;
    const before = intx.count;
    assert.ok(before >= 1, 'admin completions raised INTx');
    await d.c.unmaskIrqs(0, 0, 1);
    assert.is((await d.cmd(1, { opcode: 0x00, nsid: 1 })).status, 0);
    await intx.wait(before + 1);
    assert.ok(!r.dev.intxAsserted, 'line dropped once the host consumed the CQ');
    await d.c.unmaskIrqs(0, 0, 1);
    await d.w32(REG.INTMS, 1);
    const masked = intx.count;
    assert.is((await d.cmd(1, { opcode: 0x00, nsid: 1 })).status, 0);
    assert.is(intx.count, masked, 'masked: no interrupt');
    await d.w32(REG.INTMC, 1);
  } finally {
    await r.done();
  }
});

test('fd-less guest memory: the copying path through DMA messages gives the same bytes', async () => {
  const r = await rig({ withFd: false });
  const { d } = r;
  try {
    await bringUp(d, 1, 16);
    const data = pattern(128 * 1024, 3);
    const off = d.alloc(128 * 1024);
    d.mem.write(off, data);
    assert.is((await d.cmd(1, d.rwCmd(true, 64n, 256, off, 128 * 1024))).status, 0);
    assert.equal(fileBytes(r.image, 64 * 512, 128 * 1024), data);
    const back = d.alloc(128 * 1024);
    assert.is((await d.cmd(1, d.rwCmd(false, 64n, 256, back, 128 * 1024))).status, 0);
    assert.equal(d.mem.bytes.slice(back, back + 128 * 1024), data);
    assert.ok(r.dev.controller.stats.bounced >= 2, 'took the copying path');
    assert.ok(d.c.dmaStats.reads > 0 && d.c.dmaStats.writes > 0, 'served DMA_READ and DMA_WRITE');
  } finally {
    await r.done();
  }
});

test('an existing image keeps its data and gives the size; a missing one is created sparse', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nvme-img-'));
  try {
    const path = join(dir, 'old.img');
    const fd = openSync(path, 'w');
    writeSync(fd, pattern(8 * MiB, 11));
    closeSync(fd);
    const dev = createNvme({ image: path });
    assert.is(dev.controller.blocks, BigInt((8 * MiB) / 512));
    await dev.controller.closeAndWait();
    assert.equal(fileBytes(path, 0, 4096), pattern(8 * MiB, 11).subarray(0, 4096), 'contents kept');
    const fresh = join(dir, 'new.img');
    const dev2 = createNvme({ image: fresh, size: 1n << 30n, blockSize: 4096 });
    assert.is(dev2.controller.blocks, (1n << 30n) / 4096n);
    const st = statSync(fresh);
    assert.is(st.size, 1 << 30);
    assert.ok(st.blocks < 64, 'sparse');
    await dev2.controller.closeAndWait();
    assert.throws(() => createNvme({ image: join(dir, 'empty.img') }), /empty/);
    const fd2 = openSync(fresh, 'r');
    assert.ok(fstatSync(fd2).size > 0);
    closeSync(fd2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('migration: a live controller (queues, registers) moves to a second server and carries on', async () => {
  const r = await rig();
  const { d } = r;
  let r2: { s: TestServer; dev: NvmeDevice } | undefined;
  try {
    await bringUp(d, 1);
    const off = d.alloc(8192);
    d.mem.write(off, pattern(8192, 21));
    assert.is((await d.cmd(1, d.rwCmd(true, 10n, 16, off, 8192))).status, 0);
    const mig = r.dev.migration!;
    await mig.setRunning?.(false); // RUNNING -> STOP
    const saved = mig.saveState();
    // The destination: the same image, a new server, the same guest memory mapped by a new client.
    const dev2 = createNvme({ image: r.image, queues: 2, serial: 'TESTSERIAL42' });
    const other = createNvme({ image: join(r.dir, 'other.img'), size: 1n << 20n, queues: 2 });
    assert.throws(() => other.migration!.loadState(saved), /geometry/, 'refused: another namespace size');
    await other.controller.closeAndWait();
    dev2.migration!.loadState(saved); // RESUMING -> STOP
    await dev2.migration!.setRunning?.(true); // STOP -> RUNNING
    const s2 = await startServer(dev2);
    r2 = { s: s2, dev: dev2 };
    const c2 = await VfioUserClient.connect(s2.path);
    await c2.negotiate();
    await c2.mapMemory(d.mem, { address: d.base });
    // Keep using the old driver's queue bookkeeping through the new connection.
    const old = d.c;
    (d as { c: VfioUserClient }).c = c2;
    assert.is((await d.r32(REG.CSTS)) & 1, 1, 'ready on the destination');
    const back = d.alloc(8192);
    assert.is((await d.cmd(1, d.rwCmd(false, 10n, 16, back, 8192))).status, 0, 'I/O on the migrated queue');
    assert.equal(d.mem.bytes.slice(back, back + 8192), pattern(8192, 21));
    (d as { c: VfioUserClient }).c = old;
    c2.close();
  } finally {
    await r.done();
    if (r2) {
      await r2.s.close();
      await r2.dev.controller.closeAndWait();
    }
  }
});

test.run();
