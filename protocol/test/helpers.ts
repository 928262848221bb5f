// Test helpers: a seeded PRNG (no dependencies, reproducible failures) and errno assertions.

import * as assert from 'uvu/assert';
import { ProtocolError } from '../src/index.js';

/** mulberry32: tiny, fast, good enough to drive property tests; the seed makes failures reproducible. */
export function prng(seed: number) {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  const u32 = (): number => (next() * 4294967296) >>> 0;
  const u64 = (): bigint => (BigInt(u32()) << 32n) | BigInt(u32());
  const bytes = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const pick = <T>(arr: readonly T[]): T => arr[int(arr.length)]!;
  const bool = (): boolean => next() < 0.5;
  /** A u64 biased towards edge values (0, 1, 2^32, 2^64-1, ...), where codec bugs live. */
  const edgyU64 = (): bigint => {
    const r = int(6);
    if (r === 0) return pick([0n, 1n, 0xffffffffn, 0x100000000n, 1n << 63n, (1n << 64n) - 1n]);
    if (r === 1) return BigInt(u32());
    return u64();
  };
  const edgyU32 = (): number => (int(4) === 0 ? pick([0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) : u32());
  return { next, int, u32, u64, bytes, pick, bool, edgyU64, edgyU32 };
}
export type Prng = ReturnType<typeof prng>;

/** Asserts that fn throws a ProtocolError with this errno (and code, if given); returns the error. */
export function throwsErrno(fn: () => unknown, errno: number, code?: string): ProtocolError {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    assert.is(e.errno, errno, `errno: ${e.message}`);
    if (code !== undefined) assert.is(e.code, code, `code: ${e.message}`);
    return e;
  }
  assert.unreachable(`expected a ProtocolError with errno ${errno}`);
  throw new Error('unreachable');
}

export const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
/** The text plus its terminating NUL, as a VERSION capabilities blob. */
export const nul = (s: string): Uint8Array => ascii(`${s}\0`);

/** Little-endian writers for building malformed payloads by hand in validation tests. */
export function le(fields: [number | bigint, 1 | 2 | 4 | 8][]): Uint8Array {
  let n = 0;
  for (const [, w] of fields) n += w;
  const out = new Uint8Array(n);
  const dv = new DataView(out.buffer);
  let o = 0;
  for (const [v, w] of fields) {
    if (w === 1) dv.setUint8(o, Number(v));
    else if (w === 2) dv.setUint16(o, Number(v), true);
    else if (w === 4) dv.setUint32(o, Number(v), true);
    else dv.setBigUint64(o, BigInt(v), true);
    o += w;
  }
  return out;
}

/** Deep equality with uvu's own comparison (dequal), as a boolean. */
export function deepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.equal(a, b);
    return true;
  } catch {
    return false;
  }
}
