// Helpers for cases where the suite serves the server's DMA_READ/DMA_WRITE (fd-less maps).
import type { Ctx } from '../case.js';
import { fail, type Msg, type ServerRequest } from '../conn.js';
import type { DevDriver } from '../devices.js';
import type { Session } from '../session.js';
import { IOVA } from './util.js';

/** Maps `size` bytes at `iova` without an fd; the suite serves the server's DMA into `data`. */
export async function mapMessageDma(s: Session, iova: bigint, size: number, prot = 3): Promise<Buffer> {
  await s.dmaMapOk({ address: iova, size: BigInt(size), flags: prot });
  const data = Buffer.alloc(size);
  s.conn.dmaRegions.push({ address: iova, data, prot });
  return data;
}

export interface HeldDma {
  req: ServerRequest;
  msg: Msg;
  /** Answer the held request normally (and serve later ones normally). */
  release(): void;
}

/**
 * Maps one page without an fd, starts a device DMA (guest -> device unless `toGuest`), and holds the first
 * DMA request the server sends without answering it.
 */
export async function startHeldDma(
  ctx: Ctx,
  s: Session,
  drv: DevDriver,
  toGuest: boolean,
  count = 64,
): Promise<HeldDma> {
  const pg = Number(ctx.pg);
  await mapMessageDma(s, IOVA, pg);
  let held: { req: ServerRequest; msg: Msg } | null = null;
  s.conn.onServerRequest = (req, msg) => {
    if (!held) {
      held = { req, msg };
      return null;
    }
    return undefined;
  };
  await drv.startDma(s, toGuest, IOVA, 0, count);
  if (!(await s.conn.until(() => held !== null, ctx.opts.timeoutMs))) {
    fail('the device DMA produced no DMA_READ/DMA_WRITE request from the server');
  }
  const h = held as unknown as { req: ServerRequest; msg: Msg };
  return {
    req: h.req,
    msg: h.msg,
    release() {
      s.conn.onServerRequest = null;
      const reply = s.conn.serveDma(h.req, h.msg);
      if (reply && !s.conn.closed) s.conn.send(reply);
    },
  };
}
