// L. DEVICE_RESET (RST), M. REGION_WRITE_MULTI (WMU), N. DEVICE_FEATURE (FEA), O. migration data (MIG).
import type { Ctx, Group } from '../case.js';
import { expectOk, fail, isError, skip } from '../conn.js';
import type { Session } from '../session.js';
import { Cmd, Feature, Flag, hex, Irq, IrqSet, MigState, Region, writeMultiPayload } from '../wire.js';
import {
  EINVAL,
  ENOENT,
  ENOTSUP,
  getMigState,
  IOVA,
  kase,
  L,
  LINVAL,
  le32,
  le64,
  mapMemfd,
  migDataRead,
  restoreRunning,
  S,
  setMigState,
  setMigStateOk,
  stateData,
} from './util.js';

const { GET, SET, PROBE, MIGRATION, MIG_DEVICE_STATE, DMA_LOGGING_START, DMA_LOGGING_REPORT } = Feature;

function scratchBytes(ctx: Ctx, v: number): Buffer {
  const m = ctx.needScratch();
  const w = m.widths.includes(4) ? 4 : m.widths[0]!;
  const b = Buffer.alloc(w);
  b.writeUInt32LE(v >>> 0);
  return b;
}

/** Power-on value of the scratch register (read right after a reset). */
async function resetValue(ctx: Ctx, s: Session): Promise<Buffer> {
  const m = ctx.needScratch();
  expectOk(await s.reset(), 'DEVICE_RESET');
  return s.readOk(m.region, m.offset, scratchBytes(ctx, 0).length);
}

// -- L. RST -----------------------------------------------------------------------------------------------------

export const rst: Group = {
  name: 'RST',
  title: 'DEVICE_RESET',
  cases: [
    kase('RST-01', 'A header-only RESET succeeds with a header-only reply', 'S', async (ctx) => {
      ctx.needReset();
      const s = await ctx.session();
      const m = await s.reset();
      expectOk(m, 'DEVICE_RESET');
      if (m.hdr.size !== 16) fail(`reply ${m.hdr.size} bytes`);
    }),
    kase('RST-02', 'RESET with an 8-byte payload: OK (ignored) or EINVAL', 'L, S~', async (ctx) => {
      ctx.needReset();
      const s = await ctx.session();
      const m = await s.call(Cmd.DEVICE_RESET, Buffer.alloc(8));
      if (isError(m)) ctx.errno(m, 'RESET with payload', LINVAL);
      else ctx.note('payload ignored');
    }),
    kase('RST-03', 'RESET when GET_INFO does not advertise it: an error', 'S~', async (ctx) => {
      if (ctx.dev.reset) skip('RESET is advertised');
      const s = await ctx.session();
      const m = await s.reset();
      if (!isError(m)) fail('DEVICE_RESET succeeded although not advertised');
      ctx.anyError(m, 'RESET');
    }),
    kase('RST-04', 'RESET completes well within 5 s', 'Q', async (ctx) => {
      ctx.needReset();
      const s = await ctx.session();
      const t0 = Date.now();
      expectOk(await s.reset(), 'DEVICE_RESET');
      const ms = Date.now() - t0;
      if (ms > 5000) fail(`${ms} ms`);
      ctx.note(`${ms} ms`);
    }),
    kase(
      'RST-05',
      'After RESET: device registers at power-on, config power-on or restored; DMA maps kept',
      'S~, K',
      async (ctx) => {
        ctx.needReset();
        const s = await ctx.session();
        await mapMemfd(ctx, s, IOVA, ctx.pg);
        const size = Number(ctx.dev.configSize);
        expectOk(await s.reset(), 'DEVICE_RESET');
        const cfg0 = await s.readOk(Region.CONFIG, 0n, size);
        const m = ctx.dev.scratch;
        const sc0 = m ? await s.readOk(m.region, m.offset, scratchBytes(ctx, 0).length) : null;
        // Change state: COMMAND, a BAR address, the scratch register.
        await s.write(Region.CONFIG, 4n, Buffer.from([0x06, 0x00]));
        const bar = ctx.dev.memBars[0];
        if (bar)
          await s.write(
            Region.CONFIG,
            BigInt(0x10 + 4 * bar.index),
            le32(Number(0xfe000000n & ~(bar.size - 1n) & 0xffffffffn)),
          );
        if (m) await s.writeOk(m.region, m.offset, scratchBytes(ctx, 0x5a5a5a5a));
        // Config space after a reset: the spec is silent, Linux VFIO_DEVICE_RESET saves and restores it around
        // the reset, a physical reset gives power-on values. Either is right; what it was is recorded.
        const cfgBefore = await s.readOk(Region.CONFIG, 0n, size);
        expectOk(await s.reset(), 'second DEVICE_RESET');
        const cfg1 = await s.readOk(Region.CONFIG, 0n, size);
        const differs = (a: Buffer) => {
          const d: string[] = [];
          for (let i = 0; i < size; i++) if (a[i] !== cfg1[i] && i !== 6 && i !== 7) d.push(hex(i));
          return d;
        };
        const fromPowerOn = differs(cfg0);
        if (!fromPowerOn.length) ctx.note('config space back at its power-on values');
        else if (!differs(cfgBefore).length)
          ctx.note('config space restored across the reset (as Linux VFIO does)');
        else
          ctx.note(
            `config space partly reset (differs from power-on at ${fromPowerOn.slice(0, 8).join(', ')})`,
          );
        if (m && sc0) {
          const sc1 = await s.readOk(m.region, m.offset, sc0.length);
          if (!sc1.equals(sc0))
            fail(`scratch register ${sc1.toString('hex')} after reset, power-on ${sc0.toString('hex')}`);
        }
        const probe = await s.dmaMap({ address: IOVA, size: ctx.pg, flags: 3 });
        if (!isError(probe)) fail('the DMA map was dropped by the reset');
      },
    ),
    kase('RST-06', 'RESET with NO_REPLY: applied, no reply', 'S', async (ctx) => {
      ctx.needReset();
      const m = ctx.needScratch();
      const s = await ctx.session();
      const pon = await resetValue(ctx, s);
      const other = scratchBytes(ctx, ~pon.readUInt32LE(0));
      await s.writeOk(m.region, m.offset, other);
      s.conn.post(Cmd.DEVICE_RESET, undefined, { flags: Flag.NO_REPLY });
      await ctx.noReply(s.conn, 'posted RESET');
      const now = await s.readOk(m.region, m.offset, pon.length);
      if (!now.equals(pon)) fail(`the posted reset was not applied (scratch ${now.toString('hex')})`);
    }),
    kase('RST-07', 'RESET while migration is in STOP', 'L', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      try {
        await setMigStateOk(s, MigState.STOP);
        const m = await s.reset();
        if (isError(m)) ctx.errno(m, 'RESET in STOP', LINVAL);
        else ctx.lvuDiffers('RESET accepted in STOP (the spec does not gate it; libvfio-user: EINVAL)');
      } finally {
        await restoreRunning(s);
      }
    }),
    kase('RST-08', 'RESET in migration ERROR returns the device to RUNNING', 'S', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      try {
        if (!(await driveToError(s))) skip('could not drive the device into ERROR');
        expectOk(await s.reset(), 'RESET in ERROR');
        const st = await getMigState(s);
        if (st !== MigState.RUNNING) fail(`state ${st} after reset`);
      } finally {
        await restoreRunning(s);
      }
    }),
  ],
};

/** RUNNING -> STOP -> RESUMING, write garbage, -> STOP; true if the device ends up in ERROR. */
async function driveToError(s: Session): Promise<boolean> {
  await setMigStateOk(s, MigState.STOP);
  await setMigStateOk(s, MigState.RESUMING);
  const junk = Buffer.alloc(16, 0xee);
  await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(8 + junk.length), le32(junk.length), junk]));
  const m = await setMigState(s, MigState.STOP);
  if (!isError(m)) return false;
  return (await getMigState(s)) === MigState.ERROR;
}

// -- M. WMU -----------------------------------------------------------------------------------------------------

function needWmu(ctx: Ctx): void {
  if (!ctx.dev.writeMultiple) skip('the server does not offer write_multiple');
}

function entry(ctx: Ctx, v: number, count?: number) {
  const m = ctx.needScratch();
  const data = scratchBytes(ctx, v);
  return { offset: m.offset, region: m.region, count: count ?? data.length, data };
}

export const wmu: Group = {
  name: 'WMU',
  title: 'REGION_WRITE_MULTI',
  cases: [
    kase('WMU-01', 'Sent although not negotiated: refused; with NO_REPLY nothing', 'S, L', async (ctx) => {
      const s = await ctx.session({ json: '{"capabilities": {"max_msg_fds": 8}}' });
      if (s.caps.writeMultiple) fail('write_multiple offered although the client did not offer it');
      const region = ctx.dev.scratch?.region ?? Region.CONFIG;
      const p = writeMultiPayload([
        { offset: ctx.dev.scratch?.offset ?? 0x40n, region, count: 4, data: le32(0) },
      ]);
      ctx.errno(await s.call(Cmd.REGION_WRITE_MULTI, p), 'WRITE_MULTI not negotiated', LINVAL);
      s.conn.post(Cmd.REGION_WRITE_MULTI, p, { flags: Flag.NO_REPLY });
      await ctx.noReply(s.conn, 'WRITE_MULTI with NO_REPLY');
    }),
    kase('WMU-02', '3 posted writes: applied in order, no reply', 'S, Q', async (ctx) => {
      needWmu(ctx);
      const m = ctx.needScratch();
      const s = await ctx.session();
      s.conn.post(Cmd.REGION_WRITE_MULTI, writeMultiPayload([entry(ctx, 1), entry(ctx, 2), entry(ctx, 3)]), {
        flags: Flag.NO_REPLY,
      });
      await ctx.noReply(s.conn, 'posted WRITE_MULTI');
      const v = (await s.readOk(m.region, m.offset, 4)).readUInt32LE(0);
      if (v !== 3) fail(`scratch ${v} after writes 1, 2, 3`);
    }),
    kase('WMU-03', 'Without NO_REPLY: reply wr_cnt = 3', 'S', async (ctx) => {
      needWmu(ctx);
      const s = await ctx.session();
      const p = expectOk(
        await s.call(
          Cmd.REGION_WRITE_MULTI,
          writeMultiPayload([entry(ctx, 4), entry(ctx, 5), entry(ctx, 6)]),
        ),
        'WRITE_MULTI',
      );
      if (p.length !== 8 || p.readBigUInt64LE(0) !== 3n) fail(`reply ${p.toString('hex')}`);
    }),
    kase('WMU-04', 'An entry with count 9', 'S', async (ctx) => {
      needWmu(ctx);
      const s = await ctx.session();
      ctx.errno(await s.call(Cmd.REGION_WRITE_MULTI, writeMultiPayload([entry(ctx, 1, 9)])), 'count 9', {
        want: [EINVAL],
        basis: 'L',
      });
    }),
    kase('WMU-05', 'Payload size != 8 + 24 * wr_cnt', 'S~', async (ctx) => {
      needWmu(ctx);
      const s = await ctx.session();
      ctx.errno(
        await s.call(Cmd.REGION_WRITE_MULTI, writeMultiPayload([entry(ctx, 1)], 2)),
        'wr_cnt 2 with 1 entry',
        { want: [EINVAL], basis: 'S~' },
      );
    }),
    kase(
      'WMU-06',
      'The 2nd of 3 entries invalid: earlier ones applied, then an error (or wr_cnt 1)',
      'S~',
      async (ctx) => {
        needWmu(ctx);
        const m = ctx.needScratch();
        const s = await ctx.session();
        const bad = { ...entry(ctx, 8), region: ctx.dev.info.numRegions };
        const r = await s.call(
          Cmd.REGION_WRITE_MULTI,
          writeMultiPayload([entry(ctx, 7), bad, entry(ctx, 9)]),
        );
        const v = (await s.readOk(m.region, m.offset, 4)).readUInt32LE(0);
        if (isError(r)) {
          if (v !== 7) fail(`scratch ${v}: entries before the failure were not applied (or later ones were)`);
        } else {
          const n = r.payload.readBigUInt64LE(0);
          if (n !== 1n) fail(`wr_cnt ${n} with the second entry invalid`);
        }
      },
    ),
    kase('WMU-07', 'wr_cnt 0', 'S~', async (ctx) => {
      needWmu(ctx);
      const s = await ctx.session();
      expectOk(await s.call(Cmd.REGION_WRITE_MULTI, writeMultiPayload([])), 'wr_cnt 0');
    }),
  ],
};

// -- N. FEA -----------------------------------------------------------------------------------------------------

const loggingStart = (pageSize: bigint, ranges: [bigint, bigint][] = []) =>
  Buffer.concat([
    le64(pageSize),
    le32(ranges.length),
    le32(0),
    ...ranges.flatMap(([a, n]) => [le64(a), le64(n)]),
  ]);
const report = (iova: bigint, length: bigint, page: bigint) =>
  Buffer.concat([le64(iova), le64(length), le64(page)]);

function featureNeg(
  id: string,
  title: string,
  basis: string,
  build: (ctx: Ctx) => { argsz: number; flags: number; data?: Buffer; migration?: boolean },
  rule = LINVAL,
) {
  return kase(id, title, basis, async (ctx) => {
    const a = build(ctx);
    if (a.migration === true) ctx.needMigration();
    if (a.migration === false) ctx.needNoMigration();
    const s = await ctx.session();
    ctx.errno(await s.feature(a.argsz, a.flags, a.data), title, rule);
  });
}

async function inState(ctx: Ctx, body: (s: Session) => Promise<void>): Promise<void> {
  ctx.needMigration();
  const s = await ctx.session();
  try {
    await body(s);
  } finally {
    await restoreRunning(s);
  }
}

const hasPreCopy = (ctx: Ctx) => ((ctx.dev.migrationFlags ?? 0n) & 4n) !== 0n;

export const fea: Group = {
  name: 'FEA',
  title: 'DEVICE_FEATURE',
  cases: [
    featureNeg(
      'FEA-01',
      '4-byte payload',
      'L',
      () => ({ argsz: 4, flags: 0, data: Buffer.alloc(0) }),
      L(EINVAL),
    ),
    kase('FEA-02', 'Unsupported feature index (3, 0xffff)', 'L, S~', async (ctx) => {
      const s = await ctx.session();
      for (const idx of [3, 0xffff])
        ctx.errno(await s.feature(16, idx | GET), `feature ${idx}`, L(EINVAL, ENOTSUP));
    }),
    featureNeg('FEA-03', 'Any feature on a server without migration', 'L', () => ({
      argsz: 16,
      flags: MIGRATION | GET,
      migration: false,
    })),
    featureNeg('FEA-04', 'A feature index with no GET/SET/PROBE', 'L', () => ({
      argsz: 16,
      flags: MIGRATION,
    })),
    featureNeg('FEA-05', 'GET|SET without PROBE', 'S, L', () => ({
      argsz: 16,
      flags: MIG_DEVICE_STATE | GET | SET,
      data: stateData(2),
    })),
    kase('FEA-06', 'PROBE on a supported feature: OK, request echoed', 'S, L', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      const p = expectOk(await s.feature(8, MIGRATION | PROBE | GET), 'PROBE MIGRATION');
      if (p.readUInt32LE(4) !== (MIGRATION | PROBE | GET)) fail(`echo flags ${hex(p.readUInt32LE(4))}`);
    }),
    kase('FEA-07', 'PROBE|GET MIGRATION ok; PROBE|SET MIGRATION refused', 'S, L', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      expectOk(await s.feature(8, MIGRATION | PROBE | GET), 'PROBE|GET');
      ctx.errno(await s.feature(8, MIGRATION | PROBE | SET), 'PROBE|SET MIGRATION', LINVAL);
    }),
    featureNeg('FEA-08', 'GET MIGRATION with argsz 8', 'L', () => ({
      argsz: 8,
      flags: MIGRATION | GET,
      migration: true,
    })),
    kase('FEA-09', 'GET MIGRATION argsz 16: flags include STOP_COPY', 'S', async (ctx) => {
      ctx.needMigration();
      const s = await ctx.session();
      const p = expectOk(await s.feature(16, MIGRATION | GET), 'GET MIGRATION');
      if (p.readUInt32LE(0) !== 16 || p.length < 16) fail(`argsz ${p.readUInt32LE(0)}, payload ${p.length}`);
      if (!(p.readBigUInt64LE(8) & 1n)) fail(`flags ${hex(p.readBigUInt64LE(8))} lack STOP_COPY`);
    }),
    kase('FEA-10', 'GET MIG_DEVICE_STATE on a fresh device: RUNNING', 'S, L', async (ctx) => {
      await inState(ctx, async (s) => {
        const st = await getMigState(s);
        if (st !== MigState.RUNNING) fail(`state ${st}`);
      });
    }),
    featureNeg('FEA-11', 'SET MIG_DEVICE_STATE with argsz below the payload', 'L', () => ({
      argsz: 12,
      flags: MIG_DEVICE_STATE | SET,
      data: stateData(1),
      migration: true,
    })),
    featureNeg('FEA-12', 'SET state 0xabcd', 'L', () => ({
      argsz: 16,
      flags: MIG_DEVICE_STATE | SET,
      data: stateData(0xabcd),
      migration: true,
    })),
    kase('FEA-13', 'SET RUNNING_P2P (5) or PRE_COPY_P2P (7)', 'S, L', async (ctx) => {
      await inState(ctx, async (s) => {
        for (const st of [MigState.RUNNING_P2P, MigState.PRE_COPY_P2P])
          ctx.errno(await setMigState(s, st), `SET ${st}`, LINVAL);
      });
    }),
    kase('FEA-14', 'SET ERROR (0)', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        ctx.errno(await setMigState(s, MigState.ERROR), 'SET ERROR', LINVAL);
      });
    }),
    kase('FEA-15', 'STOP_COPY -> PRE_COPY is refused', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP_COPY);
        ctx.errno(await setMigState(s, MigState.PRE_COPY), 'STOP_COPY -> PRE_COPY', LINVAL);
      });
    }),
    kase('FEA-16', 'RUNNING -> STOP_COPY (via STOP): final state 3', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP_COPY);
        if ((await getMigState(s)) !== MigState.STOP_COPY) fail('not in STOP_COPY');
      });
    }),
    kase('FEA-17', 'RESUMING -> RUNNING (via STOP)', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RESUMING);
        await setMigStateOk(s, MigState.RUNNING);
        if ((await getMigState(s)) !== MigState.RUNNING) fail('not RUNNING');
      });
    }),
    kase('FEA-18', 'PRE_COPY -> STOP (via RUNNING)', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        if (!hasPreCopy(ctx)) skip('PRE_COPY not offered');
        await setMigStateOk(s, MigState.PRE_COPY);
        await setMigStateOk(s, MigState.STOP);
        if ((await getMigState(s)) !== MigState.STOP) fail('not in STOP');
      });
    }),
    kase('FEA-19', "A failing device transition returns the device's errno", 'L', async () => {
      skip('no device-independent way to make a transition fail');
    }),
    featureNeg('FEA-20', 'DMA_LOGGING_START with page_size 0', 'L', () => ({
      argsz: 24,
      flags: DMA_LOGGING_START | SET,
      data: loggingStart(0n),
      migration: true,
    })),
    kase('FEA-21', 'START twice: another page size refused, the same accepted', 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await mapMemfd(ctx, s, IOVA, ctx.pg);
        expectOk(await s.feature(24, DMA_LOGGING_START | SET, loggingStart(ctx.pg)), 'START');
        ctx.errno(
          await s.feature(24, DMA_LOGGING_START | SET, loggingStart(ctx.pg * 2n)),
          'START other page size',
          LINVAL,
        );
        expectOk(await s.feature(24, DMA_LOGGING_START | SET, loggingStart(ctx.pg)), 'START same page size');
        await s.feature(24, Feature.DMA_LOGGING_STOP | SET, loggingStart(ctx.pg));
      });
    }),
    kase('FEA-22', 'DMA_LOGGING_REPORT of a mapped range without START', 'S, L', async (ctx) => {
      // The range is mapped, so the only thing wrong is the missing START (an unmapped one may get ENOENT).
      await inState(ctx, async (s) => {
        await mapMemfd(ctx, s, IOVA, ctx.pg);
        // Logging may still run from an earlier client (a server need not stop it on disconnect): stop it.
        await s.feature(24, Feature.DMA_LOGGING_STOP | SET, loggingStart(ctx.pg));
        const m = await s.feature(40, DMA_LOGGING_REPORT | GET, report(IOVA, ctx.pg, ctx.pg));
        ctx.errno(m, 'DMA_LOGGING_REPORT without START', LINVAL);
      });
    }),
    kase('FEA-23', "REPORT of a sub-range that starts at a map's base", 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        const pg = ctx.pg;
        await mapMemfd(ctx, s, IOVA, 2n * pg);
        expectOk(await s.feature(24, DMA_LOGGING_START | SET, loggingStart(pg)), 'START');
        const m = await s.feature(40, DMA_LOGGING_REPORT | GET, report(IOVA, pg, pg));
        if (isError(m)) {
          ctx.anyError(m, 'REPORT of the first page of a 2-page map');
          fail(
            "REPORT of the first page of a 2-page map refused (the spec asks for any range; libvfio-user serves one that starts at a map's base)",
          );
        }
        const p = expectOk(m, 'REPORT of a sub-range');
        // argsz, flags, then iova, length, page_size, then one u64 of bitmap.
        if (p.length !== 40) fail(`reply payload ${p.length} bytes, expected 40 (24 + one u64 of bitmap)`);
        if (p.readBigUInt64LE(32) & ~1n)
          fail(`bits outside the requested range are set (${hex(p.readBigUInt64LE(32))})`, { level: 'must' });
        await s.feature(24, Feature.DMA_LOGGING_STOP | SET, loggingStart(pg));
      });
    }),
    ...(
      [
        ['FEA-24', 'REPORT over unmapped IOVA', L(ENOENT), (pg: bigint) => report(IOVA + 0x1000000n, pg, pg)],
        [
          'FEA-26',
          'REPORT with page_size not a power of two',
          S(EINVAL),
          (pg: bigint) => report(IOVA, 2n * pg, pg + 1n),
        ],
      ] as const
    ).map(([id, title, rule, data]) =>
      kase(id, title, 'L', async (ctx) => {
        await inState(ctx, async (s) => {
          await mapMemfd(ctx, s, IOVA, 2n * ctx.pg);
          expectOk(await s.feature(24, DMA_LOGGING_START | SET, loggingStart(ctx.pg)), 'START');
          ctx.errno(await s.feature(40, DMA_LOGGING_REPORT | GET, data(ctx.pg)), title, {
            ...rule,
            basis: rule.basis === 'S' ? 'S' : 'L',
          });
          await s.feature(24, Feature.DMA_LOGGING_STOP | SET, loggingStart(ctx.pg));
        });
      }),
    ),
    kase('FEA-25', 'REPORT of an fd-less map', 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await s.dmaMapOk({ address: IOVA, size: ctx.pg, flags: 3 });
        const st = await s.feature(24, DMA_LOGGING_START | SET, loggingStart(ctx.pg));
        if (isError(st)) {
          ctx.note('START refused with an fd-less map');
          return;
        }
        ctx.errno(
          await s.feature(40, DMA_LOGGING_REPORT | GET, report(IOVA, ctx.pg, ctx.pg)),
          'REPORT fd-less',
          LINVAL,
        );
        await s.feature(24, Feature.DMA_LOGGING_STOP | SET, loggingStart(ctx.pg));
      });
    }),
    kase('FEA-27', 'Dirty bit set after a device write, cleared by the next REPORT', 'S, L', async (ctx) => {
      const d = ctx.needDriver();
      await inState(ctx, async (s) => {
        const pg = ctx.pg;
        await mapMemfd(ctx, s, IOVA, 4n * pg);
        expectOk(await s.feature(24, DMA_LOGGING_START | SET, loggingStart(pg)), 'START');
        await s.feature(40 + 8, DMA_LOGGING_REPORT | GET, report(IOVA, 4n * pg, pg));
        await d.dmaToGuest(s, IOVA + pg, 0, 16);
        const a = expectOk(
          await s.feature(40 + 8, DMA_LOGGING_REPORT | GET, report(IOVA, 4n * pg, pg)),
          'REPORT 1',
        );
        const b = expectOk(
          await s.feature(40 + 8, DMA_LOGGING_REPORT | GET, report(IOVA, 4n * pg, pg)),
          'REPORT 2',
        );
        const bits = (p: Buffer) => (p.length >= 40 ? p.readBigUInt64LE(32) : -1n);
        if (bits(a) !== 2n) fail(`first bitmap ${hex(bits(a))}, expected 0x2`);
        if (bits(b) !== 0n) fail(`second bitmap ${hex(bits(b))}, expected 0`);
        await s.feature(24, Feature.DMA_LOGGING_STOP | SET, loggingStart(pg));
      });
    }),
    featureNeg('FEA-28', 'DMA logging on a server without migration', 'L', (ctx) => ({
      argsz: 24,
      flags: DMA_LOGGING_START | SET,
      data: loggingStart(ctx.pg),
      migration: false,
    })),
  ],
};

// -- O. MIG -----------------------------------------------------------------------------------------------------

export const mig: Group = {
  name: 'MIG',
  title: 'Migration data and command gating',
  cases: [
    kase('MIG-01', 'MIG_DATA_READ / WRITE with a 4-byte payload', 'L', async (ctx) => {
      const s = await ctx.session();
      ctx.errno(await s.call(Cmd.MIG_DATA_READ, le32(8)), 'MIG_DATA_READ 4 bytes', LINVAL);
      ctx.errno(await s.call(Cmd.MIG_DATA_WRITE, le32(8)), 'MIG_DATA_WRITE 4 bytes', LINVAL);
    }),
    kase('MIG-02', 'MIG_DATA_READ / WRITE on a server without migration', 'L', async (ctx) => {
      ctx.needNoMigration();
      const s = await ctx.session();
      ctx.errno(await migDataRead(s, 64), 'MIG_DATA_READ', LINVAL);
      ctx.errno(
        await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(12), le32(4), le32(0)])),
        'MIG_DATA_WRITE',
        LINVAL,
      );
    }),
    kase('MIG-03', 'MIG_DATA_READ in RUNNING or STOP', 'S, L', async (ctx) => {
      await inState(ctx, async (s) => {
        ctx.errno(await migDataRead(s, 64), 'read in RUNNING', LINVAL);
        await setMigStateOk(s, MigState.STOP);
        ctx.errno(await migDataRead(s, 64), 'read in STOP', LINVAL);
      });
    }),
    kase('MIG-04', "MIG_DATA_READ larger than the client's max_data_xfer_size", 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP_COPY);
        ctx.errno(await migDataRead(s, (1 << 20) + 1), 'oversized read', LINVAL);
      });
    }),
    kase('MIG-05', 'MIG_DATA_READ with argsz < 8 + size', 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP_COPY);
        ctx.errno(await migDataRead(s, 64, 16), 'argsz too small', LINVAL);
      });
    }),
    kase('MIG-06', 'MIG_DATA_READ in PRE_COPY: reply size <= requested', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        if (!hasPreCopy(ctx)) skip('PRE_COPY not offered');
        await setMigStateOk(s, MigState.PRE_COPY);
        const p = expectOk(await migDataRead(s, 4096), 'read in PRE_COPY');
        if (p.readUInt32LE(4) > 4096 || p.length !== 8 + p.readUInt32LE(4))
          fail(`size ${p.readUInt32LE(4)}, payload ${p.length}`);
      });
    }),
    kase('MIG-07', 'MIG_DATA_WRITE outside RESUMING', 'S, L', async (ctx) => {
      await inState(ctx, async (s) => {
        ctx.errno(
          await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(12), le32(4), le32(0)])),
          'write in RUNNING',
          LINVAL,
        );
      });
    }),
    kase('MIG-08', 'MIG_DATA_WRITE shorter than 8 + size', 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RESUMING);
        ctx.errno(
          await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(24), le32(16), le32(0)])),
          'short write',
          LINVAL,
        );
      });
    }),
    kase('MIG-09', 'MIG_DATA_WRITE size above the maximum', 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RESUMING);
        const n = (1 << 20) + 8;
        ctx.errno(
          await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(8 + n), le32(n)])),
          'oversized write',
          LINVAL,
        );
      });
    }),
    kase('MIG-10', 'Save, change, restore: the device state comes back', 'S', async (ctx) => {
      const m = ctx.needScratch();
      await inState(ctx, async (s) => {
        const w = scratchBytes(ctx, 0x13572468);
        await s.writeOk(m.region, m.offset, w);
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.STOP_COPY);
        const chunks: Buffer[] = [];
        for (let i = 0; i < 1000; i++) {
          const p = expectOk(await migDataRead(s, 4096), 'STOP_COPY read');
          const n = p.readUInt32LE(4);
          chunks.push(p.subarray(8, 8 + n));
          if (n < 4096) break;
        }
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RUNNING);
        await s.writeOk(m.region, m.offset, scratchBytes(ctx, 0x0badf00d));
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RESUMING);
        const data = Buffer.concat(chunks);
        for (let o = 0; o < data.length; o += 4096) {
          const c = data.subarray(o, o + 4096);
          expectOk(
            await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(8 + c.length), le32(c.length), c])),
            'RESUMING write',
          );
        }
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RUNNING);
        const got = await s.readOk(m.region, m.offset, w.length);
        if (!got.equals(w)) fail(`scratch ${got.toString('hex')} after restore, saved ${w.toString('hex')}`);
      });
    }),
    kase('MIG-11', 'In STOP_COPY: DMA_MAP, SET_IRQS, GET_INFO (LVU refuses)', 'L', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP_COPY);
        const r = [
          await s.dmaMap({ address: IOVA, size: ctx.pg, flags: 3 }),
          await s.setIrqs({
            flags: IrqSet.DATA_NONE | IrqSet.ACTION_TRIGGER,
            index: Irq.INTX,
            start: 0,
            count: 0,
          }),
          await s.getInfo(),
        ];
        const allowed = r.filter((m) => !isError(m)).length;
        if (allowed)
          ctx.lvuDiffers(`${allowed} of 3 commands allowed in STOP_COPY (libvfio-user refuses them)`);
        for (const m of r) if (isError(m)) ctx.errno(m, `cmd ${m.hdr.cmd} in STOP_COPY`, LINVAL);
      });
    }),
    kase(
      'MIG-12',
      'In STOP: DMA_MAP, RESET, SET_IRQS refused (LVU); region access allowed',
      'L',
      async (ctx) => {
        await inState(ctx, async (s) => {
          await setMigStateOk(s, MigState.STOP);
          expectOk(await s.read(Region.CONFIG, 0n, 4), 'REGION_READ in STOP');
          const r = [
            await s.dmaMap({ address: IOVA, size: ctx.pg, flags: 3 }),
            await s.reset(),
            await s.setIrqs({
              flags: IrqSet.DATA_NONE | IrqSet.ACTION_TRIGGER,
              index: Irq.INTX,
              start: 0,
              count: 0,
            }),
          ];
          const allowed = r.filter((m) => !isError(m)).length;
          if (allowed) ctx.lvuDiffers(`${allowed} of 3 commands allowed in STOP (libvfio-user refuses them)`);
        });
      },
    ),
    kase('MIG-13', 'RESUMING -> STOP with truncated data fails', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        await setMigStateOk(s, MigState.STOP);
        await setMigStateOk(s, MigState.RESUMING);
        const junk = Buffer.alloc(16, 0xee);
        await s.call(Cmd.MIG_DATA_WRITE, Buffer.concat([le32(8 + junk.length), le32(junk.length), junk]));
        const m = await setMigState(s, MigState.STOP);
        if (!isError(m)) fail('RESUMING -> STOP accepted 16 bytes of junk');
        ctx.note(`state afterwards ${await getMigState(s).catch(() => -1)}`);
      });
    }),
    kase('MIG-14', 'In ERROR: DEVICE_RESET returns to RUNNING', 'S', async (ctx) => {
      await inState(ctx, async (s) => {
        if (!(await driveToError(s))) skip('could not drive the device into ERROR');
        expectOk(await s.reset(), 'RESET');
        if ((await getMigState(s)) !== MigState.RUNNING) fail('not RUNNING after reset');
      });
    }),
  ],
};
