// I. DEVICE_SET_IRQS (IRQS). "V" is the MSI-X index when it has vectors, else MSI; N its vector count.
import { writeSync } from 'node:fs';
import type { Ctx, Group } from '../case.js';
import { expectOk, fail, skip } from '../conn.js';
import { pciSetMsi } from '../devices.js';
import type { Session } from '../session.js';
import { Cmd, Irq, IrqInfoFlag, IrqSet, MigState, setIrqsPayload } from '../wire.js';
import { EINVAL, eventfdQuiet, kase, LINVAL, R, restoreRunning, setMigStateOk, waitEventfd } from './util.js';

const { DATA_NONE, DATA_BOOL, DATA_EVENTFD, ACTION_MASK, ACTION_UNMASK, ACTION_TRIGGER } = IrqSet;
const EFD_TRIG = DATA_EVENTFD | ACTION_TRIGGER;

/** A SET_IRQS on a negotiated session that must fail (EINVAL, libvfio-user; K where the kernel agrees). */
function bad(
  id: string,
  title: string,
  basis: string,
  build: (ctx: Ctx) => {
    flags: number;
    index: number;
    start: number;
    count: number;
    data?: Buffer;
    argsz?: number;
    nfds?: number;
    payload?: Buffer;
  },
) {
  return kase(id, title, basis, async (ctx) => {
    const s = await ctx.session();
    const a = build(ctx);
    const fds = ctx.eventfds(a.nfds ?? 0);
    const send = async () => {
      const payload = a.payload ?? setIrqsPayload({ ...a, ...(a.data ? { data: a.data } : {}) });
      const m = await s.call(Cmd.DEVICE_SET_IRQS, payload, { fds });
      ctx.errno(m, title, LINVAL);
    };
    if (fds.length) await ctx.fdNeutral(title, send);
    else await send();
  });
}

/** The server fires eventfds for a client-side TRIGGER (DATA_NONE/BOOL + TRIGGER): spec loopback. */
async function loopback(s: Session, index: number, start: number, count: number): Promise<void> {
  await s.setIrqsOk({ flags: DATA_NONE | ACTION_TRIGGER, index, start, count });
}

async function assign(ctx: Ctx, s: Session, index: number, start: number, n: number): Promise<number[]> {
  const fds = ctx.eventfds(n);
  await s.setIrqsOk({ flags: EFD_TRIG, index, start, count: n }, fds);
  return fds;
}

function needErr(ctx: Ctx, index: number): void {
  if (ctx.dev.info.numIrqs <= index) skip(`no irq index ${index}`);
}

function needIntx(ctx: Ctx): void {
  if ((ctx.dev.irqs[Irq.INTX]?.count ?? 0) < 1) skip('no INTx (count 0)');
}

/** Make the device interrupt through its driver (edu: MSI vector 0 when enabled, else INTx). */
async function devIrq(ctx: Ctx, s: Session): Promise<void> {
  const d = ctx.needDriver();
  await pciSetMsi(s, true);
  try {
    await d.raiseIrq(s);
  } finally {
    await pciSetMsi(s, false);
  }
}

export const irqs: Group = {
  name: 'IRQS',
  title: 'DEVICE_SET_IRQS',
  cases: [
    kase(
      'IRQS-01',
      'EVENTFD|TRIGGER start 0 count 1: the vector-0 interrupt signals that eventfd',
      'S',
      async (ctx) => {
        const v = ctx.needVectors(1);
        const s = await ctx.session();
        const [fd] = await assign(ctx, s, v.index, 0, 1);
        if (ctx.dev.driver && v.index === Irq.MSI) {
          await devIrq(ctx, s);
          if (!(await waitEventfd(ctx, fd!))) fail('the device interrupt did not signal the eventfd');
          await ctx.dev.driver.ackIrq(s);
          ctx.note('checked with a device interrupt');
        } else {
          await loopback(s, v.index, 0, 1);
          if (!(await waitEventfd(ctx, fd!))) fail('a TRIGGER did not signal the eventfd');
          ctx.note('checked with a client TRIGGER (no device-driven interrupt for this index)');
        }
      },
    ),
    kase('IRQS-02', 'EVENTFD|TRIGGER count N with N fds', 'S', async (ctx) => {
      const v = ctx.needVectors(1);
      if (v.count > ctx.dev.caps.maxMsgFds)
        skip(`N=${v.count} exceeds max_msg_fds ${ctx.dev.caps.maxMsgFds} (see IRQS-03)`);
      const s = await ctx.session();
      await assign(ctx, s, v.index, 0, v.count);
    }),
    kase('IRQS-03', 'QEMU-style chunks of 8: all 16 vectors assigned', 'Q', async (ctx) => {
      const v = ctx.needVectors(16);
      if (ctx.dev.caps.maxMsgFds < 8) skip(`max_msg_fds ${ctx.dev.caps.maxMsgFds} < 8`);
      const s = await ctx.session();
      const a = await assign(ctx, s, v.index, 0, 8);
      const b = await assign(ctx, s, v.index, 8, 8);
      await loopback(s, v.index, 0, 16);
      for (const [i, fd] of [...a, ...b].entries())
        if (!(await waitEventfd(ctx, fd))) fail(`vector ${i} not signalled`);
    }),
    kase('IRQS-04', 'EVENTFD|TRIGGER count N with 0 fds de-assigns', 'S', async (ctx) => {
      const v = ctx.needVectors(1);
      const s = await ctx.session();
      const [fd] = await assign(ctx, s, v.index, 0, 1);
      await s.setIrqsOk({ flags: EFD_TRIG, index: v.index, start: 0, count: 1 });
      if (ctx.dev.driver && v.index === Irq.MSI) {
        await devIrq(ctx, s);
        await ctx.dev.driver.ackIrq(s);
        ctx.note('checked with a device interrupt');
      } else {
        const m = await s.setIrqs({ flags: DATA_NONE | ACTION_TRIGGER, index: v.index, start: 0, count: 1 });
        if (m.hdr.flags & 0x20) ctx.note('a client TRIGGER of the de-assigned vector was refused');
      }
      if ((await eventfdQuiet(ctx, fd!)) > 0n) fail('a de-assigned eventfd was signalled');
    }),
    kase('IRQS-05', 'NONE|TRIGGER start 0 count 0 disables the whole index', 'S, Q', async (ctx) => {
      const v = ctx.needVectors(1);
      const s = await ctx.session();
      const [fd] = await assign(ctx, s, v.index, 0, 1);
      await s.setIrqsOk({ flags: DATA_NONE | ACTION_TRIGGER, index: v.index, start: 0, count: 0 });
      if (ctx.dev.driver && v.index === Irq.MSI) {
        await devIrq(ctx, s);
        if ((await eventfdQuiet(ctx, fd!)) > 0n) fail('a disabled vector still signalled its old eventfd');
        await ctx.dev.driver.ackIrq(s);
      }
      if ((ctx.dev.irqs[Irq.INTX]?.count ?? 0) > 0) {
        await s.setIrqsOk({ flags: DATA_NONE | ACTION_TRIGGER, index: Irq.INTX, start: 0, count: 0 });
      }
    }),
    kase('IRQS-06', '16-byte payload', 'L', async (ctx) => {
      const s = await ctx.session();
      const p = setIrqsPayload({ flags: DATA_NONE | ACTION_TRIGGER, index: 0, start: 0, count: 0 }).subarray(
        0,
        16,
      );
      ctx.errno(await s.call(Cmd.DEVICE_SET_IRQS, p), 'SET_IRQS 16 bytes', LINVAL);
    }),
    bad('IRQS-07', 'argsz 3', 'L', () => ({
      argsz: 3,
      flags: DATA_NONE | ACTION_TRIGGER,
      index: 0,
      start: 0,
      count: 0,
    })),
    bad('IRQS-08', 'index = num_irqs', 'L, K', (ctx) => ({
      flags: DATA_NONE | ACTION_TRIGGER,
      index: ctx.dev.info.numIrqs,
      start: 0,
      count: 0,
    })),
    bad('IRQS-09', 'MASK|UNMASK together', 'L, K', (ctx) => ({
      flags: DATA_NONE | ACTION_MASK | ACTION_UNMASK,
      index: vIndex(ctx),
      start: 0,
      count: 1,
    })),
    bad('IRQS-10', 'No ACTION bit', 'L, K', (ctx) => ({
      flags: DATA_NONE,
      index: vIndex(ctx),
      start: 0,
      count: 1,
    })),
    bad('IRQS-11', 'NONE|BOOL together', 'L, K', (ctx) => ({
      flags: DATA_NONE | DATA_BOOL | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 1,
      data: Buffer.from([1]),
    })),
    bad('IRQS-12', 'No DATA bit', 'L, K', (ctx) => ({
      flags: ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 1,
    })),
    bad('IRQS-13', 'start N-1, count 2', 'L, K', (ctx) => ({
      flags: EFD_TRIG,
      index: vIndex(ctx),
      start: vCount(ctx) - 1,
      count: 2,
    })),
    bad('IRQS-14', 'start N+1, count 1', 'L', (ctx) => ({
      flags: EFD_TRIG,
      index: vIndex(ctx),
      start: vCount(ctx) + 1,
      count: 1,
    })),
    bad('IRQS-15', 'start 284, count 0xffffffff (overflow)', 'L', (ctx) => ({
      flags: DATA_NONE | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 284,
      count: 0xffffffff,
    })),
    bad('IRQS-16', 'MASK on ERR', 'L', (ctx) => {
      needErr(ctx, Irq.ERR);
      return { flags: DATA_NONE | ACTION_MASK, index: Irq.ERR, start: 0, count: 1 };
    }),
    bad('IRQS-17', 'MASK on REQ', 'L', (ctx) => {
      needErr(ctx, Irq.REQ);
      return { flags: DATA_NONE | ACTION_MASK, index: Irq.REQ, start: 0, count: 1 };
    }),
    bad('IRQS-18', 'TRIGGER count 2 on ERR', 'L', (ctx) => {
      needErr(ctx, Irq.ERR);
      return { flags: EFD_TRIG, index: Irq.ERR, start: 0, count: 2, nfds: 2 };
    }),
    bad('IRQS-19', 'TRIGGER count 2 on REQ', 'L', (ctx) => {
      needErr(ctx, Irq.REQ);
      return { flags: EFD_TRIG, index: Irq.REQ, start: 0, count: 2, nfds: 2 };
    }),
    bad('IRQS-20', 'count 0 with start 1', 'L', (ctx) => ({
      flags: DATA_NONE | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 1,
      count: 0,
    })),
    bad('IRQS-21', 'count 0 with MASK', 'L', (ctx) => ({
      flags: DATA_NONE | ACTION_MASK,
      index: vIndex(ctx),
      start: 0,
      count: 0,
    })),
    bad('IRQS-22', 'count 0 with BOOL|TRIGGER', 'L', (ctx) => ({
      flags: DATA_BOOL | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 0,
    })),
    bad('IRQS-23', 'BOOL|TRIGGER with an fd attached (fd closed)', 'L', (ctx) => ({
      flags: DATA_BOOL | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 1,
      data: Buffer.from([1]),
      nfds: 1,
    })),
    bad('IRQS-24', 'NONE|TRIGGER with an fd attached (fd closed)', 'L', (ctx) => ({
      flags: DATA_NONE | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 1,
      nfds: 1,
    })),
    bad('IRQS-25', 'EVENTFD count 2 with 1 fd (fd closed)', 'L', (ctx) => ({
      flags: EFD_TRIG,
      index: vIndex(ctx),
      start: 0,
      count: 2,
      nfds: 1,
    })),
    bad('IRQS-26', 'BOOL count 2 with a 1-byte array', 'L', (ctx) => ({
      flags: DATA_BOOL | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 2,
      data: Buffer.from([1]),
    })),
    bad('IRQS-27', 'BOOL count 2 with a 3-byte array', 'L', (ctx) => ({
      flags: DATA_BOOL | ACTION_TRIGGER,
      index: vIndex(ctx),
      start: 0,
      count: 2,
      data: Buffer.from([1, 0, 1]),
    })),
    kase('IRQS-28', 'NONE|TRIGGER start 1 count 1: only vector 1 fires', 'S', async (ctx) => {
      const v = ctx.needVectors(2);
      const s = await ctx.session();
      const [a, b] = await assign(ctx, s, v.index, 0, 2);
      await loopback(s, v.index, 1, 1);
      if (!(await waitEventfd(ctx, b!))) fail('vector 1 was not signalled');
      if ((await eventfdQuiet(ctx, a!)) > 0n) fail('vector 0 was signalled too');
    }),
    kase('IRQS-29', 'BOOL|TRIGGER start 0 count 2 [1,0]: only vector 0 fires', 'S', async (ctx) => {
      const v = ctx.needVectors(2);
      const s = await ctx.session();
      const [a, b] = await assign(ctx, s, v.index, 0, 2);
      await s.setIrqsOk({
        flags: DATA_BOOL | ACTION_TRIGGER,
        index: v.index,
        start: 0,
        count: 2,
        data: Buffer.from([1, 0]),
      });
      if (!(await waitEventfd(ctx, a!))) fail('vector 0 was not signalled');
      if ((await eventfdQuiet(ctx, b!)) > 0n) fail('vector 1 was signalled too');
    }),
    kase(
      'IRQS-30',
      'MASK then UNMASK: no signal while masked, the pending one on unmask',
      'S',
      async (ctx) => {
        const v = ctx.needVectors(1);
        if (!(ctx.dev.irqs[v.index]!.flags & IrqInfoFlag.MASKABLE)) skip(`index ${v.index} is not MASKABLE`);
        const s = await ctx.session();
        const [fd] = await assign(ctx, s, v.index, 0, 1);
        await s.setIrqsOk({ flags: DATA_NONE | ACTION_MASK, index: v.index, start: 0, count: 1 });
        if (ctx.dev.driver && v.index === Irq.MSI) await devIrq(ctx, s);
        else await loopback(s, v.index, 0, 1);
        if ((await eventfdQuiet(ctx, fd!)) > 0n) fail('a masked vector was signalled');
        await s.setIrqsOk({ flags: DATA_NONE | ACTION_UNMASK, index: v.index, start: 0, count: 1 });
        if (!(await waitEventfd(ctx, fd!))) fail('the pending interrupt was not delivered on unmask');
        await ctx.dev.driver?.ackIrq(s);
      },
    ),
    kase('IRQS-31', 'EVENTFD|UNMASK on INTx (resample fd): accepted, and watched', 'Q, K', async (ctx) => {
      needIntx(ctx);
      const s = await ctx.session();
      await pciSetMsi(s, false);
      const [trig] = await assign(ctx, s, Irq.INTX, 0, 1);
      const resample = ctx.eventfd();
      await s.setIrqsOk({ flags: DATA_EVENTFD | ACTION_UNMASK, index: Irq.INTX, start: 0, count: 1 }, [
        resample,
      ]);
      const d = ctx.dev.driver;
      if (!d) {
        ctx.note('accepted; re-assertion not checked (no device driver)');
        return;
      }
      await d.raiseIrq(s);
      if (!(await waitEventfd(ctx, trig!))) fail('INTx did not fire');
      // Still asserted: a resample signal must unmask and re-assert it.
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      writeSync(resample, one);
      const again = await waitEventfd(ctx, trig!, 1000);
      await d.ackIrq(s);
      if (!again) fail('after a resample signal the still-pending INTx was not re-asserted');
    }),
    kase('IRQS-32', 'NONE|UNMASK on INTx after a trigger: the next INTx can fire', 'S, Q', async (ctx) => {
      needIntx(ctx);
      const s = await ctx.session();
      await pciSetMsi(s, false);
      const [trig] = await assign(ctx, s, Irq.INTX, 0, 1);
      const d = ctx.dev.driver;
      if (!d) {
        await s.setIrqsOk({ flags: DATA_NONE | ACTION_UNMASK, index: Irq.INTX, start: 0, count: 1 });
        ctx.note('accepted; delivery not checked (no device driver)');
        return;
      }
      await d.raiseIrq(s);
      if (!(await waitEventfd(ctx, trig!))) fail('INTx did not fire');
      await d.ackIrq(s);
      await s.setIrqsOk({ flags: DATA_NONE | ACTION_UNMASK, index: Irq.INTX, start: 0, count: 1 });
      await d.raiseIrq(s);
      const again = await waitEventfd(ctx, trig!);
      await d.ackIrq(s);
      if (!again) fail('INTx did not fire again after UNMASK');
    }),
    kase('IRQS-33', 'Re-assigning vector 0: old fd closed, new fd signalled', 'S~', async (ctx) => {
      const v = ctx.needVectors(1);
      const s = await ctx.session();
      const [old] = await assign(ctx, s, v.index, 0, 1);
      const base = ctx.target.serverPid() === null ? null : ctx.target.fdCount();
      const [nu] = await assign(ctx, s, v.index, 0, 1);
      if (base !== null) await ctx.fdsBackTo(base, 're-assign');
      await loopback(s, v.index, 0, 1);
      if (!(await waitEventfd(ctx, nu!))) fail('the new eventfd was not signalled');
      if ((await eventfdQuiet(ctx, old!, 50)) > 0n) fail('the old eventfd was signalled');
    }),
    kase('IRQS-34', 'NONE|TRIGGER start 0 count 0 on an index whose count is 0', 'S~, L', async (ctx) => {
      const i = ctx.dev.irqs.findIndex((q) => q.count === 0);
      if (i < 0) skip('every irq index has vectors');
      const s = await ctx.session();
      const m = await s.setIrqs({ flags: DATA_NONE | ACTION_TRIGGER, index: i, start: 0, count: 0 });
      if (m.hdr.flags & 0x20) {
        ctx.deviates(`index ${i} (count 0): disabling failed (recommended: OK, a no-op)`, { lvu: true });
        ctx.errno(m, 'disable empty index', LINVAL);
      } else expectOk(m, 'disable empty index');
    }),
    kase('IRQS-35', 'More fds than max_msg_fds: EINVAL, all fds closed', 'S~', async (ctx) => {
      const n = ctx.dev.caps.maxMsgFds + 1;
      if (n > 253) skip('max_msg_fds at the kernel limit');
      const v = ctx.dev.vectors ?? { index: Irq.MSI, count: 0 };
      const s = await ctx.session();
      await ctx.fdNeutral(`SET_IRQS with ${n} fds`, async () => {
        const m = await s.setIrqs({ flags: EFD_TRIG, index: v.index, start: 0, count: n }, ctx.eventfds(n));
        ctx.errno(m, `SET_IRQS with ${n} fds`, R([EINVAL]));
      });
    }),
    kase('IRQS-36', 'Disconnect after assigning eventfds: the server closes them', 'S', async (ctx) => {
      const v = ctx.needVectors(1);
      await ctx.fdNeutral('eventfds after disconnect', async () => {
        const s = await ctx.session();
        await assign(ctx, s, v.index, 0, Math.min(v.count, ctx.dev.caps.maxMsgFds));
        if ((ctx.dev.irqs[Irq.INTX]?.count ?? 0) > 0) await assign(ctx, s, Irq.INTX, 0, 1);
        s.close();
      });
    }),
    kase('IRQS-37', 'SET_IRQS while migration is in STOP', 'L', async (ctx) => {
      ctx.needMigration();
      const v = ctx.needVectors(1);
      const s = await ctx.session();
      try {
        await setMigStateOk(s, MigState.STOP);
        const m = await s.setIrqs({ flags: EFD_TRIG, index: v.index, start: 0, count: 1 }, ctx.eventfds(1));
        if (m.hdr.flags & 0x20) ctx.errno(m, 'SET_IRQS in STOP', LINVAL);
        else ctx.lvuDiffers('SET_IRQS accepted in STOP (the spec does not gate it; libvfio-user refuses)');
      } finally {
        await restoreRunning(s);
      }
    }),
  ],
};

function vIndex(ctx: Ctx): number {
  return ctx.dev.vectors?.index ?? Irq.MSI;
}
function vCount(ctx: Ctx): number {
  return ctx.dev.vectors?.count ?? 1;
}
