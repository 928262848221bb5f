// Shared shapes for writing cases tersely.

import { setTimeout as sleep } from 'node:timers/promises';

import { Errno } from 'vfio-user-protocol';
import type { CaseDef, Ctx, ErrnoRule } from '../case.js';
import { expectOk, fail, type Msg } from '../conn.js';
import type { Session } from '../session.js';
import { Cmd, Feature, hex, MigState } from '../wire.js';

export const { EINVAL, EEXIST, ENOENT, ENOSPC, EPERM, ENOTSUP, ENOSYS, EOVERFLOW, EACCES, EFAULT, ENODEV } =
  Errno;

/** libvfio-user's errno for a case where the spec names none. */
export const L = (...want: number[]): ErrnoRule => ({ want, basis: 'L' });
/** An errno the spec itself requires. */
export const S = (...want: number[]): ErrnoRule => ({ want, basis: 'S' });
/** The recommendation (spec silent), with libvfio-user's alternative. */
export const R = (want: number[], lvu: number[] = [], basis: 'S~' | 'K' = 'S~'): ErrnoRule => ({
  want,
  basis,
  lvu,
});

export const LINVAL = L(EINVAL);

export function kase(
  id: string,
  title: string,
  basis: string,
  run: (ctx: Ctx) => Promise<void>,
  extra: Partial<CaseDef> = {},
): CaseDef {
  return { id, title, basis, run, ...extra };
}

/** A malformed request on a negotiated session that must fail per `rule` (fds attached are checked for leaks). */
export function neg(
  id: string,
  title: string,
  basis: string,
  build: (
    ctx: Ctx,
    s: Session,
  ) =>
    | Promise<{ cmd: number; payload: Buffer; fds?: number[] }>
    | { cmd: number; payload: Buffer; fds?: number[] },
  rule: ErrnoRule,
  extra: Partial<CaseDef> = {},
): CaseDef {
  return kase(
    id,
    title,
    basis,
    async (ctx) => {
      const s = await ctx.session();
      const req = await build(ctx, s);
      const send = async () => {
        const m = await s.call(req.cmd, req.payload, { fds: req.fds ?? [] });
        ctx.errno(m, title, rule);
      };
      if (req.fds && req.fds.length > 0) await ctx.fdNeutral(`${title} (fds attached)`, send);
      else await send();
    },
    extra,
  );
}

/** A request that must succeed; returns the payload. */
export async function ok(p: Promise<Msg>, what: string): Promise<Buffer> {
  return expectOk(await p, what);
}

export function le32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}
export function le16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v & 0xffff);
  return b;
}
export function le64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}

/** Base IOVA for the suite's maps: below 256 MiB (edu's DMA mask) and clear of the legacy low megabyte. */
export const IOVA = 0x1000000n;

/** A memfd-backed RW map of `size` at `iova` (returns the memfd, kept by the ctx). */
export async function mapMemfd(
  ctx: Ctx,
  s: Session,
  iova: bigint,
  size: bigint,
  flags = 3,
  fileSize?: number,
): Promise<number> {
  const fd = ctx.memfd(fileSize ?? Number(size));
  await s.dmaMapOk({ address: iova, size, flags }, fd);
  return fd;
}

/** Wait for an eventfd to be signalled (returns the counter, 0n on timeout). */
export async function waitEventfd(ctx: Ctx, fd: number, ms = 2000): Promise<bigint> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = ctx.native.eventfdRead(fd);
    if (v > 0n) return v;
    if (Date.now() > deadline) return 0n;
    await sleep(5);
  }
}

/** Reads an eventfd after a short settle: 0n when nothing was signalled. */
export async function eventfdQuiet(ctx: Ctx, fd: number, ms = 150): Promise<bigint> {
  await sleep(ms);
  return ctx.native.eventfdRead(fd);
}

// -- migration helpers -------------------------------------------------------------------------------------------

export function stateData(state: number): Buffer {
  return Buffer.concat([le32(state), le32(0)]);
}

export async function setMigState(s: Session, state: number): Promise<Msg> {
  return s.feature(16, Feature.SET | Feature.MIG_DEVICE_STATE, stateData(state));
}

export async function setMigStateOk(s: Session, state: number): Promise<void> {
  expectOk(await setMigState(s, state), `SET MIG_DEVICE_STATE ${state}`);
}

export async function getMigState(s: Session): Promise<number> {
  const p = expectOk(
    await s.feature(16, Feature.GET | Feature.MIG_DEVICE_STATE, stateData(0)),
    'GET MIG_DEVICE_STATE',
  );
  if (p.length < 12) fail(`GET MIG_DEVICE_STATE reply payload ${p.length} bytes`);
  return p.readUInt32LE(8);
}

/** Best effort: back to RUNNING (directly, else through STOP, else DEVICE_RESET). */
export async function restoreRunning(s: Session): Promise<void> {
  try {
    if ((await getMigState(s)) === MigState.RUNNING) return;
    let m = await setMigState(s, MigState.RUNNING);
    if (!(m.hdr.flags & 0x20)) return;
    m = await setMigState(s, MigState.STOP);
    m = await setMigState(s, MigState.RUNNING);
    if (!(m.hdr.flags & 0x20)) return;
    await s.reset();
  } catch {
    // the case's own result stands
  }
}

export async function migDataRead(s: Session, size: number, argsz = 8 + size): Promise<Msg> {
  return s.call(Cmd.MIG_DATA_READ, Buffer.concat([le32(argsz), le32(size)]));
}

export function describeRange(a: bigint, n: bigint): string {
  return `[${hex(a)},+${hex(n)})`;
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function prng(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}
