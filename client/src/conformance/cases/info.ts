// E. DEVICE_GET_INFO (INF), F. GET_REGION_INFO (RGN), G. GET_REGION_IO_FDS (IOF), H. GET_IRQ_INFO (IRQI).
import { readSync } from 'node:fs';
import type { Ctx, Group } from '../case.js';
import { closeFds, expectOk, fail, skip } from '../conn.js';
import type { Session } from '../session.js';
import {
  Cmd,
  DeviceFlag,
  fourU32,
  getInfoPayload,
  hex,
  Irq,
  IrqInfoFlag,
  ioFdsPayload,
  irqInfoPayload,
  parseDeviceInfo,
  parseIrqInfo,
  parseRegionInfo,
  Region,
  RegionFlag,
  regionInfoPayload,
} from '../wire.js';
import { EINVAL, ENOSYS, ENOTSUP, kase, L, LINVAL, neg } from './util.js';

const isPow2 = (n: bigint) => n > 0n && (n & (n - 1n)) === 0n;

/** The first region whose full info carries caps (optionally: with MMAP). */
function regionWithCaps(ctx: Ctx): number {
  const i = ctx.dev.regions.findIndex((r) => r.neededArgsz > 32);
  if (i < 0) skip('no region has capabilities (argsz > 32)');
  return i;
}

// -- E. INF -----------------------------------------------------------------------------------------------------

export const inf: Group = {
  name: 'INF',
  title: 'DEVICE_GET_INFO',
  cases: [
    kase(
      'INF-01',
      'argsz 16: 16-byte reply, PCI flag, >= 9 regions, >= 5 irq indexes',
      'S, Q',
      async (ctx) => {
        const s = await ctx.session();
        const p = expectOk(await s.getInfo(), 'GET_INFO');
        if (p.length !== 16) fail(`reply payload ${p.length} bytes, expected 16`);
        const i = parseDeviceInfo(p);
        if (i.argsz !== 16) fail(`argsz ${i.argsz}`);
        if (!(i.flags & DeviceFlag.PCI)) fail(`flags ${hex(i.flags)} lack PCI`);
        if (i.numRegions < 9) fail(`num_regions ${i.numRegions} < 9`);
        if (i.numIrqs < 5) fail(`num_irqs ${i.numIrqs} < 5`);
      },
    ),
    neg(
      'INF-02',
      '8-byte payload',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_INFO, payload: getInfoPayload().subarray(0, 8) }),
      LINVAL,
    ),
    neg('INF-03', 'argsz 8', 'L', () => ({ cmd: Cmd.DEVICE_GET_INFO, payload: getInfoPayload(8) }), LINVAL),
    kase('INF-04', 'argsz 32: still a 16-byte reply with argsz 16', 'L, S', async (ctx) => {
      const s = await ctx.session();
      const p = expectOk(await s.getInfo(32), 'GET_INFO argsz 32');
      if (p.length !== 16 || p.readUInt32LE(0) !== 16)
        fail(`reply payload ${p.length} bytes, argsz ${p.readUInt32LE(0)}`);
    }),
    kase('INF-05', 'Non-zero request fields are ignored', 'S~, L', async (ctx) => {
      const s = await ctx.session();
      const p = expectOk(
        await s.call(Cmd.DEVICE_GET_INFO, fourU32(16, 0xffff, 77, 88)),
        'GET_INFO with junk fields',
      );
      const i = parseDeviceInfo(p);
      if (
        i.numRegions !== ctx.dev.info.numRegions ||
        i.numIrqs !== ctx.dev.info.numIrqs ||
        i.flags !== ctx.dev.info.flags
      ) {
        fail('the reply changed with the request fields');
      }
    }),
    kase('INF-06', 'RESET flag set if and only if DEVICE_RESET succeeds', 'S', async (ctx) => {
      const s = await ctx.session();
      const m = await s.reset();
      const okay = !(m.hdr.flags & 0x20);
      if (ctx.dev.reset && !okay) fail(`RESET advertised but DEVICE_RESET failed (${m.hdr.error})`);
      if (!ctx.dev.reset && okay) fail('RESET not advertised but DEVICE_RESET succeeded');
    }),
    kase('INF-07', 'num_regions <= 100 and num_irqs <= 50', 'Q', async (ctx) => {
      const i = ctx.dev.info;
      if (i.numRegions > 100 || i.numIrqs > 50) fail(`num_regions ${i.numRegions}, num_irqs ${i.numIrqs}`);
    }),
  ],
};

// -- F. RGN -----------------------------------------------------------------------------------------------------

export const rgn: Group = {
  name: 'RGN',
  title: 'DEVICE_GET_REGION_INFO and capability chains',
  cases: [
    kase('RGN-01', 'Every index with argsz 32: OK, payload <= 32, index echoed', 'S', async (ctx) => {
      const s = await ctx.session();
      for (let i = 0; i < ctx.dev.info.numRegions; i++) {
        const m = await s.regionInfoMsg(i, 32);
        closeFds(ctx.native, m.fds);
        const p = expectOk(m, `region ${i}`);
        if (p.length > 32) fail(`region ${i}: payload ${p.length} > argsz 32`);
        if (p.length < 32) fail(`region ${i}: payload ${p.length} < 32`);
        if (p.readUInt32LE(8) !== i) fail(`region ${i}: index ${p.readUInt32LE(8)} in the reply`);
      }
    }),
    neg(
      'RGN-02',
      '8-byte payload',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_INFO, payload: regionInfoPayload(0).subarray(0, 8) }),
      LINVAL,
    ),
    neg(
      'RGN-03',
      'argsz 8',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_INFO, payload: regionInfoPayload(0, 8) }),
      LINVAL,
    ),
    neg(
      'RGN-04',
      'index = num_regions',
      'L, K',
      (ctx) => ({ cmd: Cmd.DEVICE_GET_REGION_INFO, payload: regionInfoPayload(ctx.dev.info.numRegions) }),
      LINVAL,
    ),
    neg(
      'RGN-05',
      'index 0xffffffff',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_INFO, payload: regionInfoPayload(0xffffffff) }),
      LINVAL,
    ),
    kase('RGN-06', 'argsz 40 for a region without caps: payload 32, argsz 32', 'L', async (ctx) => {
      const i = ctx.dev.regions.findIndex((r) => r.neededArgsz === 32 && r.info.size > 0n);
      if (i < 0) skip('every present region has caps');
      const s = await ctx.session();
      const m = await s.regionInfoMsg(i, 40);
      closeFds(ctx.native, m.fds);
      const p = expectOk(m, `region ${i} argsz 40`);
      if (p.length !== 32 || p.readUInt32LE(0) !== 32)
        fail(`payload ${p.length}, argsz ${p.readUInt32LE(0)}`);
    }),
    kase(
      'RGN-07',
      'Region with caps, argsz 32: 32 bytes, argsz = full size, never CAPS with cap_offset < 32',
      'L, Q',
      async (ctx) => {
        const i = regionWithCaps(ctx);
        const s = await ctx.session();
        const m = await s.regionInfoMsg(i, 32);
        closeFds(ctx.native, m.fds);
        const p = expectOk(m, `region ${i} argsz 32`);
        if (p.length !== 32) fail(`payload ${p.length} bytes for argsz 32`);
        const r = parseRegionInfo(p);
        if (r.argsz <= 32) fail(`argsz ${r.argsz}: the needed size was not reported`);
        if (r.flags & RegionFlag.CAPS && r.capOffset !== 32)
          fail(`CAPS set with cap_offset ${r.capOffset} (QEMU refuses)`);
        if (m.fds.length) {
          ctx.lvuDiffers(`truncated reply carried ${m.fds.length} fd(s) (libvfio-user sends none)`);
        }
      },
    ),
    kase(
      'RGN-08',
      'Region with caps, full argsz: valid chain, areas inside, exactly 1 fd with MMAP',
      'S, L, Q',
      async (ctx) => {
        const i = regionWithCaps(ctx);
        const s = await ctx.session();
        const need = ctx.dev.regions[i]!.neededArgsz;
        const m = await s.regionInfoMsg(i, need);
        closeFds(ctx.native, m.fds);
        const p = expectOk(m, `region ${i} argsz ${need}`);
        if (p.length !== need) fail(`payload ${p.length}, asked-for size ${need}`);
        const r = parseRegionInfo(p);
        if (!(r.flags & RegionFlag.CAPS)) fail('CAPS not set in the full reply');
        if (r.capOffset !== 32) fail(`cap_offset ${r.capOffset}`);
        if (r.capErrors.length) fail(r.capErrors.join('; '));
        for (const c of r.caps) {
          if (c.id === 1) {
            if (c.version !== 1) fail(`sparse cap version ${c.version}`);
            if (c.offset + 16 + 16 * (c.areas?.length ?? 0) > p.length)
              fail('nr_areas inconsistent with argsz');
            for (const a of c.areas ?? []) {
              if (a.offset + a.size > r.size)
                fail(`area [${hex(a.offset)},+${hex(a.size)}) outside the region`);
            }
          }
        }
        if (r.flags & RegionFlag.MMAP && m.fds.length !== 1)
          fail(`MMAP region reply carried ${m.fds.length} fds (need exactly 1)`);
        if (!(r.flags & RegionFlag.MMAP) && m.fds.length)
          fail(`non-MMAP region reply carried ${m.fds.length} fd(s)`);
      },
    ),
    kase('RGN-09', 'argsz = full + 64: payload is the full size, not padded', 'L', async (ctx) => {
      const i = regionWithCaps(ctx);
      const s = await ctx.session();
      const need = ctx.dev.regions[i]!.neededArgsz;
      const m = await s.regionInfoMsg(i, need + 64);
      closeFds(ctx.native, m.fds);
      const p = expectOk(m, `region ${i} argsz ${need + 64}`);
      if (p.length !== need) fail(`payload ${p.length}, expected ${need}`);
    }),
    kase(
      'RGN-10',
      'The region fd maps at offset + area.offset and agrees with REGION_READ',
      'S',
      async (ctx) => {
        const i = ctx.needMmapRegion();
        const s = await ctx.session();
        const { info, fds } = await s.regionInfo(i, true);
        for (const fd of fds) ctx.own(fd);
        if (fds.length !== 1) fail(`${fds.length} fds`);
        const areas = info.caps.find((c) => c.id === 1)?.areas ?? [{ offset: 0n, size: info.size }];
        for (const a of areas) {
          if (a.size === 0n) continue;
          const n = Number(a.size < 256n ? a.size : 256n);
          const viaMsg = await s.readOk(i, a.offset, n);
          const viaFd = Buffer.alloc(n);
          const got = readSync(fds[0]!, viaFd, 0, n, Number(info.offset + a.offset));
          if (got !== n) fail(`read ${got} of ${n} bytes through the region fd`);
          if (!viaFd.equals(viaMsg)) fail(`area ${hex(a.offset)}: fd view and REGION_READ differ`);
        }
      },
    ),
    kase('RGN-11', 'An absent BAR: size 0, flags 0', 'S~, Q', async (ctx) => {
      const i = ctx.needAbsentBar();
      const r = ctx.dev.regions[i]!.info;
      if (r.flags !== 0) fail(`absent BAR ${i} has flags ${hex(r.flags)}`);
    }),
    kase('RGN-12', 'Config region: size 256 or 4096, READ|WRITE', 'Q', async (ctx) => {
      const r = ctx.dev.regions[Region.CONFIG]?.info;
      if (!r) fail('no region 7');
      if (r.size !== 256n && r.size !== 4096n) fail(`config size ${r.size}`);
      if ((r.flags & 3) !== 3) fail(`config flags ${hex(r.flags)}`);
    }),
    kase('RGN-13', 'BAR sizes are powers of two (>= 16 B memory, >= 4 B I/O)', 'PCI', async (ctx) => {
      for (let i = 0; i < 6; i++) {
        const sz = ctx.dev.regions[i]?.info.size ?? 0n;
        if (sz === 0n) continue;
        if (!isPow2(sz) || sz < 4n) fail(`BAR${i} size ${hex(sz)}`);
        if (ctx.dev.memBars.some((b) => b.index === i) && sz < 16n)
          fail(`memory BAR${i} size ${hex(sz)} < 16`);
      }
    }),
    kase('RGN-14', 'Every index >= 9 carries a CAP_TYPE cap', 'S', async (ctx) => {
      if (ctx.dev.info.numRegions <= 9) skip('no device-specific regions (num_regions <= 9)');
      for (let i = 9; i < ctx.dev.regions.length; i++) {
        const r = ctx.dev.regions[i]!.info;
        if (r.size > 0n && !r.caps.some((c) => c.id === 2)) fail(`region ${i} has no CAP_TYPE`);
      }
    }),
    kase('RGN-15', 'Every reply payload <= the requested argsz', 'S, Q', async (ctx) => {
      const s = await ctx.session();
      for (let i = 0; i < ctx.dev.info.numRegions; i++) {
        const need = ctx.dev.regions[i]!.neededArgsz;
        for (const argsz of new Set([32, Math.max(32, need - 8), need])) {
          const m = await s.regionInfoMsg(i, argsz);
          closeFds(ctx.native, m.fds);
          const p = expectOk(m, `region ${i} argsz ${argsz}`);
          if (p.length > argsz) fail(`region ${i}: ${p.length}-byte payload for argsz ${argsz}`);
        }
      }
    }),
    kase('RGN-16', 'The same query twice gives identical results', 'S~', async (ctx) => {
      const s = await ctx.session();
      for (let i = 0; i < ctx.dev.info.numRegions; i++) {
        const need = ctx.dev.regions[i]!.neededArgsz;
        const a = await s.regionInfoMsg(i, need);
        const b = await s.regionInfoMsg(i, need);
        closeFds(ctx.native, [...a.fds, ...b.fds]);
        if (!a.payload.equals(b.payload) || a.fds.length !== b.fds.length) fail(`region ${i} answers differ`);
      }
    }),
    kase('RGN-17', 'MMAP without caps: whole-region mmap with exactly 1 fd', 'S, L', async (ctx) => {
      const i = ctx.dev.regions.findIndex((r) => r.info.flags & RegionFlag.MMAP && r.neededArgsz === 32);
      if (i < 0) skip('no region reports MMAP without caps');
      if (ctx.dev.regions[i]!.nfds !== 1) fail(`region ${i}: ${ctx.dev.regions[i]!.nfds} fds`);
    }),
  ],
};

// -- G. IOF -----------------------------------------------------------------------------------------------------

/** Whether the server implements GET_REGION_IO_FDS (a valid request for region 0 succeeds). */
async function iofImplemented(s: Session): Promise<boolean> {
  const m = await s.call(Cmd.DEVICE_GET_REGION_IO_FDS, ioFdsPayload(Region.CONFIG, 16));
  closeFds(s.conn.native, m.fds);
  return !(m.hdr.flags & 0x20);
}

async function needIof(_ctx: Ctx, s: Session): Promise<void> {
  if (!(await iofImplemented(s))) skip('the server does not implement DEVICE_GET_REGION_IO_FDS (see IOF-11)');
}

/** A region with io fds: [index, count] or skip. */
async function regionWithIoFds(ctx: Ctx, s: Session): Promise<[number, number]> {
  for (let i = 0; i < ctx.dev.info.numRegions; i++) {
    const m = await s.call(Cmd.DEVICE_GET_REGION_IO_FDS, ioFdsPayload(i, 16));
    closeFds(ctx.native, m.fds);
    if (!(m.hdr.flags & 0x20) && m.payload.length >= 16 && m.payload.readUInt32LE(12) > 0) {
      return [i, m.payload.readUInt32LE(12)];
    }
  }
  skip('no region has io fds');
}

const IOF_ERR = L(EINVAL, ENOTSUP, ENOSYS);

export const iof: Group = {
  name: 'IOF',
  title: 'DEVICE_GET_REGION_IO_FDS',
  cases: [
    neg(
      'IOF-01',
      '8-byte payload',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_IO_FDS, payload: ioFdsPayload(0).subarray(0, 8) }),
      IOF_ERR,
    ),
    neg(
      'IOF-02',
      'flags = 1',
      'S, L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_IO_FDS, payload: ioFdsPayload(0, 16, 1) }),
      IOF_ERR,
    ),
    neg(
      'IOF-03',
      'count = 1 in the request',
      'S, L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_IO_FDS, payload: ioFdsPayload(0, 16, 0, 1) }),
      IOF_ERR,
    ),
    neg(
      'IOF-04',
      'index 512',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_IO_FDS, payload: ioFdsPayload(512) }),
      IOF_ERR,
    ),
    neg(
      'IOF-05',
      'index of an absent region',
      'L',
      (ctx) => ({ cmd: Cmd.DEVICE_GET_REGION_IO_FDS, payload: ioFdsPayload(ctx.needAbsentBar()) }),
      IOF_ERR,
    ),
    neg(
      'IOF-06',
      'argsz < 16',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_REGION_IO_FDS, payload: ioFdsPayload(0, 8) }),
      IOF_ERR,
    ),
    neg(
      'IOF-07',
      'argsz > max_data_xfer_size',
      'L',
      (ctx) => ({
        cmd: Cmd.DEVICE_GET_REGION_IO_FDS,
        payload: ioFdsPayload(0, ctx.dev.caps.maxDataXferSize + 16),
      }),
      IOF_ERR,
    ),
    kase('IOF-08', 'A region with no io fds: count 0, no fds', 'L', async (ctx) => {
      const s = await ctx.session();
      await needIof(ctx, s);
      const m = await s.call(Cmd.DEVICE_GET_REGION_IO_FDS, ioFdsPayload(Region.CONFIG, 16));
      closeFds(ctx.native, m.fds);
      const p = expectOk(m, 'IO_FDS config');
      if (p.readUInt32LE(12) !== 0 || m.fds.length) skip('the config region has io fds');
    }),
    kase(
      'IOF-09',
      'argsz too small: 16-byte reply with count and needed argsz, no fds',
      'S, L',
      async (ctx) => {
        const s = await ctx.session();
        await needIof(ctx, s);
        const [i, n] = await regionWithIoFds(ctx, s);
        const m = await s.call(Cmd.DEVICE_GET_REGION_IO_FDS, ioFdsPayload(i, 16));
        closeFds(ctx.native, m.fds);
        const p = expectOk(m, 'IO_FDS argsz 16');
        if (p.length !== 16) fail(`payload ${p.length}`);
        if (p.readUInt32LE(0) < 16 + 40 * n) fail(`argsz ${p.readUInt32LE(0)} < ${16 + 40 * n}`);
        if (m.fds.length) fail(`${m.fds.length} fds with a truncated reply`);
      },
    ),
    kase(
      'IOF-10',
      'argsz sufficient: 40-byte entries, fd_index valid, entries inside the region',
      'S, L',
      async (ctx) => {
        const s = await ctx.session();
        await needIof(ctx, s);
        const [i, n] = await regionWithIoFds(ctx, s);
        const m = await s.call(Cmd.DEVICE_GET_REGION_IO_FDS, ioFdsPayload(i, 16 + 40 * n));
        closeFds(ctx.native, m.fds);
        const p = expectOk(m, 'IO_FDS full');
        if (p.length < 16 + 40 * n) fail(`payload ${p.length}`);
        if (m.fds.length < 1) fail('no fds');
        const size = ctx.dev.regions[i]!.info.size;
        for (let k = 0; k < n; k++) {
          const o = 16 + 40 * k;
          const off = p.readBigUInt64LE(o);
          const sz = p.readBigUInt64LE(o + 8);
          const idx = p.readUInt32LE(o + 16);
          if (idx >= m.fds.length) fail(`entry ${k}: fd_index ${idx} >= ${m.fds.length}`);
          if (off + sz > size) fail(`entry ${k} outside the region`);
        }
      },
    ),
    kase(
      'IOF-11',
      'A server without GET_REGION_IO_FDS answers with an error, never a crash',
      'S~',
      async (ctx) => {
        const s = await ctx.session();
        if (await iofImplemented(s)) {
          ctx.note('implemented');
          return;
        }
        const m = await s.call(Cmd.DEVICE_GET_REGION_IO_FDS, ioFdsPayload(0, 16));
        ctx.errno(m, 'IO_FDS', L(EINVAL, ENOTSUP, ENOSYS));
      },
    ),
  ],
};

// -- H. IRQI ----------------------------------------------------------------------------------------------------

export const irqi: Group = {
  name: 'IRQI',
  title: 'DEVICE_GET_IRQ_INFO',
  cases: [
    kase(
      'IRQI-01',
      'Every index: 16-byte reply, index echoed, EVENTFD on usable indexes',
      'S',
      async (ctx) => {
        const s = await ctx.session();
        for (let i = 0; i < ctx.dev.info.numIrqs; i++) {
          const p = expectOk(await s.irqInfoMsg(i), `irq ${i}`);
          if (p.length !== 16) fail(`irq ${i}: payload ${p.length}`);
          const q = parseIrqInfo(p);
          if (q.index !== i) fail(`irq ${i}: index ${q.index} in the reply`);
          if (q.count > 0 && !(q.flags & IrqInfoFlag.EVENTFD))
            fail(`irq ${i}: count ${q.count} without EVENTFD`);
        }
      },
    ),
    neg(
      'IRQI-02',
      '8-byte payload',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_IRQ_INFO, payload: irqInfoPayload(0).subarray(0, 8) }),
      LINVAL,
    ),
    neg(
      'IRQI-03',
      'argsz 8',
      'L',
      () => ({ cmd: Cmd.DEVICE_GET_IRQ_INFO, payload: irqInfoPayload(0, 8) }),
      LINVAL,
    ),
    neg(
      'IRQI-04',
      'index = num_irqs',
      'L, K',
      (ctx) => ({ cmd: Cmd.DEVICE_GET_IRQ_INFO, payload: irqInfoPayload(ctx.dev.info.numIrqs) }),
      LINVAL,
    ),
    kase('IRQI-05', 'argsz 32: 16 bytes with argsz 16', 'L', async (ctx) => {
      const s = await ctx.session();
      const p = expectOk(await s.irqInfoMsg(0, 32), 'irq 0 argsz 32');
      if (p.length !== 16 || p.readUInt32LE(0) !== 16)
        fail(`payload ${p.length}, argsz ${p.readUInt32LE(0)}`);
    }),
    kase('IRQI-06', 'ERR and REQ counts <= 1', 'L, K', async (ctx) => {
      for (const i of [Irq.ERR, Irq.REQ]) {
        const q = ctx.dev.irqs[i];
        if (q && q.count > 1) fail(`index ${i} count ${q.count}`);
      }
    }),
    kase('IRQI-07', 'INTx count <= 1, and 1 if and only if the config pin is set', 'K, Q', async (ctx) => {
      const n = ctx.dev.irqs[Irq.INTX]?.count ?? 0;
      if (n > 1) fail(`INTx count ${n}`);
      if ((n === 1) !== (ctx.dev.pin !== 0)) fail(`INTx count ${n} but interrupt pin ${ctx.dev.pin}`);
    }),
  ],
};
