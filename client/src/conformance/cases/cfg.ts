// K. Config space, region 7 (CFG).
import { setTimeout as sleep } from 'node:timers/promises';
import type { Ctx, Group } from '../case.js';
import { expectOk, fail, skip } from '../conn.js';
import type { Session } from '../session.js';
import { Flag, hex, Irq, Region } from '../wire.js';
import { EINVAL, EPERM, kase, L, le16, le32 } from './util.js';

const CFG = Region.CONFIG;

interface Cap {
  id: number;
  off: number;
}

async function dump(s: Session, ctx: Ctx): Promise<Buffer> {
  return s.readOk(CFG, 0n, Number(ctx.dev.configSize));
}

/** Standard capabilities (loop-safe) and extended ones. */
function caps(d: Buffer): { std: Cap[]; ext: Cap[]; errors: string[] } {
  const std: Cap[] = [];
  const ext: Cap[] = [];
  const errors: string[] = [];
  if (d.readUInt16LE(6) & 0x10) {
    let p = d[0x34]! & 0xfc;
    const seen = new Set<number>();
    while (p) {
      if (seen.has(p)) {
        errors.push(`capability list loops at ${hex(p)}`);
        break;
      }
      if (p < 0x40 || p > 0xfc) {
        errors.push(`capability pointer ${hex(p)} outside 0x40..0xfc`);
        break;
      }
      seen.add(p);
      std.push({ id: d[p]!, off: p });
      p = d[p + 1]! & 0xfc;
    }
  }
  if (d.length > 0x100) {
    let p = 0x100;
    const seen = new Set<number>();
    while (p) {
      const h = d.readUInt32LE(p);
      if (h === 0 || h === 0xffffffff) break;
      if (seen.has(p)) {
        errors.push(`extended capability list loops at ${hex(p)}`);
        break;
      }
      seen.add(p);
      ext.push({ id: h & 0xffff, off: p });
      p = (h >>> 20) & 0xffc;
      if (p && p < 0x100) {
        errors.push(`extended capability next ${hex(p)} < 0x100`);
        break;
      }
    }
  }
  return { std, ext, errors };
}

/** Writes the current value back (for restoring registers). */
async function restore(s: Session, off: number, old: Buffer): Promise<void> {
  await s.write(CFG, BigInt(off), old);
}

function barCase(ctx: Ctx): { index: number; size: bigint; is64: boolean; prefetch: boolean } {
  const b = ctx.dev.memBars.find((x) => !x.is64) ?? ctx.dev.memBars[0];
  if (!b) skip('no implemented memory BAR');
  return b;
}

/** Writes `value` and expects either success or an error per the profile (recommended: OK). */
async function writeRecommendOk(
  ctx: Ctx,
  s: Session,
  off: number,
  data: Buffer,
  what: string,
  lvuErr: number[] = [EINVAL],
): Promise<boolean> {
  const m = await s.write(CFG, BigInt(off), data);
  if (!(m.hdr.flags & Flag.ERROR)) return true;
  // Refusing is libvfio-user's documented choice; PCI says the bits are read-only or ignored.
  ctx.deviates(`${what}: refused (recommended: OK, ignored)`, { lvu: true });
  ctx.errno(m, what, L(...lvuErr));
  return false;
}

export const cfg: Group = {
  name: 'CFG',
  title: 'Config space (region 7)',
  cases: [
    kase('CFG-01', 'Vendor and device ids are not 0xffff', 'PCI', async (ctx) => {
      const s = await ctx.session();
      const d = await s.readOk(CFG, 0n, 4);
      if (d.readUInt16LE(0) === 0xffff || d.readUInt16LE(2) === 0xffff) fail(`ids ${d.toString('hex')}`);
    }),
    kase('CFG-02', 'BAR sizing: all-ones reads back ~(size-1) | type bits', 'Q, PCI', async (ctx) => {
      const b = barCase(ctx);
      const s = await ctx.session();
      const off = 0x10 + 4 * b.index;
      const old = await s.readOk(CFG, BigInt(off), 4);
      await s.write32(CFG, BigInt(off), 0xffffffff);
      const got = await s.read32(CFG, BigInt(off));
      await restore(s, off, old);
      const type = old.readUInt32LE(0) & 0xf;
      const want = (Number(BigInt.asUintN(32, ~(b.size - 1n))) & ~0xf) | type;
      if (got >>> 0 !== want >>> 0)
        fail(`BAR${b.index} reads ${hex(got)} after all-ones, expected ${hex(want >>> 0)}`);
    }),
    kase('CFG-03', 'An absent BAR reads 0 after an all-ones write', 'Q', async (ctx) => {
      const hi = new Set(ctx.dev.memBars.filter((b) => b.is64).map((b) => b.index + 1));
      const z = ctx.dev.regions.findIndex((r, i) => i < 6 && r.info.size === 0n && !hi.has(i));
      if (z < 0) skip('no absent BAR slot');
      const s = await ctx.session();
      await s.write(CFG, BigInt(0x10 + 4 * z), le32(0xffffffff));
      const v = await s.read32(CFG, BigInt(0x10 + 4 * z));
      if (v !== 0) fail(`BAR${z} reads ${hex(v)}`);
    }),
    kase('CFG-04', 'ROM BAR sizing (no ROM): 0xfffff800 reads back 0', 'Q', async (ctx) => {
      if ((ctx.dev.regions[Region.ROM]?.info.size ?? 0n) > 0n) skip('the device has a ROM');
      const s = await ctx.session();
      await s.write(CFG, 0x30n, le32(0xfffff800));
      const v = await s.read32(CFG, 0x30n);
      if (v !== 0) fail(`ROM BAR reads ${hex(v)} (QEMU would invent a ROM)`);
    }),
    kase('CFG-05', 'ROM BAR write 0xffffffff: OK, reads 0', 'L', async (ctx) => {
      if ((ctx.dev.regions[Region.ROM]?.info.size ?? 0n) > 0n) skip('the device has a ROM');
      const s = await ctx.session();
      expectOk(await s.write(CFG, 0x30n, le32(0xffffffff)), 'ROM all-ones');
      if ((await s.read32(CFG, 0x30n)) !== 0) fail('ROM BAR not 0');
    }),
    kase('CFG-06', 'ROM BAR write 0: OK', 'L', async (ctx) => {
      const s = await ctx.session();
      expectOk(await s.write(CFG, 0x30n, le32(0)), 'ROM write 0');
    }),
    kase(
      'CFG-07',
      'ROM BAR write 0x12345600: recommended OK (ignored); LVU EINVAL',
      'PCI, L',
      async (ctx) => {
        if ((ctx.dev.regions[Region.ROM]?.info.size ?? 0n) > 0n) skip('the device has a ROM');
        const s = await ctx.session();
        await writeRecommendOk(ctx, s, 0x30, le32(0x12345600), 'ROM write 0x12345600');
        if ((await s.read32(CFG, 0x30n)) !== 0) fail('ROM BAR not 0 after the write');
      },
    ),
    kase('CFG-08', '64-bit BAR pair sizing: low mask|0x4(|0x8), high upper mask', 'Q, PCI', async (ctx) => {
      const b = ctx.dev.memBars.find((x) => x.is64);
      if (!b) skip('no 64-bit BAR');
      const s = await ctx.session();
      const off = 0x10 + 4 * b.index;
      const old = await s.readOk(CFG, BigInt(off), 8);
      await s.write32(CFG, BigInt(off), 0xffffffff);
      await s.write32(CFG, BigInt(off + 4), 0xffffffff);
      const lo = await s.read32(CFG, BigInt(off));
      const hi = await s.read32(CFG, BigInt(off + 4));
      await s.write(CFG, BigInt(off), old.subarray(0, 4));
      await s.write(CFG, BigInt(off + 4), old.subarray(4));
      const mask = BigInt.asUintN(64, ~(b.size - 1n));
      const wantLo = (Number(mask & 0xfffffff0n) | 0x4 | (b.prefetch ? 0x8 : 0)) >>> 0;
      const wantHi = Number(mask >> 32n) >>> 0;
      if (lo >>> 0 !== wantLo || hi >>> 0 !== wantHi)
        fail(`reads ${hex(lo)}/${hex(hi)}, expected ${hex(wantLo)}/${hex(wantHi)}`);
    }),
    kase('CFG-09', 'A programmed BAR address reads back with type bits kept', 'PCI', async (ctx) => {
      const b = barCase(ctx);
      const s = await ctx.session();
      const off = 0x10 + 4 * b.index;
      const old = await s.readOk(CFG, BigInt(off), 4);
      const addr = Number(0xfe000000n & ~(b.size - 1n) & 0xffffffffn) >>> 0;
      await s.write32(CFG, BigInt(off), addr);
      const got = await s.read32(CFG, BigInt(off));
      await restore(s, off, old);
      const want = (addr | (old.readUInt32LE(0) & 0xf)) >>> 0;
      if (got >>> 0 !== want)
        fail(`BAR${b.index} reads ${hex(got)} after writing ${hex(addr)}, expected ${hex(want)}`);
    }),
    kase('CFG-10', 'COMMAND writes 0x0006, 0x0000, 0x0407', 'Q, L', async (ctx) => {
      const s = await ctx.session();
      const old = await s.readOk(CFG, 4n, 2);
      for (const v of [0x0006, 0x0000, 0x0407])
        expectOk(await s.write(CFG, 4n, le16(v)), `COMMAND = ${hex(v)}`);
      await s.write(CFG, 4n, old);
    }),
    kase('CFG-11', 'COMMAND with PARITY or FAST_B2B: recommended OK; LVU EINVAL', 'PCI, L', async (ctx) => {
      const s = await ctx.session();
      const old = await s.readOk(CFG, 4n, 2);
      await writeRecommendOk(ctx, s, 4, le16(0x0046), 'COMMAND |= PARITY');
      await writeRecommendOk(ctx, s, 4, le16(0x0206), 'COMMAND |= FAST_B2B');
      await s.write(CFG, 4n, old);
    }),
    kase('CFG-12', 'STATUS write: OK, ignored', 'L', async (ctx) => {
      const s = await ctx.session();
      const old = await s.readOk(CFG, 6n, 2);
      expectOk(await s.write(CFG, 6n, le16(0xffff)), 'STATUS write');
      const now = await s.readOk(CFG, 6n, 2);
      if ((now.readUInt16LE(0) & 0x10) !== (old.readUInt16LE(0) & 0x10))
        fail('the capability-list bit changed');
    }),
    kase('CFG-13', 'Vendor id write: recommended OK (ignored); LVU EINVAL', 'PCI, L', async (ctx) => {
      const s = await ctx.session();
      const old = await s.readOk(CFG, 0n, 2);
      await writeRecommendOk(ctx, s, 0, le16(0xbeef), 'vendor id write');
      const now = await s.readOk(CFG, 0n, 2);
      if (!now.equals(old)) fail(`vendor id changed to ${now.toString('hex')}`);
    }),
    kase('CFG-14', 'A 1-byte write to 0x05: recommended OK; LVU EINVAL', 'PCI, L', async (ctx) => {
      const s = await ctx.session();
      const old = await s.readOk(CFG, 5n, 1);
      await writeRecommendOk(ctx, s, 5, old, '1-byte write at 0x05');
    }),
    kase(
      'CFG-15',
      'A write to a capability header leaves it unchanged (LVU: EPERM)',
      'L, PCI',
      async (ctx) => {
        const s = await ctx.session();
        const c = caps(await dump(s, ctx)).std[0];
        if (!c) skip('no standard capabilities');
        const old = await s.readOk(CFG, BigInt(c.off), 2);
        const m = await s.write(CFG, BigInt(c.off), le16(0xffff));
        if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'cap header write', L(EPERM));
        else ctx.lvuDiffers('cap header write accepted (libvfio-user: EPERM)');
        const now = await s.readOk(CFG, BigInt(c.off), 2);
        if (!now.equals(old)) fail(`cap header at ${hex(c.off)} changed to ${now.toString('hex')}`);
      },
    ),
    kase('CFG-16', 'A write to a read-only capability (DSN) is refused', 'L', async (ctx) => {
      const s = await ctx.session();
      const c = caps(await dump(s, ctx)).ext.find((x) => x.id === 0x0003);
      if (!c) skip('no Device Serial Number capability');
      const old = await s.readOk(CFG, BigInt(c.off + 4), 4);
      const m = await s.write(CFG, BigInt(c.off + 4), le32(~old.readUInt32LE(0)));
      if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'DSN write', L(EPERM));
      else ctx.lvuDiffers('DSN write accepted (libvfio-user: EPERM)');
      const now = await s.readOk(CFG, BigInt(c.off + 4), 4);
      if (!now.equals(old)) fail('DSN changed');
    }),
    kase('CFG-17', 'MSI Multiple Message Enable above Capable', 'L', async (ctx) => {
      const s = await ctx.session();
      const c = caps(await dump(s, ctx)).std.find((x) => x.id === 0x05);
      if (!c) skip('no MSI capability');
      const ctl = await s.readOk(CFG, BigInt(c.off + 2), 2);
      const v = ctl.readUInt16LE(0);
      const mmc = (v >> 1) & 7;
      if (mmc >= 5) skip('MSI capable of 32 vectors');
      const m = await s.write(CFG, BigInt(c.off + 2), le16((v & ~0x70) | ((mmc + 1) << 4)));
      if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'MME > MMC', L(EINVAL));
      else {
        const now = (await s.readOk(CFG, BigInt(c.off + 2), 2)).readUInt16LE(0);
        await s.write(CFG, BigInt(c.off + 2), ctl);
        if (((now >> 4) & 7) > mmc) fail(`MME ${(now >> 4) & 7} > MMC ${mmc} was stored`);
        ctx.lvuDiffers('MME > MMC accepted (libvfio-user: EINVAL)');
      }
    }),
    kase(
      'CFG-18',
      'PCIe DevCtl Initiate-FLR: resets if FLR is advertised, else refused/ignored',
      'L',
      async (ctx) => {
        const s = await ctx.session();
        const c = caps(await dump(s, ctx)).std.find((x) => x.id === 0x10);
        if (!c) skip('no PCI Express capability');
        const devcap = await s.read32(CFG, BigInt(c.off + 4));
        const devctl = (await s.readOk(CFG, BigInt(c.off + 8), 2)).readUInt16LE(0);
        const flr = (devcap & (1 << 28)) !== 0;
        const m = await s.write(CFG, BigInt(c.off + 8), le16(devctl | 0x8000));
        if (flr) {
          expectOk(m, 'Initiate FLR');
          ctx.note('FLR advertised and accepted');
        } else if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'FLR without FLR capability', L(EINVAL));
        else ctx.lvuDiffers('FLR accepted although not advertised (libvfio-user: EINVAL)');
      },
    ),
    kase('CFG-19', 'A write to unclaimed config space; reads there succeed', 'L', async (ctx) => {
      const s = await ctx.session();
      const d = await dump(s, ctx);
      const { std } = caps(d);
      const top = Math.max(0x40, ...std.map((c) => c.off + 0x40));
      const off = 0xfc;
      if (top > off) skip('no config dword outside the header and capabilities');
      const m = await s.write(CFG, BigInt(off), le32(0x12345678));
      if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'write to unclaimed config', L(EINVAL));
      else ctx.lvuDiffers('write to unclaimed config accepted (libvfio-user: EINVAL)');
      await s.readOk(CFG, BigInt(off), 4);
    }),
    kase('CFG-20', 'Interrupt pin set if and only if INTx count is 1', 'Q', async (ctx) => {
      const n = ctx.dev.irqs[Irq.INTX]?.count ?? 0;
      if ((ctx.dev.pin !== 0) !== (n === 1)) fail(`pin ${ctx.dev.pin}, INTx count ${n}`);
    }),
    kase(
      'CFG-21',
      'Capability list: STATUS bit 4 iff pointer set, no loops, extended caps from 0x100',
      'PCI, L',
      async (ctx) => {
        const s = await ctx.session();
        const d = await dump(s, ctx);
        const bit = (d.readUInt16LE(6) & 0x10) !== 0;
        const ptr = d[0x34]!;
        if (bit !== (ptr !== 0)) fail(`STATUS.CAP_LIST ${bit} but cap pointer ${hex(ptr)}`);
        const c = caps(d);
        if (c.errors.length) fail(c.errors.join('; '));
      },
    ),
    kase('CFG-22', "QEMU's reset sequence", 'Q', async (ctx) => {
      const s = await ctx.session();
      await s.readOk(CFG, 4n, 2);
      expectOk(await s.write(CFG, 4n, le16(0)), 'COMMAND = 0');
      if (ctx.dev.reset) expectOk(await s.reset(), 'DEVICE_RESET');
      await s.readOk(CFG, 0x3dn, 1);
      for (let off = 0x10; off <= 0x24; off += 4)
        expectOk(await s.write(CFG, BigInt(off), le32(0)), `BAR write 0 @ ${hex(off)}`);
    }),
    kase('CFG-23', 'A posted config write is applied without a reply', 'S', async (ctx) => {
      const b = barCase(ctx);
      const s = await ctx.session();
      const off = 0x10 + 4 * b.index;
      const old = await s.readOk(CFG, BigInt(off), 4);
      const addr = Number(0xfd000000n & ~(b.size - 1n) & 0xffffffffn) >>> 0;
      s.postWrite(CFG, BigInt(off), le32(addr));
      await ctx.noReply(s.conn, 'posted config write', 150);
      const got = await s.read32(CFG, BigInt(off));
      await restore(s, off, old);
      if ((got & ~0xf) >>> 0 !== addr) fail(`BAR reads ${hex(got)} after the posted write of ${hex(addr)}`);
      await sleep(0);
    }),
  ],
};
