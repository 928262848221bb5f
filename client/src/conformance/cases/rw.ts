// J. REGION_READ / REGION_WRITE (RW).
import { readSync, writeSync } from 'node:fs';
import type { Ctx, Group } from '../case.js';
import { expectOk, fail, skip } from '../conn.js';
import { Cmd, Flag, hex, MigState, Region, RegionFlag, regionAccessPayload } from '../wire.js';
import { EINVAL, kase, LINVAL, neg, R, restoreRunning, setMigStateOk } from './util.js';

/** A present region to aim bad accesses at (the scratch region, else config). */
function someRegion(ctx: Ctx): { index: number; size: bigint } {
  const i = ctx.dev.scratch?.region ?? Region.CONFIG;
  return { index: i, size: ctx.dev.regions[i]?.info.size ?? 0n };
}

function scratchWidth(ctx: Ctx): number {
  const m = ctx.needScratch();
  return m.widths.includes(4) ? 4 : m.widths[0]!;
}

function val(w: number, v: number): Buffer {
  const b = Buffer.alloc(w);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

export const rw: Group = {
  name: 'RW',
  title: 'REGION_READ / REGION_WRITE',
  cases: [
    kase(
      'RW-01',
      'Reads of 1, 2, 4, 8 bytes: reply 16 + count with offset, region, count echoed',
      'S',
      async (ctx) => {
        const s = await ctx.session();
        const targets: [number, bigint, number][] = [1, 2, 4, 8].map((w) => [Region.CONFIG, 0n, w]);
        const m = ctx.dev.scratch;
        if (m) for (const w of m.widths) targets.push([m.region, m.offset, w]);
        else ctx.note('no scratch register: config space only');
        for (const [r, off, w] of targets) {
          const p = expectOk(await s.read(r, off, w), `read ${w} @ region ${r} ${hex(off)}`);
          if (p.length !== 16 + w) fail(`region ${r} ${w}-byte read: payload ${p.length}`);
          if (p.readBigUInt64LE(0) !== off || p.readUInt32LE(8) !== r || p.readUInt32LE(12) !== w) {
            fail(
              `region ${r} ${w}-byte read: echo ${hex(p.readBigUInt64LE(0))}/${p.readUInt32LE(8)}/${p.readUInt32LE(12)}`,
            );
          }
        }
      },
    ),
    kase('RW-02', 'Write the scratch register, read it back (little-endian)', 'S', async (ctx) => {
      const m = ctx.needScratch();
      const w = scratchWidth(ctx);
      const s = await ctx.session();
      const v = val(w, 0xa5c3_1e07);
      await s.writeOk(m.region, m.offset, v);
      const got = await s.readOk(m.region, m.offset, w);
      if (!got.equals(v)) fail(`read ${got.toString('hex')}, wrote ${v.toString('hex')}`);
    }),
    neg(
      'RW-03',
      '8-byte payload',
      'L',
      (ctx) => ({
        cmd: Cmd.REGION_READ,
        payload: regionAccessPayload(someRegion(ctx).index, 0n, 4).subarray(0, 8),
      }),
      LINVAL,
    ),
    kase('RW-04', 'count = max_data_xfer_size + 8 is refused', 'S, L', async (ctx) => {
      const s = await ctx.session();
      const count = ctx.dev.caps.maxDataXferSize + 8;
      ctx.errno(await s.read(someRegion(ctx).index, 0n, count), `read of ${count}`, LINVAL);
    }),
    kase('RW-05', 'count = max_data_xfer_size on a region at least that large', 'S', async (ctx) => {
      const max = BigInt(ctx.dev.caps.maxDataXferSize);
      const cands = ctx.dev.regions
        .map((r, i) => ({ i, r: r.info }))
        .filter((x) => x.r.size >= max && x.r.flags & RegionFlag.READ && x.i !== Region.VGA);
      if (!cands.length) skip(`no readable region of at least ${max} bytes`);
      cands.sort((a, b) => Number(b.r.flags & RegionFlag.MMAP) - Number(a.r.flags & RegionFlag.MMAP));
      const s = await ctx.session();
      const r = await s.read(cands[0]!.i, 0n, Number(max));
      const p = expectOk(r, `read of ${max} bytes from region ${cands[0]!.i}`);
      if (p.length !== 16 + Number(max)) fail(`payload ${p.length}`);
    }),
    kase('RW-06', 'WRITE with fewer data bytes than count', 'L', async (ctx) => {
      const s = await ctx.session();
      const p = Buffer.concat([regionAccessPayload(someRegion(ctx).index, 0n, 8), Buffer.alloc(4)]);
      ctx.errno(await s.call(Cmd.REGION_WRITE, p), 'short write data', LINVAL);
    }),
    kase('RW-07', 'WRITE with more data bytes than count', 'L', async (ctx) => {
      const s = await ctx.session();
      const p = Buffer.concat([regionAccessPayload(someRegion(ctx).index, 0n, 4), Buffer.alloc(8)]);
      ctx.errno(await s.call(Cmd.REGION_WRITE, p), 'long write data', LINVAL);
    }),
    neg(
      'RW-08',
      'region = num_regions',
      'L',
      (ctx) => ({ cmd: Cmd.REGION_READ, payload: regionAccessPayload(ctx.dev.info.numRegions, 0n, 4) }),
      LINVAL,
    ),
    kase('RW-09', 'offset + count beyond the region', 'L, K', async (ctx) => {
      const r = someRegion(ctx);
      const s = await ctx.session();
      ctx.errno(await s.read(r.index, r.size - 2n, 4), 'read across the end', LINVAL);
      ctx.errno(await s.write(r.index, r.size, Buffer.alloc(4)), 'write past the end', LINVAL);
    }),
    neg(
      'RW-10',
      'offset 2^64-1, count 256',
      'L',
      (ctx) => ({
        cmd: Cmd.REGION_READ,
        payload: regionAccessPayload(someRegion(ctx).index, 0xffffffffffffffffn, 256),
      }),
      LINVAL,
    ),
    neg(
      'RW-11',
      'count > 0 on an absent region',
      'L',
      (ctx) => ({ cmd: Cmd.REGION_READ, payload: regionAccessPayload(ctx.needAbsentBar(), 0n, 4) }),
      LINVAL,
    ),
    kase(
      'RW-12',
      'READ with count 0: 16-byte echo (spec shape) or header-only (LVU)',
      'S~, L',
      async (ctx) => {
        const s = await ctx.session();
        const p = expectOk(await s.read(someRegion(ctx).index, 0n, 0), 'read of 0 bytes');
        if (p.length === 0) ctx.note('header-only reply (libvfio-user shape)');
        else if (p.length !== 16 || p.readUInt32LE(12) !== 0) fail(`payload ${p.length} bytes`);
      },
    ),
    kase('RW-13', 'WRITE with count 0', 'L', async (ctx) => {
      const s = await ctx.session();
      const m = await s.write(someRegion(ctx).index, 0n, Buffer.alloc(0));
      if (m.hdr.flags & Flag.ERROR) {
        ctx.lvuDiffers('a 0-byte write failed (libvfio-user accepts it)');
        ctx.anyError(m, '0-byte write');
      }
    }),
    kase('RW-14', 'Posted write, then a read: no reply to the write, the read sees it', 'S', async (ctx) => {
      const m = ctx.needScratch();
      const w = scratchWidth(ctx);
      const s = await ctx.session();
      s.postWrite(m.region, m.offset, val(w, 0x600dcafe));
      await ctx.noReply(s.conn, 'posted write', 150);
      const got = await s.readOk(m.region, m.offset, w);
      if (got.readUInt32LE(0) !== 0x600dcafe) fail(`read 0x${got.readUInt32LE(0).toString(16)}`);
    }),
    kase('RW-15', 'An invalid posted write: no reply, the next command answered', 'S', async (ctx) => {
      const s = await ctx.session();
      const r = someRegion(ctx);
      s.postWrite(r.index, r.size + 0x1000n, Buffer.alloc(4));
      await ctx.noReply(s.conn, 'invalid posted write');
      expectOk(await s.getInfo(), 'next command');
    }),
    kase('RW-16', 'Message access to a mmap-able area agrees with the fd view', 'S', async (ctx) => {
      const i = ctx.needMmapRegion();
      const s = await ctx.session();
      const { info, fds } = await s.regionInfo(i, true);
      for (const fd of fds) ctx.own(fd);
      if (!(info.flags & RegionFlag.WRITE)) skip(`region ${i} is not writable`);
      const area = info.caps.find((c) => c.id === 1)?.areas?.find((a) => a.size >= 8n) ?? {
        offset: 0n,
        size: info.size,
      };
      const pos = Number(info.offset + area.offset);
      const a = Buffer.from('5ca1ab1e', 'hex');
      await s.writeOk(i, area.offset, a);
      const viaFd = Buffer.alloc(4);
      readSync(fds[0]!, viaFd, 0, 4, pos);
      if (!viaFd.equals(a)) fail(`REGION_WRITE not visible through the fd (${viaFd.toString('hex')})`);
      const b = Buffer.from('0ddba11f', 'hex');
      writeSync(fds[0]!, b, 0, 4, pos);
      const viaMsg = await s.readOk(i, area.offset, 4);
      if (!viaMsg.equals(b))
        fail(`a write through the fd is not seen by REGION_READ (${viaMsg.toString('hex')})`);
    }),
    kase('RW-17', 'READ of a region whose flags lack READ', 'S~, L', async (ctx) => {
      const i = ctx.dev.regions.findIndex((r) => r.info.size > 0n && !(r.info.flags & RegionFlag.READ));
      if (i < 0) skip('every present region is readable');
      const s = await ctx.session();
      const m = await s.read(i, 0n, 4);
      if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'read of a write-only region', R([EINVAL]));
      else ctx.deviates('read of a region without READ succeeded (recommended: EINVAL)', { lvu: true });
    }),
    kase('RW-18', 'A 4-byte access at an unaligned offset: any answer, no crash', 'S~', async (ctx) => {
      const s = await ctx.session();
      const m = await s.read(Region.CONFIG, 1n, 4);
      ctx.note(m.hdr.flags & Flag.ERROR ? `refused (${m.hdr.error})` : 'served');
    }),
    kase('RW-19', 'Every successful READ returns exactly count bytes', 'Q', async (ctx) => {
      const s = await ctx.session();
      for (const [off, n] of [
        [0n, 1],
        [2n, 2],
        [4n, 4],
        [8n, 8],
        [0n, 64],
        [0x10n, 24],
      ] as [bigint, number][]) {
        const p = expectOk(await s.read(Region.CONFIG, off, n), `config read ${n} @ ${hex(off)}`);
        if (p.length !== 16 + n || p.readUInt32LE(12) !== n)
          fail(`config read ${n}: ${p.length - 16} data bytes, count ${p.readUInt32LE(12)}`);
      }
    }),
    kase('RW-20', 'The whole config space in one read', 'Q', async (ctx) => {
      const size = Number(ctx.dev.configSize);
      const s = await ctx.session();
      const d = await s.readOk(Region.CONFIG, 0n, size);
      if (d.length !== size) fail(`${d.length} bytes`);
      // The dump agrees with dword reads of the same bytes (the read-only header part).
      for (const off of [0, 8, 0x2c, 0x34]) {
        const w = await s.readOk(Region.CONFIG, BigInt(off), 4);
        if (!w.equals(d.subarray(off, off + 4))) fail(`dump and dword read differ at ${hex(off)}`);
      }
    }),
    kase('RW-21', 'Region access while migration is in STOP_COPY', 'L', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      try {
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.STOP_COPY);
        const m = await s.read(Region.CONFIG, 0n, 4);
        if (m.hdr.flags & Flag.ERROR) ctx.errno(m, 'read in STOP_COPY', LINVAL);
        else
          ctx.lvuDiffers(
            'region read allowed in STOP_COPY (the spec does not gate it; libvfio-user refuses)',
          );
      } finally {
        await restoreRunning(s);
      }
    }),
    kase('RW-22', 'Reply sizes: READ <= 32 + count, non-posted WRITE exactly 32', 'Q', async (ctx) => {
      const s = await ctx.session();
      const r = await s.read(Region.CONFIG, 0n, 4);
      if (r.hdr.size > 32 + 4) fail(`READ reply ${r.hdr.size} bytes`);
      const m = ctx.dev.scratch;
      const w = m
        ? await s.write(m.region, m.offset, val(scratchWidth(ctx), 1))
        : await s.write(Region.CONFIG, 0x10n, await s.readOk(Region.CONFIG, 0x10n, 4));
      const p = expectOk(w, 'write');
      if (w.hdr.size !== 32) fail(`WRITE reply ${w.hdr.size} bytes`);
      const off = m ? m.offset : 0x10n;
      const region = m ? m.region : Region.CONFIG;
      if (
        p.readBigUInt64LE(0) !== off ||
        p.readUInt32LE(8) !== region ||
        p.readUInt32LE(12) !== (m ? scratchWidth(ctx) : 4)
      ) {
        fail(`WRITE reply does not echo offset/region/count (${p.toString('hex')})`);
      }
    }),
  ],
};
