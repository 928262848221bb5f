// C. DMA_MAP (MAP) and D. DMA_UNMAP (UNM).

import { openSync, readSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoName } from 'vfio-user-protocol';
import type { Ctx, Group } from '../case.js';
import { expectOk, fail, isError, type Msg, skip } from '../conn.js';
import type { Session } from '../session.js';
import { Cmd, DmaUnmapFlag, dmaMapPayload, dmaUnmapPayload, Flag, hex, MigState } from '../wire.js';
import { mapMessageDma } from './sdma-util.js';
import {
  EACCES,
  EEXIST,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOSPC,
  EOVERFLOW,
  EPERM,
  IOVA,
  kase,
  L,
  LINVAL,
  mapMemfd,
  R,
  restoreRunning,
  S,
  setMigStateOk,
} from './util.js';

const RW = 3;

/** The spec's EEXIST for maps over existing ones; libvfio-user answers EINVAL. */
const EXISTS = { ...S(EEXIST), lvu: [EINVAL] };

/** Maps `size` at `iova` (memfd) and returns [fd]. */
async function base(ctx: Ctx, s: Session, iova = IOVA, size = 2n * ctx.pg): Promise<number> {
  return mapMemfd(ctx, s, iova, size);
}

/** A map request that must fail with EEXIST (spec) / EINVAL (LVU). */
async function expectExists(
  ctx: Ctx,
  s: Session,
  what: string,
  iova: bigint,
  size: bigint,
  flags = RW,
  offset = 0n,
): Promise<void> {
  const m = await s.dmaMap({ address: iova, size, flags, offset }, ctx.memfd(Number(size + offset)));
  ctx.errno(m, what, EXISTS);
}

/** Is [iova,+size) still mapped? Probed with an overlapping map (refused while it exists). */
async function stillMapped(ctx: Ctx, s: Session, iova: bigint, size: bigint): Promise<boolean> {
  // An fd-backed probe: every server supports those (some refuse fd-less maps altogether).
  const m = await s.dmaMap({ address: iova, size, flags: RW }, ctx.memfd(Number(size)));
  if (!isError(m)) {
    expectOk(await s.dmaUnmap({ address: iova, size }), 'unmap of the probe map');
    return false;
  }
  return true;
}

/** Recommended refusal (`spec`), libvfio-user may accept (`lvu`): returns whether it was accepted. */
function refuseOrLvuAccept(ctx: Ctx, m: Msg, what: string, rule = R([EINVAL], [], 'K')): boolean {
  if (isError(m)) {
    ctx.errno(m, what, rule);
    return false;
  }
  ctx.deviates(`${what}: accepted (recommended: an error)`, { lvu: true });
  return true;
}

/** Either answer accepted; record which. */
function either(ctx: Ctx, m: Msg, what: string): boolean {
  if (isError(m)) {
    ctx.note(`${what}: ${errnoName(m.hdr.error)}`);
    return false;
  }
  ctx.note(`${what}: accepted`);
  return true;
}

async function dev(ctx: Ctx) {
  return ctx.needDriver();
}

export const map: Group = {
  name: 'MAP',
  title: 'DMA_MAP',
  cases: [
    kase('MAP-01', 'RW map of a memfd (1 MiB, with fd): header-only reply', 'S', async (ctx) => {
      const s = await ctx.session();
      const m = await s.dmaMap({ address: IOVA, size: 0x100000n, flags: RW }, ctx.memfd(0x100000));
      expectOk(m, 'DMA_MAP');
      if (m.hdr.size !== 16) fail(`reply ${m.hdr.size} bytes`);
    }),
    kase('MAP-02', 'A map with no fd', 'S', async (ctx) => {
      const s = await ctx.session();
      expectOk(await s.dmaMap({ address: IOVA, size: 0x10000n, flags: RW }), 'fd-less DMA_MAP');
    }),
    kase(
      'MAP-03',
      'A READ-only map with fd: accepted, and the device never writes there',
      'S~',
      async (ctx) => {
        const s = await ctx.session();
        const fd = ctx.memfd(Number(ctx.pg));
        writeSync(fd, Buffer.from('5eed5eed', 'hex'), 0, 4, 0);
        expectOk(await s.dmaMap({ address: IOVA, size: ctx.pg, flags: 1 }, fd), 'read-only DMA_MAP');
        const d = ctx.dev.driver;
        if (!d) {
          ctx.note('device writes not checked (no device driver)');
          return;
        }
        // Reading from it works; writing into it must not.
        await d.dmaFromGuest(s, IOVA, 0, 4);
        const got = await d.readBuffer(s, 0, 4);
        if (got.toString('hex') !== '5eed5eed')
          fail(`device read ${got.toString('hex')} from the read-only map`);
        await d.writeBuffer(s, 0, Buffer.from('badbadba', 'hex'));
        await d.dmaToGuest(s, IOVA, 0, 4);
        const b = Buffer.alloc(4);
        readSync(fd, b, 0, 4, 0);
        if (b.toString('hex') !== '5eed5eed') fail('the device wrote into a read-only map');
      },
    ),
    kase('MAP-04', '24-byte payload', 'L', async (ctx) => {
      const s = await ctx.session();
      const p = dmaMapPayload({ address: IOVA, size: ctx.pg }).subarray(0, 24);
      ctx.errno(await s.call(Cmd.DMA_MAP, p), 'DMA_MAP 24 bytes', LINVAL);
    }),
    kase('MAP-05', 'argsz 8', 'L', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(await s.dmaMap({ argsz: 8, address: IOVA, size: ctx.pg }), 'DMA_MAP argsz 8', LINVAL);
    }),
    kase('MAP-06', 'argsz 64 with a 32-byte payload', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      const m = await s.dmaMap({ argsz: 64, address: IOVA, size: ctx.pg });
      if (isError(m)) ctx.lvuDiffers('refused (libvfio-user only checks argsz >= 32)');
      either(ctx, m, 'argsz 64');
    }),
    kase('MAP-07', 'Unknown flag bits 4 or 31: refused, fd closed', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      await ctx.fdNeutral('DMA_MAP with unknown flags', async () => {
        for (const f of [RW | 0x10, RW | 0x80000000]) {
          const m = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: f }, ctx.memfd(Number(ctx.pg)));
          ctx.errno(m, `flags ${hex(f >>> 0)}`, LINVAL);
        }
      });
    }),
    kase('MAP-08', 'flags 0 (no READ, no WRITE): recommended EINVAL; LVU accepts', 'K, L', async (ctx) => {
      const s = await ctx.session();
      refuseOrLvuAccept(
        ctx,
        await s.dmaMap({ address: IOVA, size: ctx.pg, flags: 0 }, ctx.memfd(Number(ctx.pg))),
        'flags 0',
      );
    }),
    kase('MAP-09', "flags bit 2 (LVU's MMAP extension) without an fd", 'L, S~', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(
        await s.dmaMap({ address: IOVA, size: ctx.pg, flags: RW | 0x4 }),
        'flags 0x7 without fd',
        LINVAL,
      );
    }),
    kase('MAP-10', 'Partial overlap: EEXIST (LVU: EINVAL)', 'S, L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA + 2n * ctx.pg, 2n * ctx.pg);
      await expectExists(ctx, s, 'partial overlap', IOVA + ctx.pg, 2n * ctx.pg);
    }),
    kase('MAP-11', 'A map entirely inside an existing one: EEXIST', 'S, L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, 4n * ctx.pg);
      await expectExists(ctx, s, 'inside', IOVA + ctx.pg, ctx.pg);
    }),
    kase('MAP-12', 'A map containing an existing one: EEXIST', 'S, L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA + ctx.pg, ctx.pg);
      await expectExists(ctx, s, 'containing', IOVA, 4n * ctx.pg);
    }),
    kase('MAP-13', 'Identical re-map: EEXIST (LVU: OK, idempotent)', 'S, L', async (ctx) => {
      const s = await ctx.session();
      const fd = await base(ctx, s, IOVA, ctx.pg);
      const m = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: RW }, fd);
      if (!isError(m)) {
        fail('identical re-map accepted; the spec requires EEXIST', { level: 'must', lvu: true });
      }
      ctx.errno(m, 'identical re-map', EXISTS);
    }),
    kase('MAP-14', 'Same range, different offset or prot: EEXIST', 'S, L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      await expectExists(ctx, s, 'different offset', IOVA, ctx.pg, RW, ctx.pg);
      await expectExists(ctx, s, 'different prot', IOVA, ctx.pg, 1);
    }),
    kase('MAP-15', 'Two adjacent maps', 'S', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      await base(ctx, s, IOVA + ctx.pg, ctx.pg);
    }),
    kase('MAP-16', 'size 0: recommended EINVAL', 'K, S~', async (ctx) => {
      const s = await ctx.session();
      refuseOrLvuAccept(ctx, await s.dmaMap({ address: IOVA, size: 0n, flags: RW }), 'size 0', R([EINVAL]));
    }),
    kase('MAP-17', 'address + size wraps past 2^64: refused', 'K, S~', async (ctx) => {
      const s = await ctx.session();
      const m = await s.dmaMap({ address: 0xfffffffffffff000n, size: 0x2000n, flags: RW });
      if (!isError(m)) fail('a wrapping map was accepted');
      ctx.errno(m, 'wrapping map', R([EINVAL, EOVERFLOW], [], 'K'));
    }),
    kase('MAP-18', 'Address/size not a multiple of the smallest page size (0x1800)', 'K, L', async (ctx) => {
      const s = await ctx.session();
      either(
        ctx,
        await s.dmaMap({ address: IOVA + 0x800n, size: 0x1800n, flags: RW }, ctx.memfd(0x2000)),
        'unaligned map',
      );
    }),
    kase('MAP-19', 'An aligned address with file offset 0x800', 'L, K', async (ctx) => {
      const s = await ctx.session();
      either(
        ctx,
        await s.dmaMap(
          { address: IOVA, size: ctx.pg, flags: RW, offset: 0x800n },
          ctx.memfd(Number(ctx.pg) * 2),
        ),
        'offset 0x800',
      );
    }),
    kase('MAP-20', 'A map larger than the per-region maximum (8 TiB + 4 KiB)', 'L', async (ctx) => {
      const s = await ctx.session();
      const m = await s.dmaMap({ address: 1n << 44n, size: (8n << 40n) + 4096n, flags: RW });
      if (isError(m)) ctx.errno(m, 'huge map', L(ENOSPC));
      else ctx.lvuDiffers("an 8 TiB + 4 KiB map was accepted (the limit is libvfio-user's: ENOSPC)");
    }),
    kase(
      'MAP-21',
      'One more live map than max_dma_maps',
      'K, L',
      async (ctx) => {
        const n = ctx.dev.caps.maxDmaMaps;
        if (n > 70000) skip(`max_dma_maps ${n} too large to fill here`);
        const s = await ctx.session();
        const pg = ctx.pg;
        const batch = 512;
        for (let i = 0; i < n; i += batch) {
          const ids: number[] = [];
          for (let k = i; k < Math.min(n, i + batch); k++) {
            ids.push(
              s.conn.post(
                Cmd.DMA_MAP,
                dmaMapPayload({ address: IOVA + BigInt(k) * pg, size: pg, flags: RW }),
              ),
            );
          }
          for (const id of ids) expectOk(await s.conn.replyTo(id, Cmd.DMA_MAP), `map ${id}`);
        }
        const m = await s.dmaMap({ address: IOVA + BigInt(n) * pg, size: pg, flags: RW });
        // max_dma_maps binds the client; a server that takes more is fine (libvfio-user's limit is whatever
        // the device sets, up to 1,000,000). A refusal should say ENOSPC, as Linux type1 does.
        if (!isError(m)) ctx.note(`map number ${n + 1} accepted (max_dma_maps ${n} limits the client only)`);
        else ctx.errno(m, `map ${n + 1}`, R([ENOSPC], [EINVAL], 'K'));
      },
      { timeoutMs: 120000 },
    ),
    kase(
      'MAP-22',
      'The fd is an eventfd or a socket: refused, fd closed, server alive',
      'S~, L',
      async (ctx) => {
        const s = await ctx.session();
        await ctx.fdNeutral('DMA_MAP with a non-memory fd', async () => {
          const [a, b] = ctx.native.socketpair();
          ctx.own(a);
          ctx.own(b);
          for (const [what, fd] of [
            ['eventfd', ctx.eventfd()],
            ['socket', a],
          ] as [string, number][]) {
            const m = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: RW }, fd);
            if (!isError(m)) fail(`a map of a ${what} was accepted`);
            ctx.anyError(m, `${what} map`);
          }
        });
      },
    ),
    kase('MAP-23', 'A memfd shorter than offset + size: recommended EINVAL', 'S~', async (ctx) => {
      const s = await ctx.session();
      const m = await s.dmaMap({ address: IOVA, size: 4n * ctx.pg, flags: RW }, ctx.memfd(Number(ctx.pg)));
      refuseOrLvuAccept(ctx, m, 'short memfd', R([EINVAL]));
    }),
    kase('MAP-24', 'An O_RDONLY fd mapped READ|WRITE: refused', 'S~', async (ctx) => {
      const s = await ctx.session();
      const fd = ctx.memfd(Number(ctx.pg));
      const ro = ctx.own(openSync(`/proc/self/fd/${fd}`, 'r'));
      const m = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: RW }, ro);
      if (!isError(m)) fail('a read-only fd was mapped writable');
      ctx.errno(m, 'RO fd, RW map', R([EACCES, EPERM, EFAULT, EINVAL]));
    }),
    kase('MAP-25', 'Two fds attached: the second is not leaked', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      await ctx.fdNeutral('DMA_MAP with two fds', async () => {
        const a = ctx.memfd(Number(ctx.pg));
        const m = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: RW }, [a, ctx.memfd(Number(ctx.pg))]);
        if (either(ctx, m, 'two fds')) expectOk(await s.dmaUnmap({ address: IOVA, size: ctx.pg }), 'unmap');
      });
    }),
    kase(
      'MAP-26',
      'Device DMA at the first and last byte of a map works; one past the end does not',
      'S',
      async (ctx) => {
        const d = await dev(ctx);
        const s = await ctx.session();
        const pg = ctx.pg;
        const fd = ctx.memfd(Number(pg) * 2);
        writeSync(fd, Buffer.from([0x11]), 0, 1, 0);
        writeSync(fd, Buffer.from([0x22]), 0, 1, Number(pg) - 1);
        writeSync(fd, Buffer.from([0x33]), 0, 1, Number(pg));
        await s.dmaMapOk({ address: IOVA, size: pg, flags: RW }, fd);
        const check = async (iova: bigint, want: number | null) => {
          await d.writeBuffer(s, 0, Buffer.from([0xaa]));
          await d.dmaFromGuest(s, iova, 0, 1);
          const b = (await d.readBuffer(s, 0, 4))[0];
          if (want === null ? b !== 0xaa : b !== want) {
            fail(
              `DMA from ${hex(iova)}: device buffer ${hex(b ?? 0)}, expected ${want === null ? 'unchanged 0xaa' : hex(want)}`,
            );
          }
        };
        await check(IOVA, 0x11);
        await check(IOVA + pg - 1n, 0x22);
        await check(IOVA + pg, null);
      },
    ),
    kase('MAP-27', 'DMA_MAP with NO_REPLY: applied, no reply', 'S', async (ctx) => {
      const s = await ctx.session();
      s.conn.post(Cmd.DMA_MAP, dmaMapPayload({ address: IOVA, size: ctx.pg, flags: RW }), {
        flags: Flag.NO_REPLY,
        fds: [ctx.memfd(Number(ctx.pg))],
      });
      await ctx.noReply(s.conn, 'DMA_MAP with NO_REPLY');
      expectOk(await s.dmaUnmap({ address: IOVA, size: ctx.pg }), 'unmap of the posted map');
    }),
    kase('MAP-28', 'DMA_MAP while migration is in STOP', 'L', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      try {
        await setMigStateOk(s, MigState.STOP);
        const m = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: RW });
        if (isError(m)) ctx.errno(m, 'DMA_MAP in STOP', LINVAL);
        else ctx.lvuDiffers('DMA_MAP accepted in STOP (the spec does not gate it; libvfio-user: EINVAL)');
      } finally {
        await restoreRunning(s);
      }
    }),
    kase(
      'MAP-29',
      '10,000 pipelined 4 KiB maps with fds (vIOMMU pattern): all OK within 5 s each',
      'Q',
      async (ctx) => {
        const n = 10000;
        if (ctx.dev.caps.maxDmaMaps < n) skip(`max_dma_maps ${ctx.dev.caps.maxDmaMaps} < ${n}`);
        const s = await ctx.session();
        const pg = 4096n;
        const fd = ctx.memfd(n * 4096);
        const sent = new Map<number, number>();
        const window = 256;
        let next = 0;
        let done = 0;
        let worst = 0;
        const order: number[] = [];
        while (done < n) {
          while (next < n && next - done < window) {
            const id = s.conn.post(
              Cmd.DMA_MAP,
              dmaMapPayload({
                address: IOVA + BigInt(next) * pg,
                size: pg,
                flags: RW,
                offset: BigInt(next) * pg,
              }),
              { fds: [fd] },
            );
            sent.set(id, Date.now());
            order.push(id);
            next++;
          }
          const r = await s.conn.nextReply(5000);
          if (r === 'timeout' || r === 'closed') fail(`map ${done}: ${r}`);
          if (r.hdr.id !== order[done]) fail(`reply ${done} has id ${r.hdr.id}, expected ${order[done]}`);
          expectOk(r, `map ${done}`);
          worst = Math.max(worst, Date.now() - (sent.get(r.hdr.id) ?? Date.now()));
          done++;
        }
        if (worst > 5000) fail(`slowest reply ${worst} ms`);
        ctx.note(`slowest reply ${worst} ms`);
      },
      { timeoutMs: 180000 },
    ),
    kase('MAP-30', 'Map, disconnect, reconnect, map the same range: OK', 'S', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      s.close();
      await sleep(50);
      const t = await ctx.session({}, 'again');
      await base(ctx, t, IOVA, ctx.pg);
    }),
    kase('MAP-31', 'A map at the host MSI window 0xfee00000 (mirroring servers)', 'K', async () => {
      skip('applies to servers that mirror onto a host IOMMU; not detectable over the socket');
    }),
    kase('MAP-32', 'A large map under a small RLIMIT_MEMLOCK (mirroring servers)', 'K', async () => {
      skip('applies to mirroring servers run without CAP_IPC_LOCK; the suite cannot set that up');
    }),
    kase('MAP-33', 'Host IOMMU entry limit reached (mirroring servers)', 'K', async () => {
      skip('applies to mirroring servers on a type1 host IOMMU');
    }),
    kase(
      'MAP-34',
      'The client closes its fd right after sending: the mapping keeps working',
      'S',
      async (ctx) => {
        const s = await ctx.session();
        const fd = ctx.native.memfd('conformance', Number(ctx.pg));
        const keep = ctx.own(openSync(`/proc/self/fd/${fd}`, 'r+'));
        await s.dmaMapOk({ address: IOVA, size: ctx.pg, flags: RW }, fd);
        ctx.native.closeFd(fd);
        const d = ctx.dev.driver;
        if (!d) {
          expectOk(await s.dmaUnmap({ address: IOVA, size: ctx.pg }), 'unmap');
          ctx.note('device DMA not checked (no device driver)');
          return;
        }
        await d.writeBuffer(s, 0, Buffer.from('feedface', 'hex'));
        await d.dmaToGuest(s, IOVA, 0, 4);
        const b = Buffer.alloc(4);
        readSync(keep, b, 0, 4, 0);
        if (b.toString('hex') !== 'feedface')
          fail(`guest memory reads ${b.toString('hex')} after the device DMA`);
      },
    ),
  ],
};

// -- D. UNM -----------------------------------------------------------------------------------------------------

/** An unmap that either succeeds (window semantics) or fails with ENOENT (LVU): returns whether it succeeded. */
function windowOrEnoent(ctx: Ctx, m: Msg, what: string): boolean {
  if (!isError(m)) {
    ctx.note(`${what}: OK (window semantics)`);
    return true;
  }
  ctx.errno(m, what, { want: [ENOENT], basis: 'L', lvu: [EINVAL] });
  ctx.note(`${what}: ${errnoName(m.hdr.error)} (exact-match semantics)`);
  return false;
}

export const unm: Group = {
  name: 'UNM',
  title: 'DMA_UNMAP',
  cases: [
    kase('UNM-01', 'Exact unmap: OK, the 24-byte request echoed', 'S, Q', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      const p = await s.dmaUnmapOk({ address: IOVA, size: ctx.pg });
      if (p.length === 0) {
        ctx.deviates(
          'header-only reply (the spec: "The server responds with the original DMA entry in the request")',
          {
            level: 'must',
            qemu: 'tolerates',
          },
        );
      } else if (!p.equals(dmaUnmapPayload({ address: IOVA, size: ctx.pg })))
        fail(`echo ${p.toString('hex')}`);
    }),
    kase('UNM-02', '16-byte payload', 'L', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(
        await s.call(Cmd.DMA_UNMAP, dmaUnmapPayload({ address: IOVA, size: ctx.pg }).subarray(0, 16)),
        'UNMAP 16 bytes',
        LINVAL,
      );
    }),
    kase('UNM-03', 'argsz 8', 'L', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(await s.dmaUnmap({ argsz: 8, address: IOVA, size: ctx.pg }), 'argsz 8', LINVAL);
    }),
    kase('UNM-04', 'argsz 1 MiB + 8', 'L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      ctx.errno(
        await s.dmaUnmap({ argsz: (1 << 20) + 8, address: IOVA, size: ctx.pg }),
        'argsz 1 MiB + 8',
        LINVAL,
      );
    }),
    kase('UNM-05', 'flags 0x4 (kernel VADDR) or an unknown bit', 'L, K', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      for (const f of [0x4, 0x100])
        ctx.errno(await s.dmaUnmap({ flags: f, address: IOVA, size: ctx.pg }), `flags ${hex(f)}`, LINVAL);
    }),
    kase('UNM-06', 'A range that was never mapped: ENOENT (exact) or OK (window)', 'S, L, K', async (ctx) => {
      const s = await ctx.session();
      windowOrEnoent(ctx, await s.dmaUnmap({ address: IOVA + 0x100000n, size: ctx.pg }), 'unmap of nothing');
    }),
    kase('UNM-07', 'Start matches, size smaller: recommended EINVAL (LVU ENOENT)', 'K, L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, 2n * ctx.pg);
      const m = await s.dmaUnmap({ address: IOVA, size: ctx.pg });
      if (!isError(m)) fail('a partial unmap succeeded');
      ctx.errno(m, 'partial unmap', R([EINVAL], [ENOENT], 'K'));
      if (!(await stillMapped(ctx, s, IOVA, 2n * ctx.pg)))
        fail('the map went away after a refused partial unmap');
    }),
    kase('UNM-08', 'A range covering one whole map plus empty space', 'L, K', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA + ctx.pg, ctx.pg);
      const gone = windowOrEnoent(
        ctx,
        await s.dmaUnmap({ address: IOVA, size: 4n * ctx.pg }),
        'covering unmap',
      );
      const mapped = await stillMapped(ctx, s, IOVA + ctx.pg, ctx.pg);
      if (gone === mapped)
        fail(gone ? 'unmap succeeded but the map is still there' : 'unmap failed but the map is gone');
    }),
    kase('UNM-09', 'A range covering two adjacent whole maps', 'L, K', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      await base(ctx, s, IOVA + ctx.pg, ctx.pg);
      const gone = windowOrEnoent(
        ctx,
        await s.dmaUnmap({ address: IOVA, size: 2n * ctx.pg }),
        'unmap of two maps',
      );
      const a = await stillMapped(ctx, s, IOVA, ctx.pg);
      const b = await stillMapped(ctx, s, IOVA + ctx.pg, ctx.pg);
      if (gone && (a || b)) fail('unmap succeeded but a map is still there');
      if (!gone && !(a && b)) fail('unmap failed but a map is gone');
    }),
    kase('UNM-10', 'A range that bisects a map: refused (EINVAL; LVU ENOENT)', 'K, L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, 2n * ctx.pg);
      const m = await s.dmaUnmap({ address: IOVA + ctx.pg, size: 2n * ctx.pg });
      if (!isError(m)) fail('a bisecting unmap succeeded');
      ctx.errno(m, 'bisecting unmap', R([EINVAL], [ENOENT], 'K'));
    }),
    kase('UNM-11', 'FLAG_ALL (address 0, size 0) removes every map', 'Q, L, K', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      await base(ctx, s, IOVA + 4n * ctx.pg, ctx.pg);
      await s.dmaUnmapOk({ flags: DmaUnmapFlag.ALL, address: 0n, size: 0n });
      if (await stillMapped(ctx, s, IOVA, ctx.pg)) fail('a map survived FLAG_ALL');
      if (await stillMapped(ctx, s, IOVA + 4n * ctx.pg, ctx.pg)) fail('a map survived FLAG_ALL');
    }),
    kase('UNM-12', 'FLAG_ALL with address or size set', 'L, K', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(
        await s.dmaUnmap({ flags: DmaUnmapFlag.ALL, address: IOVA, size: 0n }),
        'FLAG_ALL address',
        LINVAL,
      );
      ctx.errno(
        await s.dmaUnmap({ flags: DmaUnmapFlag.ALL, address: 0n, size: ctx.pg }),
        'FLAG_ALL size',
        LINVAL,
      );
    }),
    kase('UNM-13', 'FLAG_ALL | GET_DIRTY_BITMAP', 'L, K', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(
        await s.dmaUnmap({ flags: DmaUnmapFlag.ALL | DmaUnmapFlag.GET_DIRTY_BITMAP, address: 0n, size: 0n }),
        'ALL|DIRTY',
        LINVAL,
      );
    }),
    kase('UNM-14', 'FLAG_ALL with nothing mapped', 'L, K', async (ctx) => {
      const s = await ctx.session();
      await s.dmaUnmapOk({ flags: DmaUnmapFlag.ALL, address: 0n, size: 0n });
    }),
    kase('UNM-15', 'GET_DIRTY_BITMAP while dirty logging is off', 'L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      const bm = Buffer.alloc(24);
      bm.writeBigUInt64LE(ctx.pg, 0);
      bm.writeBigUInt64LE(8n, 8);
      const p = Buffer.concat([
        dmaUnmapPayload({
          argsz: 24 + 16 + 8,
          flags: DmaUnmapFlag.GET_DIRTY_BITMAP,
          address: IOVA,
          size: ctx.pg,
        }),
        bm.subarray(0, 16),
        Buffer.alloc(8),
      ]);
      ctx.errno(await s.call(Cmd.DMA_UNMAP, p), 'GET_DIRTY_BITMAP', LINVAL);
    }),
    kase('UNM-16', 'GET_DIRTY_BITMAP with a bitmap larger than argsz allows', 'L', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      const bm = Buffer.alloc(16);
      bm.writeBigUInt64LE(ctx.pg, 0);
      bm.writeBigUInt64LE(1n << 40n, 8);
      const p = Buffer.concat([
        dmaUnmapPayload({
          argsz: 24 + 16,
          flags: DmaUnmapFlag.GET_DIRTY_BITMAP,
          address: IOVA,
          size: ctx.pg,
        }),
        bm,
      ]);
      ctx.errno(await s.call(Cmd.DMA_UNMAP, p), 'bitmap overflow', LINVAL);
    }),
    kase(
      'UNM-17',
      'After an unmap, device DMA to the old range does not reach the memory',
      'S',
      async (ctx) => {
        const d = await dev(ctx);
        const s = await ctx.session();
        const fd = await base(ctx, s, IOVA, ctx.pg);
        const b = Buffer.alloc(4);
        // Control: while mapped, the same DMA lands.
        await d.writeBuffer(s, 0, Buffer.from('0badc0de', 'hex'));
        await d.dmaToGuest(s, IOVA, 0, 4);
        readSync(fd, b, 0, 4, 0);
        if (b.toString('hex') !== '0badc0de')
          fail(`control DMA into the live map did not land (${b.toString('hex')})`);
        await s.dmaUnmapOk({ address: IOVA, size: ctx.pg });
        await d.writeBuffer(s, 0, Buffer.from('deadbeef', 'hex'));
        await d.dmaToGuest(s, IOVA, 0, 4);
        readSync(fd, b, 0, 4, 0);
        if (b.toString('hex') === 'deadbeef') fail('the device wrote into unmapped memory');
      },
    ),
    kase(
      'UNM-18',
      'Unmap during an outstanding device DMA: no DMA to the range after the reply',
      'S',
      async (ctx) => {
        const d = await dev(ctx);
        const s = await ctx.session();
        await mapMessageDma(s, IOVA, Number(ctx.pg));
        let held: { req: import('../conn.js').ServerRequest; msg: Msg } | null = null;
        s.conn.onServerRequest = (req, msg) => {
          if (!held) {
            held = { req, msg };
            return null;
          }
          return undefined;
        };
        await d.startDma(s, false, IOVA, 0, 64);
        if (!(await s.conn.until(() => held !== null, ctx.opts.timeoutMs)))
          fail('no DMA request from the server');
        const id = s.conn.post(Cmd.DMA_UNMAP, dmaUnmapPayload({ address: IOVA, size: ctx.pg }));
        const early = await s.conn.nextReply(500);
        const h = held as unknown as { req: import('../conn.js').ServerRequest; msg: Msg };
        const before = s.conn.serverRequests.length;
        s.conn.onServerRequest = null;
        const reply = s.conn.serveDma(h.req, h.msg);
        if (reply) s.conn.send(reply);
        let r: Msg;
        if (early === 'timeout') {
          r = await s.conn.replyTo(id, Cmd.DMA_UNMAP);
          ctx.note('the unmap waited for the in-flight DMA');
        } else {
          if (early === 'closed') fail('connection closed');
          r = early;
          ctx.note('the unmap was answered while the DMA was held (DMA cancelled)');
        }
        expectOk(r, 'DMA_UNMAP');
        await sleep(100);
        const after = s.conn.serverRequests.slice(before).filter((q) => q.at > r.at);
        if (after.length) fail(`${after.length} DMA request(s) to the range after the unmap reply`);
        await d.waitDma(s, 2000);
      },
    ),
    kase(
      'UNM-19',
      'After unmapping an fd-backed map the server has closed its copy of the fd',
      'S',
      async (ctx) => {
        const s = await ctx.session();
        await ctx.fdNeutral('fd after unmap', async () => {
          const fd = ctx.native.memfd('conformance', Number(ctx.pg));
          await s.dmaMapOk({ address: IOVA, size: ctx.pg, flags: RW }, fd);
          ctx.native.closeFd(fd);
          await s.dmaUnmapOk({ address: IOVA, size: ctx.pg });
        });
      },
    ),
    kase('UNM-20', 'Two maps of the same file; unmap one, the other still works', 'S~', async (ctx) => {
      const s = await ctx.session();
      const fd = ctx.memfd(Number(ctx.pg) * 2);
      await s.dmaMapOk({ address: IOVA, size: ctx.pg, flags: RW }, fd);
      await s.dmaMapOk({ address: IOVA + 0x100000n, size: ctx.pg, flags: RW, offset: ctx.pg }, fd);
      await s.dmaUnmapOk({ address: IOVA, size: ctx.pg });
      const d = ctx.dev.driver;
      if (!d) {
        if (!(await stillMapped(ctx, s, IOVA + 0x100000n, ctx.pg))) fail('the other map is gone');
        ctx.note('device DMA not checked (no device driver)');
        return;
      }
      await d.writeBuffer(s, 0, Buffer.from('c0ffee00', 'hex'));
      await d.dmaToGuest(s, IOVA + 0x100000n, 0, 4);
      const b = Buffer.alloc(4);
      readSync(fd, b, 0, 4, Number(ctx.pg));
      if (b.toString('hex') !== 'c0ffee00') fail(`the other map does not work (${b.toString('hex')})`);
    }),
    kase('UNM-21', 'DMA_UNMAP with NO_REPLY: applied, no reply', 'S', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      s.conn.post(Cmd.DMA_UNMAP, dmaUnmapPayload({ address: IOVA, size: ctx.pg }), { flags: Flag.NO_REPLY });
      await ctx.noReply(s.conn, 'DMA_UNMAP with NO_REPLY');
      if (await stillMapped(ctx, s, IOVA, ctx.pg)) fail('the posted unmap was not applied');
    }),
    kase('UNM-22', 'Unmap, then map the same range again', 'S', async (ctx) => {
      const s = await ctx.session();
      await base(ctx, s, IOVA, ctx.pg);
      await s.dmaUnmapOk({ address: IOVA, size: ctx.pg });
      await base(ctx, s, IOVA, ctx.pg);
    }),
  ],
};
